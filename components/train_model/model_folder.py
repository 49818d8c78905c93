"""The model folder: what training writes and what evaluation, prediction and serving read.

``model.keras`` is the kept epoch (it loads once ``components.train_model.model`` is imported,
which ``load_model`` does); ``saved_model/`` the same as a TensorFlow SavedModel (``export.py``);
``classes.json`` the class of each logit; ``history.json`` the metrics of every epoch;
``selection.json`` which epoch was kept and whether its score could be chance; ``sampling.json``
how clips were sampled, so that new videos are sampled as the test videos were; ``trials.json``,
in the model a sweep kept, every trial's settings and scores (``sweep.record``); ``trial.json``,
in a trial of a Vertex AI Vizier study, its id, settings and training metrics, written last
(``components.train_model.trial``).
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
HISTORY_FILE = "history.json"
SELECTION_FILE = "selection.json"
SAMPLING_FILE = "sampling.json"
TRIALS_FILE = "trials.json"
TRIAL_FILE = "trial.json"
# What prediction needs to sample a video as the training videos were: the frame shape, the
# step in frames or the seconds a clip covers, the training videos' frame rate, and how many
# evenly spaced clips a test video had.
SAMPLING_KEYS = ("frame_shape", "frame_step", "clip_seconds", "train_fps", "eval_clips_per_video")


def read(model_dir: Path, name: str):
    """One of the folder's JSON files."""
    return json.loads((Path(model_dir) / name).read_text())


def load_model(model_dir: Path, compile: bool = True):  # noqa: A002 (Keras' name)
    """The Keras model of a model folder, and its class names."""
    import keras

    from components.train_model import model as _  # noqa: F401 (registers the custom layers)

    model = keras.models.load_model(Path(model_dir) / MODEL_FILE, compile=compile)
    return model, read(model_dir, CLASSES_FILE)
