"""The artifact graph of a local run: which task produced which artifact, from which inputs.

Read from each task's ``executor_output.json`` and the lineage metadata that every component
writes on its artifacts (``components.common.lineage``): ``inputs`` names the URIs an artifact
was made from, so an edge joins the task that wrote such a URI to the task that read it. An
input that no task of the run wrote (an init model imported from an earlier run) is listed with
its URI.
"""

import json
from pathlib import Path

from components.common import atomic_write_bytes

PICTURE = "lineage.svg"


def read_run(run_dir: Path) -> list[dict]:
    """The tasks of a run that wrote artifacts: ``{"task", "artifacts": [{name, uri, metadata}]}``."""
    tasks = []
    for output in sorted(Path(run_dir).rglob("executor_output.json")):
        groups = json.loads(output.read_text()).get("artifacts", {}).values()
        artifacts = sorted((a for group in groups for a in group["artifacts"]), key=lambda a: a["name"])
        if artifacts:
            tasks.append({"task": str(output.parent.relative_to(run_dir)), "artifacts": artifacts})
    if not tasks:
        raise FileNotFoundError(f"{run_dir} holds no task outputs: is it a run folder of `videoclf run`?")
    return tasks


def edges(tasks: list[dict]) -> list[tuple[str, str, str]]:
    """``(producer task, consumer task, input name)`` for every input an artifact names."""
    producer = {a["uri"]: t["task"] for t in tasks for a in t["artifacts"]}
    found = set()
    for task in tasks:
        for artifact in task["artifacts"]:
            for name, uris in artifact["metadata"].get("inputs", {}).items():
                for uri in [uris] if isinstance(uris, str) else uris:
                    if uri in producer:
                        found.add((producer[uri], task["task"], name))
    return sorted(found)


def imported(tasks: list[dict]) -> list[tuple[str, str, str]]:
    """``(consumer task, input name, URI)`` for every input that no task of the run wrote."""
    produced = {a["uri"] for t in tasks for a in t["artifacts"]}
    found = set()
    for task in tasks:
        for artifact in task["artifacts"]:
            for name, uris in artifact["metadata"].get("inputs", {}).items():
                found |= {(task["task"], name, uri) for uri in ([uris] if isinstance(uris, str) else uris)
                          if uri not in produced}
    return sorted(found)


def depths(tasks: list[dict], links: list[tuple[str, str, str]]) -> dict[str, int]:
    """Each task's column: one more than the deepest task it reads from."""
    depth = {t["task"]: 0 for t in tasks}
    for _ in tasks:  # a longest-path relaxation; the graph is a DAG of a few tasks
        for source, target, _ in links:
            depth[target] = max(depth[target], depth[source] + 1)
    return depth


def describe(tasks: list[dict], links: list[tuple[str, str, str]]) -> str:
    """The graph as text, tasks in data-flow order."""
    depth = depths(tasks, links)
    outside = imported(tasks)
    lines = []
    for task in sorted(tasks, key=lambda t: (depth[t["task"]], t["task"])):
        lines.append(task["task"])
        lines += [f"  <- {name} from {source}" for source, target, name in links if target == task["task"]]
        lines += [f"  <- {name} imported from {uri}" for consumer, name, uri in outside
                  if consumer == task["task"]]
        for artifact in task["artifacts"]:
            meta = artifact["metadata"]
            facts = [f"sha256 {meta['sha256'][:12]}"] if "sha256" in meta else []
            facts += [f"{key} {json.dumps(meta[key])}" for key in ("counts", "classes") if key in meta]
            details = f" ({'; '.join(facts)})" if facts else ""
            lines.append(f"  -> {artifact['name']}: {artifact['uri']}{details}")
    return "\n".join(lines)


def draw(tasks: list[dict], links: list[tuple[str, str, str]]) -> bytes:
    """The graph as an SVG picture: a box per task listing its artifacts, arrows for inputs."""
    import matplotlib.pyplot as plt

    from components.reports import render_figure

    depth = depths(tasks, links)
    columns: dict[int, list[dict]] = {}
    for task in tasks:
        columns.setdefault(depth[task["task"]], []).append(task)
    rows = max(len(c) for c in columns.values())
    fig, ax = plt.subplots(figsize=(3.4 * len(columns), 1.9 * rows))
    centre = {}
    for column, members in columns.items():
        for row, task in enumerate(members):
            x, y = column * 3.4, (rows - row) * 1.9
            centre[task["task"]] = (x, y)
            label = task["task"].rsplit("/", 1)[-1] + "\n" + "\n".join(
                f"{a['name']} {a['metadata'].get('sha256', '')[:8]}" for a in task["artifacts"])
            ax.text(x, y, label, ha="center", va="center", fontsize=8, family="monospace",
                    bbox={"boxstyle": "round", "facecolor": "#eef3fb", "edgecolor": "#4a6fa5"})
    for source, target, name in links:
        (x0, y0), (x1, y1) = centre[source], centre[target]
        skips = depth[target] - depth[source] > 1  # arc over the columns in between
        ax.annotate("", xy=(x1 - 1.3, y1), xytext=(x0 + 1.3, y0),
                    arrowprops={"arrowstyle": "->", "color": "#555",
                                "connectionstyle": f"arc3,rad={-0.35 if skips else 0}"})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (1.3 if skips else 0.15), name, ha="center", fontsize=7,
                color="#555")
    ax.set_xlim(-1.7, 3.4 * (len(columns) - 1) + 1.7)
    ax.set_ylim(0.6, rows * 1.9 + 1.3)
    ax.axis("off")
    return render_figure(fig, "svg")


def lineage_of_run(run_dir: Path) -> tuple[str, Path]:
    """Describes a run's artifact graph and writes its picture beside the run."""
    tasks = read_run(run_dir)
    links = edges(tasks)
    picture = Path(run_dir) / PICTURE
    atomic_write_bytes(picture, draw(tasks, links))
    return describe(tasks, links), picture
