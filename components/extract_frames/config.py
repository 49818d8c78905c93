"""How clips are sampled from videos and stored, with the tutorial's defaults: the one place they
are written (the pipeline's parameters, docs/parameters.md and prediction follow them)."""

from __future__ import annotations

import dataclasses
import math

from components.common import SEED, require_at_least_one

FRAME_ENCODINGS = ("raw", "jpeg")
MAX_FAILED_FRACTION = 0.01  # the share of videos that may fail to decode before extraction fails
# eval_clips_per_video 0 (auto) takes enough evenly spaced clips per val and test video for at
# least this many validation clips, and at most AUTO_MAX_EVAL_CLIPS a video: one clip of each
# of 16 videos lets one clip swing the validation accuracy by 6 points
AUTO_VALIDATION_CLIPS = 64
AUTO_MAX_EVAL_CLIPS = 4


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
    eval_clips_per_video: int = 0  # evenly spaced clips per val and test video, logits averaged; 0: auto
    frame_encoding: str = "raw"  # raw uint8, or one JPEG per frame (about a tenth of the bytes)
    seed: int = SEED

    def settled(self, val_videos: int) -> ClipSpec:
        """This spec with ``eval_clips_per_video`` settled for a split of ``val_videos`` validation
        videos: where it is 0, enough for AUTO_VALIDATION_CLIPS validation clips, 1 to
        AUTO_MAX_EVAL_CLIPS a video."""
        if self.eval_clips_per_video:
            return self
        clips = min(AUTO_MAX_EVAL_CLIPS, max(1, math.ceil(AUTO_VALIDATION_CLIPS / max(1, val_videos))))
        return dataclasses.replace(self, eval_clips_per_video=clips)

    def clips_per_video(self, split: str) -> int:
        """Clips per video of the split; an eval_clips_per_video not settled for a dataset is 1."""
        return self.clips_per_train_video if split == "train" else self.eval_clips_per_video or 1

    def step(self, fps: float | None) -> float:
        """Frames between sampled frames in a video of ``fps`` frames a second."""
        if not self.clip_seconds:
            return float(self.frame_step)
        if not fps:
            raise ValueError("sampling by seconds needs the video's frame rate, which its header lacks")
        return self.clip_seconds * fps / (self.n_frames - 1)

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        require_at_least_one({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name
                              not in ("seed", "frame_encoding", "clip_seconds", "eval_clips_per_video")})
        if self.eval_clips_per_video < 0:
            raise ValueError(f"eval_clips_per_video must be 0 (auto) or more, "
                             f"got {self.eval_clips_per_video}")
        if self.clip_seconds < 0:
            raise ValueError(f"clip_seconds must be 0 (sample by frame_step) or more, "
                             f"got {self.clip_seconds}")
        if self.clip_seconds and self.n_frames < 2:
            raise ValueError("clip_seconds needs n_frames of 2 or more to spread over them")
        if self.frame_encoding not in FRAME_ENCODINGS:
            raise ValueError(f"frame_encoding must be one of {', '.join(FRAME_ENCODINGS)}, "
                             f"got {self.frame_encoding!r}")
