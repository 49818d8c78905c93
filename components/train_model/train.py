"""Stage 3: train the (2+1)D ResNet on the extracted clips, on CPUs or GPUs, resumably.

The recipe (``config.RECIPES``) sets the optimizer, the learning-rate schedule, weight decay,
label smoothing and augmentation; the tutorial's is one of them. After every epoch the model is
scored on the validation videos as evaluation scores test videos (the mean logits of each
video's evenly spaced clips), and the compiled model (weights and optimizer state) and the
training state (history, the kept epoch, the early-stopping count) go to a checkpoint folder: a
local path, a mounted PVC, ``gs://`` or ``s3://``. Started again with the same folder, training
resumes after the last completed epoch. (Keras's BackupAndRestore restores weights and epoch
only, so the kept model and early stopping would start over; hence this stage's own
checkpoints.) A failure that would recur with the same settings, a diverged loss, is recorded in
the state: a retry of the task ends at once with the same error instead of training again.

The kept model is the epoch of the lowest validation loss, the later one of equals: the loss
moves with every clip's confidence, where accuracy on a few dozen clips jumps by luck. Training
stops early after ``patience`` epochs past the warm-up without the loss falling by MIN_DELTA.
``selection.json`` says whether the kept model's validation accuracy could be chance, for that
many clips and the epochs it was chosen from.

The output model folder holds the kept epoch's ``model.keras`` (it loads back once
``components.train_model.model`` is imported) and the same as a TensorFlow SavedModel
(``saved_model/``, ``export.py``), ``classes.json`` (the class of each logit),
``history.json`` (the metrics of every epoch), ``selection.json`` and ``sampling.json`` (how
clips were sampled, so that new videos are sampled as test videos were).
"""

import dataclasses
import json
import logging
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from components.common import MANIFEST, file_sha256, read_manifest, write_json
from components.storage import Folder
from components.train_model.config import RESUMABLE_CHANGES, TrainConfig
from components.train_model.export import SAVED_MODEL_DIR, export_saved_model
from components.train_model.inputs import batches, split_logits
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
SELECTION_FILE = "selection.json"  # which epoch was kept, and whether its score could be chance
STATE_FILE = "state.json"
DEFAULT_CHECKPOINTS = "checkpoints"  # in the model folder, removed on success, when none is given
MIN_DELTA = 1e-3  # a fall of the validation loss smaller than this is no progress for early stopping
CHANCE_LEVEL = 0.05  # a kept accuracy this likely or more under guessing is within noise of chance


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
                    "best_epoch": 0, "best_val_loss": math.inf, "progress_epoch": 0,
                    "progress_val_loss": math.inf, "last": None, "best": None, "stopped_early": False}
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


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The log of the softmax over the last axis, computed stably (no SciPy in the trainer and
    serving images)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The mean cross-entropy and the accuracy of logits: how validation and test videos are scored."""
    return (float(-log_softmax(logits)[np.arange(len(labels)), labels].mean()),
            float((logits.argmax(axis=1) == labels).mean()))


def should_stop(state: dict, patience: int, warmup_epochs: int) -> bool:
    """Whether ``patience`` epochs after the warm-up have passed without progress."""
    return bool(patience) and state["epoch"] - max(state["progress_epoch"], warmup_epochs) >= patience


def record_epoch(state: dict, logs: dict[str, float], patience: int, warmup_epochs: int) -> bool:
    """Adds an epoch's scores to the state: the kept epoch is that of the lowest validation loss,
    the later of equals; progress, for early stopping, is a fall of MIN_DELTA or more. Returns
    whether this epoch is now the kept one."""
    for key, value in logs.items():
        state["history"].setdefault(key, []).append(float(value))
    state["epoch"] += 1
    kept = logs["val_loss"] <= state["best_val_loss"]
    if kept:
        state["best_epoch"], state["best_val_loss"] = state["epoch"], float(logs["val_loss"])
    if logs["val_loss"] < state["progress_val_loss"] - MIN_DELTA:
        state["progress_epoch"], state["progress_val_loss"] = state["epoch"], float(logs["val_loss"])
    state["stopped_early"] = should_stop(state, patience, warmup_epochs)
    return kept


def chance(accuracy: float, clips: int, classes: int, epochs: int) -> dict:
    """How likely guessing scores ``accuracy`` or more on ``clips`` clips, at best of ``epochs``
    tries (Bonferroni), and whether that is within noise (CHANCE_LEVEL or more)."""
    rate, correct = 1 / classes, round(accuracy * clips)
    tail = sum(math.comb(clips, k) * rate**k * (1 - rate) ** (clips - k) for k in range(correct, clips + 1))
    p_value = min(1.0, tail * max(1, epochs))
    return {"chance_accuracy": rate, "p_value": p_value, "within_chance": p_value >= CHANCE_LEVEL}


class EpochEnd(keras.callbacks.Callback):
    """After each epoch: stops on a NaN loss, scores the validation videos, checkpoints, keeps
    the model of the lowest validation loss, and stops early without progress."""

    def __init__(self, frames_dir: Path, batch_size: int, checkpoints: Checkpoints, state: dict,
                 patience: int, warmup_epochs: int):
        super().__init__()
        self.frames_dir, self.batch_size, self.checkpoints = frames_dir, batch_size, checkpoints
        self.state, self.patience, self.warmup_epochs = state, patience, warmup_epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        state, where = self.state, self.checkpoints.folder.uri
        if not math.isfinite(logs["loss"]):
            message = (f"the training loss became {logs['loss']} in epoch {epoch + 1}; the last good "
                       f"checkpoint (epoch {state['epoch']}) is in {where}; try a lower learning_rate")
            self.checkpoints.record_failure(state, message)
            raise TrainingDivergedError(message)
        train_seconds = time.perf_counter() - self.start
        logs["val_loss"], logs["val_accuracy"] = loss_and_accuracy(
            *split_logits(self.model, self.frames_dir, "val", self.batch_size))
        state["epoch_seconds"].append(train_seconds)
        kept = record_epoch(state, logs, self.patience, self.warmup_epochs)
        if state["stopped_early"]:
            log.info("stopping early: the validation loss has not fallen by %s in the %d epochs since "
                     "epoch %d", MIN_DELTA, self.patience, max(state["progress_epoch"], self.warmup_epochs))
            self.model.stop_training = True
        self.checkpoints.save(self.model, state, kept)
        log.info("epoch %d saved to %s; kept: epoch %d, val_loss %.4f", state["epoch"], where,
                 state["best_epoch"], state["best_val_loss"])


def train(frames_dir: Path, model_dir: Path, config: TrainConfig, checkpoint_dir: str = "",
          tensorboard_dir: Path | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainingResult:
    """Trains, or resumes from ``checkpoint_dir``, and writes the model folder.

    Without ``checkpoint_dir``, checkpoints go to ``model_dir/checkpoints``, so a retried task
    whose output folder survives (a mounted bucket or volume) resumes too. A run that stopped
    early resumes when its new ``patience`` would not have stopped it. ``callbacks`` are called
    after the stage's own at each epoch's end.
    """
    config.check()
    frames_dir, model_dir = Path(frames_dir), Path(model_dir)
    manifest = read_manifest(frames_dir)
    classes = manifest["classes"]
    fingerprint = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_CHANGES}
    checkpoints = Checkpoints(checkpoint_dir or str(model_dir / DEFAULT_CHECKPOINTS),
                              {**fingerprint, "dataset": file_sha256(frames_dir / MANIFEST)})
    state = checkpoints.load_state()
    state["stopped_early"] = state["stopped_early"] and should_stop(state, config.patience,
                                                                    config.settings.warmup_epochs)

    gpus = len(tf.config.list_physical_devices("GPU"))
    strategy = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    precision = resolve_precision(config.precision, gpus)
    if state["stopped_early"] or state["epoch"] >= config.epochs:
        log.info("%s already holds %d epochs%s: nothing left to train", checkpoints.folder.uri,
                 state["epoch"], " (stopped early)" if state["stopped_early"] else "")
    else:
        fit(frames_dir, manifest, config, checkpoints, state, strategy, precision, tensorboard_dir, callbacks)

    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        checkpoints.folder.download(state["best"], Path(tmp) / MODEL_FILE)
        kept = keras.models.load_model(Path(tmp) / MODEL_FILE, compile=False)  # no optimizer to serve
        export_saved_model(kept, Path(tmp) / SAVED_MODEL_DIR)
        shutil.rmtree(model_dir / SAVED_MODEL_DIR, ignore_errors=True)
        (Path(tmp) / SAVED_MODEL_DIR).replace(model_dir / SAVED_MODEL_DIR)
        (Path(tmp) / MODEL_FILE).replace(model_dir / MODEL_FILE)
    selection = selection_of(state, manifest)
    if selection["within_chance"]:
        log.warning("the kept model (epoch %d) scores %.3f on %d validation clips, within noise of "
                    "chance (%.3f): p = %.2f", selection["epoch"], selection["val_accuracy"],
                    selection["val_clips"], selection["chance_accuracy"], selection["p_value"])
    write_json(model_dir / CLASSES_FILE, classes)
    write_json(model_dir / HISTORY_FILE, state["history"])
    write_json(model_dir / SELECTION_FILE, selection)
    write_json(model_dir / SAMPLING_FILE, {key: manifest.get(key) for key in SAMPLING_KEYS})
    if not checkpoint_dir:
        shutil.rmtree(model_dir / DEFAULT_CHECKPOINTS)
    return TrainingResult(state["history"], training_metrics(state, selection, manifest["counts"]["train"]),
                          precision, strategy.num_replicas_in_sync)


def compiled_model(manifest: dict, config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """A new network, compiled with the recipe's optimizer, schedule and loss."""
    recipe = config.settings
    model = build_model(len(manifest["classes"]), *manifest["frame_shape"][:3],
                        base_filters=config.base_filters, blocks_per_stage=config.blocks_per_stage)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = recipe.batch_norm_momentum
    learning_rate = recipe.learning_rate
    if recipe.decay:
        warmup = recipe.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, config.epochs * steps_per_epoch - warmup), alpha=0.01,
            warmup_target=recipe.learning_rate, warmup_steps=warmup)
    if recipe.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=recipe.label_smoothing))
    return model


def fit(frames_dir: Path, manifest: dict, config: TrainConfig, checkpoints: Checkpoints, state: dict,
        strategy: tf.distribute.Strategy, precision: str, tensorboard_dir: Path | None,
        callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Builds the model, or loads the last checkpoint's, and trains the epochs left."""
    keras.utils.set_random_seed(config.seed + state["epoch"])
    global_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    batch_size = config.batch_size * strategy.num_replicas_in_sync
    recipe = config.settings
    try:
        with strategy.scope():
            if state["last"]:
                log.info("resuming after epoch %d from %s", state["epoch"], checkpoints.folder.uri)
                model = checkpoints.load_model(state["last"])
            else:
                steps_per_epoch = math.ceil(manifest["counts"]["train"] / batch_size)
                model = compiled_model(manifest, config, steps_per_epoch)
        log.info("training %s (%d parameters, %s, %d replica(s), batch %d, recipe %s) on %d clips, "
                 "epochs %d to %d", model.name, model.count_params(), precision,
                 strategy.num_replicas_in_sync, batch_size, config.recipe, manifest["counts"]["train"],
                 state["epoch"] + 1, config.epochs)
        callbacks = [EpochEnd(frames_dir, batch_size, checkpoints, state, config.patience,
                              recipe.warmup_epochs), *callbacks]
        if tensorboard_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(str(tensorboard_dir)))
        model.fit(batches(frames_dir, "train", batch_size, training=True, seed=config.seed + state["epoch"],
                          flip=config.random_flip, crop_scale=recipe.crop_scale,
                          one_hot=len(manifest["classes"])),
                  initial_epoch=state["epoch"], epochs=config.epochs, shuffle=False,
                  callbacks=callbacks, verbose=2)
    finally:
        keras.mixed_precision.set_global_policy(global_policy)


def selection_of(state: dict, manifest: dict) -> dict:
    """Which epoch was kept, its validation scores, and whether its accuracy could be chance."""
    epoch, history = state["best_epoch"], state["history"]
    accuracy, clips = history["val_accuracy"][epoch - 1], manifest["counts"]["val"]
    return {"monitor": "val_loss", "epoch": epoch, "val_loss": history["val_loss"][epoch - 1],
            "val_accuracy": accuracy, "val_clips": clips, "epochs_compared": state["epoch"],
            **chance(accuracy, clips, len(manifest["classes"]), state["epoch"])}


def training_metrics(state: dict, selection: dict, train_clips: int) -> dict[str, float]:
    """The kept model's validation scores and epoch, the epochs run, training throughput, and
    the last epoch's scores, named as such."""
    history = state["history"]
    return {"kept_epoch": selection["epoch"], "kept_val_loss": selection["val_loss"],
            "kept_val_accuracy": selection["val_accuracy"],
            "kept_within_chance": int(selection["within_chance"]),
            "epochs_run": state["epoch"], "stopped_early": int(state["stopped_early"]),
            "train_clips_per_second": train_clips / statistics.median(state["epoch_seconds"]),
            **{f"last_epoch_{key}": history[key][-1]
               for key in ("loss", "accuracy", "val_loss", "val_accuracy")}}


def load_model(model_dir: Path):
    """Loads a trained model folder: the Keras model and its class names."""
    model_dir = Path(model_dir)
    model = keras.models.load_model(model_dir / MODEL_FILE)
    return model, json.loads((model_dir / CLASSES_FILE).read_text())
