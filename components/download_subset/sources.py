"""Where the videos come from, and what each one is: its class, and where the source says so,
its split and group.

A source is one of:

- a zip (local, ``gs://``, ``s3://``, or ``http(s)://`` read by range requests with remotezip)
  or a folder (local, ``gs://`` or ``s3://`` prefix) laid out as

  - ``<root>/v_<Class>_g<GG>_c<CC>.avi``: UCF101's names, all in one folder (the tutorial's zip);
  - ``<root>/<class>/<video>``: a folder per class (the official UCF101 archive, PyTorchVideo);
  - ``<root>/<split>/<class>/<video>``: a folder per split, then per class (Hugging Face's
    VideoFolder);

  where ``<root>`` is the folder all videos share (a zip's top folder, say);
- an annotation list: ``path label`` lines (MMAction2, PyTorchVideo), the label a class name or
  an index into a class-name file, or a CSV with a header ``path,label[,split][,group]``; paths
  are relative to the list's own folder.

Video files are ``.avi``, ``.mp4``, ``.mkv``, ``.mov``, ``.webm`` and ``.m4v``, in any case; other
files are ignored and counted. A video's group (UCF101's ``gXX``: one actor and scene) comes
from a ``group`` column or from its file name by ``group_pattern``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import re
import threading
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from components.download_subset.config import UCF101_GROUP_PATTERN
from components.storage import filesystem, is_remote, open_input

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v")
LIST_SUFFIXES = (".txt", ".lst", ".csv")
UCF101_NAME = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$", re.IGNORECASE)
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}
EXAMPLES = 5  # names given as examples in messages and the manifest


class SourceError(RuntimeError):
    """The source cannot be read, or does not hold what was asked for."""


@dataclass(frozen=True)
class VideoFile:
    """One video of the source."""

    path: str  # a zip member, or a path or URL
    class_name: str
    split: str | None = None  # the split the source gives it
    group: str | None = None  # its group: clips of one group share an actor and a scene
    size: int | None = None
    crc32: int | None = None  # a zip member's, from the central directory

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Listing:
    """What a source holds."""

    layout: str  # ucf101-names, class-folders, split-folders, list or csv
    videos: list[VideoFile]
    ignored: list[str] = field(default_factory=list)  # files that are not videos
    empty: list[str] = field(default_factory=list)  # class folders, or class-file labels, with no video
    refused: list[dict] = field(default_factory=list)  # zip members whose names would leave the output

    def summary(self) -> dict:
        """What the manifest records of the listing."""
        return {"layout": self.layout, "videos": len(self.videos),
                "ignored": {"count": len(self.ignored), "examples": self.ignored[:EXAMPLES]},
                "empty": self.empty, "refused": self.refused}


def is_video(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES)


def unsafe_reason(member: str) -> str | None:
    """Why a zip member's name could lead a writer out of its folder, or None if it could not."""
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", member):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    return None


def group_of(name: str, pattern: str) -> str | None:
    """The group a file name gives by ``pattern`` (its first group, else its whole match)."""
    if not pattern:
        return None
    match = re.search(pattern, name)
    if not match:
        return None
    group = match.group(1) if match.groups() else match.group(0)
    return str(int(group)) if group.isdigit() else group


def split_name(name: str, where: str) -> str:
    """``train``, ``val`` or ``test`` for a split folder's or column's name."""
    split = SPLIT_NAMES.get(name.lower())
    if split is None:
        raise SourceError(f"{where}: {name!r} is not a split; split folders and columns are named "
                          f"{', '.join(sorted(SPLIT_NAMES))}")
    return split


# Zips ----------------------------------------------------------------------------------------


def open_zip(source: str) -> zipfile.ZipFile:
    """Opens a zip by URL (range reads), ``gs://`` or ``s3://`` URI or local path, reading no
    member yet."""
    if source.startswith(("http://", "https://")):
        from remotezip import RemoteZip

        return RemoteZip(source)
    return zipfile.ZipFile(open_input(source) if is_remote(source) else source)


class ZipReader:
    """Reads members of a zip, one handle per thread (a zip file object has one read position);
    a handle that failed is dropped, so the retry opens a fresh one."""

    def __init__(self, source: str):
        self.source = source
        self._local = threading.local()

    def read(self, video: VideoFile) -> bytes:
        """The member's bytes; zipfile checks them against the CRC-32 of the central directory."""
        if getattr(self._local, "zip", None) is None:
            self._local.zip = open_zip(self.source)
        try:
            data = self._local.zip.read(video.path)
        except BaseException:
            self._local.zip.close()
            self._local.zip = None
            raise
        if len(data) != video.size:
            raise zipfile.BadZipFile(f"{video.path}: {len(data)} bytes read, {video.size} expected")
        return data


def zip_files(source: str) -> tuple[list[tuple[str, int, int]], list[str], list[dict]]:
    """A zip's files as ``(name, size, crc32)``, its folders, and the members refused for an
    unsafe name."""
    with open_zip(source) as zf:
        infos = zf.infolist()
    files, folders, refused = [], [], []
    for info in infos:
        if info.is_dir():
            folders.append(info.filename.rstrip("/"))
            continue
        reason = unsafe_reason(info.filename)
        if reason:
            if is_video(info.filename):
                log.warning("refused %r from %s: %s", info.filename, source, reason)
                refused.append({"member": info.filename, "reason": reason})
            continue
        files.append((info.filename, info.file_size, info.CRC))
    return files, folders, refused


# Folders -------------------------------------------------------------------------------------


def folder_files(root: str) -> tuple[list[tuple[str, int, None]], list[str]]:
    """A folder's files as ``(path relative to root, size, None)`` and its sub-folders."""
    if is_remote(root):
        fs, path = filesystem(root)
        found = fs.find(path, detail=True, withdirs=True)
        prefix = path.rstrip("/") + "/"
        files = [(name[len(prefix):], info["size"], None) for name, info in found.items()
                 if info["type"] == "file"]
        folders = [name[len(prefix):] for name, info in found.items() if info["type"] == "directory"]
        return files, folders
    base = Path(root)
    if not base.is_dir():
        raise SourceError(f"{root} is no folder, zip or annotation list")
    files, folders = [], []
    for directory, subdirs, names in os.walk(base):
        relative = Path(directory).relative_to(base)
        folders += [(relative / d).as_posix() for d in subdirs]
        files += [((relative / n).as_posix(), (Path(directory) / n).stat().st_size, None) for n in names]
    return files, folders


def tree_listing(source: str, files: list[tuple[str, int, int | None]], folders: list[str],
                 group_pattern: str, refused: list[dict], prefix: str = "") -> Listing:
    """The videos of a zip's or folder's files, by the layout their depth below the shared root
    shows: one folder (UCF101's names), a folder per class, or a folder per split and class."""
    def hidden(name: str) -> bool:
        return name.split("/")[-1].startswith(".")

    videos = [f for f in files if is_video(f[0]) and not hidden(f[0])]
    ignored = sorted(f[0] for f in files if not is_video(f[0]) or hidden(f[0]))
    if not videos:
        examples = f": {', '.join(ignored[:EXAMPLES])}" if ignored else ""
        raise SourceError(f"{source} holds no video ({', '.join(VIDEO_SUFFIXES)}): "
                          f"{len(files)} other files{examples}")
    parts = [name.split("/") for name, _, _ in videos]
    root = os.path.commonprefix([p[:-1] for p in parts])
    depths = {len(p) - len(root) for p in parts}
    if len(depths) > 1:
        by_depth = {len(p) - len(root): "/".join(p) for p in parts}
        raise SourceError(f"{source} mixes layouts: " + "; ".join(
            f"{by_depth[d]} is {d - 1} folder(s) below the shared root" for d in sorted(by_depth)) +
            ": put every video in <class>/<video> or <split>/<class>/<video>")
    depth = depths.pop()
    found = []
    for (name, size, crc), p in zip(videos, parts, strict=True):
        below = p[len(root):]
        path = prefix + name
        if depth == 1:
            match = UCF101_NAME.match(below[0])
            if not match:
                raise SourceError(f"{source}: {name} is not in a class folder and not named like "
                                  "UCF101's v_<Class>_g<GG>_c<CC>.avi: put each class's videos in a "
                                  "folder of its name")
            found.append(VideoFile(path, match["cls"], None, group_of(below[0], group_pattern), size, crc))
        elif depth in (2, 3):
            split = split_name(below[0], f"{source}: {name}") if depth == 3 else None
            found.append(VideoFile(path, below[-2], split, group_of(below[-1], group_pattern), size, crc))
        else:
            raise SourceError(f"{source}: {name} is {depth - 1} folders below the shared root: put each "
                              "video in <class>/<video> or <split>/<class>/<video>")
    layout = {1: "ucf101-names", 2: "class-folders", 3: "split-folders"}[depth]
    empty = []
    if depth in (2, 3):  # class folders (below the root, at the videos' depth) that hold no video
        with_videos = {tuple(p[len(root):-1]) for p in parts}
        every = {tuple(f.split("/")) for f in folders} | {tuple(f[0].split("/")[:-1]) for f in files}
        class_level = {d[len(root):] for d in every if d[:len(root)] == tuple(root)
                       and len(d) - len(root) == depth - 1}
        empty = sorted("/".join(d) for d in class_level - with_videos
                       if depth == 2 or d[0].lower() in SPLIT_NAMES)
        for folder in empty:
            log.warning("%s: the class folder %s holds no video", source, folder)
    return Listing(layout, found, ignored, empty, refused)


# Annotation lists ----------------------------------------------------------------------------


def read_text(url: str) -> str:
    with open_input(url) as f:
        return f.read().decode()


def class_name_file(url: str) -> dict[int, str]:
    """Class names by label index: one name a line (indices from 0), or ``index name`` lines
    (as UCF101's classInd.txt, whose indices start at 1)."""
    names = {}
    lines = [line.strip() for line in read_text(url).splitlines() if line.strip()]
    for number, line in enumerate(lines):
        index, _, name = line.partition(" ")
        if index.isdigit() and name.strip():
            names[int(index)] = name.strip()
        else:
            names[number] = line
    return names


def list_rows(url: str) -> list[dict[str, str]]:
    """The rows of an annotation list: ``path``, ``label`` and, from a CSV, ``split`` and ``group``."""
    text = read_text(url)
    if url.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if not {"path", "label"} <= set(columns):
            raise SourceError(f"{url} has the columns {', '.join(columns) or 'none'}: it needs a header "
                              "path,label[,split][,group]")
        return [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} | {"line": str(n)}
                for n, row in enumerate(reader, 2)]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path, _, label = line.rpartition(" ") if " " in line else line.rpartition("\t")
        if not path.strip():
            raise SourceError(f"line {n} of {url} has no label: lines are 'path label'")
        rows.append({"path": path.strip(), "label": label.strip(), "line": str(n)})
    return rows


def list_listing(url: str, class_names_url: str, group_pattern: str) -> Listing:
    """The videos an annotation list names, each checked to be there."""
    rows = list_rows(url)
    if not rows:
        raise SourceError(f"{url} lists no video")
    names = class_name_file(class_names_url) if class_names_url else {}
    if all(row["label"].lstrip("-").isdigit() for row in rows) and not names:
        raise SourceError(f"the labels of {url} are indices: give the class names with --class-names FILE "
                          "(a name a line, or 'index name' lines like UCF101's classInd.txt)")
    base = url.rsplit("/", 1)[0] if "/" in url else "."
    files = {name: size for name, size, _ in folder_files(base)[0]}
    videos, ignored, missing, unknown = [], [], [], []
    for row in rows:
        label = row["label"]
        class_name = names.get(int(label)) if label.lstrip("-").isdigit() and names else label
        if class_name is None:
            unknown.append(f"line {row['line']}: {label}")
            continue
        relative = posixpath.normpath(row["path"])
        if relative.startswith(("/", "../")) or "://" in relative:
            raise SourceError(f"{url}, line {row['line']}: {row['path']} is not inside the list's folder "
                              f"{base}: paths are relative to it")
        if not is_video(relative):
            ignored.append(relative)
            continue
        if relative not in files:
            missing.append(relative)
            continue
        split = split_name(row["split"], f"{url}, line {row['line']}") if row.get("split") else None
        group = row.get("group") or group_of(relative.rsplit("/", 1)[-1], group_pattern)
        videos.append(VideoFile(f"{base}/{relative}", class_name, split, group, files[relative]))
    if unknown:
        raise SourceError(f"{url}: labels with no name in {class_names_url}: "
                          + ", ".join(unknown[:EXAMPLES]))
    if missing:
        raise SourceError(f"{url} names {len(missing)} videos that are not in {base}: "
                          + ", ".join(missing[:EXAMPLES]) + (" ..." if len(missing) > EXAMPLES else ""))
    splits = {v.split is None for v in videos}
    if len(splits) > 1:
        raise SourceError(f"{url}: some rows have a split and some have none: give every row one, or none")
    listed = {v.class_name for v in videos}
    empty = sorted(set(names.values()) - listed)
    for name in empty:
        log.warning("%s: the class %s has no video", url, name)
    seen: dict[str, VideoFile] = {}
    for video in videos:
        other = seen.setdefault(video.path, video)
        if other.class_name != video.class_name:
            raise SourceError(f"{url} names {video.path} twice, as {other.class_name} and {video.class_name}")
    if len(seen) < len(videos):
        log.warning("%s names %d videos more than once: each is taken once", url, len(videos) - len(seen))
        videos = list(seen.values())
    return Listing("csv" if url.lower().endswith(".csv") else "list", videos, ignored, empty, [])


def list_source(source: str, class_names_url: str = "", group_pattern: str = UCF101_GROUP_PATTERN) -> Listing:
    """The videos of a zip, folder or annotation list, and what else it holds."""
    lowered = source.lower().rstrip("/")
    if lowered.endswith(LIST_SUFFIXES):
        return list_listing(source, class_names_url, group_pattern)
    if lowered.endswith(".zip"):
        files, folders, refused = zip_files(source)
        return tree_listing(source, files, folders, group_pattern, refused)
    files, folders = folder_files(source)
    return tree_listing(source, files, folders, group_pattern, [], prefix=source.rstrip("/") + "/")


def by_class(videos: list[VideoFile]) -> dict[str, list[VideoFile]]:
    classes: dict[str, list[VideoFile]] = defaultdict(list)
    for video in videos:
        classes[video.class_name].append(video)
    return dict(classes)
