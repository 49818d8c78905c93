"""Stage 4: evaluate the trained model on the test split.

Each test video's centred clip as extraction stored it (or the mean logits of its evenly
spaced clips), in a fixed order: the same model on the same data gives the same numbers. Scores
come from scikit-learn: top-1 (and top-5 from 5 classes up), macro and weighted precision,
recall and F1, per-class precision, recall, F1 and support, and the confusion matrix. Whether
the model reads motion is measured by scoring the test clips again with their frames reversed
and shuffled: a model whose answers do not change decides from appearance alone, and the report
says so. They are written as KFP metrics, a Markdown summary, seaborn heatmaps and a
self-contained HTML report. A model that a sweep kept carries every trial's settings and
validation scores, which the summary and the report show.
"""

import dataclasses
import logging
from functools import partial
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TOP_K = 5
STRIP_CLIPS = 6  # test clips shown in the report (one per class), with true and predicted class
CONFUSED_PAIRS = 5
FRAME_ORDERS = ("reversed", "shuffled")  # the test clips again, their frames so reordered
ORDER_BLIND = 0.95  # answers that agree this often with both reorderings do not depend on frame order
IGNORES_MOTION = "this model ignores motion: it decides from appearance alone"


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
        frame_order = self.results.get("frame_order")
        order = {} if frame_order is None else {
            **{f"{how}_{score}": frame_order[how][score]
               for how in FRAME_ORDERS for score in ("accuracy", "agreement")},
            "ignores_motion": float(frame_order["ignores_motion"])}
        return scalar_metrics(self.results) | order | per_class


def evaluate(model_dir: Path, frames_dir: Path) -> Evaluation:
    """Scores the model folder's model on the test split of the extracted frames, and again with
    each clip's frames reversed and shuffled, with notes on a model whose answers do not depend
    on frame order, on classes never predicted and on a kept model whose validation score could
    be chance."""
    from components.common import read_manifest
    from components.reports import learning_curves_png
    from components.train_model.model_folder import HISTORY_FILE, SELECTION_FILE, TRIALS_FILE, read
    from components.train_model.sweep import from_record, table

    orders = FRAME_ORDERS if read_manifest(frames_dir)["frame_shape"][0] > 1 else ()  # one frame: no order
    logits, labels, classes, examples, reordered = predict_split(model_dir, frames_dir, examples=STRIP_CLIPS,
                                                                 frame_orders=orders)
    results = score(logits, labels, classes)
    if reordered:
        results["frame_order"] = frame_order_scores(logits, labels, reordered)
        results["notes"] = frame_order_note(results["frame_order"]) + results["notes"]
    selection = read(model_dir, SELECTION_FILE)
    results["kept_model"] = kept_model_line(selection)
    results["notes"] += selection_note(selection)
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
                  examples: int = 0, frame_orders: tuple[str, ...] = (),
                  ) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, np.ndarray], dict[str, np.ndarray]]:
    """The logits (the mean of each video's evenly spaced clips') and true labels of every video
    of a split, in the manifest's order, the classes, up to ``examples`` middle clips by their
    index, the first of each class, and the logits again for each of ``frame_orders`` (of
    FRAME_ORDERS: ``reorder_frames``), the model loaded once for all."""
    from components.common import SEED, read_manifest
    from components.train_model.inputs import batches, split_logits
    from components.train_model.model_folder import load_model

    model, classes = load_model(model_dir)
    manifest = read_manifest(frames_dir)
    if classes != manifest["classes"]:
        raise ValueError(f"the model in {model_dir} was trained on other classes than {frames_dir} holds")
    if unknown := set(frame_orders) - set(FRAME_ORDERS):
        raise ValueError(f"frame_orders must be among {', '.join(FRAME_ORDERS)}, got {sorted(unknown)}")
    logits, labels = split_logits(model, frames_dir, split, batch_size)
    reordered = {order: split_logits(model, frames_dir, split, batch_size, partial(
        reorder_frames, order=order, rng=np.random.default_rng(SEED)))[0] for order in frame_orders}
    kept, shown, index = {}, set(), 0
    for clips, batch_labels in batches(frames_dir, split, batch_size) if examples else ():
        for clip, label in zip(clips.numpy(), batch_labels.numpy(), strict=True):
            if len(kept) < examples and label not in shown:
                kept[index] = clip
                shown.add(label)
            index += 1
    log.info("predicted the %d %s videos of %s (%d clips each, frames as stored%s) with %s", len(labels),
             split, frames_dir, manifest["eval_clips_per_video"], "".join(f", {o}" for o in frame_orders),
             model_dir)
    return logits, labels, classes, kept, reordered


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


def reorder_frames(clips: np.ndarray, order: str, rng: np.random.Generator) -> np.ndarray:
    """A batch of clips ``(batch, frames, ...)``, each with its frames reversed, or shuffled so
    that no frame stays in its place (a derangement, drawn for each clip from ``rng``)."""
    if order == "reversed":
        return clips[:, ::-1]
    frames = clips.shape[1]
    if frames < 2:
        raise ValueError("a clip of one frame cannot be shuffled")
    shuffled = np.empty_like(clips)
    for i, clip in enumerate(clips):
        permutation = rng.permutation(frames)
        while (permutation == np.arange(frames)).any():
            permutation = rng.permutation(frames)
        shuffled[i] = clip[permutation]
    return shuffled


def frame_order_scores(logits: np.ndarray, labels: np.ndarray, reordered: dict[str, np.ndarray]) -> dict:
    """For each reordering of the frames (its logits in ``reordered``), the accuracy and how
    often the answer is the one given to the frames as stored; and whether the answers do not
    depend on frame order (ORDER_BLIND agreement or more under every reordering)."""
    predicted = logits.argmax(axis=1)
    scores = {order: {"accuracy": float((other.argmax(axis=1) == labels).mean()),
                      "agreement": float((other.argmax(axis=1) == predicted).mean())}
              for order, other in reordered.items()}
    return {**scores, "ignores_motion": all(s["agreement"] >= ORDER_BLIND for s in scores.values())}


def frame_order_note(frame_order: dict) -> list[str]:
    """The plain sentence for a model whose answers do not depend on frame order."""
    if not frame_order["ignores_motion"]:
        return []
    agreements = " and ".join(f"{frame_order[order]['agreement']:.0%} with the frames {order}"
                              for order in FRAME_ORDERS)
    return [f"{IGNORES_MOTION} (its answers on the test clips stay the same: {agreements})"]


def kept_model_line(selection: dict) -> str:
    """Which epoch was kept, and how many validation clips the choice rests on."""
    videos = selection.get("val_videos", selection["val_clips"])
    per_video = selection["val_clips"] // videos
    each = ("the centred clip of each" if per_video == 1
            else f"{per_video} evenly spaced clips of each, their logits averaged")
    return (f"kept epoch {selection['epoch']} of {selection['epochs_compared']}, chosen by the validation "
            f"loss on {selection['val_clips']} clips ({videos} videos, {each})")


def selection_note(selection: dict) -> list[str]:
    """A note for the report when the kept model's validation score is within noise of chance."""
    if not selection["within_chance"]:
        return []
    return [f"the kept model (epoch {selection['epoch']}) scored {selection['val_accuracy']:.3f} on "
            f"{selection.get('val_videos', selection['val_clips'])} validation videos, within noise of "
            "chance "
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
    if "frame_order" in results:
        lines += ["", "## Frame order", "", "| test clips | accuracy | same answer as the clips as stored |",
                  "| --- | --- | --- |", f"| as stored | {results['test_accuracy']:.4f} | 1.0000 |"]
        lines += [f"| frames {order} | {results['frame_order'][order]['accuracy']:.4f} | "
                  f"{results['frame_order'][order]['agreement']:.4f} |" for order in FRAME_ORDERS]
    if "kept_model" in results:
        lines += ["", f"Model: {results['kept_model']}."]
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
    order = ""
    if "frame_order" in results:
        verdict = IGNORES_MOTION if results["frame_order"]["ignores_motion"] else (
            "this model's answers depend on the order of the frames: it uses motion")
        verdict = html.escape(verdict[0].upper() + verdict[1:])
        order = (f"<h2>Frame order</h2><p><strong>{verdict}.</strong></p>"
                 + table(["test clips", "accuracy", "same answer as the clips as stored"],
                         [["as stored", results["test_accuracy"], 1.0]]
                         + [[f"frames {how}", results["frame_order"][how]["accuracy"],
                             results["frame_order"][how]["agreement"]] for how in FRAME_ORDERS]))
    kept = f"<p>Model: {html.escape(results['kept_model'])}.</p>" if "kept_model" in results else ""
    images = "".join(f"<h2>{title}</h2>{img_tag(png, title)}" for title, png in figures.items())
    return page("Video classification: test evaluation",
                f"<h2>Headline</h2>{headline}{kept}{notes}{order}<h2>Per class</h2>{per_class}"
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
