"""Helpers every stage shares: atomic writes, manifests and logging."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")  # the splits every stage reads and writes, in this order
SEED = 42  # the pipeline's one seed: splits, clip starts, shuffling and initialisation


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def require_at_least_one(params: dict[str, int], error: type[Exception] = ValueError) -> None:
    """Raises ``error`` naming the first parameter below 1."""
    for name, value in params.items():
        if value < 1:
            raise error(f"{name} must be at least 1, got {value}")


def check_free_space(directory: Path, needed: int, what: str) -> None:
    """Fails at once, naming both sizes, when the disk of ``directory`` has less than ``needed``
    bytes free: on a cluster, a task's pod writes its artifacts to the node's disk."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(f"{what} need {needed / 1e6:,.1f} MB but {directory} has {free / 1e6:,.1f} MB free: "
                      "give the task's node (or volume) more disk")


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(directory: Path) -> dict:
    """Reads the manifest that a stage writes last, once its output is complete."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a complete stage output")
    return json.loads(path.read_text())


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, for lineage metadata."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """The SHA-256 of a file; of a folder's manifest; or, for a folder without one, of the
    names and SHA-256s of all its files."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if (path / MANIFEST).is_file():
        return file_sha256(path / MANIFEST)
    files = sorted(f for f in path.rglob("*") if f.is_file())
    listing = "".join(f"{f.relative_to(path)} {file_sha256(f)}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def lineage(component: str, parameters: dict, inputs: dict, content: Path) -> dict:
    """Metadata that traces an artifact back: the component and parameters that produced it, the
    URIs of its input artifacts, and the SHA-256 of its content. ``videoclf lineage`` draws the
    graph from it."""
    return {"producer": component, "parameters": parameters, "inputs": inputs,
            "sha256": content_sha256(content)}


def setup_logging() -> None:
    """Logs ``time level name: message`` lines to stderr, once per process."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
