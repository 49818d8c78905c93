"""Warm start: training from a model folder of an earlier run, in-process on the tiny frames."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from components.common import MANIFEST
from components.train_model import warm_start
from components.train_model.checkpoints import CheckpointMismatchError
from components.train_model.config import TrainConfig
from components.train_model.model_folder import CLASSES_FILE, MODEL_FILE, SAMPLING_FILE
from components.train_model.train import train
from tests.conftest import CHECKPOINTED

ONE_EPOCH = TrainConfig(epochs=1, batch_size=4, seed=1, patience=0)


def source_weights(model_dir: Path) -> list[list[np.ndarray]]:
    """Each layer's weights of the model folder's model, read by Keras itself."""
    from components.train_model import model as _  # noqa: F401 (registers the custom layers)

    model = keras.models.load_model(Path(model_dir) / MODEL_FILE, compile=False)
    return [[np.array(w) for w in layer.get_weights()] for layer in model.layers]


class Snapshots(keras.callbacks.Callback):
    """Every layer's weights before the first step, and at each epoch's end."""

    def __init__(self):
        super().__init__()
        self.at_start, self.after_epoch = None, []

    def layers(self) -> list[list[np.ndarray]]:
        return [[np.array(w) for w in layer.get_weights()] for layer in self.model.layers]

    def on_train_batch_begin(self, batch, logs=None):
        if self.at_start is None:
            self.at_start = self.layers()

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch.append(self.layers())


class StoppedAtStep0Error(Exception):
    """Raised by AtStep0 once it has the weights: the rest of the training is not needed."""


class AtStep0(Snapshots):
    """Every layer's weights before the first step; then the training ends (raises StoppedAtStep0Error)."""

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        raise StoppedAtStep0Error


def weights_at_step_0(frames_dir: Path, model_dir: Path, **init) -> list[list[np.ndarray]]:
    """The weights a training on ``frames_dir`` starts from (given ``init_model``, warm)."""
    at_start = AtStep0()
    with pytest.raises(StoppedAtStep0Error):
        train(frames_dir, model_dir, ONE_EPOCH, callbacks=[at_start], **init)
    return at_start.at_start


def same(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(map(np.array_equal, x, y))
                                    for x, y in zip(a, b, strict=False))


def frames_with_classes(frames_dir: Path, folder: Path, classes: list[str]) -> Path:
    """A copy of the frames whose manifest names its classes otherwise (the labels unchanged)."""
    shutil.copytree(frames_dir, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "classes": classes}))
    return folder


def test_at_step_0_the_body_and_head_are_the_init_models_when_the_classes_are_the_same(
        frames_dir, model_dir, tmp_path):
    warm = weights_at_step_0(frames_dir, tmp_path / "warm", init_model=str(model_dir))
    assert same(warm, source_weights(model_dir))  # head included
    assert not same(weights_at_step_0(frames_dir, tmp_path / "scratch"), warm)


def test_the_head_is_new_when_the_classes_differ(frames_dir, model_dir, tmp_path):
    """Classes in another order: the body is the init model's, the head the one a training from
    scratch with the same seed starts with."""
    classes = json.loads((Path(model_dir) / CLASSES_FILE).read_text())
    reordered = frames_with_classes(frames_dir, tmp_path / "frames", classes[::-1])
    warm = weights_at_step_0(reordered, tmp_path / "warm", init_model=str(model_dir))
    scratch = weights_at_step_0(reordered, tmp_path / "scratch")
    source = source_weights(model_dir)
    assert same(warm[:-1], source[:-1])
    assert same(warm[-1:], scratch[-1:])
    assert not same(warm[-1:], source[-1:])


@pytest.mark.usefixtures("without_saved_model")
def test_frozen_layers_do_not_change_during_the_frozen_epochs(frames_dir, model_dir, tmp_path):
    """A frozen epoch (saved, and the run resumed after it), then one that trains it all."""
    config = TrainConfig(epochs=1, batch_size=4, seed=1, patience=0, freeze_epochs=1)
    frozen, thawed = Snapshots(), Snapshots()
    checkpoints = str(tmp_path / "checkpoints")
    train(frames_dir, tmp_path / "model", config, checkpoints, callbacks=[frozen], init_model=str(model_dir))
    source = source_weights(model_dir)
    [epoch] = frozen.after_epoch
    assert same(epoch[:-1], source[:-1])  # weights and batch normalisation statistics
    assert not same(epoch[-1:], source[-1:])  # the head learns
    train(frames_dir, tmp_path / "model", TrainConfig(**{**config.__dict__, "epochs": 2}), checkpoints,
          callbacks=[thawed], init_model=str(model_dir))
    assert len(thawed.after_epoch) == 1 and not same(thawed.after_epoch[0][:-1], source[:-1])


def test_after_the_frozen_epochs_the_rate_is_lowered():
    """Against Keras's own schedule: the same rate while frozen, a tenth of it after."""
    cosine = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=40, warmup_target=1e-3, warmup_steps=10)
    schedule = warm_start.learning_rate(cosine, freeze_epochs=2, steps_per_epoch=5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    for step in (0, 3, 9, 10, 25, 49):
        factor = 1.0 if step < 10 else warm_start.FINE_TUNE_FACTOR
        for rate in (schedule, restored):
            assert float(rate(step)) == pytest.approx(factor * float(cosine(step)), rel=1e-6)
    assert warm_start.learning_rate(cosine, 0, 5) is cosine


def test_a_resume_never_mixes_two_starts(frames_dir, model_dir, checkpointed, tmp_path):
    """A checkpoint of a run from scratch, resumed with the same settings from an init model."""
    two = TrainConfig(**{**CHECKPOINTED.__dict__, "epochs": 2})
    with pytest.raises(CheckpointMismatchError, match=r"ckpt holds a training run with other init_model:"):
        train(frames_dir, tmp_path / "warm", two, str(checkpointed), init_model=str(model_dir))


def test_a_model_of_other_clips_is_refused_naming_both(videos_dir, model_dir, tmp_path):
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset

    other = tmp_path / "frames-24"
    extract_dataset(videos_dir, other, ClipSpec(n_frames=4, frame_step=3, height=24, width=24, seed=0))
    with pytest.raises(warm_start.WarmStartError) as refused:
        train(other, tmp_path / "model", ONE_EPOCH, init_model=str(model_dir))
    assert "4 x 32 x 32 x 3 frames every 2 frames" in str(refused.value)
    assert "4 x 24 x 24 x 3 frames every 3 frames" in str(refused.value)


def test_a_model_of_another_width_is_refused_naming_both_shapes(frames_dir, model_dir, tmp_path):
    wider = TrainConfig(**{**ONE_EPOCH.__dict__, "base_filters": 8})
    with pytest.raises(warm_start.WarmStartError, match=r"\(1, 7, 7, 3, 16\).*\(1, 7, 7, 3, 8\)"):
        train(frames_dir, tmp_path / "model", wider, init_model=str(model_dir))


def test_freezing_without_an_init_model_is_refused(frames_dir, tmp_path):
    with pytest.raises(ValueError, match="--init-model"):
        train(frames_dir, tmp_path, TrainConfig(epochs=1, freeze_epochs=1))


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(warm_start.WarmStartError, match=f"{tmp_path} has no model.keras"):
        warm_start.load(str(tmp_path))


def test_an_init_model_is_read_from_a_bucket(bucket, model_dir):
    import fsspec

    fs = fsspec.filesystem(bucket.split("://")[0])
    for name in (MODEL_FILE, CLASSES_FILE, SAMPLING_FILE):
        fs.put_file(str(Path(model_dir) / name), f"{bucket}/runs/1/model/{name}")
    init = warm_start.load(f"{bucket}/runs/1/model")
    local = warm_start.load(str(model_dir))
    assert (init.sha256, init.classes, init.sampling) == (local.sha256, local.classes, local.sampling)
    assert same([[np.array(w) for w in layer.get_weights()] for layer in init.model.layers],
                source_weights(model_dir))
