import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from components.train_model import train as train_module
from components.train_model.inputs import batches, read_records
from components.train_model.model import build_model
from components.train_model.train import (
    CLASSES_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    SAMPLING_FILE,
    STATE_FILE,
    CheckpointMismatchError,
    TrainConfig,
    TrainingDivergedError,
    load_model,
    train,
)

QUICK = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-4, seed=0, patience=0)


def test_tutorial_network_has_443322_parameters():
    assert build_model(num_classes=10, n_frames=10, height=224, width=224).count_params() == 443_322


def test_width_and_depth_are_parameters():
    tutorial = build_model(4, 4, 32, 32)
    wider = build_model(4, 4, 32, 32, base_filters=32)
    deeper = build_model(4, 4, 32, 32, blocks_per_stage=2)
    assert wider.count_params() > 3 * tutorial.count_params()
    assert len(deeper.layers) > len(tutorial.layers)
    assert deeper.count_params() > tutorial.count_params()


def test_training_writes_the_best_model_and_its_metrics(frames_dir, tmp_path):
    result = train(frames_dir, tmp_path, QUICK, tensorboard_dir=tmp_path.parent / "tb")
    history = result.history
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in history.values())
    assert json.loads((tmp_path / HISTORY_FILE).read_text()) == history
    metrics = result.metrics
    assert metrics["epochs_run"] == 2 and metrics["train_clips_per_second"] > 0
    assert history["val_accuracy"][metrics["best_epoch"] - 1] == max(history["val_accuracy"])
    assert result.precision == "float32" and result.replicas == 1  # auto on a CPU
    model, classes = load_model(tmp_path)
    assert classes == json.loads((frames_dir / "manifest.json").read_text())["classes"]
    clip = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    assert model.predict(clip, verbose=0).shape == (2, 4)
    # The default checkpoints inside the model folder are removed once training succeeds.
    assert {p.name for p in tmp_path.iterdir()} == {MODEL_FILE, CLASSES_FILE, HISTORY_FILE, SAMPLING_FILE}
    assert list((tmp_path.parent / "tb").rglob("events.out.tfevents.*"))


def test_same_seed_same_weights(frames_dir, tmp_path):
    first = train(frames_dir, tmp_path / "a", QUICK).history
    second = train(frames_dir, tmp_path / "b", QUICK).history
    assert first == second


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


def test_val_batches_are_the_same_every_pass(frames_dir):
    dataset = batches(frames_dir, "val", batch_size=4)
    first, second = ([clips.numpy() for clips, _ in dataset] for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"base_filters": 0}, "base_filters must be at least 1"),
    ({"learning_rate": 0.0}, "learning_rate must be positive"),
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


def test_early_stopping_keeps_the_best_epoch(frames_dir, tmp_path):
    # val accuracy takes at most 9 values on 8 val clips, so with a patience of 1 training
    # must stop by epoch 10.
    config = TrainConfig(epochs=12, batch_size=4, learning_rate=1e-3, seed=0, patience=1)
    metrics = train(frames_dir, tmp_path, config).metrics
    assert metrics["stopped_early"] == 1
    assert metrics["epochs_run"] == metrics["best_epoch"] + 1 < 12


TRAIN_IN_SUBPROCESS = """
import sys
from components.train_model.train import TrainConfig, train
train(sys.argv[1], sys.argv[2], TrainConfig(epochs=8, batch_size=4, seed=0, patience=0), sys.argv[3])
"""


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
    assert 1 <= killed_after < 8, "the worker was not killed partway through training"
    assert not (tmp_path / "model" / MODEL_FILE).exists()

    caplog.set_level("INFO")
    config = TrainConfig(epochs=8, batch_size=4, seed=0, patience=0)
    result = train(frames_dir, tmp_path / "model", config, str(checkpoint_dir))
    assert f"resuming after epoch {killed_after}" in caplog.text
    assert result.metrics["epochs_run"] == 8
    assert all(len(values) == 8 for values in result.history.values())
    model, _ = load_model(tmp_path / "model")
    assert model.count_params() == build_model(4, 4, 32, 32).count_params()
    kept = {p.name for p in checkpoint_dir.iterdir()}
    assert kept == {STATE_FILE, "epoch-0008.keras", f"best-{result.metrics['best_epoch']:04d}.keras"}


def test_bucket_checkpoints_resume_with_more_epochs(frames_dir, tmp_path, bucket):
    import fsspec

    checkpoint_dir = f"{bucket}/runs/resume"
    train(frames_dir, tmp_path / "a", QUICK, checkpoint_dir)
    fs = fsspec.filesystem(bucket.split("://")[0])
    assert json.loads(fs.cat_file(f"{checkpoint_dir}/state.json"))["epoch"] == 2
    more = TrainConfig(**{**QUICK.__dict__, "epochs": 3})
    result = train(frames_dir, tmp_path / "b", more, checkpoint_dir)
    assert all(len(values) == 3 for values in result.history.values())
    assert result.history["loss"][:2] == json.loads((tmp_path / "a" / HISTORY_FILE).read_text())["loss"]


def test_a_checkpoint_of_other_settings_is_refused(frames_dir, tmp_path):
    train(frames_dir, tmp_path / "a", QUICK, str(tmp_path / "ckpt"))
    other = TrainConfig(**{**QUICK.__dict__, "learning_rate": 1e-3})
    with pytest.raises(CheckpointMismatchError, match=r"ckpt holds a training run with other learning_rate"):
        train(frames_dir, tmp_path / "b", other, str(tmp_path / "ckpt"))


def test_training_checkpoints_to_a_folder_of_the_run_on_a_mounted_volume(frames_dir, tmp_path):
    """The training component, as compiled with --checkpoint-pvc: with no checkpoint_dir, its
    checkpoints go to <volume>/<run id>, where a retried pod of the same run finds them."""
    from kfp import dsl, local

    from components.train_model.component import train_model

    volume = tmp_path / "volume"
    volume.mkdir()

    @dsl.pipeline
    def train_on_volume():
        frames = dsl.importer(artifact_uri=str(frames_dir), artifact_class=dsl.Dataset)
        train_model(frames=frames.output, epochs=1, batch_size=4, learning_rate=1e-4, seed=0,
                    random_flip=False, base_filters=16, blocks_per_stage=1, precision="auto", patience=0,
                    checkpoint_dir="", checkpoint_volume=str(volume), run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    train_on_volume()
    [run] = volume.iterdir()
    assert len(run.name) >= 8 and json.loads((run / STATE_FILE).read_text())["epoch"] == 1
