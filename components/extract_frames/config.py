"""How clips are sampled from videos and stored, with the tutorial's defaults: the one place they
are written (the pipeline's parameters, docs/parameters.md and prediction follow them)."""

from __future__ import annotations

import dataclasses

from components.common import SEED, require_at_least_one

FRAME_ENCODINGS = ("raw", "jpeg")
MAX_FAILED_FRACTION = 0.01  # the share of videos that may fail to decode before extraction fails


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How clips are sampled and stored.

    A clip is ``n_frames`` frames, ``frame_step`` frames apart; or, with ``clip_seconds``, spread
    evenly over that many seconds of each video whatever its frame rate.
    """

    n_frames: int = 10
    frame_step: int = 15
    clip_seconds: float = 0.0  # 0: by frames (frame_step); above: the seconds a clip covers
    height: int = 224
    width: int = 224
    clips_per_train_video: int = 3  # stored random clips per training video; training draws one an epoch
    eval_clips_per_video: int = 1  # evenly spaced clips per val and test video, their logits averaged
    frame_encoding: str = "raw"  # raw uint8, or one JPEG per frame (about a tenth of the bytes)
    seed: int = SEED

    def clips_per_video(self, split: str) -> int:
        return self.clips_per_train_video if split == "train" else self.eval_clips_per_video

    def step(self, fps: float | None) -> float:
        """Frames between sampled frames in a video of ``fps`` frames a second."""
        if not self.clip_seconds:
            return float(self.frame_step)
        if not fps:
            raise ValueError("sampling by seconds needs the video's frame rate, which its header lacks")
        return self.clip_seconds * fps / (self.n_frames - 1)

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        require_at_least_one({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                              if f.name not in ("seed", "frame_encoding", "clip_seconds")})
        if self.clip_seconds < 0:
            raise ValueError(f"clip_seconds must be 0 (sample by frame_step) or more, "
                             f"got {self.clip_seconds}")
        if self.clip_seconds and self.n_frames < 2:
            raise ValueError("clip_seconds needs n_frames of 2 or more to spread over them")
        if self.frame_encoding not in FRAME_ENCODINGS:
            raise ValueError(f"frame_encoding must be one of {', '.join(FRAME_ENCODINGS)}, "
                             f"got {self.frame_encoding!r}")
