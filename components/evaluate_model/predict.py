"""Predict the action of new videos with a trained model folder.

Each video is decoded and sampled as evaluation does: the training clips' frame count, step and
size, and the evenly spaced clips of the test videos (by default one, centred), whose logits
are averaged. A file that cannot be read as a video gets an error naming it, and
the other videos are still answered.
"""

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def eval_clips(path: Path, sampling: dict) -> np.ndarray:
    """The uint8 clips that extraction stores of this video, had it been a test video."""
    from components.extract_frames.extract import ClipSpec, extract_video

    n_frames, height, width, _ = sampling["frame_shape"]
    spec = ClipSpec(n_frames, sampling["frame_step"], height, width, clips_per_train_video=1, seed=0,
                    eval_clips_per_video=sampling["eval_clips_per_video"])
    return extract_video(Path(path), "test", spec)[0]


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
            clips = eval_clips(Path(path), sampling)
        except VideoError as e:
            log.error("%s", e)
            answers.append({"video": str(path), "error": str(e)})
            continue
        logits = model.predict_on_batch(clips).astype(np.float64).mean(axis=0)
        probabilities = softmax(logits)
        best = np.argsort(-probabilities)[:top_k]
        answers.append({"video": str(path), "top": [
            {"class": classes[i], "probability": round(float(probabilities[i]), 6)} for i in best]})
    return answers
