"""A small synthetic dataset in UCF101's zip layout, for the offline demo and the tests.

Each clip shows a bright square drifting over a dark background in one of four directions,
wrapping around the edges. Start position, speed and size are random, so every single frame
is drawn from the same distribution in every class: only motion over time tells them apart.
Clips of one group share the square's size and shade, as UCF101 clips of one group share an
actor and a scene.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from components.common import atomic_write_bytes

DIRECTIONS = {"DriftLeft": (-1, 0), "DriftRight": (1, 0), "DriftUp": (0, -1), "DriftDown": (0, 1)}
FRAME_SIZE = (80, 60)  # width, height: UCF101's 4:3 aspect ratio
FPS = 25
ZIP_TIMESTAMP = (2020, 1, 1, 0, 0, 0)


def render_clip(direction: tuple[int, int], rng: np.random.Generator, n_frames: int,
                side: int, shade: int, frame_size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Returns ``n_frames`` BGR frames of a square of ``side`` pixels drifting in ``direction``."""
    width, height = frame_size
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    speed = rng.uniform(1.5, 3.0) * width / FRAME_SIZE[0]
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        cx, cy = x + direction[0] * speed * t, y + direction[1] * speed * t
        inside = ((xs - cx) % width < side) & ((ys - cy) % height < side)
        frames[t][inside] = shade
    return frames


def encode_avi(frames: np.ndarray) -> bytes:
    """Encodes BGR frames as an XVID AVI, UCF101's codec."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "clip.avi")
        height, width = frames.shape[1:3]
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"XVID"), FPS, (width, height))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write XVID video: is its FFmpeg backend missing?")
        for frame in frames:
            writer.write(frame)
        writer.release()
        return Path(path).read_bytes()


def make_demo_zip(path: Path, groups: int = 25, clips_per_group: int = 4,
                  frames_per_clip: int = 30, seed: int = 0,
                  frame_size: tuple[int, int] = FRAME_SIZE) -> Path:
    """Writes a zip of ``UCF101/v_<Class>_g<GG>_c<CC>.avi`` clips; the same seed gives the same bytes.

    ``frame_size`` is (width, height); the square and its speed scale with the width.
    """
    scale = frame_size[0] / FRAME_SIZE[0]
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for class_name, direction in DIRECTIONS.items():
            for group in range(1, groups + 1):
                side, shade = int(rng.integers(8, 15) * scale), int(rng.integers(170, 256))
                for clip in range(1, clips_per_group + 1):
                    frames = render_clip(direction, rng, frames_per_clip, side, shade, frame_size)
                    info = zipfile.ZipInfo(f"UCF101/v_{class_name}_g{group:02d}_c{clip:02d}.avi",
                                           ZIP_TIMESTAMP)
                    zf.writestr(info, encode_avi(frames))
    atomic_write_bytes(path, buffer.getvalue())
    return path
