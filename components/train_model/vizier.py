"""A sweep as a Vertex AI Vizier study: what each trial runs, how it reports, and the trials read back.

Vertex AI runs each trial of a hyperparameter tuning job as a custom job of its worker pool specs
(``worker_pool_specs``): the trainer image running ``TRIAL_COMMAND`` with the run's frames and
fixed settings (``trial_args``), to which it appends the trial's values as command-line
arguments (``--learning_rate=0.001``). It sets AIP_MODEL_DIR to ``<base_output_directory>/<trial
id>/model/`` (google-cloud-pipeline-components 2.22.0,
``v1/hyperparameter_tuning_job/component.py``, ``base_output_directory``). A trial reports
METRIC, the kept validation loss so far, after every epoch in the file Vizier reads
(``MetricReport``), and writes its model folder there with ``trial.json`` last (its id, settings
and training metrics). ``read_trials`` reads the finished trials back, so that the trial kept is
chosen by the grid's rule (``sweep.choose``) from the same records. Importable without TensorFlow.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from components.common import atomic_write_bytes
from components.train_model import sweep
from components.train_model.model_folder import SELECTION_FILE, TRIAL_FILE, read
from components.train_model.selection import KEPT_VAL_LOSS

log = logging.getLogger(__name__)

METRIC = KEPT_VAL_LOSS  # the study's metric: the kept epoch's validation loss (selection.json's val_loss)
TRIAL_COMMAND = ["python", "-m", "components.train_model.trial"]
MODEL_DIR_ENV = "AIP_MODEL_DIR"  # set by Vertex AI for each trial: <base_output_directory>/<trial id>/model/
TENSORBOARD_ENV = "AIP_TENSORBOARD_LOG_DIR"
# Where a trial's metric goes, as cloudml-hypertune 0.1.0.dev6 reads its environment
# (hypertune/hypertune.py, HyperTune.__init__): the file CLOUD_ML_HP_METRIC_FILE names, else
# /tmp/hypertune/output.metrics, and the trial's id from CLOUD_ML_TRIAL_ID.
METRIC_FILE_ENV = "CLOUD_ML_HP_METRIC_FILE"
METRIC_FILE = "/tmp/hypertune/output.metrics"
TRIAL_ID_ENV = "CLOUD_ML_TRIAL_ID"
MAX_REPORTS = 100  # the latest reports the file keeps (the library's _MAX_NUM_METRIC_ENTRIES_TO_PRESERVE)
MODEL_SUBDIR = "model"  # a trial's model folder under its own folder of the base output directory
GCS_MOUNT = "/gcs/"  # where Vertex AI custom jobs see Cloud Storage (Cloud Storage FUSE)


def is_trial(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process runs as a trial of a Vertex AI hyperparameter tuning job."""
    return TRIAL_ID_ENV in environ or METRIC_FILE_ENV in environ


class MetricReport:
    """The metric file of a trial, written as cloudml-hypertune 0.1.0.dev6 writes it
    (``HyperTune.report_hyperparameter_tuning_metric``): at each report the file is written anew
    with the latest MAX_REPORTS reports, one JSON object a line with sorted keys: ``timestamp``,
    ``trial``, the metric's tag, ``global_step`` and ``checkpoint_path``, every value but the
    time as a string. Written here through a temporary file, so Vertex AI never reads half a
    file. (The library is a 2018 pre-release, as a source archive only, for these few lines.)"""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        self.path = Path(environ.get(METRIC_FILE_ENV, METRIC_FILE))
        self.trial = str(environ.get(TRIAL_ID_ENV, 0))
        self.reports: collections.deque = collections.deque(maxlen=MAX_REPORTS)

    def report(self, value: float, step: int) -> None:
        """Reports METRIC's ``value`` after ``step`` epochs; a value that is not finite is left out
        (Vizier would have no number to compare)."""
        if not math.isfinite(value):
            log.warning("%s is %s after epoch %d: not reported", METRIC, value, step)
            return
        self.reports.append({"timestamp": time.time(), "trial": self.trial, METRIC: str(float(value)),
                             "global_step": str(int(step)), "checkpoint_path": ""})
        lines = "".join(json.dumps(report, sort_keys=True) + "\n" for report in self.reports)
        atomic_write_bytes(self.path, lines.encode())
        log.info("reported %s %.4f after epoch %d to %s", METRIC, value, step, self.path)


def value_text(value) -> str:
    """A setting's value as a command-line argument."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_setting(name: str, text: str, kind: type):
    """A setting's value from a trial's argument: Vizier hands a discrete value over as a number,
    which may be written ``16.0`` for a whole number."""
    if kind is int:
        try:
            number = float(text)
        except ValueError as e:
            raise sweep.SweepError(f"--{name}: {text!r} is not a number") from e
        if not number.is_integer():
            raise sweep.SweepError(f"--{name}: {text!r} is not a whole number")
        return int(number)
    return sweep.read_value(name, text, kind)


def trial_args(frames_uri: str, settings: Mapping, swept: Sequence[str], checkpoint_root: str,
               init_model: str = "") -> list[str]:
    """The trial command's arguments: the frames, the settings that are not swept (Vertex AI
    appends the swept ones), where checkpoints go, and the model to start from."""
    args = ["--frames", frames_uri, "--checkpoint-root", checkpoint_root, "--swept", ",".join(swept)]
    if init_model:
        args += ["--init-model", init_model]
    return args + [f"--{name}={value_text(value)}" for name, value in settings.items() if name not in swept]


def worker_pool_specs(image: str, machine_type: str, accelerator_type: str, accelerator_count: int,
                      args: list[str]) -> list[dict]:
    """A trial's one worker pool: a machine of ``machine_type`` with the GPUs (none when
    ``accelerator_count`` is 0), running the trial command of ``image``. Fields as the API's
    WorkerPoolSpec names them, which GCPC's launcher passes to it as they are."""
    machine = {"machine_type": machine_type}
    if accelerator_count:
        machine.update(accelerator_type=accelerator_type, accelerator_count=accelerator_count)
    return [{"machine_spec": machine, "replica_count": 1,
             "container_spec": {"image_uri": image, "command": TRIAL_COMMAND, "args": args}}]


def checkpoint_folder(root: str, settings: Mapping, swept: Sequence[str]) -> str:
    """A trial's checkpoint folder, named after its swept values rather than its id: a trial
    restarted by Vertex AI, or suggested again (by a retried job, which numbers its trials from 1
    again), resumes or finds its training done; another trial never meets a folder of other
    settings."""
    return f"{root.rstrip('/')}/" + ",".join(f"{name}={value_text(settings[name])}" for name in swept)


def mounted(uri: str) -> str:
    """The path of a ``gs://`` URI where Vertex AI mounts Cloud Storage; any other as it is."""
    return GCS_MOUNT + uri[len("gs://"):] if uri.startswith("gs://") else uri


def read_trials(folder: Path, uri: str, swept: Sequence[str]) -> list[tuple[sweep.Trial, dict, Path]]:
    """Each trial of the study in ``folder`` (at ``uri``) whose model folder is whole
    (``trial.json`` is written last), in the order of their ids: the trial, named ``trial-<id>``
    with its swept values and model URI, its record, and its model folder. A trial that failed or
    was stopped is logged and left out."""
    found = []  # a trial's folder is named by its id, a number (the folder holds other things too)
    listed = Path(folder).iterdir() if Path(folder).is_dir() else ()
    trial_dirs = sorted((p for p in listed if p.name.isdigit()), key=lambda p: int(p.name))
    for trial_dir in trial_dirs:
        model_dir = trial_dir / MODEL_SUBDIR
        if not (model_dir / TRIAL_FILE).is_file() or not (model_dir / SELECTION_FILE).is_file():
            log.warning("trial %s left no whole model folder in %s: not compared", trial_dir.name, model_dir)
            continue
        record = read(model_dir, TRIAL_FILE)
        settings = {name: record["settings"][name] for name in swept}
        trial = sweep.read_trial(model_dir, f"trial-{trial_dir.name}", settings,
                                 f"{uri.rstrip('/')}/{trial_dir.name}/{MODEL_SUBDIR}")
        found.append((trial, record, model_dir))
    if not found:
        raise sweep.SweepError(f"no trial of the study left a whole model folder in {uri}: see the "
                               "hyperparameter tuning job's trials for why")
    return found


def tuning_job(gcp_resources: str) -> str:
    """The URI of the tuning job that GCPC's ``gcp_resources`` output names."""
    resources = json.loads(gcp_resources).get("resources", [])
    return resources[0].get("resourceUri", "") if resources else ""
