"""Stage 2: decode each downloaded video into fixed-size RGB clips, stored as TFRecord shards.

Validation and test videos get one centred clip, so the same input always gives the same
numbers. Training videos get ``clips_per_train_video`` clips at random starts (seeded per
video), among which training draws one per epoch. Videos go in groups of VIDEOS_PER_SHARD,
one shard per group and clip: ``<split>/<split>-NNNNN-of-MMMMM-clipK.tfrecord``. The manifest,
written last, lists each group's shards, one per clip, under ``shards[split]``.
"""

import logging
import zlib
from pathlib import Path

import numpy as np

from components.common import MANIFEST, read_manifest, require_at_least_one, write_json
from components.download_subset.download import SPLITS
from components.extract_frames.video import (
    VideoError,
    centre_start,
    frame_count,
    random_starts,
    read_clips,
    span,
)

log = logging.getLogger(__name__)

VIDEOS_PER_SHARD = 64


def clip_starts(path: Path, split: str, n_frames: int, frame_step: int,
                clips_per_train_video: int, seed: int) -> tuple[list[int], int]:
    """The start frames to sample from one video, and its declared frame count."""
    total = frame_count(path)
    if split == "train":
        rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
        return random_starts(total, n_frames, frame_step, clips_per_train_video, rng), total
    return [centre_start(total, n_frames, frame_step)], total


def extract_video(path: Path, split: str, n_frames: int, frame_step: int, height: int, width: int,
                  clips_per_train_video: int, seed: int) -> tuple[np.ndarray, dict]:
    """The clips of one video and what the manifest records of it."""
    starts, total = clip_starts(path, split, n_frames, frame_step, clips_per_train_video, seed)
    clips, read = read_clips(path, starts, n_frames, frame_step, height, width)
    return clips, {"status": "ok", "frames": total, "starts": starts,
                   "padded": read < max(starts) + span(n_frames, frame_step)}


def extract_dataset(videos_dir: Path, output_dir: Path, n_frames: int, frame_step: int,
                    height: int, width: int, clips_per_train_video: int, seed: int) -> dict:
    """Extracts every video listed in ``videos_dir``'s manifest; returns the new manifest.

    A video that cannot be decoded is recorded in the manifest with the reason, and the
    stage then fails naming every such file: no video is dropped silently.
    """
    from tqdm import tqdm

    from components.extract_frames.records import encode, write_shard

    require_at_least_one({"n_frames": n_frames, "frame_step": frame_step, "height": height,
                          "width": width, "clips_per_train_video": clips_per_train_video})
    source = read_manifest(videos_dir)
    output_dir = Path(output_dir)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    label_of = {name: i for i, name in enumerate(source["classes"])}
    videos, shards = [], {}
    with tqdm(total=len(source["files"]), unit="video", desc="extract") as bar:
        for split in SPLITS:
            entries = [f for f in source["files"] if f["split"] == split]
            groups = [entries[i:i + VIDEOS_PER_SHARD] for i in range(0, len(entries), VIDEOS_PER_SHARD)]
            shards[split] = []
            clips_per_video = clips_per_train_video if split == "train" else 1
            for index, group in enumerate(groups):
                records = [[] for _ in range(clips_per_video)]
                for entry in group:
                    record = {"video": entry["path"], "split": split, "class": entry["class"]}
                    try:
                        clips, outcome = extract_video(Path(videos_dir) / entry["path"], split, n_frames,
                                                       frame_step, height, width, clips_per_train_video,
                                                       seed)
                        for slot, clip in zip(records, clips, strict=True):
                            slot.append(encode(clip, label_of[entry["class"]], entry["path"]))
                    except VideoError as e:
                        outcome = {"status": "failed", "error": str(e)}
                    videos.append({**record, **outcome})
                    bar.update()
                names = [f"{split}/{split}-{index:05d}-of-{len(groups):05d}-clip{k}.tfrecord"
                         for k in range(clips_per_video)]
                (output_dir / split).mkdir(parents=True, exist_ok=True)
                for name, slot in zip(names, records, strict=True):
                    write_shard(output_dir / name, slot)
                shards[split].append(names)
    failed = [v["error"] for v in videos if v["status"] == "failed"]
    if failed:
        raise VideoError(f"{len(failed)} of {len(videos)} videos could not be decoded:\n" + "\n".join(failed))
    counts = {split: sum(v["split"] == split for v in videos) for split in SPLITS}
    manifest = {"classes": source["classes"], "counts": counts, "shards": shards,
                "frame_shape": [n_frames, height, width, 3], "frame_step": frame_step,
                "clips_per_train_video": clips_per_train_video, "seed": seed, "videos": videos}
    write_json(output_dir / MANIFEST, manifest)
    padded = sum(v["padded"] for v in videos)
    if padded:
        log.warning("%d videos are shorter than one clip; their last frames are black", padded)
    return manifest
