"""The command line: flags parse as their parameters' types, and the commands that use a trained
model start without the pipeline."""

import subprocess
import sys

from pipelines.cli import build_parser, pipeline_args

WITHOUT_THE_PIPELINE = """
import sys
from pipelines import cli
from components import images
import components.download_subset.component, components.extract_frames.component
import components.train_model.component, components.evaluate_model.component
import components.serve_model.component
for command in ("serve", "predict"):
    try:
        cli.main([command, "--help"])
    except SystemExit:
        pass
print(images.source_tag.cache_info().misses, "pipelines.video_classification" in sys.modules)
"""


def test_serve_and_predict_neither_build_the_pipeline_nor_run_git():
    """Importing every component runs no git, and ``serve`` and ``predict`` import no pipeline."""
    result = subprocess.run([sys.executable, "-c", WITHOUT_THE_PIPELINE], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split()[-2:] == ["0", "False"]


def test_cli_parses_bool_and_json_flags():
    args = build_parser().parse_args(
        ["run", "--random-flip", "false", "--gpu-node-selector", '{"pool": "gpu"}',
         "--gpu-tolerations", '[{"key": "nvidia.com/gpu", "operator": "Exists"}]'])
    params = pipeline_args(args)
    assert params["random_flip"] is False and params["gpu_node_selector"] == {"pool": "gpu"}
    assert params["gpu_tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    for flag, text in [("--random-flip", "yes"), ("--gpu-tolerations", '{"key": 1}')]:
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", flag, text],
                                capture_output=True, text=True)
        assert result.returncode == 2 and f"argument {flag}" in result.stderr


