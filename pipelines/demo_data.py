"""A small synthetic dataset in UCF101's zip layout, for the offline demo, the tests and the
training benchmarks.

Each clip shows a bright square drifting over a dark background in one of four directions,
wrapping around the edges. Start position, speed and size are random, so every single frame
is drawn from the same distribution in every class: only motion over time tells them apart.
Clips of one group share the square's size and shade, as UCF101 clips of one group share an
actor and a scene. Harder levels (``LEVELS``) put the square on a textured background with less
contrast, and add dimmer squares drifting every way, at a lower speed.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from components.common import atomic_write_bytes

DIRECTIONS = {"DriftLeft": (-1, 0), "DriftRight": (1, 0), "DriftUp": (0, -1), "DriftDown": (0, 1)}


@dataclasses.dataclass(frozen=True)
class Level:
    """How hard a motion set is."""

    side: tuple[int, int]  # the square's side in pixels (at 80 wide), drawn per group
    shade: tuple[int, int]  # its brightness, drawn per group
    speed: tuple[float, float]  # pixels a frame (at 80 wide), drawn per clip
    texture: int = 0  # the spread of a static random background's brightness around 60; 0: black
    distractors: int = 0  # dimmer squares, each drifting its own way


LEVELS = {
    "easy": Level(side=(8, 15), shade=(170, 256), speed=(1.5, 3.0)),
    "medium": Level(side=(5, 10), shade=(120, 200), speed=(1.0, 2.0)),
    "hard": Level(side=(5, 10), shade=(120, 200), speed=(1.0, 2.0), texture=15, distractors=1),
}
FRAME_SIZE = (80, 60)  # width, height: UCF101's 4:3 aspect ratio
FPS = 25
ZIP_TIMESTAMP = (2020, 1, 1, 0, 0, 0)


def render_clip(direction: tuple[int, int], rng: np.random.Generator, n_frames: int,
                side: int, shade: int, frame_size: tuple[int, int] = FRAME_SIZE,
                level: Level = LEVELS["easy"]) -> np.ndarray:
    """Returns ``n_frames`` BGR frames of a square of ``side`` pixels drifting in ``direction``,
    on the level's background, among its distractors."""
    width, height = frame_size
    scale = width / FRAME_SIZE[0]
    squares = [(direction, side, shade, rng.uniform(0, width), rng.uniform(0, height),
                rng.uniform(*level.speed) * scale)]
    for _ in range(level.distractors):  # dimmer and smaller, each its own way
        way = list(DIRECTIONS.values())[rng.integers(len(DIRECTIONS))]
        squares.append((way, max(2, side * 2 // 3), shade // 2, rng.uniform(0, width), rng.uniform(0, height),
                        rng.uniform(*level.speed) * scale))
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.zeros((height, width, 3), np.uint8)
    if level.texture:
        noise = rng.normal(60, level.texture, (height, width, 1))
        background[:] = np.clip(cv2.GaussianBlur(noise, (5, 5), 0)[..., None], 0, 255).astype(np.uint8)
    frames = np.repeat(background[None], n_frames, axis=0)
    for t in range(n_frames):
        for (dx, dy), size, brightness, x, y, speed in reversed(squares):  # the target on top
            inside = ((xs - x - dx * speed * t) % width < size) & ((ys - y - dy * speed * t) % height < size)
            frames[t][inside] = brightness
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
                  frame_size: tuple[int, int] = FRAME_SIZE, level: str = "easy") -> Path:
    """Writes a zip of ``UCF101/v_<Class>_g<GG>_c<CC>.avi`` clips; the same seed gives the same bytes.

    ``frame_size`` is (width, height); the square and its speed scale with the width.
    """
    settings = LEVELS[level]
    scale = frame_size[0] / FRAME_SIZE[0]
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for class_name, direction in DIRECTIONS.items():
            for group in range(1, groups + 1):
                side, shade = int(rng.integers(*settings.side) * scale), int(rng.integers(*settings.shade))
                for clip in range(1, clips_per_group + 1):
                    frames = render_clip(direction, rng, frames_per_clip, side, shade, frame_size, settings)
                    info = zipfile.ZipInfo(f"UCF101/v_{class_name}_g{group:02d}_c{clip:02d}.avi",
                                           ZIP_TIMESTAMP)
                    zf.writestr(info, encode_avi(frames))
    atomic_write_bytes(path, buffer.getvalue())
    return path
