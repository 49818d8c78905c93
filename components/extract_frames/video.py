"""Decoding and frame sampling of one video with OpenCV, shared by extraction and prediction.

Sampling follows the tutorial: ``n_frames`` frames, ``frame_step`` frames apart, from a start
frame. Frames past the end of a short video are black, as in the tutorial. Skipped frames are
only grabbed, never converted, and every kept frame is resized with padding in OpenCV. A file
that does not open, decodes no frame, or decodes fewer frames than its header declares (a
truncated file) raises VideoError naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


class VideoError(ValueError):
    """A video that cannot be decoded."""


def resize_with_pad(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes keeping the aspect ratio and pads with black to ``height x width``.

    Matches ``tf.image.resize_with_pad``: bilinear, the image centred, padding split evenly.
    """
    h, w = frame.shape[:2]
    ratio = max(w / width, h / height)
    new_h, new_w = max(1, int(h / ratio)), max(1, int(w / ratio))
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return cv2.copyMakeBorder(resized, top, height - new_h - top, left, width - new_w - left,
                              cv2.BORDER_CONSTANT, value=0)


def span(n_frames: int, frame_step: int) -> int:
    """How many frames of the video one clip covers."""
    return 1 + (n_frames - 1) * frame_step


def spaced_starts(total_frames: int, n_frames: int, frame_step: int, count: int) -> list[int]:
    """``count`` evenly spaced starts, the deterministic sampling of validation, test and
    prediction: the k-th clip is centred on the k-th of ``count`` equal stretches of the
    possible starts, so one clip is the centred clip."""
    max_start = max(0, total_frames - span(n_frames, frame_step))
    return [(2 * k + 1) * max_start // (2 * count) for k in range(count)]


def random_starts(total_frames: int, n_frames: int, frame_step: int, count: int,
                  rng: np.random.Generator) -> list[int]:
    """``count`` random starts for training; 0 when the video is shorter than one clip."""
    max_start = max(0, total_frames - span(n_frames, frame_step))
    return [int(s) for s in rng.integers(0, max_start + 1, size=count)]


class Video:
    """A video file opened once: its declared frame count, then clips read in one pass."""

    TRUNCATION_TOLERANCE = 2  # frames a container may over-declare without being truncated

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{path}: no such file")
        self.capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if not self.capture.isOpened():
            self.capture.release()
            raise VideoError(f"{path}: OpenCV cannot open this file as a video")
        self.frame_count = max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.decoded = 0  # frames decoded so far

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.capture.release()

    def read_clips(self, starts: Sequence[int], n_frames: int, frame_step: int, height: int,
                   width: int) -> np.ndarray:
        """RGB uint8 clips of shape ``(len(starts), n_frames, height, width, 3)``.

        Decodes on to the end of the file (grabbing only), so that ``decoded`` is the true
        length and a truncated file is caught.
        """
        wanted: dict[int, list[tuple[int, int]]] = {}
        for c, start in enumerate(starts):
            for t in range(n_frames):
                wanted.setdefault(start + t * frame_step, []).append((c, t))
        clips = np.zeros((len(starts), n_frames, height, width, 3), np.uint8)
        while self.capture.grab():
            if self.decoded in wanted:
                ok, frame = self.capture.retrieve()
                if not ok:
                    break
                rgb = cv2.cvtColor(resize_with_pad(frame, height, width), cv2.COLOR_BGR2RGB)
                for c, t in wanted[self.decoded]:
                    clips[c, t] = rgb
            self.decoded += 1
        if self.decoded == 0:
            raise VideoError(f"{self.path}: no frame could be decoded")
        if self.decoded < self.frame_count - self.TRUNCATION_TOLERANCE:
            raise VideoError(f"{self.path}: truncated: {self.decoded} of the {self.frame_count} "
                             f"frames its header declares decode")
        return clips
