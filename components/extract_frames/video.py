"""Decoding and frame sampling of one video with OpenCV, shared by extraction and prediction.

Sampling follows the tutorial: ``n_frames`` frames, ``frame_step`` frames apart, from a start
frame. Frames past the end of a short video are black, as in the tutorial. Skipped frames are
only grabbed, never converted, and every kept frame is resized with padding in OpenCV.
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


def frame_count(path: Path) -> int:
    """The number of frames the container declares (may be off by a few for some codecs)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open this file as a video")
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        capture.release()


def centre_start(total_frames: int, n_frames: int, frame_step: int) -> int:
    """The deterministic start used for validation, test and prediction: the clip is centred."""
    return max(0, total_frames - span(n_frames, frame_step)) // 2


def random_starts(total_frames: int, n_frames: int, frame_step: int, count: int,
                  rng: np.random.Generator) -> list[int]:
    """``count`` random starts for training; 0 when the video is shorter than one clip."""
    max_start = max(0, total_frames - span(n_frames, frame_step))
    return [int(s) for s in rng.integers(0, max_start + 1, size=count)]


def read_clips(path: Path, starts: Sequence[int], n_frames: int, frame_step: int,
               height: int, width: int) -> tuple[np.ndarray, int]:
    """Decodes one clip per start in a single pass over the video.

    Returns RGB uint8 clips of shape ``(len(starts), n_frames, height, width, 3)`` and the
    number of frames actually decoded. Raises VideoError when not one frame decodes.
    """
    wanted: dict[int, list[tuple[int, int]]] = {}
    for c, start in enumerate(starts):
        for t in range(n_frames):
            wanted.setdefault(start + t * frame_step, []).append((c, t))
    clips = np.zeros((len(starts), n_frames, height, width, 3), np.uint8)
    capture = cv2.VideoCapture(str(path))
    decoded = 0
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open this file as a video")
        last = max(wanted)
        while decoded <= last and capture.grab():
            if decoded in wanted:
                ok, frame = capture.retrieve()
                if not ok:
                    break
                rgb = cv2.cvtColor(resize_with_pad(frame, height, width), cv2.COLOR_BGR2RGB)
                for c, t in wanted[decoded]:
                    clips[c, t] = rgb
            decoded += 1
    finally:
        capture.release()
    if decoded == 0:
        raise VideoError(f"{path}: no frame could be decoded")
    return clips, decoded
