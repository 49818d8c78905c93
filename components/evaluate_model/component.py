"""The KFP component of the evaluate model stage: a thin typed wrapper."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import EVALUATOR_IMAGE


@dsl.component(base_image=EVALUATOR_IMAGE, install_kfp_package=False)
def evaluate_model(
    frames: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    confusion_matrix_plot: Output[Artifact],
    report: Output[HTML],
):
    """Scores the model on the test split: metrics, confusion matrix, heatmap and report."""
    from pathlib import Path

    from components.common import atomic_write_bytes, setup_logging
    from components.evaluate_model.evaluate import heatmap_png, predict_split, report_html, score

    setup_logging()
    logits, labels, classes = predict_split(Path(model.path), Path(frames.path))
    results = score(logits, labels, classes)
    metrics.log_metric("test_accuracy", results["test_accuracy"])
    metrics.log_metric("test_loss", results["test_loss"])
    for row in results["per_class"]:
        metrics.log_metric(f"precision_{row['class']}", row["precision"])
        metrics.log_metric(f"recall_{row['class']}", row["recall"])
    confusion_matrix.log_confusion_matrix(classes, results["confusion_matrix"])
    heatmap = heatmap_png(results["confusion_matrix"], classes)
    atomic_write_bytes(Path(confusion_matrix_plot.path), heatmap)
    confusion_matrix_plot.metadata["format"] = "png"
    Path(report.path).write_text(report_html(results, heatmap))
