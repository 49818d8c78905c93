"""What a batch prediction run shows: a Markdown summary (the KFP UI renders it) and an HTML page
with the counts per predicted class, the failures, and for a segment run a timeline per video,
each segment a bar coloured by its top class, placed and sized by its start and end."""

from __future__ import annotations

import html

from components.reports import page, table

SHOWN = 500  # videos a report draws or lists; the JSON lines hold them all
STYLE = """<style>
.video { margin: .8em 0; } .name { font-size: .9em; margin-bottom: .2em; }
.timeline { position: relative; height: 1.6em; background: #eee; border-radius: 3px; overflow: hidden; }
.segment { position: absolute; top: 0; bottom: 0; border-right: 1px solid #fff; }
.times { font-size: .8em; color: #555; margin-top: .2em; } .legend { margin-right: 1.2em; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle; margin-right: .3em; }
</style>"""


def colour(index: int) -> str:
    """A class's colour: hues a golden angle apart, so neighbours in the class list differ."""
    return f"hsl({index * 137.508 % 360:.0f}, 62%, 52%)"


def class_rows(summary: dict) -> tuple[list[str], list[list]]:
    """The per-class counts as a table's header and rows."""
    keys = sorted({key for counts in summary["classes"].values() for key in counts},
                  key=["videos", "segments", "seconds"].index)
    rows = [[name, *(counts.get(k, 0) for k in keys)] for name, counts in summary["classes"].items()]
    return ["class", *keys], rows


def summary_markdown(summary: dict) -> str:
    """Counts of the run, per top class, and the first failures."""
    header, rows = class_rows(summary)
    lines = ["# Batch prediction", "", "| videos | answered | failed |", "| ---: | ---: | ---: |",
             f"| {summary['videos']} | {summary['answered']} | {summary['failed']} |", "",
             "## Top class", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |")
    if summary["failures"]:
        lines += ["", f"## Failures (the first {len(summary['failures'])} of {summary['failed']})", ""]
        lines += [f"- `{f['video']}`: {f['error']}" for f in summary["failures"]]
    return "\n".join(lines) + "\n"


def timeline_html(line: dict, classes: list[str]) -> str:
    """One video's segments as coloured bars along its duration, with their times written below."""
    duration = line["duration"] or 1.0
    bars, words = [], []
    for segment in line["segments"]:
        best = segment["top"][0]
        name, start, end = best["class"], segment["start"], segment["end"]
        tip = f"{name} {best['probability']:.2f}: {start:.1f}-{end:.1f} s"
        style = (f"left:{100 * start / duration:.3f}%;width:{100 * (end - start) / duration:.3f}%;"
                 f"background:{colour(classes.index(name)) if name in classes else '#888'}")
        bars.append(f'<div class="segment" style="{style}" title="{html.escape(tip)}"></div>')
        words.append(f"{start:.1f}-{end:.1f} s {html.escape(name)}")
    return (f'<div class="video"><div class="name">{html.escape(line["video"])} ({duration:.1f} s)</div>'
            f'<div class="timeline">{"".join(bars)}</div><div class="times">{" · ".join(words)}</div></div>')


def report_html(summary: dict, lines: list[dict], classes: list[str]) -> str:
    """The run's page: its counts, the counts per top class, a timeline per video of a segment
    run (or each video's top class), and the failures."""
    header, rows = class_rows(summary)
    counts = [[summary["videos"], summary["answered"], summary["failed"]]]
    body = [STYLE, table(["videos", "answered", "failed"], counts), "<h2>Top class</h2>", table(header, rows)]
    answered = [line for line in lines if "error" not in line]
    shown = answered[:SHOWN]
    more = f" (the first {len(shown)} of {len(answered)}: all are in the JSON lines)" * (shown != answered)
    if any("segments" in line for line in shown):
        legend = "".join(f'<span class="legend"><span class="swatch" style="background:{colour(i)}"></span>'
                         f"{html.escape(name)}</span>" for i, name in enumerate(classes))
        body += [f"<h2>Timelines{more}</h2>", f"<p>{legend}</p>"]
        body += [timeline_html(line, classes) for line in shown]
    elif shown:
        rows = [[line["video"], line["top"][0]["class"], line["top"][0]["probability"]] for line in shown]
        body += [f"<h2>Videos{more}</h2>", table(["video", "top class", "probability"], rows)]
    if summary["failures"]:
        body += [f"<h2>Failures (the first {len(summary['failures'])} of {summary['failed']})</h2>",
                 table(["video", "error"], [[f["video"], f["error"]] for f in summary["failures"]])]
    return page("Batch prediction", "".join(body))
