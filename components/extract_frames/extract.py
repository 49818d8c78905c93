"""Stage 2: decode each downloaded video into fixed-size RGB clips, stored as TFRecord shards.

Validation and test videos get ``eval_clips_per_video`` evenly spaced clips (one: the centred
clip; 0, the default: enough for a validation set large enough to choose an epoch on, as
``ClipSpec.settled`` says), so the same input always gives the same numbers. Training videos get
``clips_per_train_video`` clips at random starts (seeded per video), among which training draws
one per epoch. Clips are taken every ``frame_step`` frames, or spread over ``clip_seconds`` of
each video at its own frame rate, which the manifest records.

Videos go in groups of VIDEOS_PER_SHARD, one shard per group and clip:
``<split>/<split>-NNNNN-of-MMMMM-clipK.tfrecord``. The training videos are shuffled (seeded)
before they are cut into groups, so every shard, and so every batch, holds clips of every class.
The manifest, written last, lists each group's shards, one per clip, under ``shards[split]``.

Videos are decoded by a pool of processes, one per core this container may use (its CPU quota,
not the node's count), and at most a few finished videos a process wait in memory to be
written. To spread the work over pods, run ``num_parts`` extractions, part ``k`` taking the
groups ``k, k + num_parts, ...``, and merge them with ``gather_parts``. A video that cannot be
decoded is recorded in the manifest with the reason and left out of the shards; the stage
fails, naming them, when more than ``max_failed_fraction`` of the videos fail.
"""

import logging
import math
import multiprocessing
import os
import random
import shutil
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from components.common import (
    MANIFEST,
    SPLITS,
    check_free_space,
    read_manifest,
    require_at_least_one,
    write_json,
)
from components.extract_frames.config import ClipSpec
from components.extract_frames.video import Video, VideoError, clip_frames, random_starts, spaced_starts, span

log = logging.getLogger(__name__)

VIDEOS_PER_SHARD = 64
IN_FLIGHT_PER_WORKER = 2  # videos per process submitted or finished but not yet written


def extract_video(path: Path, split: str, spec: ClipSpec) -> tuple[np.ndarray, dict]:
    """The clips of one video and what the manifest records of it.

    Val and test videos get evenly spaced clips (one: the centred clip); training videos get
    random starts, seeded by the seed and the file name, so a re-run gives the same clips.
    """
    with Video(path) as video:
        total, step = video.frame_count, spec.step(video.fps)
        if split == "train":
            rng = np.random.default_rng([spec.seed, zlib.crc32(path.name.encode())])
            starts = random_starts(total, spec.n_frames, step, spec.clips_per_train_video, rng)
        else:
            starts = spaced_starts(total, spec.n_frames, step, spec.clips_per_video(split))
        clips = video.read_clips([clip_frames(s, spec.n_frames, step) for s in starts], spec.height,
                                 spec.width)
        return clips, {"status": "ok", "frames": total, "fps": video.fps, "step": round(step, 4),
                       "starts": starts, "padded": total < max(starts) + span(spec.n_frames, step)}


def try_extract_video(path: Path, split: str, spec: ClipSpec) -> tuple[np.ndarray | None, dict]:
    """extract_video, with a video that cannot be decoded as a failed outcome naming it and why
    rather than an error."""
    import cv2

    try:
        return extract_video(path, split, spec)
    except ValueError as e:  # a VideoError, or no frame rate to sample by seconds
        error = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
        return None, {"status": "failed", "error": error}
    except cv2.error as e:  # OpenCV gave up on a damaged stream
        return None, {"status": "failed", "error": f"{path}: OpenCV: {e}".strip()}


def _extract_in_worker(job: tuple[Path, str, ClipSpec]) -> tuple[np.ndarray | None, dict]:
    return try_extract_video(*job)


def start_worker() -> None:
    """Sets up a decoding process of a pool: one OpenCV thread, as the pool has a process per core."""
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: those it may run on, fewer where the container's CPU quota
    (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``) allows less, as a 4-CPU pod on a 64-core
    node does."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = None
    if (cgroup / "cpu.max").is_file():
        limit, _, period = (cgroup / "cpu.max").read_text().partition(" ")
        quota = None if limit == "max" else int(limit) / int(period)
    elif (cgroup / "cpu" / "cpu.cfs_quota_us").is_file():
        limit = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        quota = None if limit < 0 else limit / int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    return max(1, min(count, math.ceil(quota))) if quota else count


def bounded_map(pool: Executor, function: Callable, jobs: Iterable, window: int) -> Iterator:
    """``pool.map`` that keeps at most ``window`` jobs submitted and not yet consumed, so the
    results waiting in memory stay bounded however slow the consumer."""
    pending: deque = deque()
    for job in jobs:
        if len(pending) == window:
            yield pending.popleft().result()
        pending.append(pool.submit(function, job))
    while pending:
        yield pending.popleft().result()


def shard_groups(entries: list, split: str, seed: int) -> list[list]:
    """The split's videos cut into groups of VIDEOS_PER_SHARD; training videos are shuffled
    first, so that each group holds every class rather than a few."""
    if split == "train":
        entries = list(entries)
        random.Random(seed).shuffle(entries)
    return [entries[g:g + VIDEOS_PER_SHARD] for g in range(0, len(entries), VIDEOS_PER_SHARD)]


def extract_dataset(videos_dir: Path, output_dir: Path, spec: ClipSpec, max_failed_fraction: float = 0.0,
                    part: int = 0, num_parts: int = 1, workers: int = 0) -> dict:
    """Extracts the videos listed in ``videos_dir``'s manifest (those of ``part`` of
    ``num_parts``) with ``workers`` processes (0: one per core); returns the new manifest."""
    from tqdm import tqdm

    from components.extract_frames.records import encode, write_shard

    spec.check()
    require_at_least_one({"num_parts": num_parts})
    if not 0 <= part < num_parts:
        raise ValueError(f"part must be in [0, {num_parts}), got {part}")
    if not 0 <= max_failed_fraction <= 1:
        raise ValueError(f"max_failed_fraction must be in [0, 1], got {max_failed_fraction}")
    source = read_manifest(videos_dir)
    spec = spec.settled(sum(entry["split"] == "val" for entry in source["files"]))
    output_dir = Path(output_dir)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    label_of = {name: i for i, name in enumerate(source["classes"])}
    indexed = list(enumerate(source["files"]))
    plan = []  # (split, shard group number, number of groups, [(index, entry)])
    for split in SPLITS:
        groups = shard_groups([(i, f) for i, f in indexed if f["split"] == split], split, spec.seed)
        plan += [(split, g, len(groups), group) for g, group in enumerate(groups) if g % num_parts == part]
    jobs = [(Path(videos_dir) / entry["path"], split, spec)
            for split, _, _, group in plan for _, entry in group]
    clip_bytes = spec.n_frames * spec.height * spec.width * 3 // (10 if spec.frame_encoding == "jpeg" else 1)
    check_free_space(output_dir, clip_bytes * sum(spec.clips_per_video(split) for _, split, _ in jobs),
                     "the extracted clips")
    workers = workers or cores()
    log.info("extracting %d videos (part %d of %d) with %d processes", len(jobs), part + 1, num_parts,
             workers)
    videos, shards = [], {split: [] for split in SPLITS}
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold TF threads
    with (ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker) as pool,
          tqdm(total=len(jobs), unit="video", desc="extract") as bar):
        results = bounded_map(pool, _extract_in_worker, jobs, IN_FLIGHT_PER_WORKER * workers)
        for split, g, n_groups, group in plan:
            clips_per_video = spec.clips_per_video(split)
            records = [[] for _ in range(clips_per_video)]
            for index, entry in group:
                clips, outcome = next(results)
                if clips is not None:
                    for slot, clip in zip(records, clips, strict=True):
                        slot.append(encode(clip, label_of[entry["class"]], entry["path"],
                                           spec.frame_encoding))
                videos.append({"index": index, "video": entry["path"], "split": split,
                               "class": entry["class"], **outcome})
                bar.update()
            names = [f"{split}/{split}-{g:05d}-of-{n_groups:05d}-clip{k}.tfrecord"
                     for k in range(clips_per_video)]
            (output_dir / split).mkdir(parents=True, exist_ok=True)
            for name, slot in zip(names, records, strict=True):
                write_shard(output_dir / name, slot)
            shards[split].append(names)
    fps = [v["fps"] for v in videos if v["split"] == "train" and v.get("fps")]
    manifest = {"classes": source["classes"], **asdict(spec), "part": [part, num_parts],
                "frame_shape": [spec.n_frames, spec.height, spec.width, 3], "shards": shards,
                "train_fps": float(np.median(fps)) if fps else None, "videos": videos}
    return finish(output_dir, manifest, max_failed_fraction)


def check_failures(videos: list[dict], max_failed_fraction: float) -> None:
    """Logs every failed video; raises VideoError listing them when too many failed."""
    failed = [v["error"] for v in videos if v["status"] == "failed"]
    for error in failed:
        log.warning("left out: %s", error)
    if failed and len(failed) > max_failed_fraction * len(videos):
        raise VideoError(f"{len(failed)} of {len(videos)} videos could not be decoded, more than "
                         f"max_failed_fraction={max_failed_fraction} allows:\n" + "\n".join(failed))


def finish(output_dir: Path, manifest: dict, max_failed_fraction: float) -> dict:
    """Checks the failures, counts the clips of each split and writes the manifest, last, its
    videos in the download manifest's order."""
    manifest["videos"] = sorted(manifest["videos"], key=lambda v: v["index"])
    check_failures(manifest["videos"], max_failed_fraction)
    manifest["counts"] = {split: sum(v["split"] == split and v["status"] == "ok" for v in manifest["videos"])
                          for split in SPLITS}
    manifest["failed"] = sum(v["status"] == "failed" for v in manifest["videos"])
    write_json(Path(output_dir) / MANIFEST, manifest)
    padded = sum(v.get("padded", False) for v in manifest["videos"])
    if padded:
        log.warning("%d videos are shorter than one clip; their last frames are black", padded)
    return manifest


def gather_parts(part_dirs: list[Path], output_dir: Path, max_failed_fraction: float) -> dict:
    """Merges the outputs of every part of one extraction into one dataset, hard-linking the
    shards where the file system allows and copying them where not."""
    parts = [read_manifest(d) for d in part_dirs]
    numbers = sorted(p["part"][0] for p in parts)
    if numbers != list(range(parts[0]["part"][1])):
        raise ValueError(f"the parts given are {numbers}, not all {parts[0]['part'][1]} of one extraction")
    output_dir = Path(output_dir)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    for part_dir, part in zip(part_dirs, parts, strict=True):
        for name in (name for groups in part["shards"].values() for group in groups for name in group):
            target = output_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                os.link(Path(part_dir) / name, target)
            except OSError:
                shutil.copyfile(Path(part_dir) / name, target)
    fps = [v["fps"] for p in parts for v in p["videos"] if v["split"] == "train" and v.get("fps")]
    manifest = {**parts[0], "part": [0, 1], "train_fps": float(np.median(fps)) if fps else None,
                "shards": {split: sorted((g for p in parts for g in p["shards"][split]), key=lambda g: g[0])
                           for split in SPLITS},
                "videos": [v for p in parts for v in p["videos"]]}
    log.info("gathered %d parts: %d videos", len(parts), len(manifest["videos"]))
    return finish(output_dir, manifest, max_failed_fraction)
