"""The image definitions agree with each other and with the project."""

import re
import subprocess
import sys
from pathlib import Path

from components.images import IMAGES, TAG

ROOT = Path(__file__).resolve().parents[1]


def pinned(image: str) -> dict[str, str]:
    lines = (ROOT / "images" / image / "requirements.txt").read_text().splitlines()
    return dict(re.match(r"([\w.-]+)==([\w.+-]+)", line).groups() for line in lines if "==" in line)


def test_each_image_has_a_dockerfile_and_pinned_requirements():
    for image in IMAGES:
        dockerfile = (ROOT / "images" / image / "Dockerfile").read_text()
        assert f"images/{image}/requirements.txt" in dockerfile and "USER 1000" in dockerfile
        assert "kfp" in pinned(image)  # components start without installing it
    assert "tensorflow" not in pinned("data") and "opencv-python-headless" in pinned("data")


def test_trainer_base_image_has_the_pinned_tensorflow():
    base = re.search(r"ARG BASE_IMAGE=tensorflow/tensorflow:([\d.]+)-gpu",
                     (ROOT / "images" / "trainer" / "Dockerfile").read_text()).group(1)
    makefile = re.search(r"TF_VERSION := ([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert base == makefile == pinned("trainer")["tensorflow"] == pinned("evaluator")["tensorflow"]


def test_default_tag_is_the_project_version():
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert version == TAG


def test_image_names_follow_registry_and_tag_variables():
    env = {"VIDEOCLF_REGISTRY": "europe-docker.pkg.dev/p/videoclf", "VIDEOCLF_TAG": "1.2.3", "PATH": ""}
    name = subprocess.run([sys.executable, "-m", "components.images", "trainer"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert name == "europe-docker.pkg.dev/p/videoclf/trainer:1.2.3"
