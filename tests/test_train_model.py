import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from components.train_model import train as train_module
from components.train_model.checkpoints import (
    STATE_FILE,
    CheckpointMismatchError,
    Checkpoints,
    TrainingDivergedError,
)
from components.train_model.config import TrainConfig
from components.train_model.inputs import batches, random_resized_crop, read_records
from components.train_model.model import Conv2Plus1D, build_model
from components.train_model.model_folder import (
    CLASSES_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    SAMPLING_FILE,
    SELECTION_FILE,
    load_model,
)
from components.train_model.selection import chance, record_epoch, selection_of, training_metrics
from components.train_model.train import train
from tests.conftest import CHECKPOINTED

QUICK = TrainConfig(epochs=2, batch_size=4, seed=0, patience=0)
DATA = Path(__file__).with_name("data")
def test_tutorial_network_has_443322_parameters():
    assert build_model(num_classes=10, n_frames=10, height=224, width=224).count_params() == 443_322


def test_width_and_depth_are_parameters():
    tutorial = build_model(4, 4, 32, 32)
    wider = build_model(4, 4, 32, 32, base_filters=32)
    deeper = build_model(4, 4, 32, 32, blocks_per_stage=2)
    assert wider.count_params() > 3 * tutorial.count_params()
    assert len(deeper.layers) > len(tutorial.layers)
    assert deeper.count_params() > tutorial.count_params()


def test_the_2d_convolutions_compute_what_the_tutorials_conv3d_layers_compute(monkeypatch):
    """The same weights, run as Keras's own Conv3D layers: the same logits."""
    keras.utils.set_random_seed(0)
    model = build_model(4, 8, 32, 32)
    clips = np.random.default_rng(0).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)
    ours = np.asarray(model(clips))
    monkeypatch.setattr(Conv2Plus1D, "call", lambda self, x: self.seq(x))
    theirs = np.asarray(model(clips))
    assert np.allclose(ours, theirs, atol=1e-5) and np.abs(theirs).max() > 0.01


def test_a_model_saved_before_the_2d_convolutions_loads_and_gives_its_logits():
    """tests/data/model-conv3d-v0.1.keras was saved by videoclf 0.1 at commit 1cca166, whose
    Conv2Plus1D ran its Conv3D layers as they are, with its logits on the clips beside it."""
    saved = np.load(DATA / "model-conv3d-v0.1.npz")
    model = keras.models.load_model(DATA / "model-conv3d-v0.1.keras")
    assert np.allclose(model.predict(saved["clips"], verbose=0), saved["logits"], atol=1e-5)


def test_training_writes_the_kept_model_and_its_metrics(frames_dir, tmp_path):
    result = train(frames_dir, tmp_path, QUICK, tensorboard_dir=tmp_path.parent / "tb")
    history = result.history
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in history.values())
    assert json.loads((tmp_path / HISTORY_FILE).read_text()) == history
    metrics = result.metrics
    assert metrics["epochs_run"] == 2 and metrics["train_clips_per_second"] > 0
    assert history["val_loss"][metrics["kept_epoch"] - 1] == min(history["val_loss"])
    assert metrics["kept_val_accuracy"] == history["val_accuracy"][metrics["kept_epoch"] - 1]
    assert metrics["last_epoch_val_accuracy"] == history["val_accuracy"][-1]
    selection = json.loads((tmp_path / SELECTION_FILE).read_text())
    assert selection["epoch"] == metrics["kept_epoch"] and selection["val_clips"] == 8
    assert result.precision == "float32" and result.replicas == 1  # auto on a CPU
    model, classes = load_model(tmp_path)
    assert classes == json.loads((frames_dir / "manifest.json").read_text())["classes"]
    clip = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    assert model.predict(clip, verbose=0).shape == (2, 4)
    # The default checkpoints inside the model folder are removed once training succeeds.
    assert {p.name for p in tmp_path.iterdir()} == {MODEL_FILE, CLASSES_FILE, HISTORY_FILE, SAMPLING_FILE,
                                                    SELECTION_FILE, "saved_model"}
    assert list((tmp_path.parent / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.usefixtures("without_saved_model")
def test_same_seed_same_weights_other_seed_other_weights(frames_dir, model_dir, tmp_path):
    """Against the session's model_dir, trained earlier in this process with seed 0 (patience,
    which differs, changes nothing in one epoch)."""
    weights = [load_model(model_dir)[0].get_weights()]
    for name, seed in (("b", 0), ("c", 1)):
        train(frames_dir, tmp_path / name, TrainConfig(**{**QUICK.__dict__, "seed": seed, "epochs": 1}))
        weights.append(load_model(tmp_path / name)[0].get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(weights[0], weights[2], strict=True))


@pytest.mark.usefixtures("without_saved_model")
def test_mixed_precision_keeps_float32_logits(frames_dir, tmp_path):
    config = TrainConfig(epochs=1, batch_size=4, seed=0, precision="mixed_bfloat16")
    assert train(frames_dir, tmp_path, config).precision == "mixed_bfloat16"
    model, _ = load_model(tmp_path)
    assert model.layers[2].dtype_policy.name == "mixed_bfloat16"
    assert str(model.output.dtype) == "float32"


def test_training_batches_draw_and_flip_stored_clips(frames_dir):
    manifest = json.loads((frames_dir / "manifest.json").read_text())
    shards = [str(frames_dir / shard) for group in manifest["shards"]["train"] for shard in group]
    stored = {}
    for clip, _ in read_records(shards, manifest["frame_shape"]):
        stored[clip.numpy().tobytes()] = "stored"
        stored.setdefault(clip.numpy()[:, :, ::-1].tobytes(), "flipped")
    dataset = batches(frames_dir, "train", batch_size=4, training=True, seed=0, flip=True)
    epochs = [[clip.tobytes() for clips, _ in dataset for clip in clips.numpy()] for _ in range(3)]
    assert all(len(e) == 16 and all(c in stored for c in e) for e in epochs)
    assert {stored[c] for e in epochs for c in e} == {"stored", "flipped"}
    assert epochs[0] != epochs[1], "two epochs gave the same clips in the same order"
    clips, labels = next(iter(dataset))
    assert clips.dtype.name == "uint8" and labels.dtype.name == "int32"


def test_random_resized_crops_are_the_same_in_every_frame():
    """A crop that moved between frames would add motion; zooming a clip of one still frame
    must give a clip of one still frame."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 6, axis=0)
    crops = [random_resized_crop(tf.constant(still), 0.3, tf.constant([n, n], tf.int64)).numpy()
             for n in range(5)]
    assert all(crop.shape == still.shape and crop.dtype == np.uint8 for crop in crops)
    assert all((crop == crop[0]).all() for crop in crops)  # every frame the same
    assert all(not np.array_equal(crop[0], still[0]) for crop in crops)  # but cropped and zoomed
    assert len({crop.tobytes() for crop in crops}) == 5


def test_val_batches_are_the_same_every_pass(frames_dir):
    dataset = batches(frames_dir, "val", batch_size=4)
    first, second = ([clips.numpy() for clips, _ in dataset] for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"base_filters": 0}, "base_filters must be at least 1"),
    ({"learning_rate": -1.0}, "learning_rate must be positive, or 0 for the recipe's"),
    ({"recipe": "fancy"}, "recipe must be one of tutorial, videoclf"),
    ({"patience": -1}, "patience must be 0"),
    ({"precision": "fp8"}, "precision must be one of auto, float32"),
])
def test_bad_parameters_are_named(frames_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(frames_dir, tmp_path, TrainConfig(**{**QUICK.__dict__, **overrides}))


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        train(tmp_path, tmp_path / "model", QUICK)


def test_a_nan_loss_stops_training_and_a_retry_ends_at_once(frames_dir, tmp_path, monkeypatch):
    exploding = TrainConfig(epochs=5, batch_size=4, learning_rate=1e30, seed=0, patience=0)
    checkpoint_dir = tmp_path / "ckpt"
    diverged = r"loss became nan in epoch 1.*lower learning_rate"
    with pytest.raises(TrainingDivergedError, match=diverged) as first:
        train(frames_dir, tmp_path / "model", exploding, checkpoint_dir=str(checkpoint_dir))
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    assert state["epoch"] == 0 and state["failure"] == str(first.value)
    assert [p.name for p in checkpoint_dir.iterdir()] == [STATE_FILE]  # the diverged epoch is not saved
    assert not (tmp_path / "model" / MODEL_FILE).exists()
    # A retry of the task, as Kubeflow runs it (same settings, same folder), ends with the same
    # error without training again.
    monkeypatch.setattr(train_module, "fit", lambda *args: pytest.fail("the retry trained again"))
    with pytest.raises(TrainingDivergedError, match="recorded in .*state.json by an earlier") as retry:
        train(frames_dir, tmp_path / "model", exploding, checkpoint_dir=str(checkpoint_dir))
    assert str(retry.value).startswith(str(first.value))


def fresh_state() -> dict:
    return {"epoch": 0, "history": {}, "best_epoch": 0, "best_val_loss": math.inf, "progress_epoch": 0,
            "progress_val_loss": math.inf, "stopped_early": False}


def test_an_early_epoch_that_wins_by_luck_is_not_kept():
    """Epoch 1 guesses 8 of 16 validation clips right by luck (chance is 4), with the loss of a
    network that has learned nothing (ln 4 = 1.386); the later epochs learn (the loss falls)
    while their accuracy on 16 clips stays at or below that lucky 0.5. Keeping the best accuracy
    kept epoch 1; the validation loss keeps the epoch that learned, ties go to the later epoch,
    and no early stop comes before the warm-up."""
    accuracies = [0.5, 0.25, 0.375, 0.4375, 0.5, 0.5, 0.4375, 0.5, 0.5]
    losses = [1.386, 1.37, 1.30, 1.21, 1.12, 1.05, 1.03, 0.98, 0.98]
    state = fresh_state()
    for accuracy, loss in zip(accuracies, losses, strict=True):
        record_epoch(state, {"loss": 1.0, "val_loss": loss, "val_accuracy": accuracy}, patience=2,
                     warmup_epochs=3)
    assert accuracies.index(max(accuracies)) == 0  # what the best accuracy would have kept
    assert state["best_epoch"] == 9  # the lowest loss, the later of the two 0.98s
    assert state["progress_epoch"] == 8 and not state["stopped_early"]
    record_epoch(state, {"loss": 1.0, "val_loss": 0.99, "val_accuracy": 0.5}, patience=2, warmup_epochs=3)
    assert state["stopped_early"] and state["best_epoch"] == 9  # two epochs past epoch 8 without progress
    warm = fresh_state()
    for loss in (1.0, 1.2, 1.3):  # worse and worse, but within the warm-up of 3 epochs
        record_epoch(warm, {"loss": 1.0, "val_loss": loss, "val_accuracy": 0.25}, patience=1, warmup_epochs=3)
    assert not warm["stopped_early"]


def test_a_low_loss_within_the_warm_up_does_not_stop_training_that_goes_on_learning():
    """The validation losses of a run that learned to tell two turns apart (8 validation videos,
    ln 2 = 0.693 for a network that guesses): epoch 2, within the warm-up, scores 0.854 by luck;
    after the warm-up the loss falls from 1.19 towards it and, past epoch 16, below it. Held to
    the warm-up's 0.854, patience 10 stopped the run at epoch 13."""
    losses = [2.63, 0.854, 1.093, 0.975, 0.972, 1.188, 1.187, 1.136, 1.02, 1.004, 1.047, 1.021, 0.921,
              0.884, 0.860, 0.843, 0.795]
    state = fresh_state()
    for epoch, loss in enumerate(losses, start=1):
        record_epoch(state, {"loss": 1.0, "val_loss": loss, "val_accuracy": 0.5}, patience=10,
                     warmup_epochs=3)
        assert not state["stopped_early"], f"stopped after epoch {epoch}"
        assert state["best_epoch"] == losses.index(min(losses[:epoch])) + 1  # the lowest loss is kept still
    assert state["progress_epoch"] == 17


def test_a_kept_accuracy_within_noise_of_chance_is_named():
    from scipy.stats import binom

    # 8 of 16 right with 4 classes: p = 0.027 from one epoch, but chosen as the best of 11 epochs
    # it is as likely as chance allows
    once, of_eleven = chance(0.5, 16, 4, 1), chance(0.5, 16, 4, 11)
    assert once["p_value"] == pytest.approx(binom.sf(7, 16, 0.25)) and not once["within_chance"]
    assert of_eleven["p_value"] == pytest.approx(min(1, 11 * binom.sf(7, 16, 0.25)))
    assert of_eleven["within_chance"]
    assert not chance(1.0, 16, 4, 20)["within_chance"] and chance(0.25, 120, 4, 1)["within_chance"]


def test_the_kept_model_is_flagged_when_its_validation_score_could_be_chance():
    """selection_of on constructed histories, against SciPy's binomial tail: the same kept score
    is noise as the best of many epochs on a few clips, and not on many; the flag reaches the
    training metrics."""
    from scipy.stats import binom

    def kept_after(accuracies: list[float], videos: int) -> dict:
        state = {**fresh_state(), "epoch_seconds": [1.0] * len(accuracies)}
        for epoch, accuracy in enumerate(accuracies):  # the loss falls: the last epoch is kept
            record_epoch(state, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0 - epoch / 100,
                                 "val_accuracy": accuracy}, patience=0, warmup_epochs=0)
        selection = selection_of(state, {"counts": {"val": videos}, "eval_clips_per_video": 2,
                                         "classes": ["a", "b", "c", "d"]})
        return selection, training_metrics(state, selection, train_clips=16)

    lucky, metrics = kept_after([0.25] * 10 + [0.5], videos=16)  # 8 of 16, the best of 11 epochs
    assert lucky["epoch"] == 11 and lucky["p_value"] == pytest.approx(min(1, 11 * binom.sf(7, 16, 0.25)))
    assert lucky["within_chance"] and metrics["kept_within_chance"] == 1
    assert (lucky["val_videos"], lucky["val_clips"]) == (16, 32)  # chance counts videos, not their clips
    learned, metrics = kept_after([0.25] * 10 + [0.5], videos=160)  # 80 of 160: far beyond chance
    assert learned["p_value"] == pytest.approx(11 * binom.sf(79, 160, 0.25))
    assert not learned["within_chance"] and metrics["kept_within_chance"] == 0


@pytest.mark.usefixtures("without_saved_model")
def test_a_run_stopped_early_resumes_with_more_patience(frames_dir, checkpointed, tmp_path, caplog):
    checkpoint_dir = shutil.copytree(checkpointed, tmp_path / "ckpt")
    tutorial = {"batch_size": 4, "seed": 0, "recipe": "tutorial"}
    state = json.loads((checkpoint_dir / STATE_FILE).read_text())
    # as if epoch 1 brought no progress and patience 1 stopped the run there
    state |= {"progress_epoch": 0, "stopped_early": True}
    (checkpoint_dir / STATE_FILE).write_text(json.dumps(state))
    caplog.set_level("INFO")
    same = train(frames_dir, tmp_path / "b", TrainConfig(epochs=3, patience=1, **tutorial),
                 str(checkpoint_dir))
    assert same.metrics["epochs_run"] == 1 and "(stopped early): nothing left to train" in caplog.text
    more = train(frames_dir, tmp_path / "c", TrainConfig(epochs=3, patience=0, **tutorial),
                 str(checkpoint_dir))
    assert more.metrics["epochs_run"] == 3 and "resuming after epoch 1" in caplog.text


TRAIN_IN_SUBPROCESS = """
import sys
from components.train_model.config import TrainConfig
from components.train_model.train import train
train(sys.argv[1], sys.argv[2], TrainConfig(epochs=2, batch_size=4, seed=0, patience=0), sys.argv[3])
"""


@pytest.mark.slow
@pytest.mark.usefixtures("without_saved_model")
def test_a_killed_training_resumes_and_ends_with_all_epochs(frames_dir, tmp_path, caplog):
    checkpoint_dir = tmp_path / "ckpt"
    worker = subprocess.Popen([sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(frames_dir),
                               str(tmp_path / "model"), str(checkpoint_dir)])
    state_file = checkpoint_dir / STATE_FILE
    deadline = time.monotonic() + 300
    while not state_file.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed_after = json.loads(state_file.read_text())["epoch"]
    assert killed_after == 1, "the worker was not killed partway through training"
    assert not (tmp_path / "model" / MODEL_FILE).exists()

    caplog.set_level("INFO")
    config = TrainConfig(epochs=2, batch_size=4, seed=0, patience=0)
    result = train(frames_dir, tmp_path / "model", config, str(checkpoint_dir))
    assert "resuming after epoch 1" in caplog.text
    assert result.metrics["epochs_run"] == 2
    assert all(len(values) == 2 for values in result.history.values())
    kept = {p.name for p in checkpoint_dir.iterdir()}
    assert kept == {STATE_FILE, "epoch-0002.keras", f"best-{result.metrics['kept_epoch']:04d}.keras"}


class LoadedError(Exception):
    """Ends a resumed run once its checkpoint is loaded."""


def snapshot(model: keras.Model) -> tuple[list, list, int]:
    """The model's weights and its optimizer's variables (Adam's moments and iteration count,
    and the loss scale under mixed_float16), as arrays, and how many weights are trained."""
    return ([np.array(w) for w in model.weights], [np.array(v) for v in model.optimizer.variables],
            len(model.trainable_weights))


@pytest.mark.usefixtures("without_saved_model")
def test_a_resumed_run_starts_from_the_weights_and_optimizer_state_it_saved(frames_dir, tmp_path,
                                                                            monkeypatch):
    """The state in memory at the end of epoch 1 of the first run, against the state the
    resumed run loads from the checkpoint, under mixed_float16 (the GPU default, whose optimizer
    wraps Adam's in loss scaling; float32's is the same without the wrapper): weights, both
    moments of each, the iteration count and the loss scale."""
    ends, loaded = [], []
    end_of_epoch, load = train_module.EpochEnd.on_epoch_end, Checkpoints.load_model

    def end_and_snapshot(self, epoch, logs=None):
        end_of_epoch(self, epoch, logs)
        ends.append(snapshot(self.model))

    def load_and_snapshot(self, name):
        model = load(self, name)
        loaded.append((snapshot(model), model.optimizer, int(model.optimizer.iterations)))
        raise LoadedError  # what the resumed run starts from is known: no need to train it

    monkeypatch.setattr(train_module.EpochEnd, "on_epoch_end", end_and_snapshot)
    monkeypatch.setattr(Checkpoints, "load_model", load_and_snapshot)
    config = TrainConfig(epochs=1, batch_size=4, seed=0, patience=0, precision="mixed_float16")
    train(frames_dir, tmp_path / "a", config, str(tmp_path / "ckpt"))
    resumed = TrainConfig(**{**config.__dict__, "epochs": 2})
    with pytest.raises(LoadedError):
        train(frames_dir, tmp_path / "b", resumed, str(tmp_path / "ckpt"))
    [((weights, optimizer_state, trained), optimizer, iterations)] = loaded
    [(saved_weights, saved_optimizer_state, _)] = ends
    assert len(weights) == len(saved_weights) and all(map(np.array_equal, weights, saved_weights))
    assert len(optimizer_state) == len(saved_optimizer_state) > 2 * trained  # two moments of each
    assert all(map(np.array_equal, optimizer_state, saved_optimizer_state))
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert 0 < iterations <= 4  # 16 clips in batches of 4, one epoch; loss scaling skips overflowing steps


@pytest.mark.usefixtures("without_saved_model")
def test_bucket_checkpoints_resume_with_more_epochs(frames_dir, checkpointed, tmp_path, bucket, caplog):
    import fsspec

    checkpoint_dir = f"{bucket}/runs/resume"
    fs = fsspec.filesystem(bucket.split("://")[0])
    fs.put(f"{checkpointed}/", f"{checkpoint_dir}/", recursive=True)
    caplog.set_level("INFO")
    result = train(frames_dir, tmp_path / "b", TrainConfig(**{**CHECKPOINTED.__dict__, "epochs": 3}),
                   checkpoint_dir)
    assert f"resuming after epoch 1 from {checkpoint_dir}" in caplog.text
    assert all(len(values) == 3 for values in result.history.values())
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{checkpoint_dir}/{STATE_FILE}"))["epoch"] == 3
    saved = json.loads((checkpointed / STATE_FILE).read_text())
    assert result.history["loss"][:1] == saved["history"]["loss"]


def test_a_checkpoint_of_other_settings_is_refused(frames_dir, checkpointed, tmp_path):
    other = TrainConfig(**{**CHECKPOINTED.__dict__, "learning_rate": 1e-3})
    with pytest.raises(CheckpointMismatchError, match=r"ckpt holds a training run with other learning_rate"):
        train(frames_dir, tmp_path / "b", other, str(checkpointed))


@pytest.mark.usefixtures("without_saved_model")
def test_training_checkpoints_to_a_folder_of_the_run_on_a_mounted_volume(frames_dir, tmp_path):
    """The training component, as compiled with --checkpoint-pvc: with no checkpoint_dir, its
    checkpoints go to <volume>/<run id>, where a retried pod of the same run finds them (that
    run_id is the run's uuid placeholder is a test of the compiled YAML in test_pipeline.py)."""
    from kfp import dsl

    from components.train_model.component import train_model

    volume, out = tmp_path / "volume", tmp_path / "outputs"
    volume.mkdir()
    out.mkdir()
    outputs = {name: kind(uri=str(out / name)) for name, kind in (
        ("model", dsl.Model), ("metrics", dsl.Metrics), ("learning_curves", dsl.HTML),
        ("tensorboard", dsl.Artifact))}
    train_model.python_func(
        frames=dsl.Dataset(uri=str(frames_dir)), epochs=1, batch_size=4, recipe="tutorial", learning_rate=0.0,
        seed=0, random_flip=False, base_filters=16, blocks_per_stage=1, precision="auto", patience=0,
        checkpoint_dir="", checkpoint_volume=str(volume), run_id="run-8f14e45f", **outputs)
    assert [p.name for p in volume.iterdir()] == ["run-8f14e45f"]
    assert json.loads((volume / "run-8f14e45f" / STATE_FILE).read_text())["epoch"] == 1
    assert outputs["model"].metadata["parameters"]["checkpoint_dir"] == f"{volume}/run-8f14e45f"


@pytest.mark.usefixtures("without_saved_model")
def test_validation_scores_the_mean_of_every_evenly_spaced_clip(videos_dir, tmp_path):
    """With two clips per validation video (no centred one), the epoch's validation loss is that
    of the mean of both clips' logits, as evaluation scores the test, not of one slot's."""
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset
    from components.train_model.inputs import batches

    frames = tmp_path / "frames"
    extract_dataset(videos_dir, frames, ClipSpec(n_frames=4, frame_step=2, height=32, width=32,
                                                 clips_per_train_video=2, eval_clips_per_video=2))
    result = train(frames, tmp_path / "model", TrainConfig(epochs=1, batch_size=4, seed=0))
    model, _ = load_model(tmp_path / "model")
    per_slot = [np.concatenate([model.predict_on_batch(x) for x, _ in batches(frames, "val", 4, slot=s)])
                for s in (0, 1)]
    labels = np.concatenate([y.numpy() for _, y in batches(frames, "val", 4)])

    def loss(logits):
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(labels)), labels].mean()

    assert result.history["val_loss"][0] == pytest.approx(loss((per_slot[0] + per_slot[1]) / 2), abs=1e-5)
    assert abs(loss(per_slot[0]) - loss(per_slot[1])) > 1e-4  # the slots differ, so the mean is seen


def test_the_saved_model_serves_the_keras_models_probabilities_on_real_clips(model_dir, real_clips, tmp_path):
    """Loaded with TensorFlow alone, in a process that imports nothing of this project."""
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_video

    spec = ClipSpec(n_frames=4, frame_step=2, height=32, width=32, eval_clips_per_video=2)
    clips = np.concatenate([extract_video(real_clips[name], "test", spec)[0]
                            for name in ("mpeg4_320x240_25fps_164f.avi", "vp9_340x256_28fps_280f.webm")])
    np.save(tmp_path / "clips.npy", clips)
    script = ("import sys, numpy as np, tensorflow as tf\n"
              "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
              "print(serve(clips=tf.constant(np.load(sys.argv[2])))['probabilities'].numpy().tolist())\n"
              "assert not any(m.startswith(('components', 'pipelines')) for m in sys.modules)")
    served = subprocess.run([sys.executable, "-c", script, str(model_dir / "saved_model"),
                             str(tmp_path / "clips.npy")], capture_output=True, text=True,
                            timeout=300, cwd="/")
    assert served.returncode == 0, served.stderr[-2000:]
    model, _ = load_model(model_dir)
    expected = keras.ops.softmax(model.predict_on_batch(clips)).numpy()
    assert np.allclose(json.loads(served.stdout.strip().splitlines()[-1]), expected, atol=1e-5)
    assert expected.shape == (4, 4)


def test_the_recipes_networks_keep_the_tutorials_parameter_count():
    """The videoclf recipe's motion inputs and max pooling add no parameter to the tutorial's network."""
    motion = build_model(num_classes=10, n_frames=10, height=224, width=224, inputs="motion", pooling="max")
    assert motion.count_params() == 443_322
    layers = {type(layer).__name__ for layer in motion.layers}
    assert {"MotionFeatures", "GlobalMaxPooling3D"} <= layers and "Rescaling" not in layers
    manifest = {"classes": list("ABCD"), "frame_shape": [4, 32, 32, 3]}
    for recipe, expected in (("tutorial", {"Rescaling", "GlobalAveragePooling3D"}),
                             ("videoclf", {"MotionFeatures", "GlobalMaxPooling3D"})):
        compiled = train_module.compiled_model(manifest, TrainConfig(recipe=recipe), steps_per_epoch=1)
        assert expected <= {type(layer).__name__ for layer in compiled.layers}
    with pytest.raises(ValueError, match="motion inputs need clips of 2 frames or more"):
        build_model(4, 1, 32, 32, inputs="motion")


def reference_motion_features(clips: np.ndarray) -> np.ndarray:
    """MotionFeatures written again with NumPy and SciPy: 3 x 3 box means that count only the
    pixels inside the frame (as a 'same' average pool does), twice; central differences (half
    the one-sided ones at the edges, as with the edge pixel repeated); then the products."""
    from scipy.ndimage import uniform_filter

    x = clips.astype(np.float64) / 255

    def box(a):
        inside = uniform_filter(np.ones_like(a), size=(1, 1, 3, 3, 1), mode="constant")
        return uniform_filter(a, size=(1, 1, 3, 3, 1), mode="constant") / inside

    x = box(box(x))
    change, mean = x[:, 1:] - x[:, :-1], (x[:, 1:] + x[:, :-1]) / 2
    gx = np.gradient(mean, axis=3, edge_order=1)
    gy = np.gradient(mean, axis=2, edge_order=1)
    gx[:, :, :, [0, -1]] /= 2  # a one-sided difference where the edge pixel is repeated
    gy[:, :, [0, -1]] /= 2
    features = np.stack([-(change * gx).sum(-1), -(change * gy).sum(-1), (change**2).sum(-1)], axis=-1)
    spread = np.sqrt((features**2).mean(axis=(1, 2, 3, 4), keepdims=True))
    return features / np.maximum(spread, (1 / 255) ** 2)


def test_motion_features_follow_the_motion_whatever_the_colours():
    """A square drifting each way on a coloured background, against the reference; the same
    features when the colour channels are swapped and inverted; none from a still clip."""
    from components.train_model.model import MotionFeatures
    from pipelines.motion_sets import MOTION_SETS, draw_look, render_clip

    coloured, rng = MOTION_SETS["coloured"], np.random.default_rng(0)
    names = ["DriftRight", "DriftLeft", "DriftDown", "DriftUp"]
    clips = np.stack([render_clip(coloured, name, draw_look(coloured, rng), rng, 15)[::2, :, :, ::-1]
                      for name in names])
    features = np.asarray(MotionFeatures()(clips))
    assert features.shape == (4, 7, 60, 80, 3) and features.dtype == np.float32
    assert np.allclose(features, reference_motion_features(clips), atol=1e-4)
    horizontal, vertical = features[..., 0].sum(axis=(1, 2, 3)), features[..., 1].sum(axis=(1, 2, 3))
    assert horizontal[0] > 0 > horizontal[1] and vertical[2] > 0 > vertical[3]  # right and down are positive
    assert (np.abs(horizontal[:2]) > 5 * np.abs(vertical[:2])).all()
    assert (np.abs(vertical[2:]) > 5 * np.abs(horizontal[2:])).all()
    recoloured = 255 - clips[..., [2, 0, 1]]
    assert np.allclose(np.asarray(MotionFeatures()(recoloured)), features, atol=1e-4)
    still = np.repeat(clips[:, :1], 8, axis=1)
    assert not np.asarray(MotionFeatures()(still)).any()


def test_a_small_validation_split_is_scored_on_several_clips_of_each_video(videos_dir, tmp_path):
    """8 validation videos: by default, 4 evenly spaced clips of each, 32 clips in all, and the
    kept epoch's record and the report say so; a split of 64 videos or more needs one each."""
    from components.evaluate_model.evaluate import kept_model_line
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset

    settled = [ClipSpec().settled(videos).eval_clips_per_video for videos in (8, 16, 30, 64, 500)]
    assert settled == [4, 4, 3, 1, 1]
    assert ClipSpec(eval_clips_per_video=2).settled(8).eval_clips_per_video == 2
    frames = tmp_path / "frames"
    manifest = extract_dataset(videos_dir, frames, ClipSpec(n_frames=4, frame_step=2, height=32, width=32,
                                                            clips_per_train_video=1))
    assert manifest["eval_clips_per_video"] == 4 and len(manifest["shards"]["val"][0]) == 4
    train(frames, tmp_path / "model", TrainConfig(epochs=1, batch_size=4, seed=0))
    selection = json.loads((tmp_path / "model" / SELECTION_FILE).read_text())
    assert (selection["val_videos"], selection["val_clips"]) == (8, 32)
    assert json.loads((tmp_path / "model" / SAMPLING_FILE).read_text())["eval_clips_per_video"] == 4
    line = kept_model_line(selection)  # the report's line (a test of evaluation checks that it is there)
    assert "chosen by the validation loss on 32 clips (8 videos, 4 evenly spaced clips of each" in line
