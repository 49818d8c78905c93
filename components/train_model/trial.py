"""The command a trial of a Vertex AI Vizier study runs (``vizier.TRIAL_COMMAND``).

It trains on the run's frames with the settings its arguments give: the fixed ones from the
worker pool spec, and the trial's values that Vertex AI appends (``--learning_rate=0.001``). Its
model folder goes to AIP_MODEL_DIR (or ``--model-dir``), its checkpoints to a folder of its
swept values under ``--checkpoint-root``, its TensorBoard logs to AIP_TENSORBOARD_LOG_DIR where
set. As a trial (``vizier.is_trial``), or with ``--report-metric``, it reports the kept epoch's
validation loss so far after every epoch where Vizier reads it. ``trial.json`` is written last,
so a model folder that has it is whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

import keras

from components.common import setup_logging, write_json
from components.train_model import vizier
from components.train_model.config import TrainConfig
from components.train_model.model_folder import TRIAL_FILE
from components.train_model.sweep import setting_types
from components.train_model.train import train

log = logging.getLogger("videoclf.trial")


class ReportMetric(keras.callbacks.Callback):
    """After each epoch, reports the kept epoch's validation loss so far (the logs' METRIC,
    which ``train.EpochEnd`` sets)."""

    def __init__(self, report: vizier.MetricReport):
        super().__init__()
        self.metric = report

    def on_epoch_end(self, epoch, logs=None):
        self.metric.report(logs[vizier.METRIC], epoch + 1)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=" ".join(vizier.TRIAL_COMMAND), description=__doc__)
    parser.add_argument("--frames", required=True, help="the extracted frames (gs:// or local)")
    parser.add_argument("--checkpoint-root", required=True,
                        help="the folder under which each trial checkpoints to a folder of its swept values")
    parser.add_argument("--swept", default="", help="the swept settings, comma-separated")
    parser.add_argument("--init-model", default="", help="a model folder to start from")
    parser.add_argument("--model-dir", default=os.environ.get(vizier.MODEL_DIR_ENV, ""),
                        help=f"where the model folder goes (default: {vizier.MODEL_DIR_ENV})")
    parser.add_argument("--report-metric", action="store_true",
                        help=f"report {vizier.METRIC} after every epoch even outside a Vertex AI trial")
    for name, kind in setting_types().items():
        parser.add_argument(f"--{name}", metavar=kind.__name__.upper(), type=setting(name, kind))
    return parser


def setting(name: str, kind: type):
    """Reads a setting's argument as ``vizier.read_setting`` does."""
    def parse(text: str):
        return vizier.read_setting(name, text, kind)

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parser().parse_args(argv)
    swept = [name for name in args.swept.split(",") if name]
    settings = {name: getattr(args, name) for name in setting_types() if getattr(args, name) is not None}
    missing = [f"--{name}" for name in swept if name not in settings]
    if missing:
        sys.exit(f"{' '.join(vizier.TRIAL_COMMAND)}: no value for the swept {', '.join(missing)}: "
                 "Vertex AI appends one for each parameter of the study")
    if not args.model_dir:
        sys.exit(f"no model folder: {vizier.MODEL_DIR_ENV} is not set (Vertex AI sets it for each trial); "
                 "pass --model-dir")
    config = TrainConfig(**settings)
    model_dir = Path(vizier.mounted(args.model_dir))
    report = vizier.MetricReport() if args.report_metric or vizier.is_trial() else None
    tensorboard = os.environ.get(vizier.TENSORBOARD_ENV)
    checkpoint_dir = vizier.checkpoint_folder(args.checkpoint_root, settings, swept)
    log.info("trial %s: %s", model_dir.parent.name,
             ", ".join(f"{name}={settings[name]}" for name in swept) or "no swept setting")
    result = train(Path(vizier.mounted(args.frames)), model_dir, config, checkpoint_dir,
                   tensorboard_dir=Path(vizier.mounted(tensorboard)) if tensorboard else None,
                   callbacks=[ReportMetric(report)] if report else (), init_model=args.init_model)
    if report and not report.reports:  # every epoch was trained by an earlier attempt
        report.report(result.metrics[vizier.METRIC], result.metrics["epochs_run"])
    write_json(model_dir / TRIAL_FILE, {
        "trial": model_dir.parent.name, "settings": dataclasses.asdict(config), "swept": swept,
        "metrics": result.metrics, "precision": result.precision, "replicas": result.replicas,
        "frames": args.frames, "checkpoint_dir": checkpoint_dir, "init_model": args.init_model})


if __name__ == "__main__":
    main()
