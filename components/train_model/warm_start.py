"""Warm start: training begins from a model folder that an earlier run wrote, rather than from
random weights.

The network's body (every layer but the last) takes the init model's weights, batch
normalisation's statistics included; its head (the last layer, one logit per class) takes them
too when the classes are the same in the same order, and stays newly initialised when they
differ. A model whose clips have another shape or another sampling in time, or whose body has
another shape (width, depth), is refused, naming both. With ``freeze_epochs`` the body is frozen
for the first epochs (its weights and statistics do not move) while the head learns at the
recipe's rate; after them the whole network trains at FINE_TUNE_FACTOR times that rate, as
Keras's transfer-learning guide fine-tunes. The init model's SHA-256 joins the checkpoint
fingerprint, so a resume never mixes two starts.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import keras
from keras import ops

from components.common import file_sha256
from components.storage import Folder
from components.train_model.model import PACKAGE
from components.train_model.model_folder import CLASSES_FILE, MODEL_FILE, SAMPLING_FILE, read

log = logging.getLogger(__name__)

FINE_TUNE_FACTOR = 0.1  # the learning rate after the frozen epochs, as a share of the recipe's
SAMPLING_MATCH = ("frame_shape", "frame_step", "clip_seconds")  # what the init model's clips must share


class WarmStartError(ValueError):
    """The init model cannot start this training: says what differs."""


@dataclasses.dataclass
class InitModel:
    """A model folder to start from: its network, classes and clip sampling."""

    uri: str
    model: keras.Model
    classes: list[str]
    sampling: dict
    sha256: str

    @property
    def fingerprint(self) -> dict:
        """What a checkpoint of a run started from it records."""
        return {"init_model": self.sha256}


def load(uri: str) -> InitModel:
    """Reads the model folder at ``uri`` (local, ``gs://`` or ``s3://``)."""
    from components.train_model import model as _  # noqa: F401 (registers the custom layers)

    folder = Folder(uri)
    with tempfile.TemporaryDirectory(prefix="videoclf-init-") as tmp:
        for name in (MODEL_FILE, CLASSES_FILE, SAMPLING_FILE):
            if folder.read_bytes(name) is None:
                raise WarmStartError(f"the init model {uri} has no {name}: give a model folder that "
                                     "training wrote (the one holding model.keras and classes.json)")
            folder.download(name, Path(tmp) / name)
        model = keras.models.load_model(Path(tmp) / MODEL_FILE, compile=False)
        return InitModel(uri, model, read(tmp, CLASSES_FILE), read(tmp, SAMPLING_FILE),
                         file_sha256(Path(tmp) / MODEL_FILE))


def describe(sampling: dict) -> str:
    """A clip shape and sampling in words: ``8 x 64 x 64 x 3 frames, every 2nd frame``."""
    shape = " x ".join(str(n) for n in sampling.get("frame_shape") or ())
    when = (f"spread over {sampling['clip_seconds']} s" if sampling.get("clip_seconds")
            else f"every {sampling.get('frame_step')} frames")
    return f"{shape} frames {when}"


def check_clips(init: InitModel, manifest: dict, frames_dir: Path) -> None:
    """Refuses an init model that saw clips of another shape or sampling than ``frames_dir`` holds."""
    if any(init.sampling.get(key) != manifest.get(key) for key in SAMPLING_MATCH):
        raise WarmStartError(
            f"the init model {init.uri} was trained on clips of {describe(init.sampling)}, but "
            f"{frames_dir} holds clips of {describe(manifest)}: extract the frames as that model's "
            "were (--n-frames, --height, --width, --frame-step, --clip-seconds), or train from scratch")


def start_from(model: keras.Model, init: InitModel, classes: list[str]) -> str:
    """Gives ``model`` the init model's body, and its head when the classes are the same in the
    same order; returns ``"kept"`` or ``"new"`` for the head."""
    body, source = model.layers[:-1], init.model.layers[:-1]
    shapes = [[tuple(w.shape) for w in layer.weights] for layer in body]
    source_shapes = [[tuple(w.shape) for w in layer.weights] for layer in source]
    if shapes != source_shapes:
        at = next((i for i, (a, b) in enumerate(zip(shapes, source_shapes, strict=False)) if a != b),
                  min(len(shapes), len(source_shapes)))
        ours = f"{body[at].name} {shapes[at]}" if at < len(body) else "no such layer"
        theirs = f"{source[at].name} {source_shapes[at]}" if at < len(source) else "no such layer"
        raise WarmStartError(
            f"the init model {init.uri} has another network: its layer {at} is {theirs} where this "
            f"one has {ours}; train with the width and depth it was trained with (--base-filters, "
            "--blocks-per-stage)")
    for layer, source_layer in zip(body, source, strict=True):
        layer.set_weights(source_layer.get_weights())
    if init.classes == classes:
        model.layers[-1].set_weights(init.model.layers[-1].get_weights())
        head = "kept"
    else:
        head = "new"
    log.info("warm start from %s: body loaded, head %s (%s classes %s, here %s)", init.uri, head,
             "same" if head == "kept" else "other", init.classes, classes)
    return head


def body_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers a warm start loads and may freeze: all but the head."""
    return model.layers[:-1]


@keras.saving.register_keras_serializable(package=PACKAGE)
class AfterFreezing(keras.optimizers.schedules.LearningRateSchedule):
    """The recipe's learning rate while the body is frozen, ``factor`` times it after."""

    def __init__(self, schedule, frozen_steps: int, factor: float = FINE_TUNE_FACTOR):
        self.schedule, self.frozen_steps, self.factor = schedule, frozen_steps, factor

    def __call__(self, step):
        schedule = self.schedule
        rate = schedule(step) if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) \
            else ops.convert_to_tensor(schedule, "float32")
        return ops.where(ops.less(step, self.frozen_steps), rate, rate * self.factor)

    def get_config(self) -> dict:
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "frozen_steps": self.frozen_steps, "factor": self.factor}

    @classmethod
    def from_config(cls, config: dict) -> AfterFreezing:
        return cls(**{**config, "schedule": keras.saving.deserialize_keras_object(config["schedule"])})


def learning_rate(rate, freeze_epochs: int, steps_per_epoch: int):
    """The recipe's rate, lowered after ``freeze_epochs`` frozen epochs (unchanged without them)."""
    return AfterFreezing(rate, freeze_epochs * steps_per_epoch) if freeze_epochs else rate


class FreezeBody(keras.callbacks.Callback):
    """Freezes the body for the first ``epochs`` epochs.

    Keras traces the training step with the variables that are trainable when it is first
    called, so the step is made again when the body freezes or thaws. At each frozen epoch's end
    the body is marked trainable again before the checkpoint is saved, so that a checkpoint's
    optimizer holds every variable and loads as it was saved.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.whole_step, self.frozen_step = epochs, None, None

    def set_trainable(self, trainable: bool) -> None:
        for layer in body_layers(self.model):
            layer.trainable = trainable

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if not optimizer.built:  # for every variable, before some are frozen
            optimizer.build(self.model.trainable_variables)
        if self.whole_step is None:
            self.whole_step = self.model.train_function
        frozen = epoch < self.epochs
        self.set_trainable(not frozen)
        if frozen:
            if self.frozen_step is None:
                self.model.make_train_function(force=True)
                self.frozen_step = self.model.train_function
            self.model.train_function = self.frozen_step
        else:
            self.model.train_function = self.whole_step

    def on_epoch_end(self, epoch, logs=None):
        self.set_trainable(True)


def callbacks(freeze_epochs: int) -> list[keras.callbacks.Callback]:
    """The callbacks a warm start with ``freeze_epochs`` adds, before the stage's own."""
    return [FreezeBody(freeze_epochs)] if freeze_epochs else []
