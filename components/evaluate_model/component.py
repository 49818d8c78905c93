"""The KFP component of the evaluate model stage: a thin typed wrapper."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import latest


@dsl.component(base_image=latest("evaluator"), install_kfp_package=False)
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
    from collections import namedtuple
    from pathlib import Path

    from components.common import atomic_write_bytes, lineage, setup_logging
    from components.evaluate_model.evaluate import evaluate

    setup_logging()
    evaluation = evaluate(Path(model.path), Path(frames.path))
    for name, value in evaluation.metrics.items():
        metrics.log_metric(name, value)
    confusion_matrix.log_confusion_matrix(evaluation.classes, evaluation.results["confusion_matrix"])
    atomic_write_bytes(Path(confusion_matrix_plot.path), evaluation.heatmap)
    confusion_matrix_plot.metadata["format"] = "png"
    Path(summary.path).write_text(evaluation.summary)
    Path(report.path).write_text(evaluation.report)
    inputs = {"frames": frames.uri, "model": model.uri}
    for artifact in (confusion_matrix_plot, summary, report):
        artifact.metadata.update({"classes": evaluation.classes, "test_clips": evaluation.test_clips,
                                  **lineage("evaluate_model", {}, inputs, Path(artifact.path))})
    return namedtuple("Evaluation", ["test_accuracy"])(evaluation.results["test_accuracy"])
