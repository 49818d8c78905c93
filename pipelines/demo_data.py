"""A small synthetic dataset in UCF101's zip layout, for the offline demo, the tests and the
training benchmarks: a motion set of ``pipelines.motion_sets`` (by default ``easy``, a bright
square drifting over black in one of four directions), one look per group, its clips XVID AVIs.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from components.common import atomic_write_bytes
from pipelines.motion_sets import FRAME_SIZE, MOTION_SETS, draw_look, render_clip

FPS = 25
ZIP_TIMESTAMP = (2020, 1, 1, 0, 0, 0)


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
                  frame_size: tuple[int, int] = FRAME_SIZE, motion_set: str = "easy") -> Path:
    """Writes a zip of ``UCF101/v_<Class>_g<GG>_c<CC>.avi`` clips of a motion set, the clips of a
    group in one look; the same seed gives the same bytes. ``frame_size`` is (width, height)."""
    chosen = MOTION_SETS[motion_set]
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for class_name in chosen.classes:
            for group in range(1, groups + 1):
                look = draw_look(chosen, rng, frame_size)
                for clip in range(1, clips_per_group + 1):
                    frames = render_clip(chosen, class_name, look, rng, frames_per_clip, frame_size)
                    info = zipfile.ZipInfo(f"UCF101/v_{class_name}_g{group:02d}_c{clip:02d}.avi",
                                           ZIP_TIMESTAMP)
                    zf.writestr(info, encode_avi(frames))
    atomic_write_bytes(path, buffer.getvalue())
    return path
