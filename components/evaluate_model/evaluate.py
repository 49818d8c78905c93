"""Stage 4: evaluate the trained model on the test split.

Each test video's centred clip as extraction stored it (or the mean logits of its evenly
spaced clips), in a fixed order: the same model on the same data gives the same numbers. Scores
come from scikit-learn: top-1 (and top-5 from 5 classes up), macro and weighted precision,
recall and F1, per-class precision, recall, F1 and support, and the confusion matrix. They are
written as KFP metrics, a Markdown summary, seaborn heatmaps and a self-contained HTML report.
A model that a sweep kept carries every trial's settings and validation scores, which the
summary and the report show.
"""

import dataclasses
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TOP_K = 5
STRIP_CLIPS = 6  # test clips shown in the report (one per class), with true and predicted class
CONFUSED_PAIRS = 5


@dataclasses.dataclass
class Evaluation:
    """What evaluation writes: the scores, the confusion matrix as a picture, the Markdown
    summary and the HTML report."""

    results: dict
    classes: list[str]
    test_clips: int
    heatmap: bytes
    summary: str
    report: str

    @property
    def metrics(self) -> dict[str, float]:
        """The numbers the pipeline UI shows: the scalars, and each class's precision and recall."""
        per_class = {f"{score}_{row['class']}": row[score] for row in self.results["per_class"]
                     for score in ("precision", "recall")}
        return scalar_metrics(self.results) | per_class


def evaluate(model_dir: Path, frames_dir: Path) -> Evaluation:
    """Scores the model folder's model on the test split of the extracted frames, with notes on
    classes never predicted and on a kept model whose validation score could be chance."""
    from components.reports import learning_curves_png
    from components.train_model.model_folder import HISTORY_FILE, SELECTION_FILE, TRIALS_FILE, read
    from components.train_model.sweep import from_record, table

    logits, labels, classes, examples = predict_split(model_dir, frames_dir, examples=STRIP_CLIPS)
    results = score(logits, labels, classes)
    results["notes"] += selection_note(read(model_dir, SELECTION_FILE))
    heatmap = heatmap_png(results["confusion_matrix"], classes)
    figures = {
        "Confusion matrix": heatmap,
        "Confusion matrix, normalised by row": heatmap_png(results["confusion_matrix"], classes, True),
        "Learning curves": learning_curves_png(read(model_dir, HISTORY_FILE)),
        "Test clips: first, middle and last frames": frame_strip_png(
            np.stack(list(examples.values())), labels[list(examples)],
            logits[list(examples)].argmax(axis=1), classes),
    }
    has_sweep = (Path(model_dir) / TRIALS_FILE).is_file()
    sweep = table(*from_record(read(model_dir, TRIALS_FILE))) if has_sweep else ""
    summary = summary_markdown(results) + (f"\n{sweep}" if sweep else "")
    return Evaluation(results, classes, len(labels), heatmap, summary, report_html(results, figures, sweep))


def predict_split(model_dir: Path, frames_dir: Path, split: str = "test", batch_size: int = 8,
                  examples: int = 0) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, np.ndarray]]:
    """The logits (the mean of each video's evenly spaced clips') and true labels of every video
    of a split, in the manifest's order, the classes, and up to ``examples`` middle clips by their
    index, the first of each class."""
    from components.common import read_manifest
    from components.train_model.inputs import batches, split_logits
    from components.train_model.model_folder import load_model

    model, classes = load_model(model_dir)
    manifest = read_manifest(frames_dir)
    if classes != manifest["classes"]:
        raise ValueError(f"the model in {model_dir} was trained on other classes than {frames_dir} holds")
    logits, labels = split_logits(model, frames_dir, split, batch_size)
    kept, shown, index = {}, set(), 0
    for clips, batch_labels in batches(frames_dir, split, batch_size) if examples else ():
        for clip, label in zip(clips.numpy(), batch_labels.numpy(), strict=True):
            if len(kept) < examples and label not in shown:
                kept[index] = clip
                shown.add(label)
            index += 1
    log.info("predicted the %d %s videos of %s (%d clips each) with %s", len(labels), split, frames_dir,
             manifest["eval_clips_per_video"], model_dir)
    return logits, labels, classes, kept


def score(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Loss, top-1 (and top-5) accuracy, averaged and per-class precision, recall and F1, the
    confusion matrix, its most confused pairs, and notes on classes never predicted."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    from components.train_model.scores import loss_and_accuracy

    predicted = logits.argmax(axis=1)
    indices = list(range(len(classes)))
    loss, accuracy = loss_and_accuracy(logits, labels)
    results = {"test_loss": loss, "test_accuracy": accuracy}
    if len(classes) >= TOP_K:
        results[f"test_top{TOP_K}_accuracy"] = float(
            top_k_accuracy_score(labels, logits, k=TOP_K, labels=indices))
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, predicted, labels=indices,
                                                     average=average, zero_division=0)
        results |= {f"{average}_precision": float(p), f"{average}_recall": float(r),
                    f"{average}_f1": float(f)}
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0)
    matrix = confusion_matrix(labels, predicted, labels=indices)
    pairs = sorted(((int(matrix[t, p]), t, p) for t in indices for p in indices if t != p and matrix[t, p]),
                   reverse=True)[:CONFUSED_PAIRS]
    never = [classes[i] for i in indices if matrix[:, i].sum() == 0]
    return results | {
        "confusion_matrix": matrix.tolist(),
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f),
                       "support": int(s)}
                      for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)],
        "most_confused": [{"true": classes[t], "predicted": classes[p], "clips": n} for n, t, p in pairs],
        "notes": [f"{c} is never predicted: its precision is reported as 0" for c in never],
    }


def selection_note(selection: dict) -> list[str]:
    """A note for the report when the kept model's validation score is within noise of chance."""
    if not selection["within_chance"]:
        return []
    return [f"the kept model (epoch {selection['epoch']}) scored {selection['val_accuracy']:.3f} on "
            f"{selection['val_clips']} validation clips, within noise of chance "
            f"({selection['chance_accuracy']:.3f}: p = {selection['p_value']:.2f} as the best of "
            f"{selection['epochs_compared']} epochs); it may have learned nothing, and more validation "
            "clips would tell"]


def scalar_metrics(results: dict) -> dict[str, float]:
    """The single numbers of ``score``'s results."""
    return {k: v for k, v in results.items() if isinstance(v, float)}


def heatmap_png(matrix: list[list[int]], classes: list[str], normalize: bool = False) -> bytes:
    """The confusion matrix as a seaborn heatmap, rows the true classes: counts, or each row
    divided by its total (the recall of each class on the diagonal)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from components.reports import render_figure

    values = np.array(matrix, dtype=float if normalize else int)
    if normalize:
        values = values / np.maximum(values.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    sns.heatmap(values, annot=True, fmt=".2f" if normalize else "d", cmap="Blues", cbar=False,
                xticklabels=classes, yticklabels=classes, ax=ax, vmin=0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test, normalised by row)" if normalize else "Confusion matrix (test)")
    return render_figure(fig)


def frame_strip_png(clips: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    classes: list[str]) -> bytes:
    """A row per clip: its first, middle and last frames, titled with true and predicted class."""
    import matplotlib.pyplot as plt

    from components.reports import render_figure

    fig, axes = plt.subplots(len(clips), 3, figsize=(6, 2.1 * len(clips)), squeeze=False)
    for row, (clip, true, guess) in enumerate(zip(clips, labels, predicted, strict=True)):
        for col, t in enumerate((0, len(clip) // 2, len(clip) - 1)):
            axes[row, col].imshow(clip[t])
            axes[row, col].axis("off")
        verdict = "right" if true == guess else "WRONG"
        axes[row, 0].set_title(f"true {classes[true]}, predicted {classes[guess]} ({verdict})",
                               loc="left", fontsize=9)
    return render_figure(fig)


def summary_markdown(results: dict) -> str:
    """The headline numbers, per-class table, notes and most confused pairs, for the KFP UI."""
    lines = ["# Test evaluation", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in scalar_metrics(results).items()]
    lines += ["", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
              for r in results["per_class"]]
    if results["most_confused"]:
        lines += ["", "Most confused (true -> predicted): " + ", ".join(
            f"{p['true']} -> {p['predicted']} ({p['clips']})" for p in results["most_confused"])]
    lines += ["", *(f"Note: {note}." for note in results["notes"])]
    return "\n".join(lines).rstrip() + "\n"


def report_html(results: dict, figures: dict[str, bytes], sweep: str = "") -> str:
    """The evaluation report: headline numbers, per-class table, notes, most confused pairs, the
    sweep's trials (its Markdown table) where a sweep kept the model, and the figures given
    (title -> PNG), all in one file."""
    import html

    from components.reports import img_tag, page, table

    headline = table(["metric", "value"], [[k, v] for k, v in scalar_metrics(results).items()]
                     + [["test clips", int(sum(map(sum, results["confusion_matrix"])))]])
    per_class = table(["class", "precision", "recall", "F1", "support"],
                      [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
                       for r in results["per_class"]])
    confused = table(["true", "predicted", "clips"],
                     [[p["true"], p["predicted"], p["clips"]] for p in results["most_confused"]]
                     or [["none: no test clip was misclassified", "", ""]])
    notes = "".join(f"<p>Note: {html.escape(note)}.</p>" for note in results["notes"])
    images = "".join(f"<h2>{title}</h2>{img_tag(png, title)}" for title, png in figures.items())
    return page("Video classification: test evaluation",
                f"<h2>Headline</h2>{headline}<h2>Per class</h2>{per_class}{notes}"
                f"<h2>Most confused pairs</h2>{confused}{sweep_html(sweep)}{images}")


def sweep_html(sweep: str) -> str:
    """The sweep's Markdown (a heading, a sentence and a table) as HTML."""
    import html

    from components.reports import table

    if not sweep:
        return ""
    lines = [line for line in sweep.splitlines() if line]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    return (f"<h2>Sweep</h2><p>{html.escape(lines[1])}</p>"
            + table(rows[0], rows[2:]))
