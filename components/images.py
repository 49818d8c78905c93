"""The container image of each component: the one place that names them.

Images are tagged with the commit they are built from (``<commit>-dirty-<hash of the diff>``
where the files the images hold have uncommitted changes), so a rebuilt image has a new name:
a cluster pulls it instead of running a stale one, and KFP's cache, keyed on the image, serves
no result of old code. ``VIDEOCLF_REGISTRY`` and ``VIDEOCLF_TAG`` override the registry and tag.
``make push`` records the digest of each pushed image in ``images/digests.json``; a pipeline
compiled for a cluster then names each image by that digest.

The pipeline sets each task's image when it is built (``pipelines.video_classification``); a
component's own ``base_image``, which a single component run on its own uses, is the image's
``latest`` tag (``make images`` sets both), so importing a component runs no git.

    python -m components.images name NAME             # the image's full name (make images tags it)
    python -m components.images latest NAME           # its latest tag, which make images sets too
    python -m components.images push NAME [ENGINE]    # push it, and record its digest
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NAMES = ("data", "trainer", "evaluator", "serving")
LOCAL_REGISTRY = "localhost/videoclf"
REFERENCE_TAG = "reference"  # the committed YAML's images: it is for reading, not for a cluster
SOURCE = Path(__file__).resolve().parents[1]
# What images/Dockerfile builds from: a change to any of it changes the tag.
BUILT_FROM = ("pyproject.toml", "README.md", "LICENSE", "components", "pipelines", "images")
DIGESTS = SOURCE / "images" / "digests.json"


class ImageError(ValueError):
    """No image a cluster can pull can be named."""


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True,
                          check=True).stdout


@functools.cache
def source_tag() -> str | None:
    """The commit of this checkout (12 hex digits), with ``-dirty-`` and a hash of the diff when
    tracked files that the images are built from have changed; None outside a git checkout."""
    try:
        commit = _git("rev-parse", "--short=12", "HEAD").strip()
        diff = _git("diff", "HEAD", "--binary", "--", *BUILT_FROM)
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:8]}" if diff else commit


REGISTRY = os.environ.get("VIDEOCLF_REGISTRY") or LOCAL_REGISTRY
LATEST = "latest"


def current_tag() -> str:
    """``VIDEOCLF_TAG``, else this checkout's commit (``source_tag``), else ``dev``."""
    return os.environ.get("VIDEOCLF_TAG") or source_tag() or "dev"


def image(name: str, registry: str | None = None, tag: str | None = None) -> str:
    """The full name of one component image (by default in REGISTRY, tagged ``current_tag()``)."""
    return f"{registry or REGISTRY}/{name}:{tag or current_tag()}"


def latest(name: str) -> str:
    """The image's ``latest`` tag in REGISTRY: a component's own base image."""
    return image(name, tag=LATEST)


def recorded_digests() -> dict[str, str]:
    """``{image name: digest}`` of the images ``make push`` pushed from this checkout."""
    return json.loads(DIGESTS.read_text()) if DIGESTS.is_file() else {}


def cluster_images(registry: str | None) -> dict[str, str]:
    """The image of each component as a cluster pulls it: from ``registry`` (else
    ``VIDEOCLF_REGISTRY``), by the digest ``make push`` recorded, else by the commit's tag.

    Refuses a local registry, and a tag that does not name one build: a working tree with
    uncommitted changes whose images were not pushed, or an install outside a git checkout
    without ``VIDEOCLF_TAG``.
    """
    registry = (registry or os.environ.get("VIDEOCLF_REGISTRY") or "").rstrip("/")
    if not registry or registry.split("/")[0] in ("localhost", "127.0.0.1"):
        raise ImageError("a pipeline for a cluster needs the registry the cluster pulls the images "
                         f"from{f' (not {registry})' if registry else ''}: pass --registry or set "
                         "VIDEOCLF_REGISTRY, after pushing the images there with "
                         "make push REGISTRY=<registry>")
    digests = recorded_digests()
    names = {}
    for name in NAMES:
        ref = image(name, registry)
        if ref in digests:
            names[name] = f"{ref}@{digests[ref]}"
        elif "VIDEOCLF_TAG" not in os.environ and "-dirty-" in current_tag():
            raise ImageError(f"{ref}: the working tree has uncommitted changes, so its tag names no "
                             "one build: commit and rebuild, or push the images with make push "
                             f"REGISTRY={registry} (which records each image's digest)")
        elif "VIDEOCLF_TAG" not in os.environ and current_tag() == "dev":
            raise ImageError("not a git checkout, so the images have no commit to be named by: set "
                             "VIDEOCLF_TAG to the tag the images were pushed with")
        else:
            names[name] = ref
    return names


def push(name: str, engine: str = "podman") -> str:
    """Pushes one image with ``engine`` (podman or docker) and records its digest."""
    ref = image(name)
    with tempfile.TemporaryDirectory() as tmp:
        if Path(engine).name == "podman":
            digest_file = Path(tmp) / "digest"
            subprocess.run([engine, "push", "--digestfile", str(digest_file), ref], check=True)
            digest = digest_file.read_text().strip()
        else:
            subprocess.run([engine, "push", ref], check=True)
            repo_digests = subprocess.run([engine, "image", "inspect", "--format",
                                           "{{json .RepoDigests}}", ref], capture_output=True,
                                          text=True, check=True).stdout
            repository = ref.rsplit(":", 1)[0]
            digest = next(d.split("@", 1)[1] for d in json.loads(repo_digests)
                          if d.startswith(f"{repository}@"))
    digests = {**recorded_digests(), ref: digest}
    DIGESTS.write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
    return digest


if __name__ == "__main__":
    command, name, *rest = sys.argv[1:]
    if command == "push":
        print(push(name, *rest))
    else:
        print(latest(name) if command == "latest" else image(name))
