"""Stage 3: train the (2+1)D ResNet on the extracted clips, on CPUs or GPUs, resumably.

The recipe (``config.RECIPES``) sets the optimizer, the learning-rate schedule, weight decay,
label smoothing and augmentation; the tutorial's is one of them. After every epoch the model is
scored on the validation videos as evaluation scores test videos (the mean logits of each
video's evenly spaced clips), the kept epoch and early stopping are decided (``selection``), and
the epoch is checkpointed (``checkpoints``); started again with the same checkpoint folder,
training resumes after the last completed epoch. Given an init model, training starts from its
weights (``warm_start``). The output is a model folder (``model_folder``) holding the kept epoch.
"""

import dataclasses
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from components.common import MANIFEST, file_sha256, read_manifest, write_json
from components.train_model import warm_start
from components.train_model.checkpoints import Checkpoints, TrainingDivergedError
from components.train_model.config import RESUMABLE_CHANGES, TrainConfig
from components.train_model.export import SAVED_MODEL_DIR, export_saved_model
from components.train_model.inputs import batches, split_logits
from components.train_model.model import build_model
from components.train_model.model_folder import (
    CLASSES_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    SAMPLING_FILE,
    SAMPLING_KEYS,
    SELECTION_FILE,
)
from components.train_model.scores import loss_and_accuracy
from components.train_model.selection import (
    KEPT_VAL_LOSS,
    MIN_DELTA,
    record_epoch,
    selection_of,
    should_stop,
    training_metrics,
)

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = "checkpoints"  # in the model folder, removed on success, when none is given


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


class EpochEnd(keras.callbacks.Callback):
    """After each epoch: stops on a NaN loss, scores the validation videos, checkpoints, keeps
    the model of the lowest validation loss, and stops early without progress. The epoch's logs
    gain ``val_loss``, ``val_accuracy`` and the kept epoch's validation loss so far (KEPT_VAL_LOSS)."""

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
        logs[KEPT_VAL_LOSS] = state["best_val_loss"]  # for the callbacks after this one (a Vizier trial's)
        if state["stopped_early"]:
            log.info("stopping early: the validation loss has not fallen by %s in the %d epochs since "
                     "epoch %d", MIN_DELTA, self.patience, max(state["progress_epoch"], self.warmup_epochs))
            self.model.stop_training = True
        self.checkpoints.save(self.model, state, kept)
        log.info("epoch %d saved to %s; kept: epoch %d, val_loss %.4f", state["epoch"], where,
                 state["best_epoch"], state["best_val_loss"])


def train(frames_dir: Path, model_dir: Path, config: TrainConfig, checkpoint_dir: str = "",
          tensorboard_dir: Path | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = (), init_model: str = "") -> TrainingResult:
    """Trains, or resumes from ``checkpoint_dir``, and writes the model folder.

    Without ``checkpoint_dir``, checkpoints go to ``model_dir/checkpoints``, so a retried task
    whose output folder survives (a mounted bucket or volume) resumes too. A run that stopped
    early resumes when its new ``patience`` would not have stopped it. ``callbacks`` are called
    after the stage's own at each epoch's end. ``init_model`` is a model folder to start from.
    """
    config.check()
    frames_dir, model_dir = Path(frames_dir), Path(model_dir)
    manifest = read_manifest(frames_dir)
    classes = manifest["classes"]
    if config.freeze_epochs and not init_model:
        raise ValueError(f"freeze_epochs {config.freeze_epochs} freezes the body of an init model: "
                         "give one (--init-model), or leave freeze_epochs at 0")
    init = warm_start.load(init_model) if init_model else None
    if init:
        warm_start.check_clips(init, manifest, frames_dir)
    fingerprint = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_CHANGES}
    checkpoints = Checkpoints(checkpoint_dir or str(model_dir / DEFAULT_CHECKPOINTS),
                              {**fingerprint, "dataset": file_sha256(frames_dir / MANIFEST),
                               **(init.fingerprint if init else {})})
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
        fit(frames_dir, manifest, config, checkpoints, state, strategy, precision, tensorboard_dir, callbacks,
            init)

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
        log.warning("the kept model (epoch %d) scores %.3f on %d validation videos, within noise of "
                    "chance (%.3f): p = %.2f", selection["epoch"], selection["val_accuracy"],
                    selection["val_videos"], selection["chance_accuracy"], selection["p_value"])
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
                        base_filters=config.base_filters, blocks_per_stage=config.blocks_per_stage,
                        inputs=recipe.inputs, pooling=recipe.pooling)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = recipe.batch_norm_momentum
    learning_rate = recipe.learning_rate
    if recipe.decay:
        warmup = recipe.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, config.epochs * steps_per_epoch - warmup), alpha=0.01,
            warmup_target=recipe.learning_rate, warmup_steps=warmup)
    learning_rate = warm_start.learning_rate(learning_rate, config.freeze_epochs, steps_per_epoch)
    if recipe.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=recipe.label_smoothing))
    # Without a distribution strategy, Keras creates the optimizer's and the metrics' variables
    # while it traces the first training step (keras 3.15, keras/src/backend/tensorflow/trainer.py,
    # _maybe_symbolic_build), and TensorFlow traces a function that created variables twice. The
    # metric made above and the optimizer built here, the step is traced once.
    model.optimizer.build(model.trainable_variables)
    return model


def fit(frames_dir: Path, manifest: dict, config: TrainConfig, checkpoints: Checkpoints, state: dict,
        strategy: tf.distribute.Strategy, precision: str, tensorboard_dir: Path | None,
        callbacks: Sequence[keras.callbacks.Callback], init: warm_start.InitModel | None = None) -> None:
    """Builds the model (from ``init``'s weights where given), or loads the last checkpoint's,
    and trains the epochs left."""
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
                if init:
                    warm_start.start_from(model, init, manifest["classes"])
        log.info("training %s (%d parameters, %s, %d replica(s), batch %d, recipe %s) on %d clips, "
                 "epochs %d to %d", model.name, model.count_params(), precision,
                 strategy.num_replicas_in_sync, batch_size, config.recipe, manifest["counts"]["train"],
                 state["epoch"] + 1, config.epochs)
        callbacks = [*warm_start.callbacks(config.freeze_epochs),
                     EpochEnd(frames_dir, batch_size, checkpoints, state, config.patience,
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
