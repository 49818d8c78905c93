"""The KFP component of the evaluate model stage: a thin typed wrapper."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import image


@dsl.component(base_image=image("evaluator"), install_kfp_package=False)
def evaluate_model(
    frames: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    confusion_matrix_plot: Output[Artifact],
    summary: Output[Markdown],
    report: Output[HTML],
) -> NamedTuple("Evaluation", [("test_accuracy", float)]):
    """Scores the model on the test split: metrics, confusion matrix, summary and report; the
    test accuracy is also an output parameter, for the pipeline's deploy gate."""
    import json
    from collections import namedtuple
    from pathlib import Path

    import numpy as np

    from components.common import atomic_write_bytes, lineage, setup_logging
    from components.evaluate_model.evaluate import (
        STRIP_CLIPS,
        frame_strip_png,
        heatmap_png,
        predict_split,
        report_html,
        scalar_metrics,
        score,
        selection_note,
        summary_markdown,
    )
    from components.reports import learning_curves_png
    from components.train_model.train import HISTORY_FILE, SELECTION_FILE

    setup_logging()
    logits, labels, classes, examples = predict_split(Path(model.path), Path(frames.path),
                                                      examples=STRIP_CLIPS)
    results = score(logits, labels, classes)
    results["notes"] += selection_note(json.loads((Path(model.path) / SELECTION_FILE).read_text()))
    for name, value in scalar_metrics(results).items():
        metrics.log_metric(name, value)
    for row in results["per_class"]:
        metrics.log_metric(f"precision_{row['class']}", row["precision"])
        metrics.log_metric(f"recall_{row['class']}", row["recall"])
    confusion_matrix.log_confusion_matrix(classes, results["confusion_matrix"])
    heatmap = heatmap_png(results["confusion_matrix"], classes)
    atomic_write_bytes(Path(confusion_matrix_plot.path), heatmap)
    confusion_matrix_plot.metadata["format"] = "png"
    Path(summary.path).write_text(summary_markdown(results))
    history = json.loads((Path(model.path) / HISTORY_FILE).read_text())
    figures = {
        "Confusion matrix": heatmap,
        "Confusion matrix, normalised by row": heatmap_png(results["confusion_matrix"], classes, True),
        "Learning curves": learning_curves_png(history),
        "Test clips: first, middle and last frames": frame_strip_png(
            np.stack(list(examples.values())), labels[list(examples)],
            logits[list(examples)].argmax(axis=1), classes),
    }
    Path(report.path).write_text(report_html(results, figures))
    inputs = {"frames": frames.uri, "model": model.uri}
    for artifact in (confusion_matrix_plot, summary, report):
        artifact.metadata.update({"classes": classes, "test_clips": len(labels),
                                  **lineage("evaluate_model", {}, inputs, Path(artifact.path))})
    return namedtuple("Evaluation", ["test_accuracy"])(results["test_accuracy"])
