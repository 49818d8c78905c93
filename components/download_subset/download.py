"""Stage 1: download the chosen videos of a source, split into train, val and test.

The source is a zip, a folder or an annotation list (``sources``): a zip over HTTP is read by
range requests with remotezip, so only its central directory and the chosen members are
fetched, and a subset of UCF101's 6.5 GB costs what its clips weigh. Classes and splits are
chosen as ``splits`` says. The videos are fetched by a bounded pool of threads, and a failed
read (an HTTP error, a reset, a body cut short, a CRC-32 that does not match) is retried with
exponential back-off. The output, a local folder or a ``gs://`` or ``s3://`` prefix, holds
``<split>/<class>/<file>`` beside a manifest written last; a re-run keeps the files already
there whole, so it resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

from components.common import MANIFEST, SPLITS, check_free_space, require_at_least_one
from components.download_subset.config import SubsetSpec
from components.download_subset.sources import (
    SourceError,
    VideoFile,
    ZipReader,
    by_class,
    list_source,
)
from components.download_subset.splits import choose_classes, choose_splits
from components.storage import Folder, is_remote

log = logging.getLogger(__name__)

FETCH_THREADS = 8
RETRIES = 5  # attempts per read; waits of 0.5, 1, 2 and 4 s between them
BACKOFF_SECONDS = 0.5
T = TypeVar("T")


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


def output_names(chosen: dict[str, list[VideoFile]]) -> tuple[dict[VideoFile, str], list[dict]]:
    """Each video's path in the output, ``<split>/<class>/<file>``, and the videos renamed because
    another one of that split and class has the same file name (a hash of the source path is
    added before the suffix)."""
    names, renamed, taken = {}, [], set()
    for split in SPLITS:
        for video in chosen[split]:
            name = f"{split}/{video.class_name}/{video.file_name}"
            if name in taken:
                stem, dot, suffix = video.file_name.rpartition(".")
                digest = hashlib.sha256(video.path.encode()).hexdigest()[:8]
                name = f"{split}/{video.class_name}/{stem}-{digest}{dot}{suffix}"
                renamed.append({"source": video.path, "path": name})
                log.warning("%s has the file name of another %s video of %s: stored as %s",
                            video.path, split, video.class_name, name)
            taken.add(name)
            names[video] = name
    return names, renamed


def read_file(path: str) -> bytes:
    """A local or remote file's bytes."""
    data = Folder(path.rsplit("/", 1)[0]).read_bytes(path.rsplit("/", 1)[1])
    if data is None:
        raise SourceError(f"{path} is gone")
    return data


def download_subset_to(spec: SubsetSpec, output_dir: str | Path, threads: int = FETCH_THREADS,
                       retries: int = RETRIES) -> dict:
    """Downloads the videos ``spec`` chooses into ``output_dir`` (a folder, or a ``gs://`` or
    ``s3://`` prefix); returns its manifest.

    Files already present and whole are kept, so a re-run resumes; each new file is written
    atomically. The manifest is written last: its presence marks the output complete.
    """
    from tqdm import tqdm

    source = spec.source_url
    require_at_least_one({"threads": threads, "retries": retries}, SourceError)
    output = Folder(str(output_dir))
    output.delete(MANIFEST)
    log.info("listing %s", source)
    listing = with_retries(lambda: list_source(source, spec.class_names, spec.group_pattern),
                           f"the source {source}", retries)
    named = spec.named_classes
    empty = {folder.rsplit("/", 1)[-1] for folder in listing.empty} - set(by_class(listing.videos))
    if set(named) & empty:
        raise SourceError(f"{', '.join(sorted(set(named) & empty))}: no video in {source} "
                          f"(empty: {', '.join(listing.empty)})")
    chosen_classes = choose_classes(list(by_class(listing.videos)), named, spec.num_classes, source)
    chosen, split_by = choose_splits(listing.videos, chosen_classes, spec.counts, spec.split_by, spec.seed)
    names, renamed = output_names(chosen)
    log.info("%s: %d classes, %d videos (%s), split by %s, %d threads", listing.layout, len(chosen_classes),
             len(names), ", ".join(f"{s} {len(chosen[s])}" for s in SPLITS), split_by, threads)
    if not is_remote(str(output_dir)):
        check_free_space(Path(output_dir), sum(v.size or 0 for v in names), "the videos")
    zip_reader = ZipReader(source) if source.lower().endswith(".zip") else None

    def fetch(video: VideoFile, name: str) -> tuple[bool, int]:
        """Copies one video unless it is there whole; whether it did, and the file's CRC-32."""
        if video.crc32 is not None and output.holds(name, video.size, video.crc32):
            return False, video.crc32
        if video.crc32 is None and (data := output.read_bytes(name)) is not None and len(data) == video.size:
            return False, zlib.crc32(data)
        read = (lambda: zip_reader.read(video)) if zip_reader else (lambda: read_file(video.path))
        data = with_retries(read, f"{video.path} from {source}", retries)
        output.write_bytes(name, data)
        return True, zlib.crc32(data)

    fetched, crcs = 0, {}
    with (ThreadPoolExecutor(threads) as pool,
          tqdm(total=sum(v.size or 0 for v in names), unit="B", unit_scale=True, desc="download") as bar):
        futures = {pool.submit(fetch, video, name): video for video, name in names.items()}
        for done, future in enumerate(as_completed(futures), 1):
            copied, crcs[futures[future]] = future.result()
            fetched += copied
            bar.update(futures[future].size or 0)
            bar.set_postfix(files=f"{done}/{len(names)}")
    log.info("fetched %d files, kept %d already there", fetched, len(names) - fetched)
    manifest = {"source": source, "classes": chosen_classes, "seed": spec.seed, "split_by": split_by,
                "counts": {split: len(chosen[split]) for split in SPLITS}, **listing.summary(),
                "renamed": renamed,
                "files": [{"path": name, "source": video.path, "split": split, "class": video.class_name,
                           "group": video.group, "size": video.size, "crc32": crcs[video]}
                          for split in SPLITS for video in chosen[split] for name in [names[video]]]}
    output.write_text(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
