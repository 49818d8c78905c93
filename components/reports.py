"""Figures and self-contained HTML pages for the artifacts the KFP UI renders."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
</style>"""


def render_figure(fig: plt.Figure, fmt: str = "png") -> bytes:
    """Renders a matplotlib figure as PNG (or SVG) bytes and closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded, so the page needs no other file."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats are shown with three decimals."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f'<td class="num">{value:.3f}</td>'
        if isinstance(value, int):
            return f'<td class="num">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    """A whole HTML document."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{STYLE}</head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")


def learning_curves_png(history: dict[str, list[float]]) -> bytes:
    """Train against validation loss and accuracy, per epoch."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = range(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], label="train")
        ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_ylim(0, 1.02)
    return render_figure(fig)
