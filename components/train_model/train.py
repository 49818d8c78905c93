"""Stage 3: train the (2+1)D ResNet on the extracted clips.

Adam and sparse categorical cross-entropy from logits, as in the tutorial. The output model
folder holds ``model.keras`` (it loads back once ``components.train_model.model`` is imported),
``classes.json`` (the class of each logit) and ``history.json`` (per-epoch metrics).
"""

import json
import logging
import tempfile
from pathlib import Path

from components.common import read_manifest, require_at_least_one, write_json

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"


def batches(frames_dir: Path, split: str, batch_size: int, training: bool, seed: int):
    """Batches of ``(float32 clips in [0, 1], labels)`` from one split of the extracted dataset."""
    import tensorflow as tf

    from components.extract_frames.records import clip_dataset, to_model_input

    manifest = read_manifest(frames_dir)
    n_frames, height, width, _ = manifest["frame_shape"]
    shards = [str(Path(frames_dir) / s) for s in manifest["shards"][split]]
    dataset = clip_dataset(shards, n_frames, height, width, training, seed)
    return (dataset.apply(tf.data.experimental.assert_cardinality(manifest["counts"][split]))
            .map(lambda clip, label: (to_model_input(clip), label),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def train(frames_dir: Path, model_dir: Path, epochs: int, batch_size: int,
          learning_rate: float, seed: int) -> dict[str, list[float]]:
    """Trains from scratch, writes the model folder, and returns the per-epoch history."""
    import keras

    from components.train_model.model import build_model

    require_at_least_one({"epochs": epochs, "batch_size": batch_size})
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    manifest = read_manifest(frames_dir)
    classes = manifest["classes"]
    n_frames, height, width, _ = manifest["frame_shape"]
    keras.utils.set_random_seed(seed)
    model = build_model(len(classes), n_frames, height, width)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    log.info("training %s (%d parameters) on %d clips for %d epochs", model.name,
             model.count_params(), manifest["counts"]["train"], epochs)
    history = model.fit(batches(frames_dir, "train", batch_size, True, seed),
                        validation_data=batches(frames_dir, "val", batch_size, False, seed),
                        epochs=epochs, shuffle=False, verbose=2).history
    history = {key: [float(v) for v in values] for key, values in history.items()}
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        model.save(Path(tmp) / MODEL_FILE)
        (Path(tmp) / MODEL_FILE).replace(model_dir / MODEL_FILE)
    write_json(model_dir / CLASSES_FILE, classes)
    write_json(model_dir / HISTORY_FILE, history)
    return history


def final_metrics(history: dict[str, list[float]]) -> dict[str, float]:
    """The last epoch's train and validation loss and accuracy."""
    return {"train_loss": history["loss"][-1], "train_accuracy": history["accuracy"][-1],
            "val_loss": history["val_loss"][-1], "val_accuracy": history["val_accuracy"][-1]}


def load_model(model_dir: Path):
    """Loads a trained model folder: the Keras model and its class names."""
    import keras

    import components.train_model.model  # noqa: F401  (registers the custom layers)

    model_dir = Path(model_dir)
    model = keras.models.load_model(model_dir / MODEL_FILE)
    return model, json.loads((model_dir / CLASSES_FILE).read_text())
