"""Predict the action of new videos with a trained model folder.

Each video is decoded and sampled as evaluation does: the training clips' frame count and
size, the evenly spaced clips of the test videos (by default one, centred), whose logits are
averaged, and the same time between frames: a 60 fps video is sampled over the seconds a
training clip covered, not over the same number of frames (``sampling.json`` records the frame
step and the training videos' frame rate, or the seconds a clip covers). A file that cannot be
read as a video gets an error naming it, and the other videos are still answered. ``videoclf
predict`` (``batch.py``, which decodes on every core and scores in batches) and the inference
server (``server.py``) both answer through ``Predictor``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from components.extract_frames.config import ClipSpec
from components.serve_model.config import BATCH_SIZE, TOP_K
from components.storage import filesystem, is_remote

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


class Predictor:
    """A trained model folder (local, or a ``gs://`` or ``s3://`` folder, copied here once),
    loaded once, answering videos and already-sampled clips."""

    def __init__(self, model_uri: str | Path):
        from components.train_model.model_folder import SAMPLING_FILE, load_model

        model_dir = str(model_uri).rstrip("/")
        if is_remote(model_dir):
            self._copy = tempfile.TemporaryDirectory(prefix="videoclf-model-")
            fs, path = filesystem(model_dir)
            fs.get(path + "/", self._copy.name, recursive=True)
            log.info("copied the model folder %s", model_dir)
            model_dir = self._copy.name
        elif Path(model_dir).is_file():  # the model.keras inside the folder
            model_dir = str(Path(model_dir).parent)
        self.folder = Path(model_dir)  # the model folder, here
        self.model, self.classes = load_model(self.folder)
        self.sampling = json.loads((Path(model_dir) / SAMPLING_FILE).read_text())
        self.clip_shape = tuple(self.sampling["frame_shape"])

    def probabilities(self, videos_clips: list[np.ndarray]) -> np.ndarray:
        """The class probabilities of each video from its clips, the mean of their logits, in
        one batch for them all."""
        from components.train_model.scores import log_softmax

        logits = self.model.predict_on_batch(np.concatenate(videos_clips)).astype(np.float64)
        ends = np.cumsum([len(clips) for clips in videos_clips])
        return np.exp(log_softmax(np.stack([part.mean(axis=0) for part in np.split(logits, ends[:-1])])))

    def top(self, probabilities: np.ndarray, k: int) -> list[dict]:
        """The ``k`` likeliest classes, with their probabilities."""
        return [{"class": self.classes[i], "probability": round(float(probabilities[i]), 6)}
                for i in np.argsort(-probabilities)[:k]]

    def video_clips(self, path: Path) -> tuple[np.ndarray | None, dict]:
        """The clips of a video file, sampled as the model's test videos were."""
        return eval_clips(Path(path), self.sampling)

    def file_clips(self, data: bytes) -> np.ndarray:
        """The clips of a video file's bytes (a file sent to the server), or a ValueError saying
        why it cannot be decoded. The file is named by its container, as its bytes show, so that
        OpenCV trusts the frame count of those whose header has it and catches a truncated one."""
        with tempfile.NamedTemporaryFile(prefix="videoclf-request-", suffix=container_suffix(data)) as file:
            file.write(data)
            file.flush()
            clips, outcome = self.video_clips(Path(file.name))
        if clips is None:
            raise ValueError(outcome["error"].replace(file.name, "the video"))
        return clips


def container_suffix(data: bytes) -> str:
    """The file name suffix of a video's container, from its first bytes (``.video`` where
    they are not AVI's, MP4's and MOV's, or Matroska's and WebM's)."""
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return ".avi"
    if data[4:8] == b"ftyp":
        return ".mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".mkv"
    return ".video"


def predict_videos(model: str | Path, sources: list[str | Path], top_k: int = TOP_K, segments: float = 0.0,
                   batch_size: int = BATCH_SIZE, workers: int = 0) -> list[dict]:
    """For each video of the sources (files, folders, lists, zips: ``batch.list_videos``), in order,
    ``{"video", "top": [{"class", "probability"}, ...]}``, its segments with ``segments`` (the
    stride in seconds), or ``{"video", "error"}``; decoded by ``workers`` processes (0: one per
    core), scored in batches (``batch.answers``)."""
    from components.serve_model.batch import answers, list_videos

    return list(answers(Predictor(model), list_videos(sources), top_k, segments, batch_size, workers))
