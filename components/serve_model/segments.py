"""Labels over time: the model's clip slid over a video as windows, and neighbouring windows with
the same top class merged into segments with start and end times in seconds.

A window is the clip a test video gives, started at a chosen frame: ``n_frames`` frames ``step``
apart, ``step`` being the training clips' seconds at this video's frame rate (``sampling_spec``).
Windows start every ``stride`` seconds (at the nearest frame), and a last one ends at the video's
end so that its tail is labelled too; a video shorter than one clip gets one window, its missing
frames black, as extraction pads it. Each window stands for the time nearest its centre: a
segment's boundary lies midway between the centres of the two windows on either side of it,
within half a stride of where the majority of a window's frames changes class.

A long video's windows are read in chunks of at most ``CHUNK_BYTES`` of clips, so memory stays
bounded whatever the video's length; a video of more than ``SEEK_ABOVE`` frames is read by seeking
to each chunk's frames (``components.extract_frames.video``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.extract_frames.config import ClipSpec
from components.extract_frames.video import Video, clip_frames, span

CHUNK_BYTES = 64 << 20  # clips a decoding process hands over at once


@dataclass(frozen=True)
class Timeline:
    """Where the windows of one video start, and what places them in time."""

    frame_count: int
    fps: float
    n_frames: int
    step: float  # frames between a window's sampled frames
    starts: tuple[int, ...]  # each window's first frame

    @property
    def duration(self) -> float:
        """The video's length in seconds."""
        return self.frame_count / self.fps

    def centres(self) -> np.ndarray:
        """Each window's centre, in seconds."""
        return (np.asarray(self.starts) + span(self.n_frames, self.step) / 2) / self.fps

    def bounds(self) -> list[tuple[float, float]]:
        """The time each window stands for: from midway between its centre and the previous
        one's to midway to the next one's; the first from 0, the last to the end."""
        centres = self.centres()
        edges = [0.0, *((centres[:-1] + centres[1:]) / 2).tolist(), self.duration]
        return [(edges[i], edges[i + 1]) for i in range(len(self.starts))]

    def chunks(self, clip_bytes: int) -> list[tuple[int, ...]]:
        """The window starts cut into chunks of at most CHUNK_BYTES of clips (one window at least)."""
        size = max(1, CHUNK_BYTES // clip_bytes)
        return [self.starts[i:i + size] for i in range(0, len(self.starts), size)]


def window_starts(frame_count: int, window_frames: int, stride_frames: float) -> list[int]:
    """The first frame of each window: every ``stride_frames`` (rounded to a frame) while a
    whole window fits, then one ending at the last frame, if the last stride left a tail."""
    if stride_frames <= 0:
        raise ValueError(f"the stride must be above 0 frames, got {stride_frames}")
    last = max(0, frame_count - window_frames)
    starts = [round(k * stride_frames) for k in range(math.floor(last / stride_frames) + 1)]
    if starts[-1] < last:
        starts.append(last)
    return starts


def timeline(frame_count: int, fps: float | None, spec: ClipSpec, stride: float) -> Timeline:
    """The windows of a video of ``frame_count`` frames at ``fps``, ``stride`` seconds apart."""
    if not fps:
        raise ValueError("no frame rate in its header: segments are placed in time by it")
    step = spec.step(fps)
    starts = window_starts(frame_count, span(spec.n_frames, step), stride * fps)
    return Timeline(frame_count, fps, spec.n_frames, step, tuple(starts))


def read_windows(path: Path, line: Timeline, starts: tuple[int, ...], height: int, width: int) -> np.ndarray:
    """The uint8 clips of the windows that start at ``starts``, as the model takes them."""
    with Video(path, frame_count=line.frame_count) as video:
        return video.read_clips([clip_frames(s, line.n_frames, line.step) for s in starts], height, width)


def merge(line: Timeline, probabilities: np.ndarray, top: Callable[[np.ndarray], list[dict]]) -> list[dict]:
    """The segments of a video in time order: runs of neighbouring windows with the same top
    class, each with its start and end in seconds and ``top`` of its windows' mean probabilities
    (whose first class is the run's: it is the likeliest of every window of the run)."""
    best = probabilities.argmax(axis=1)
    bounds = line.bounds()
    segments, first = [], 0
    for i in range(1, len(best) + 1):
        if i == len(best) or best[i] != best[first]:
            segments.append({"start": round(bounds[first][0], 3), "end": round(bounds[i - 1][1], 3),
                             "top": top(probabilities[first:i].mean(axis=0))})
            first = i
    return segments
