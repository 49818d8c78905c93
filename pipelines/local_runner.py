"""Runs the whole pipeline on this machine with ``kfp.local.SubprocessRunner``.

Each component runs in a subprocess of this Python, which must have the project installed.
Artifacts land under ``output_dir``; a summary of the run is written to ``summary.json``.
"""

import json
import logging
import os
import warnings
from pathlib import Path

from components.common import atomic_write_bytes, write_json

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def link(name: Path, artifact: str) -> str:
    """Copies a file artifact to a name with its extension, so a browser opens it as it is (a
    browser follows a symbolic link to the artifact's own name, which has none, and shows text)."""
    atomic_write_bytes(name, Path(artifact).read_bytes())
    return str(name)


def run_local(params: dict, output_dir: Path) -> dict:
    """Runs the pipeline with ``params``; returns the summary it also writes to ``output_dir``."""
    from kfp import local

    from components.train_model.train import MODEL_FILE
    from pipelines.video_classification import video_classification_pipeline

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_MININTERVAL", "5")  # the runner prints each bar update as a line
    # Image names and resource requests matter on a cluster only; the local runner warns of both.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output_dir),
               raise_on_error=True)
    log.info("running the pipeline locally; artifacts go to %s", output_dir)
    outputs = video_classification_pipeline(**params).outputs
    test = outputs["test_metrics"].metadata
    training = outputs["training_metrics"].metadata
    run_dir = Path(outputs["report"].path).parents[1]
    summary = {
        "test_accuracy": test["test_accuracy"],
        "test_loss": test["test_loss"],
        "train_accuracy": training["train_accuracy"],
        "val_accuracy": training["val_accuracy"],
        "best_epoch": int(training["best_epoch"]),
        "epochs_run": int(training["epochs_run"]),
        "train_clips_per_second": training["train_clips_per_second"],
        "num_classes": len(outputs["model"].metadata["classes"]),
        "classes": outputs["model"].metadata["classes"],
        "report": link(run_dir / "report.html", outputs["report"].path),
        "model": str(Path(outputs["model"].path) / MODEL_FILE),
        "confusion_matrix": link(run_dir / "confusion_matrix.png",
                                 outputs["confusion_matrix_plot"].path),
        "learning_curves": link(run_dir / "learning_curves.html", outputs["learning_curves"].path),
        "summary": link(run_dir / "summary.md", outputs["summary"].path),
        "tensorboard": outputs["tensorboard"].path,
        "run_dir": str(run_dir),
        "params": params,
    }
    write_json(output_dir / SUMMARY_FILE, summary)
    return summary


def print_summary(summary: dict) -> None:
    """Prints the summary as one line of JSON, the last line of a run's output."""
    print(json.dumps(summary), flush=True)
