"""Stage 1: download a subset of UCF101 with HTTP range reads of the zip.

Only the central directory and the chosen members are read, with remotezip, so a subset of the
6.5 GB zip costs what its clips weigh. The source may also be a local zip or a ``gs://`` or
``s3://`` object (read in blocks through fsspec), and the output a local folder or a ``gs://`` or
``s3://`` prefix. Members are fetched by a bounded pool of
threads, each with its own handle on the zip, and a failed read (an HTTP error, a reset, a body
cut short, a CRC-32 that does not match) is retried with exponential back-off. The output is
laid out as ``<split>/<class>/<file>.avi`` beside a manifest written last.

Splits are group-aware by default: UCF101 clips of one group (``gXX``) share an actor and a
scene, so each group goes to one split only. ``split_by="file"`` splits clip by clip, as the
tutorial does (which lets a group's clips into train and test both, and flatters accuracy).
"""

import json
import logging
import random
import re
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from components.common import MANIFEST, check_free_space, require_at_least_one
from components.storage import Folder, is_remote, open_input

log = logging.getLogger(__name__)

UCF101_URL = "https://storage.googleapis.com/thumos14_files/UCF101_videos.zip"
SPLITS = ("train", "val", "test")
MEMBER_PATTERN = re.compile(r"^(?:.*/)?v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$")
SPLIT_BY = ("group", "file")
FETCH_THREADS = 8
RETRIES = 5  # attempts per read; waits of 0.5, 1, 2 and 4 s between them
BACKOFF_SECONDS = 0.5
T = TypeVar("T")


class SourceError(RuntimeError):
    """The source zip cannot be read, or does not hold what was asked for."""


@dataclass(frozen=True)
class Clip:
    """One video member of the zip."""

    member: str
    class_name: str
    group: int
    size: int
    crc32: int

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


def open_zip(source: str) -> zipfile.ZipFile:
    """Opens a zip by URL (range reads), ``gs://`` or ``s3://`` URI or local path, reading no
    member yet."""
    if source.startswith(("http://", "https://")):
        from remotezip import RemoteZip

        return RemoteZip(source)
    return zipfile.ZipFile(open_input(source) if is_remote(source) else source)


def with_retries(action: Callable[[], T], what: str, retries: int = RETRIES) -> T:
    """Runs ``action``, retrying with exponential back-off; SourceError naming ``what`` at last."""
    for attempt in range(1, retries + 1):
        try:
            return action()
        except SourceError:  # what was asked for is not there: no use retrying
            raise
        except Exception as e:  # noqa: BLE001 (any failed read may be transient: retry, then report)
            if attempt == retries:
                raise SourceError(f"cannot read {what}: {type(e).__name__}: {e}"
                                  f"{f' (after {retries} attempts)' if retries > 1 else ''}") from e
            wait = BACKOFF_SECONDS * 2 ** (attempt - 1)
            log.warning("reading %s failed (%s: %s); attempt %d of %d in %.1f s",
                        what, type(e).__name__, e, attempt + 1, retries, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def unsafe_reason(member: str) -> str | None:
    """Why a member name could lead a writer out of its folder, or None if it could not."""
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", member):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    return None


def list_clips(zf: zipfile.ZipFile, source: str) -> tuple[dict[str, list[Clip]], list[dict]]:
    """The zip's ``v_<Class>_g<GG>_c<CC>.avi`` members by class, in member order, and the video
    members refused for an unsafe name. Other members are ignored."""
    by_class: dict[str, list[Clip]] = defaultdict(list)
    refused = []
    for info in zf.infolist():
        match = MEMBER_PATTERN.match(info.filename)
        if not match or info.is_dir():
            continue
        reason = unsafe_reason(info.filename)
        if reason:
            log.warning("refused %r from %s: %s", info.filename, source, reason)
            refused.append({"member": info.filename, "reason": reason})
            continue
        by_class[match["cls"]].append(Clip(info.filename, match["cls"], int(match["group"]),
                                           info.file_size, info.CRC))
    if not by_class:
        sample = ", ".join(n for n in zf.namelist()[:3]) or "nothing"
        raise SourceError(f"{source} is not in UCF101's layout: no member is named like "
                          f"'UCF101/v_<Class>_g<GG>_c<CC>.avi' (it holds {sample})")
    return dict(by_class), refused


def choose_subset(by_class: dict[str, list[Clip]], num_classes: int, counts: dict[str, int],
                  seed: int, source: str, split_by: str = "group") -> dict[str, list[Clip]]:
    """Takes the first ``num_classes`` classes by name and splits each one's clips at random:
    whole groups to each split (``split_by="group"``), or clip by clip (``"file"``)."""
    require_at_least_one({"num_classes": num_classes}, SourceError)
    if split_by not in SPLIT_BY:
        raise SourceError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    if num_classes > len(by_class):
        raise SourceError(f"num_classes={num_classes} asked, but {source} has only "
                          f"{len(by_class)} classes")
    needed = sum(counts.values())
    wanted = "/".join(str(n) for n in counts.values())
    rng = random.Random(seed)
    chosen: dict[str, list[Clip]] = {split: [] for split in counts}
    for class_name in sorted(by_class)[:num_classes]:
        clips = sorted(by_class[class_name], key=lambda c: c.member)
        if len(clips) < needed:
            raise SourceError(f"class {class_name} has {len(clips)} clips in {source}, fewer than "
                              f"the {needed} that {'/'.join(counts)} = {wanted} need")
        if split_by == "file":
            rng.shuffle(clips)
            for split, n in counts.items():
                chosen[split].extend(clips[:n])
                clips = clips[n:]
            continue
        groups: dict[int, list[Clip]] = defaultdict(list)
        for clip in clips:
            groups[clip.group].append(clip)
        order = sorted(groups)
        rng.shuffle(order)
        for split, n in counts.items():
            pool: list[Clip] = []
            while len(pool) < n and order:
                pool += groups[order.pop()]
            if len(pool) < n:
                raise SourceError(
                    f"class {class_name} has too few groups in {source} to give {wanted} clips "
                    f"to {'/'.join(counts)} with no group in two splits ({len(groups)} groups, "
                    f"{len(clips)} clips): ask for fewer clips, or split_by='file'")
            chosen[split].extend(sorted(rng.sample(pool, n), key=lambda c: c.member))
    return chosen


class ZipReader:
    """One handle on the source zip per thread (a zip file object has one read position);
    a handle that failed is dropped, so the retry opens a fresh one."""

    def __init__(self, source: str):
        self.source = source
        self._local = threading.local()

    def read(self, clip: Clip) -> bytes:
        """The member's bytes; zipfile checks them against the CRC-32 of the central directory."""
        if getattr(self._local, "zip", None) is None:
            self._local.zip = open_zip(self.source)
        try:
            data = self._local.zip.read(clip.member)
        except BaseException:
            self._local.zip.close()
            self._local.zip = None
            raise
        if len(data) != clip.size:
            raise zipfile.BadZipFile(f"{clip.member}: {len(data)} bytes read, {clip.size} expected")
        return data


def download_subset_to(source: str, output_dir: str | Path, num_classes: int, train_per_class: int,
                       val_per_class: int, test_per_class: int, seed: int, split_by: str = "group",
                       threads: int = FETCH_THREADS, retries: int = RETRIES) -> dict:
    """Downloads the subset into ``output_dir`` (a folder, or a ``gs://`` or ``s3://`` prefix);
    returns its manifest.

    Files already present and whole (size and CRC-32) are kept, so a re-run resumes; each new
    file is written atomically. The manifest is written last: its presence marks the output
    complete.
    """
    from tqdm import tqdm

    counts = dict(zip(SPLITS, (train_per_class, val_per_class, test_per_class), strict=True))
    require_at_least_one({f"{split}_per_class": n for split, n in counts.items()}, SourceError)
    require_at_least_one({"threads": threads, "retries": retries}, SourceError)
    output = Folder(str(output_dir))
    output.delete(MANIFEST)
    log.info("reading the central directory of %s", source)

    def listing():
        with open_zip(source) as zf:
            return list_clips(zf, source)

    by_class, refused = with_retries(listing, f"a zip at {source}", retries)
    chosen = choose_subset(by_class, num_classes, counts, seed, source, split_by)
    classes = sorted(by_class)[:num_classes]
    todo = [(split, clip, f"{split}/{clip.class_name}/{clip.file_name}")
            for split in SPLITS for clip in chosen[split]]
    log.info("%d classes, %d clips (%s), split by %s, %d threads", len(classes), len(todo),
             ", ".join(f"{s} {len(chosen[s])}" for s in SPLITS), split_by, threads)
    if not is_remote(str(output_dir)):
        check_free_space(Path(output_dir), sum(clip.size for _, clip, _ in todo), "the videos")
    reader = ZipReader(source)

    def fetch(clip: Clip, name: str) -> bool:
        if output.holds(name, clip.size, clip.crc32):
            return False
        data = with_retries(lambda: reader.read(clip), f"{clip.member} from {source}", retries)
        output.write_bytes(name, data)
        return True

    fetched = 0
    with (ThreadPoolExecutor(threads) as pool,
          tqdm(total=sum(c.size for _, c, _ in todo), unit="B", unit_scale=True, desc="download") as bar):
        futures = {pool.submit(fetch, clip, name): clip for _, clip, name in todo}
        for done, future in enumerate(as_completed(futures), 1):
            fetched += future.result()
            bar.update(futures[future].size)
            bar.set_postfix(files=f"{done}/{len(todo)}")
    log.info("fetched %d files, kept %d already there", fetched, len(todo) - fetched)
    manifest = {"source": source, "classes": classes, "seed": seed, "split_by": split_by,
                "counts": {split: len(chosen[split]) for split in SPLITS}, "refused": refused,
                "files": [{"path": name, "split": split, "class": clip.class_name, "group": clip.group,
                           "size": clip.size, "crc32": clip.crc32} for split, clip, name in todo]}
    output.write_text(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
