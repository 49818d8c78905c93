"""Stage 3: train the (2+1)D ResNet on the extracted clips, on CPUs or GPUs, resumably.

Adam and sparse categorical cross-entropy from logits, as in the tutorial. After every epoch
the compiled model (weights and optimizer state) and the training state (history, best epoch,
the early-stopping count) go to a checkpoint folder: a local path, a mounted PVC or ``gs://``.
Started again with the same folder, training resumes after the last completed epoch. (Keras's
BackupAndRestore restores weights and epoch only, so the best model and early stopping would
start over; hence this stage's own checkpoints.) A failure that would recur with the same
settings, a diverged loss, is recorded in the state: a retry of the task ends at once with the
same error instead of training again.

The output model folder holds the best epoch's ``model.keras`` by validation accuracy (it loads
back once ``components.train_model.model`` is imported), ``classes.json`` (the class of each
logit), ``history.json`` (the metrics of every epoch) and ``sampling.json`` (frame shape and
step, and evaluation clips per video, so that new videos are sampled as test videos were).
"""

import dataclasses
import json
import logging
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from components.common import MANIFEST, file_sha256, read_manifest, write_json
from components.storage import Folder
from components.train_model.config import RESUMABLE_CHANGES, TrainConfig
from components.train_model.inputs import batches
from components.train_model.model import build_model  # also registers the custom layers

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"
SAMPLING_FILE = "sampling.json"  # how clips were sampled, for prediction on new videos
# What prediction needs to sample a video as the training videos were: the frame shape, the
# step in frames or the seconds a clip covers, the training videos' frame rate, and how many
# evenly spaced clips a test video had.
SAMPLING_KEYS = ("frame_shape", "frame_step", "clip_seconds", "train_fps", "eval_clips_per_video")
STATE_FILE = "state.json"
DEFAULT_CHECKPOINTS = "checkpoints"  # in the model folder, removed on success, when none is given


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """The checkpoint folder holds a run made with other settings or data."""


@dataclasses.dataclass
class TrainingResult:
    history: dict[str, list[float]]
    metrics: dict[str, float]
    precision: str
    replicas: int


def resolve_precision(precision: str, gpus: int) -> str:
    """The Keras dtype policy: ``auto`` is mixed_float16 on a GPU and float32 on a CPU."""
    if precision == "auto":
        return "mixed_float16" if gpus else "float32"
    return precision


class Checkpoints:
    """A training run's checkpoints: ``state.json`` and the last and best epochs' models."""

    def __init__(self, uri: str, fingerprint: dict):
        self.folder = Folder(uri)
        self.fingerprint = fingerprint

    def load_state(self) -> dict:
        """The saved training state, or a fresh one. Refuses a run made with other settings, and
        raises again the failure an earlier attempt with these settings recorded."""
        text = self.folder.read_text(STATE_FILE)
        if text is None:
            return {"fingerprint": self.fingerprint, "epoch": 0, "history": {}, "epoch_seconds": [],
                    "best_epoch": 0, "best_val_accuracy": -1.0, "last": None, "best": None,
                    "stopped_early": False}
        state = json.loads(text)
        saved = state["fingerprint"]
        changed = sorted(k for k in saved.keys() | self.fingerprint.keys()
                         if saved.get(k) != self.fingerprint.get(k))
        if changed:
            raise CheckpointMismatchError(
                f"{self.folder.uri} holds a training run with other {', '.join(changed)}: give "
                f"another checkpoint_dir, or delete that one to start over")
        if state.get("failure"):
            raise TrainingDivergedError(f"{state['failure']} (recorded in {self.folder.uri}/{STATE_FILE} "
                                        "by an earlier attempt with these settings)")
        return state

    def record_failure(self, state: dict, message: str) -> None:
        """Records a failure that would recur, beside the last good epoch."""
        self.folder.write_text(STATE_FILE, json.dumps({**state, "failure": message}, indent=2))

    def load_model(self, name: str) -> keras.Model:
        with tempfile.TemporaryDirectory() as tmp:
            self.folder.download(name, Path(tmp) / MODEL_FILE)
            return keras.models.load_model(Path(tmp) / MODEL_FILE)

    def save(self, model, state: dict, improved: bool) -> None:
        """Saves the epoch's model (as the best too if it improved), then the state naming them."""
        stale = {state["last"], state["best"] if improved else None} - {None}
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / MODEL_FILE)
            state["last"] = f"epoch-{state['epoch']:04d}.keras"
            self.folder.upload(Path(tmp) / MODEL_FILE, state["last"])
            if improved:
                state["best"] = f"best-{state['epoch']:04d}.keras"
                self.folder.upload(Path(tmp) / MODEL_FILE, state["best"])
        self.folder.write_text(STATE_FILE, json.dumps(state, indent=2))
        for name in stale - {state["last"], state["best"]}:
            self.folder.delete(name)


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: stops on a NaN loss, checkpoints, keeps the best model by validation
    accuracy, and stops early after ``patience`` epochs without a better one."""

    def __init__(self, checkpoints: Checkpoints, state: dict, patience: int):
        super().__init__()
        self.checkpoints, self.state, self.patience = checkpoints, state, patience

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):  # validation begins: the epoch's training steps are done
        self.train_seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        state, where = self.state, self.checkpoints.folder.uri
        if not math.isfinite(logs["loss"]):
            message = (f"the training loss became {logs['loss']} in epoch {epoch + 1}; the last good "
                       f"checkpoint (epoch {state['epoch']}) is in {where}; try a lower learning_rate")
            self.checkpoints.record_failure(state, message)
            raise TrainingDivergedError(message)
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(float(value))
        state["epoch"] = epoch + 1
        state["epoch_seconds"].append(self.train_seconds or time.perf_counter() - self.start)
        improved = logs["val_accuracy"] > state["best_val_accuracy"]
        if improved:
            state["best_epoch"], state["best_val_accuracy"] = epoch + 1, float(logs["val_accuracy"])
        if self.patience and state["epoch"] - state["best_epoch"] >= self.patience:
            log.info("stopping early: no better val_accuracy in the %d epochs since epoch %d",
                     self.patience, state["best_epoch"])
            state["stopped_early"] = self.model.stop_training = True
        self.checkpoints.save(self.model, state, improved)
        log.info("epoch %d saved to %s; best: epoch %d, val_accuracy %.4f",
                 state["epoch"], where, state["best_epoch"], state["best_val_accuracy"])


def train(frames_dir: Path, model_dir: Path, config: TrainConfig, checkpoint_dir: str = "",
          tensorboard_dir: Path | None = None) -> TrainingResult:
    """Trains, or resumes from ``checkpoint_dir``, and writes the model folder.

    Without ``checkpoint_dir``, checkpoints go to ``model_dir/checkpoints``, so a retried task
    whose output folder survives (a mounted bucket or volume) resumes too.
    """
    config.check()
    frames_dir, model_dir = Path(frames_dir), Path(model_dir)
    manifest = read_manifest(frames_dir)
    classes = manifest["classes"]
    fingerprint = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_CHANGES}
    checkpoints = Checkpoints(checkpoint_dir or str(model_dir / DEFAULT_CHECKPOINTS),
                              {**fingerprint, "dataset": file_sha256(frames_dir / MANIFEST)})
    state = checkpoints.load_state()

    gpus = len(tf.config.list_physical_devices("GPU"))
    strategy = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    precision = resolve_precision(config.precision, gpus)
    if state["stopped_early"] or state["epoch"] >= config.epochs:
        log.info("%s already holds %d epochs%s: nothing left to train", checkpoints.folder.uri,
                 state["epoch"], " (stopped early)" if state["stopped_early"] else "")
    else:
        fit(frames_dir, manifest, config, checkpoints, state, strategy, precision, tensorboard_dir)

    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        checkpoints.folder.download(state["best"], Path(tmp) / MODEL_FILE)
        (Path(tmp) / MODEL_FILE).replace(model_dir / MODEL_FILE)
    write_json(model_dir / CLASSES_FILE, classes)
    write_json(model_dir / HISTORY_FILE, state["history"])
    write_json(model_dir / SAMPLING_FILE, {key: manifest.get(key) for key in SAMPLING_KEYS})
    if not checkpoint_dir:
        shutil.rmtree(model_dir / DEFAULT_CHECKPOINTS)
    return TrainingResult(state["history"], training_metrics(state, manifest["counts"]["train"]),
                          precision, strategy.num_replicas_in_sync)


def fit(frames_dir: Path, manifest: dict, config: TrainConfig, checkpoints: Checkpoints, state: dict,
        strategy: tf.distribute.Strategy, precision: str, tensorboard_dir: Path | None) -> None:
    """Builds the model, or loads the last checkpoint's, and trains the epochs left."""
    keras.utils.set_random_seed(config.seed + state["epoch"])
    global_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        with strategy.scope():
            if state["last"]:
                log.info("resuming after epoch %d from %s", state["epoch"], checkpoints.folder.uri)
                model = checkpoints.load_model(state["last"])
            else:
                model = build_model(len(manifest["classes"]), *manifest["frame_shape"][:3],
                                    base_filters=config.base_filters,
                                    blocks_per_stage=config.blocks_per_stage)
                model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=["accuracy"])
        batch_size = config.batch_size * strategy.num_replicas_in_sync
        log.info("training %s (%d parameters, %s, %d replica(s), batch %d) on %d clips, "
                 "epochs %d to %d", model.name, model.count_params(), precision,
                 strategy.num_replicas_in_sync, batch_size, manifest["counts"]["train"],
                 state["epoch"] + 1, config.epochs)
        callbacks = [EpochCheckpoint(checkpoints, state, config.patience)]
        if tensorboard_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(str(tensorboard_dir)))
        model.fit(batches(frames_dir, "train", batch_size, training=True,
                          seed=config.seed + state["epoch"], flip=config.random_flip),
                  validation_data=batches(frames_dir, "val", batch_size),
                  initial_epoch=state["epoch"], epochs=config.epochs, shuffle=False,
                  callbacks=callbacks, verbose=2)
    finally:
        keras.mixed_precision.set_global_policy(global_policy)


def training_metrics(state: dict, train_clips: int) -> dict[str, float]:
    """Epochs run, the best epoch, training throughput and the last epoch's loss and accuracy."""
    history = state["history"]
    return {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
            "best_val_accuracy": state["best_val_accuracy"],
            "stopped_early": int(state["stopped_early"]),
            "train_clips_per_second": train_clips / statistics.median(state["epoch_seconds"]),
            "train_loss": history["loss"][-1], "train_accuracy": history["accuracy"][-1],
            "val_loss": history["val_loss"][-1], "val_accuracy": history["val_accuracy"][-1]}


def load_model(model_dir: Path):
    """Loads a trained model folder: the Keras model and its class names."""
    model_dir = Path(model_dir)
    model = keras.models.load_model(model_dir / MODEL_FILE)
    return model, json.loads((model_dir / CLASSES_FILE).read_text())
