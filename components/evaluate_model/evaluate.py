"""Stage 4: evaluate the trained model on the test split.

Test loss and accuracy, the confusion matrix, and per-class precision and recall
(scikit-learn), written as KFP metrics, a seaborn heatmap and a self-contained HTML report.
"""

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def predict_split(model_dir: Path, frames_dir: Path, split: str = "test",
                  batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The logits and true labels of every clip of a split, in a fixed order, and the classes."""
    from components.common import read_manifest
    from components.train_model.inputs import batches
    from components.train_model.train import load_model

    model, classes = load_model(model_dir)
    if classes != read_manifest(frames_dir)["classes"]:
        raise ValueError(f"the model in {model_dir} was trained on other classes than {frames_dir} holds")
    dataset = batches(frames_dir, split, batch_size)
    logits, labels = [], []
    for clips, batch_labels in dataset:
        logits.append(model.predict_on_batch(clips))
        labels.append(batch_labels.numpy())
    return np.concatenate(logits), np.concatenate(labels), classes


def score(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Loss, accuracy, confusion matrix and per-class precision, recall and F1."""
    from scipy.special import log_softmax
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = logits.argmax(axis=1)
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, zero_division=0)
    return {
        "test_loss": float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean()),
        "test_accuracy": float((predicted == labels).mean()),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f),
                       "support": int(s)}
                      for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)],
    }


def heatmap_png(matrix: list[list[int]], classes: list[str]) -> bytes:
    """The confusion matrix as a seaborn heatmap: rows are true classes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from components.reports import figure_png

    size = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    sns.heatmap(np.array(matrix), annot=True, fmt="d", cmap="Blues", cbar=False,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test)")
    return figure_png(fig)


def report_html(results: dict, heatmap: bytes) -> str:
    """The evaluation report: headline numbers, per-class table and the heatmap."""
    from components.reports import img_tag, page, table

    headline = table(["metric", "value"], [["test accuracy", results["test_accuracy"]],
                                           ["test loss", results["test_loss"]],
                                           ["test clips", sum(map(sum, results["confusion_matrix"]))]])
    per_class = table(["class", "precision", "recall", "F1", "support"],
                      [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
                       for r in results["per_class"]])
    return page("Video classification: test evaluation",
                f"<h2>Headline</h2>{headline}<h2>Per class</h2>{per_class}"
                f"<h2>Confusion matrix</h2>{img_tag(heatmap, 'confusion matrix')}")
