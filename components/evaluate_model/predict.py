"""Predict the action of new videos with a trained model folder.

Each video is decoded and sampled as evaluation does: one centred clip of the training clips'
frame count, step and size. A file that cannot be read as a video gets an error naming it, and
the other videos are still answered.
"""

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def centred_clip(path: Path, frame_shape: list[int], frame_step: int) -> np.ndarray:
    """The uint8 clip that evaluation would take from this video."""
    from components.extract_frames.video import Video, centre_start

    n_frames, height, width, _ = frame_shape
    with Video(path) as video:
        start = centre_start(video.frame_count, n_frames, frame_step)
        return video.read_clips([start], n_frames, frame_step, height, width)[0]


def predict_videos(model_dir: Path, videos: list[Path], top_k: int = 5) -> list[dict]:
    """For each video, ``{"video", "top": [{"class", "probability"}, ...]}`` or ``{"video", "error"}``."""
    from scipy.special import softmax

    from components.extract_frames.video import VideoError
    from components.train_model.train import SAMPLING_FILE, load_model

    model_dir = Path(model_dir)
    if model_dir.is_file():  # the model.keras inside the folder
        model_dir = model_dir.parent
    model, classes = load_model(model_dir)
    sampling = json.loads((model_dir / SAMPLING_FILE).read_text())
    answers = []
    for path in videos:
        try:
            clip = centred_clip(Path(path), sampling["frame_shape"], sampling["frame_step"])
        except VideoError as e:
            log.error("%s", e)
            answers.append({"video": str(path), "error": str(e)})
            continue
        probabilities = softmax(model.predict_on_batch(clip[None])[0].astype(np.float64))
        best = np.argsort(-probabilities)[:top_k]
        answers.append({"video": str(path), "top": [
            {"class": classes[i], "probability": round(float(probabilities[i]), 6)} for i in best]})
    return answers
