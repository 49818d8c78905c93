"""The README and docs/ tell the truth: their links lead somewhere, the commands they show parse
with the CLI's own parser, and the parameter table gives the pipeline's defaults."""

import argparse
import inspect
import json
import re
import shlex
from pathlib import Path

import pytest

from pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SYNOPSIS = re.compile(r"[\[\]|]|\.\.\.")  # a usage line, e.g. videoclf run [--output DIR]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    return {re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def shown_commands(page: Path) -> list[str]:
    """The ``videoclf`` commands of a page: lines of its code blocks (continuations joined,
    comments cut) and inline code."""
    text = page.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if re.match(r"(\S*/)?videoclf ", line):
                commands.append(line)
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [span.replace("\\|", "|") for span in re.findall(r"`((?:\S*/)?videoclf [^`]+)`", outside)]
    return commands


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links to {target}, which is not there"
        if anchor:
            assert anchor in anchors(linked), f"{page.name} links to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_shown_parses(page):
    commands = subcommands()
    for command in shown_commands(page):
        words = shlex.split(command.replace("<", "").replace(">", ""))[1:]
        assert words and words[0] in commands, f"{page.name}: {command!r} names no videoclf command"
        if len(words) == 1:  # the command named in a sentence
            continue
        if SYNOPSIS.search(command):  # a usage line: each flag must be the command's
            known = commands[words[0]]._option_string_actions
            unknown = [w for w in re.findall(r"--[a-z][a-z0-9-]*", command) if w not in known]
            assert not unknown, f"{page.name}: {command!r}: videoclf {words[0]} has no {unknown}"
        else:
            try:
                build_parser().parse_args(words)
            except SystemExit:
                pytest.fail(f"{page.name}: {command!r} does not parse")


def test_the_parameter_table_gives_the_pipelines_defaults():
    """Every pipeline parameter, and no other, is in docs/parameters.md's table, with its default."""
    from pipelines.video_classification import build_pipeline

    def value(text: str):
        text = text.strip()
        if text == "empty":
            return ""
        quoted = re.match(r"`([^`]*)`", text)
        text = quoted.group(1) if quoted else text.split(" (")[0]
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    page = (ROOT / "docs" / "parameters.md").read_text()
    table = page[page.index("| flag | default | meaning |"):].split("\n\n")[0].splitlines()[2:]
    documented = {}
    for row in table:
        flags_cell, defaults_cell, _ = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        flags = re.findall(r"`--([a-z-]+)`", flags_cell)
        defaults = defaults_cell.split(", ") if len(flags) > 1 else [defaults_cell]
        documented |= {flag.replace("-", "_"): value(text)
                       for flag, text in zip(flags, defaults, strict=True)}
    parameters = inspect.signature(build_pipeline().pipeline_func).parameters
    assert documented == {name: parameter.default for name, parameter in parameters.items()}
