"""Decoding and frame sampling of one video with OpenCV, shared by extraction and prediction.

A clip is ``n_frames`` frames ``step`` frames apart from a start frame (``step`` may be
fractional when clips are sampled by time; each frame is the nearest one). Frames past the end
of a short video are black, as in the tutorial. Skipped frames are only grabbed, never
converted, and every kept frame is resized with padding in OpenCV.

The frame count comes from the container's header where that is reliable (AVI, MP4, MOV); MKV,
WebM and MPEG-TS headers only estimate it, and a header count of 0 says nothing, so there the
frames are counted by decoding. A short video is decoded in one pass to its end, which also
catches a truncated file (fewer frames than its header declares); in a long one, each clip's
frames are reached by seeking, and the last declared frame is sought to catch a truncation, so
a video of minutes costs what its clips need. A file that does not open, decodes no frame, or
is truncated raises VideoError naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

RELIABLE_COUNT = (".avi", ".mp4", ".mov", ".m4v")  # containers whose header counts the frames
SEEK_ABOVE = 1500  # frames (a minute at 25 fps): longer videos are read by seeking to each clip
TRUNCATION_TOLERANCE = 2  # frames a container may over-declare without being truncated


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


def span(n_frames: int, step: float) -> int:
    """How many frames of the video one clip covers."""
    return 1 + round((n_frames - 1) * step)


def clip_frames(start: int, n_frames: int, step: float) -> list[int]:
    """The frame numbers of the clip that starts at ``start``."""
    return [start + round(k * step) for k in range(n_frames)]


def spaced_starts(total_frames: int, n_frames: int, step: float, count: int) -> list[int]:
    """``count`` evenly spaced starts, the deterministic sampling of validation, test and
    prediction: the k-th clip is centred on the k-th of ``count`` equal stretches of the
    possible starts, so a single clip is the centred clip."""
    max_start = max(0, total_frames - span(n_frames, step))
    return [(2 * k + 1) * max_start // (2 * count) for k in range(count)]


def random_starts(total_frames: int, n_frames: int, step: float, count: int,
                  rng: np.random.Generator) -> list[int]:
    """``count`` random starts for training; 0 when the video is shorter than one clip."""
    max_start = max(0, total_frames - span(n_frames, step))
    return [int(s) for s in rng.integers(0, max_start + 1, size=count)]


def open_capture(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: OpenCV cannot open this file as a video")
    return capture


class Video:
    """A video file: its frame count and frame rate, then clips read from it."""

    def __init__(self, path: Path, frame_count: int | None = None):
        """Opens the file; ``frame_count``, the count of an earlier opening of the same file,
        spares a video whose header cannot be trusted a second count by decoding."""
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{path}: no such file")
        self.capture = open_capture(self.path)
        declared = frame_count or int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = round(fps, 3) if 0 < fps < 1000 else None
        self.decoded = 0  # frames decoded in the pass that counted them
        self.counted = not frame_count and not (self.path.suffix.lower() in RELIABLE_COUNT and declared > 0)
        if self.counted:  # the header cannot be trusted: count by decoding
            while self.capture.grab():
                self.decoded += 1
            self.capture.release()
            self.capture = open_capture(self.path)
            declared = self.decoded
            if declared == 0:
                raise VideoError(f"{path}: no frame could be decoded")
        self.frame_count = declared

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.capture.release()

    def read_clips(self, clips: Sequence[Sequence[int]], height: int, width: int) -> np.ndarray:
        """RGB uint8 clips of shape ``(len(clips), n_frames, height, width, 3)``, each given by
        its frame numbers; frames at or past the end are black."""
        wanted: dict[int, list[tuple[int, int]]] = {}
        for c, frames in enumerate(clips):
            for t, frame in enumerate(frames):
                if frame < self.frame_count:
                    wanted.setdefault(frame, []).append((c, t))
        out = np.zeros((len(clips), len(clips[0]), height, width, 3), np.uint8)

        def keep(frame_number: int, image: np.ndarray) -> None:
            rgb = cv2.cvtColor(resize_with_pad(image, height, width), cv2.COLOR_BGR2RGB)
            for c, t in wanted[frame_number]:
                out[c, t] = rgb

        if self.frame_count > SEEK_ABOVE:
            self._read_by_seeking(wanted, keep)
        else:
            self._read_in_one_pass(wanted, keep)
        return out

    def _read_in_one_pass(self, wanted: dict, keep) -> None:
        """Decodes on to the end (grabbing only between kept frames), which catches truncation."""
        position = 0
        while self.capture.grab():
            if position in wanted:
                ok, image = self.capture.retrieve()
                if not ok:
                    break
                keep(position, image)
            position += 1
        if position == 0:
            raise VideoError(f"{self.path}: no frame could be decoded")
        if position < self.frame_count - TRUNCATION_TOLERANCE:
            raise VideoError(f"{self.path}: truncated: {position} of the {self.frame_count} frames "
                             "its header declares decode")

    def _read_by_seeking(self, wanted: dict, keep) -> None:
        """Seeks to each run of wanted frames and to the last declared frame."""
        numbers = sorted(wanted)
        last = self.frame_count - 1 - TRUNCATION_TOLERANCE
        position = None
        for number in [*numbers, last]:
            if position is None or not 0 <= number - position < SEEK_ABOVE // 10:
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, number)
                position = number
            while position < number and self.capture.grab():
                position += 1
            ok, image = self.capture.read()
            if not ok:
                raise VideoError(f"{self.path}: truncated: frame {number} of the {self.frame_count} "
                                 "its header declares does not decode")
            position += 1
            if number in wanted:
                keep(number, image)
