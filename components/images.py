"""The container image of each component: the one place that names them.

Set ``VIDEOCLF_REGISTRY`` and ``VIDEOCLF_TAG`` before compiling to point the pipeline at
images pushed to your registry.
"""

import os

REGISTRY = os.environ.get("VIDEOCLF_REGISTRY", "localhost/videoclf")
TAG = os.environ.get("VIDEOCLF_TAG", "0.1.0")

DATA_IMAGE = f"{REGISTRY}/data:{TAG}"
TRAINER_IMAGE = f"{REGISTRY}/trainer:{TAG}"
EVALUATOR_IMAGE = f"{REGISTRY}/evaluator:{TAG}"
