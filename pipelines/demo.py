"""The offline demo: the real pipeline on a synthetic dataset served over loopback HTTP.

The zip of ``demo_data`` is served with Range support, so the download stage takes the same
remotezip path as for UCF101. Clips are small (8 frames of 64 x 64) so that the whole run,
training included, takes a few minutes on two CPU cores.
"""

import tempfile
from pathlib import Path

from pipelines.demo_data import make_demo_zip
from pipelines.local_runner import run_local
from pipelines.motion_sets import MOTION_SETS
from pipelines.range_server import serve_directory
from pipelines.targets import DEFAULT_TARGET, Target

ZIP_NAME = "UCF101_demo.zip"
DEMO_PARAMS = {
    "num_classes": len(MOTION_SETS["easy"].classes),
    "train_per_class": 50,
    "val_per_class": 20,
    "test_per_class": 30,
    "n_frames": 8,
    "frame_step": 2,
    "height": 64,
    "width": 64,
    "clips_per_train_video": 3,
    "epochs": 10,
    "batch_size": 8,
    "seed": 0,
    "random_flip": False,  # a mirrored DriftLeft clip is a DriftRight one
}
GROUPS, CLIPS_PER_GROUP = 20, 6  # 120 clips per class: enough whole groups for 50/20/30


def run_demo(output_dir: Path, runner: str = "subprocess", target: Target = DEFAULT_TARGET,
             **overrides) -> dict:
    """Makes the demo zip, serves it on loopback and runs the pipeline compiled for ``target`` on
    it with ``runner``; a setting the target sweeps takes the sweep's values, not the demo's."""
    params = {**{k: v for k, v in DEMO_PARAMS.items() if k not in target.swept}, **overrides}
    with tempfile.TemporaryDirectory(prefix="videoclf-demo-") as tmp:
        make_demo_zip(Path(tmp) / ZIP_NAME, groups=GROUPS, clips_per_group=CLIPS_PER_GROUP)
        with serve_directory(Path(tmp)) as base_url:
            return run_local({**params, "source_url": f"{base_url}/{ZIP_NAME}"}, output_dir, runner, target)
