"""The image definitions agree with each other and with the project."""

import re
import subprocess
import sys
from pathlib import Path

from components.images import BUILT_FROM, NAMES

ROOT = Path(__file__).resolve().parents[1]


def pinned(image: str) -> dict[str, str]:
    lines = (ROOT / "images" / image / "requirements.txt").read_text().splitlines()
    return dict(re.match(r"([\w.-]+)==([\w.+-]+)", line).groups() for line in lines if "==" in line)


def test_each_image_has_pinned_requirements():
    for image in NAMES:
        assert "kfp" in pinned(image)  # components start without installing it
    assert "tensorflow" not in pinned("data") and "opencv-python-headless" in pinned("data")
    assert {"gcsfs", "s3fs"} <= set(pinned("data")) & set(pinned("trainer"))
    # The trainer runs on GPU nodes: TensorFlow with the CUDA libraries of PyPI's wheels.
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= set(pinned("trainer"))
    assert not any(name.startswith("nvidia-") for name in pinned("evaluator"))


def test_tensorflow_is_pinned_alike():
    makefile = re.search(r"TF_VERSION := ([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert makefile == pinned("trainer")["tensorflow"] == pinned("evaluator")["tensorflow"]


def image_name(name: str, **env: str) -> str:
    return subprocess.run([sys.executable, "-m", "components.images", "name", name], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_images_are_tagged_with_the_commit_they_are_built_from():
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "HEAD", "--quiet", "--", *BUILT_FROM], cwd=ROOT).returncode == 1
    name = image_name("trainer")
    assert re.fullmatch(rf"localhost/videoclf/trainer:{commit[:12]}(-dirty-[0-9a-f]{{8}})?", name)
    assert ("-dirty-" in name) == dirty


def test_image_names_follow_registry_and_tag_variables():
    name = image_name("trainer", VIDEOCLF_REGISTRY="europe-docker.pkg.dev/p/videoclf", VIDEOCLF_TAG="1.2.3")
    assert name == "europe-docker.pkg.dev/p/videoclf/trainer:1.2.3"
