"""Predict the action of new videos with a trained model folder.

Each video is decoded and sampled as evaluation does: the training clips' frame count and
size, the evenly spaced clips of the test videos (by default one, centred), whose logits are
averaged, and the same time between frames: a 60 fps video is sampled over the seconds a
training clip covered, not over the same number of frames (``sampling.json`` records the frame
step and the training videos' frame rate, or the seconds a clip covers). A file that cannot be
read as a video gets an error naming it, and the other videos are still answered.
"""

import json
import logging
from pathlib import Path

import numpy as np

from components.extract_frames.config import ClipSpec

log = logging.getLogger(__name__)


def sampling_spec(sampling: dict) -> ClipSpec:
    """The clips a new video is sampled by: those of a test video, over the same seconds as the
    training clips (their frame step at the training videos' frame rate, where they were sampled
    by frames and the rate is known)."""
    n_frames, height, width, _ = sampling["frame_shape"]
    clip_seconds = sampling.get("clip_seconds") or 0.0
    if not clip_seconds and sampling.get("train_fps") and n_frames > 1:
        clip_seconds = sampling["frame_step"] * (n_frames - 1) / sampling["train_fps"]
    return ClipSpec(n_frames=n_frames, frame_step=sampling["frame_step"], clip_seconds=clip_seconds,
                    height=height, width=width, eval_clips_per_video=sampling["eval_clips_per_video"])


def eval_clips(path: Path, sampling: dict) -> tuple[np.ndarray | None, dict]:
    """The uint8 clips that extraction stores of this video, had it been a test video, and what
    it records of it (None and the reason, for a video that cannot be decoded)."""
    from components.extract_frames.extract import try_extract_video

    return try_extract_video(Path(path), "test", sampling_spec(sampling))


def predict_videos(model_dir: Path, videos: list[Path], top_k: int = 5) -> list[dict]:
    """For each video, ``{"video", "top": [{"class", "probability"}, ...]}`` or ``{"video", "error"}``."""
    from scipy.special import softmax

    from components.train_model.train import SAMPLING_FILE, load_model

    model_dir = Path(model_dir)
    if model_dir.is_file():  # the model.keras inside the folder
        model_dir = model_dir.parent
    model, classes = load_model(model_dir)
    sampling = json.loads((model_dir / SAMPLING_FILE).read_text())
    answers = []
    for path in videos:
        clips, outcome = eval_clips(Path(path), sampling)
        if clips is None:
            log.error("%s", outcome["error"])
            answers.append({"video": str(path), "error": outcome["error"]})
            continue
        logits = model.predict_on_batch(clips).astype(np.float64).mean(axis=0)
        probabilities = softmax(logits)
        best = np.argsort(-probabilities)[:top_k]
        answers.append({"video": str(path), "top": [
            {"class": classes[i], "probability": round(float(probabilities[i]), 6)} for i in best]})
    return answers
