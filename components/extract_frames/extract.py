"""Stage 2: decode each downloaded video into fixed-size RGB clips, stored as TFRecord shards.

Validation and test videos get ``eval_clips_per_video`` evenly spaced clips (by default one,
centred), so the same input always gives the same numbers. Training videos get
``clips_per_train_video`` clips at random starts (seeded per video), among which training draws
one per epoch. Videos go in groups of VIDEOS_PER_SHARD,
one shard per group and clip: ``<split>/<split>-NNNNN-of-MMMMM-clipK.tfrecord``. The manifest,
written last, lists each group's shards, one per clip, under ``shards[split]``.

Videos are decoded by a pool of processes, one per core. To spread the work over pods, run
``num_parts`` extractions, part ``k`` taking the groups ``k, k + num_parts, ...``, and merge
them with ``gather_parts``. A video that cannot be decoded is recorded in the manifest with
the reason and left out of the shards; the stage fails, naming them, when more than
``max_failed_fraction`` of the videos fail.
"""

import dataclasses
import logging
import multiprocessing
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from components.common import MANIFEST, check_free_space, read_manifest, require_at_least_one, write_json
from components.download_subset.download import SPLITS
from components.extract_frames.video import Video, VideoError, random_starts, spaced_starts, span

log = logging.getLogger(__name__)

VIDEOS_PER_SHARD = 64
FRAME_ENCODINGS = ("raw", "jpeg")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """How clips are sampled and stored."""

    n_frames: int
    frame_step: int
    height: int
    width: int
    clips_per_train_video: int
    seed: int
    frame_encoding: str = "raw"  # raw uint8, or one JPEG per frame (about a tenth of the bytes)
    eval_clips_per_video: int = 1  # evenly spaced clips per val and test video

    def clips_per_video(self, split: str) -> int:
        return self.clips_per_train_video if split == "train" else self.eval_clips_per_video

    def check(self) -> None:
        require_at_least_one({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                              if f.name not in ("seed", "frame_encoding")})
        if self.frame_encoding not in FRAME_ENCODINGS:
            raise ValueError(f"frame_encoding must be one of {', '.join(FRAME_ENCODINGS)}, "
                             f"got {self.frame_encoding!r}")


def extract_video(path: Path, split: str, spec: ClipSpec) -> tuple[np.ndarray, dict]:
    """The clips of one video and what the manifest records of it.

    Val and test videos get evenly spaced clips (one: the centred clip); training videos get
    random starts, seeded by the seed and the file name, so a re-run gives the same clips.
    """
    with Video(path) as video:
        total = video.frame_count
        if split == "train":
            rng = np.random.default_rng([spec.seed, zlib.crc32(path.name.encode())])
            starts = random_starts(total, spec.n_frames, spec.frame_step, spec.clips_per_train_video, rng)
        else:
            starts = spaced_starts(total, spec.n_frames, spec.frame_step, spec.eval_clips_per_video)
        clips = video.read_clips(starts, spec.n_frames, spec.frame_step, spec.height, spec.width)
        return clips, {"status": "ok", "frames": video.decoded, "starts": starts,
                       "padded": video.decoded < max(starts) + span(spec.n_frames, spec.frame_step)}


def _extract_in_worker(job: tuple[Path, str, ClipSpec]) -> tuple[np.ndarray | None, dict]:
    """extract_video in a pool process: a bad video comes back as a failed outcome."""
    import cv2

    try:
        return extract_video(*job)
    except VideoError as e:
        return None, {"status": "failed", "error": str(e)}
    except cv2.error as e:  # OpenCV gave up on a damaged stream
        return None, {"status": "failed", "error": f"{job[0]}: OpenCV: {e}".strip()}


def _start_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_failures(videos: list[dict], max_failed_fraction: float) -> None:
    """Logs every failed video; raises VideoError listing them when too many failed."""
    failed = [v["error"] for v in videos if v["status"] == "failed"]
    for error in failed:
        log.warning("left out: %s", error)
    if failed and len(failed) > max_failed_fraction * len(videos):
        raise VideoError(f"{len(failed)} of {len(videos)} videos could not be decoded, more than "
                         f"max_failed_fraction={max_failed_fraction} allows:\n" + "\n".join(failed))


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
    output_dir = Path(output_dir)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    label_of = {name: i for i, name in enumerate(source["classes"])}
    indexed = list(enumerate(source["files"]))
    plan = []  # (split, shard group number, number of groups, [(index, entry)])
    for split in SPLITS:
        entries = [(i, f) for i, f in indexed if f["split"] == split]
        groups = [entries[g:g + VIDEOS_PER_SHARD] for g in range(0, len(entries), VIDEOS_PER_SHARD)]
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
    with (ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker) as pool,
          tqdm(total=len(jobs), unit="video", desc="extract") as bar):
        results = pool.map(_extract_in_worker, jobs)
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
    manifest = {"classes": source["classes"], **dataclasses.asdict(spec), "part": [part, num_parts],
                "frame_shape": [spec.n_frames, spec.height, spec.width, 3], "shards": shards,
                "videos": videos}
    return finish(output_dir, manifest, max_failed_fraction)


def finish(output_dir: Path, manifest: dict, max_failed_fraction: float) -> dict:
    """Checks the failures, counts the clips of each split and writes the manifest, last."""
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
    manifest = {**parts[0], "part": [0, 1],
                "shards": {split: sorted((g for p in parts for g in p["shards"][split]), key=lambda g: g[0])
                           for split in SPLITS},
                "videos": sorted((v for p in parts for v in p["videos"]), key=lambda v: v["index"])}
    log.info("gathered %d parts: %d videos", len(parts), len(manifest["videos"]))
    return finish(output_dir, manifest, max_failed_fraction)
