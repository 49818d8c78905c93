"""Synthetic videos whose every frame shows a number, as 12 black or white blocks that survive
the codec and the resize: its frame index, or the time it is shown in centiseconds. Decoding a
clip's frames back to numbers checks frame selection against an independent reference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROWS, COLUMNS = 3, 4  # 12 bits: numbers up to 4095
SIDE = 240  # square frames, so a square clip has no padding
FOURCC = {".avi": "XVID", ".mp4": "mp4v", ".mkv": "XVID", ".mov": "mp4v", ".webm": "VP90"}


def number_frame(number: int) -> np.ndarray:
    """A BGR frame showing ``number`` in binary, one block a bit, the first bit top left."""
    frame = np.zeros((SIDE, SIDE, 3), np.uint8)
    height, width = SIDE // ROWS, SIDE // COLUMNS
    for bit in range(ROWS * COLUMNS):
        if number >> bit & 1:
            row, column = divmod(bit, COLUMNS)
            frame[row * height:(row + 1) * height, column * width:(column + 1) * width] = 255
    return frame


def read_number(frame: np.ndarray) -> int:
    """The number a (resized, RGB) square frame shows: the middle of each block read as a bit."""
    size = frame.shape[0]
    height, width = size / ROWS, size / COLUMNS
    number = 0
    for bit in range(ROWS * COLUMNS):
        row, column = divmod(bit, COLUMNS)
        block = frame[int((row + 0.3) * height):int((row + 0.7) * height),
                      int((column + 0.3) * width):int((column + 0.7) * width)]
        number |= int(block.mean() > 127) << bit
    return number


def write_number_video(path: Path, numbers: list[int], fps: float) -> Path:
    """A video of one frame per number, in the codec its suffix's container usually holds."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix]), fps, (SIDE, SIDE))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path.suffix} video here")
    for number in numbers:
        writer.write(number_frame(number))
    writer.release()
    return path


def index_video(path: Path, frames: int, fps: float = 25) -> Path:
    """Frame ``i`` shows ``i``."""
    return write_number_video(path, list(range(frames)), fps)


def time_video(path: Path, seconds: float, fps: float) -> Path:
    """Each frame shows the time it is shown at, in centiseconds: the same scene at any rate."""
    return write_number_video(path, [round(i * 100 / fps) for i in range(round(seconds * fps))], fps)


def clip_numbers(clips: np.ndarray) -> list[list[int]]:
    """The numbers each clip's frames show."""
    return [[read_number(frame) for frame in clip] for clip in clips]
