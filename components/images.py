"""The container image of each component: the one place that names them.

Set ``VIDEOCLF_REGISTRY`` and ``VIDEOCLF_TAG`` before compiling (``make compile REGISTRY=...
TAG=...``) to point the pipeline at images pushed to your registry. ``python -m
components.images NAME`` prints an image's full name; ``make images`` tags its builds with it.
"""

import os
import sys

REGISTRY = os.environ.get("VIDEOCLF_REGISTRY") or "localhost/videoclf"
TAG = os.environ.get("VIDEOCLF_TAG") or "0.1.0"

IMAGES = {name: f"{REGISTRY}/{name}:{TAG}" for name in ("data", "trainer", "evaluator")}
DATA_IMAGE = IMAGES["data"]
TRAINER_IMAGE = IMAGES["trainer"]
EVALUATOR_IMAGE = IMAGES["evaluator"]

if __name__ == "__main__":
    print(IMAGES[sys.argv[1]])
