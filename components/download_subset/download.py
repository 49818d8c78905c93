"""Stage 1: download a subset of UCF101 with HTTP range reads of the zip.

Only the central directory and the chosen members are read, with remotezip, so a subset of the
6.5 GB zip costs what its clips weigh. The source may also be a local zip or a ``gs://`` object.
The output is laid out as ``<split>/<class>/<file>.avi`` beside a manifest written last.
"""

import logging
import random
import re
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from components.common import MANIFEST, atomic_write_bytes, require_at_least_one, write_json
from components.storage import GCS_SCHEME, gcs_bucket, split_gcs_uri

log = logging.getLogger(__name__)

UCF101_URL = "https://storage.googleapis.com/thumos14_files/UCF101_videos.zip"
SPLITS = ("train", "val", "test")
MEMBER_PATTERN = re.compile(r"^(?:.*/)?v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$")


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
    """Opens a zip by URL (range reads), ``gs://`` URI or local path, reading no member yet."""
    try:
        if source.startswith(("http://", "https://")):
            from remotezip import RemoteZip

            return RemoteZip(source)
        if source.startswith(GCS_SCHEME):
            bucket, name = split_gcs_uri(source)
            return zipfile.ZipFile(gcs_bucket(bucket).blob(name).open("rb"))
        return zipfile.ZipFile(source)
    except Exception as e:
        raise SourceError(f"cannot read a zip at {source}: {type(e).__name__}: {e}") from e


def list_clips(zf: zipfile.ZipFile, source: str) -> dict[str, list[Clip]]:
    """Groups the zip's ``v_<Class>_g<GG>_c<CC>.avi`` members by class, in member order."""
    by_class: dict[str, list[Clip]] = defaultdict(list)
    for info in zf.infolist():
        match = MEMBER_PATTERN.match(info.filename)
        if match and not info.is_dir():
            by_class[match["cls"]].append(Clip(info.filename, match["cls"], int(match["group"]),
                                               info.file_size, info.CRC))
    if not by_class:
        sample = ", ".join(n for n in zf.namelist()[:3]) or "nothing"
        raise SourceError(f"{source} is not in UCF101's layout: no member is named like "
                          f"'UCF101/v_<Class>_g<GG>_c<CC>.avi' (it holds {sample})")
    return dict(by_class)


def choose_subset(by_class: dict[str, list[Clip]], num_classes: int, counts: dict[str, int],
                  seed: int, source: str) -> dict[str, list[Clip]]:
    """Takes the first ``num_classes`` classes by name and splits each one's clips at random.

    As in the tutorial, each clip is assigned on its own (clips of one group may fall in
    several splits).
    """
    require_at_least_one({"num_classes": num_classes}, SourceError)
    if num_classes > len(by_class):
        raise SourceError(f"num_classes={num_classes} asked, but {source} has only "
                          f"{len(by_class)} classes")
    needed = sum(counts.values())
    rng = random.Random(seed)
    chosen: dict[str, list[Clip]] = {split: [] for split in counts}
    for class_name in sorted(by_class)[:num_classes]:
        clips = sorted(by_class[class_name], key=lambda c: c.member)
        if len(clips) < needed:
            wanted = "/".join(str(n) for n in counts.values())
            raise SourceError(f"class {class_name} has {len(clips)} clips in {source}, fewer than "
                              f"the {needed} that {'/'.join(counts)} = {wanted} need")
        rng.shuffle(clips)
        for split, n in counts.items():
            chosen[split].extend(clips[:n])
            clips = clips[n:]
    return chosen


def is_complete(path: Path, clip: Clip) -> bool:
    """Whether ``path`` already holds the member, checked by size and CRC-32."""
    if not path.is_file() or path.stat().st_size != clip.size:
        return False
    return zlib.crc32(path.read_bytes()) == clip.crc32


def download_subset_to(source: str, output_dir: Path, num_classes: int, train_per_class: int,
                       val_per_class: int, test_per_class: int, seed: int) -> dict:
    """Downloads the subset into ``output_dir`` and returns its manifest.

    Each file is written atomically and checked against the zip's CRC-32 (zipfile checks it on
    read); files already present and intact are kept, so a re-run resumes. The manifest is
    written last: its presence marks the output complete.
    """
    from tqdm import tqdm

    counts = dict(zip(SPLITS, (train_per_class, val_per_class, test_per_class), strict=True))
    require_at_least_one({f"{split}_per_class": n for split, n in counts.items()}, SourceError)
    output_dir = Path(output_dir)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    log.info("reading the central directory of %s", source)
    with open_zip(source) as zf:
        by_class = list_clips(zf, source)
        chosen = choose_subset(by_class, num_classes, counts, seed, source)
        classes = sorted(by_class)[:num_classes]
        todo = [(split, clip) for split in SPLITS for clip in chosen[split]]
        log.info("%d classes, %d clips (%s)", len(classes), len(todo),
                 ", ".join(f"{s} {len(chosen[s])}" for s in SPLITS))
        files = []
        with tqdm(total=sum(c.size for _, c in todo), unit="B", unit_scale=True,
                  desc="download") as bar:
            for split, clip in todo:
                relative = f"{split}/{clip.class_name}/{clip.file_name}"
                target = output_dir / relative
                if not is_complete(target, clip):
                    try:
                        atomic_write_bytes(target, zf.read(clip.member))
                    except Exception as e:
                        raise SourceError(f"cannot read {clip.member} from {source}: {e}") from e
                bar.update(clip.size)
                files.append({"path": relative, "split": split, "class": clip.class_name,
                              "group": clip.group, "size": clip.size, "crc32": clip.crc32})
    manifest = {"source": source, "classes": classes, "seed": seed,
                "counts": {split: len(chosen[split]) for split in SPLITS}, "files": files}
    write_json(output_dir / MANIFEST, manifest)
    return manifest
