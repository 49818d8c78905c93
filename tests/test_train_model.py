import json

import numpy as np
import pytest

from components.train_model.model import build_model
from components.train_model.train import CLASSES_FILE, HISTORY_FILE, MODEL_FILE, load_model, train


def test_tutorial_network_has_443322_parameters():
    assert build_model(num_classes=10, n_frames=10, height=224, width=224).count_params() == 443_322


def test_training_writes_a_model_that_loads_back(frames_dir, tmp_path):
    history = train(frames_dir, tmp_path, epochs=2, batch_size=4, learning_rate=1e-4, seed=0)
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in history.values())
    assert json.loads((tmp_path / HISTORY_FILE).read_text()) == history
    model, classes = load_model(tmp_path)
    assert classes == json.loads((frames_dir / "manifest.json").read_text())["classes"]
    clip = np.random.default_rng(0).random((2, 4, 32, 32, 3), dtype=np.float32)
    assert model.predict(clip, verbose=0).shape == (2, 4)
    assert {p.name for p in tmp_path.iterdir()} == {MODEL_FILE, CLASSES_FILE, HISTORY_FILE}


def test_same_seed_same_weights(frames_dir, tmp_path):
    first = train(frames_dir, tmp_path / "a", epochs=1, batch_size=4, learning_rate=1e-4, seed=3)
    second = train(frames_dir, tmp_path / "b", epochs=1, batch_size=4, learning_rate=1e-4, seed=3)
    assert first == second


@pytest.mark.parametrize(("overrides", "message"), [
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"learning_rate": 0.0}, "learning_rate must be positive"),
])
def test_bad_parameters_are_named(frames_dir, tmp_path, overrides, message):
    params = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-4, "seed": 0, **overrides}
    with pytest.raises(ValueError, match=message):
        train(frames_dir, tmp_path, **params)


def test_missing_dataset_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        train(tmp_path, tmp_path / "model", epochs=1, batch_size=4, learning_rate=1e-4, seed=0)
