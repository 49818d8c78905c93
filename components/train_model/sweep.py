"""A sweep: training settings tried on a grid, and the trial kept.

``parse`` reads ``NAME=V1,V2`` specs over any training setting (a field of ``TrainConfig``,
each value read as that field's type and checked as a run would check it); ``grid`` is the
product of their values, in the order given. Each trial is a training run with its own kept
epoch (``selection.json`` of its model folder); ``choose`` keeps the trial of the lowest kept
validation loss, the first of equals: validation only, never a test score (only the trial kept
is evaluated, after the choice). ``table`` and ``metrics`` give every trial's settings and
scores, as Markdown and as KFP metrics; ``write_kept`` writes the outputs of the step that keeps
one, whichever engine ran the trials. Importable without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
from collections.abc import Sequence
from pathlib import Path

from components.train_model.config import TrainConfig
from components.train_model.model_folder import HISTORY_FILE, MODEL_FILE, SELECTION_FILE, TRIALS_FILE, read

MONITOR = "val_loss"  # the kept epoch's validation loss, as selection.json records it
TRIAL = "trial"  # the key of a grid point's name
COLUMNS = ("kept epoch", "val loss", "val accuracy", "epochs run", "kept")  # the table's, after the settings


class SweepError(ValueError):
    """A sweep that cannot run: says which spec or value."""


def setting_types() -> dict[str, type]:
    """Each training setting and its type."""
    hints = typing.get_type_hints(TrainConfig)
    return {field.name: hints[field.name] for field in dataclasses.fields(TrainConfig)}


def read_value(name: str, text: str, kind: type):
    """A value of a setting from its text."""
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise SweepError(f"--sweep {name}: {text!r} is not true or false")
        return text.lower() == "true"
    try:
        return kind(text)
    except ValueError as e:
        raise SweepError(f"--sweep {name}: {text!r} is not a {kind.__name__}") from e


def parse(specs: Sequence[str]) -> dict[str, list]:
    """``["learning_rate=1e-3,1e-4", "base_filters=16,32"]`` -> each setting's values, checked."""
    types, sweep = setting_types(), {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if name not in types:
            raise SweepError(f"--sweep {spec!r}: {name!r} is no training setting; one of "
                             f"{', '.join(types)}")
        if name in sweep:
            raise SweepError(f"--sweep {name} is given twice: give all its values in one, "
                             f"{name}=V1,V2")
        texts = [v.strip() for v in values.split(",") if v.strip()]
        if not texts:
            raise SweepError(f"--sweep {spec!r}: give values, e.g. {name}=V1,V2")
        sweep[name] = [read_value(name, text, types[name]) for text in texts]
        if len(set(sweep[name])) < len(sweep[name]):
            raise SweepError(f"--sweep {name} repeats a value: {sweep[name]}")
        for value in sweep[name]:
            try:
                dataclasses.replace(TrainConfig(), **{name: value}).check()
            except ValueError as e:
                raise SweepError(f"--sweep {name}={value}: {e}") from e
    return sweep


def grid(sweep: dict[str, list]) -> list[dict]:
    """Every combination of the values, in order, each named ``trial-<i>``."""
    points = itertools.product(*sweep.values())
    return [{TRIAL: f"trial-{i}", **dict(zip(sweep, values, strict=True))} for i, values in enumerate(points)]


def typed(settings: dict) -> dict:
    """Settings as their fields' types: a loop item's whole numbers may come as floats."""
    types = setting_types()
    return {name: types[name](value) if types.get(name) is int else value for name, value in settings.items()}


@dataclasses.dataclass
class Trial:
    """One trial: its name and swept settings, its kept epoch's validation scores, and its model."""

    name: str
    settings: dict
    selection: dict
    epochs_run: int
    model: str

    @property
    def loss(self) -> float:
        return float(self.selection[MONITOR])


def read_trial(model_dir: Path, name: str, settings: dict, model: str = "") -> Trial:
    """A trial from its model folder (its ``selection.json`` and ``history.json``)."""
    folder = Path(model_dir)
    selection = json.loads((folder / SELECTION_FILE).read_text())
    history = json.loads((folder / HISTORY_FILE).read_text())
    return Trial(name, settings, selection, len(history[MONITOR]), model or str(folder))


def choose(trials: Sequence[Trial]) -> int:
    """The index of the trial of the lowest kept validation loss (the first of equals)."""
    scored = [i for i, trial in enumerate(trials) if math.isfinite(trial.loss)]
    if not scored:
        raise SweepError("no trial has a finite validation loss: nothing to keep")
    return min(scored, key=lambda i: trials[i].loss)


def table(trials: Sequence[Trial], chosen: int) -> str:
    """Every trial's settings and kept validation scores as Markdown, the kept one marked."""
    names = sorted({name for trial in trials for name in trial.settings})
    lines = ["# Sweep", "",
             f"{len(trials)} trials; kept: {trials[chosen].name}, the lowest validation loss of its kept "
             "epoch (test scores are the kept model's alone).", "",
             "| " + " | ".join(["trial", *names, *COLUMNS]) + " |",
             "| " + " | ".join("---" for _ in ["trial", *names, *COLUMNS]) + " |"]
    for i, trial in enumerate(trials):
        cells = [trial.name, *(str(trial.settings.get(name, "")) for name in names),
                 str(trial.selection["epoch"]), f"{trial.loss:.4f}", f"{trial.selection['val_accuracy']:.4f}",
                 str(trial.epochs_run), "yes" if i == chosen else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def metrics(trials: Sequence[Trial], chosen: int) -> dict[str, float]:
    """The sweep as KFP metrics: the kept trial, and each trial's kept validation scores."""
    values = {"trials": float(len(trials)), "kept_trial": float(chosen),
              "kept_val_loss": trials[chosen].loss}
    for i, trial in enumerate(trials):
        values[f"trial_{i}_val_loss"] = trial.loss
        values[f"trial_{i}_val_accuracy"] = float(trial.selection["val_accuracy"])
    return values


def record(trials: Sequence[Trial], chosen: int) -> dict:
    """What the kept model folder records of its sweep (``trials.json``)."""
    return {"monitor": MONITOR, "kept": chosen, "trials": [dataclasses.asdict(trial) for trial in trials]}


def from_record(recorded: dict) -> tuple[list[Trial], int]:
    """The trials and the kept one's index, as ``record`` wrote them."""
    return [Trial(**trial) for trial in recorded["trials"]], recorded["kept"]


def write_kept(found: Sequence[Trial], chosen: int, kept_dir: Path, outputs: dict, training: dict[str, float],
               lineage_of: tuple[str, dict, dict], metadata: dict) -> None:
    """Writes the outputs (KFP artifacts, by their names in ``select_trial``) of the step that keeps
    ``found[chosen]``: its model folder from ``kept_dir`` with ``trials.json``, the table of every
    trial, the sweep's metrics, its ``training`` metrics and learning curves; the model gets
    ``metadata``, and every artifact the lineage of ``lineage_of`` (producer, parameters, inputs)."""
    import shutil

    from components.common import lineage, write_json
    from components.reports import img_tag, learning_curves_png, page

    model = outputs["model"]
    shutil.copytree(kept_dir, model.path, dirs_exist_ok=True)
    write_json(Path(model.path) / TRIALS_FILE, record(found, chosen))
    Path(outputs["trials"].path).write_text(table(found, chosen))
    for name, value in metrics(found, chosen).items():
        outputs["sweep_metrics"].log_metric(name, value)
    for name, value in training.items():
        outputs["training_metrics"].log_metric(name, value)
    Path(outputs["learning_curves"].path).write_text(page(f"Learning curves of {found[chosen].name}", img_tag(
        learning_curves_png(read(model.path, HISTORY_FILE)), "learning curves")))
    model.metadata.update({**metadata, **lineage(*lineage_of, Path(model.path) / MODEL_FILE)})
    for name in ("trials", "learning_curves"):
        outputs[name].metadata.update(lineage(*lineage_of, Path(outputs[name].path)))
