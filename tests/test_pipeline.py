import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from pipelines.video_classification import COMPILED_YAML, compile_pipeline

STAGES = ["download-subset", "extraction-parts", "extract-frames", "gather-frames", "train-model",
          "evaluate-model"]


def test_committed_yaml_is_up_to_date(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml")
    assert fresh.read_text() == COMPILED_YAML.read_text(), (
        "pipelines/video_classification.yaml is stale: run `videoclf compile`")


def test_yaml_has_typed_executors_a_fan_out_and_a_gpu_on_training():
    spec, platform = yaml.safe_load_all(COMPILED_YAML.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in STAGES)
    components = spec["components"]
    artifacts = {name: {k: v["artifactType"]["schemaTitle"]
                        for kind in ("inputDefinitions", "outputDefinitions")
                        for k, v in c.get(kind, {}).get("artifacts", {}).items()}
                 for name, c in components.items()}
    assert artifacts["comp-download-subset"] == {"dataset": "system.Dataset"}
    assert artifacts["comp-extract-frames"] == {"videos": "system.Dataset", "frames": "system.Dataset"}
    assert artifacts["comp-gather-frames"] == {"parts": "system.Dataset", "frames": "system.Dataset"}
    # Extraction fans out over pods, one per part, and the parts are gathered.
    loop = spec["root"]["dag"]["tasks"]["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--extraction-parts-Output"
    gather_inputs = spec["components"]["comp-gather-frames"]["inputDefinitions"]["artifacts"]
    assert gather_inputs["parts"]["isArtifactList"]
    assert artifacts["comp-train-model"] == {"frames": "system.Dataset", "model": "system.Model",
                                             "metrics": "system.Metrics",
                                             "learning_curves": "system.HTML",
                                             "tensorboard": "system.Artifact"}
    assert artifacts["comp-evaluate-model"] == {
        "frames": "system.Dataset", "model": "system.Model", "metrics": "system.Metrics",
        "confusion_matrix": "system.ClassificationMetrics",
        "confusion_matrix_plot": "system.Artifact", "summary": "system.Markdown", "report": "system.HTML"}
    train = executors["exec-train-model"]["container"]
    accelerator = train["resources"]["accelerator"]
    assert "accelerator_type" in accelerator["resourceType"]
    assert "accelerator_count" in accelerator["resourceCount"]
    assert train["resources"]["cpuRequest"] == 4
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["accelerator_type"]["defaultValue"] == "NVIDIA_TESLA_T4"
    assert spec["root"]["dag"]["tasks"]["train-model"]["retryPolicy"]["maxRetryCount"] == 3
    # On Kubernetes the GPU node's selector and tolerations are pipeline parameters too.
    pod = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert pod["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "gpu_node_selector"
    assert pod["tolerations"][0]["tolerationJson"]["componentInputParameter"] == "gpu_tolerations"
    assert params["gpu_tolerations"]["parameterType"] == "LIST"
    for executor in executors.values():  # the images carry kfp: nothing is pip-installed at start
        assert "pip install" not in " ".join(executor["container"]["command"])


def test_yaml_loads_back_as_a_pipeline_with_the_tutorials_defaults():
    from kfp import components

    pipeline = components.load_component_from_file(str(COMPILED_YAML))
    inputs = pipeline.component_spec.inputs
    defaults = {name: spec.default for name, spec in inputs.items()}
    assert defaults["num_classes"] == 10
    per_class = (defaults["train_per_class"], defaults["val_per_class"], defaults["test_per_class"])
    assert per_class == (30, 10, 10)
    assert (defaults["n_frames"], defaults["frame_step"], defaults["height"]) == (10, 15, 224)
    assert (defaults["epochs"], defaults["batch_size"], defaults["learning_rate"]) == (50, 8, 1e-4)
    assert defaults["source_url"] == "https://storage.googleapis.com/thumos14_files/UCF101_videos.zip"


def test_cli_compile_writes_the_same_yaml(tmp_path):
    out = tmp_path / "p.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--output", str(out)],
                   check=True, capture_output=True)
    assert out.read_text() == COMPILED_YAML.read_text()


def test_end_to_end_local_run(tmp_path):
    """The whole pipeline under kfp.local, through the CLI, at a tiny size."""
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--output", str(out), "--epochs", "1",
         "--train-per-class", "4", "--val-per-class", "2", "--test-per-class", "2",
         "--n-frames", "4", "--height", "32", "--width", "32", "--extract-parts", "2"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == 4 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["params"]["n_frames"] == 4 and summary["params"]["source_url"].startswith("http://127.0.0.1:")
    with open(summary["report"]) as f:
        assert "Confusion matrix" in f.read()
    with open(summary["confusion_matrix"], "rb") as f:
        assert f.read(4) == b"\x89PNG"
    from components.train_model.train import load_model

    model, classes = load_model(Path(summary["model"]).parent)
    assert classes == summary["classes"] and model.output_shape == (None, 4)

    # Lineage: every artifact names its producer, parameters, inputs and content hash.
    from components.common import file_sha256

    run_dir = Path(summary["run_dir"])
    outputs = json.loads((run_dir / "train-model" / "executor_output.json").read_text())
    meta = outputs["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert meta["producer"] == "train_model" and meta["parameters"]["epochs"] == 1
    assert meta["inputs"] == {"frames": str(run_dir / "gather-frames" / "frames")}
    assert meta["sha256"] == file_sha256(Path(summary["model"]))
    lineage = subprocess.run([sys.executable, "-m", "pipelines.cli", "lineage", str(run_dir)],
                             capture_output=True, text=True, timeout=120)
    assert lineage.returncode == 0, lineage.stderr
    text = "\n" + lineage.stdout
    for edge in ("<- videos from download-subset", "<- parts from for-loop-1-iteration-0/extract-frames",
                 "<- parts from for-loop-1-iteration-1/extract-frames", "<- frames from gather-frames",
                 "<- model from train-model"):
        assert edge in text
    stages = ["\ndownload-subset", "\ngather-frames", "\ntrain-model", "\nevaluate-model"]
    assert [text.index(s) for s in stages] == sorted(text.index(s) for s in stages)
    assert "<svg" in (run_dir / "lineage.svg").read_text()
    check_report_in_a_browser(Path(summary["report"]), tmp_path)  # last: it skips without chromium


def test_a_failing_task_ends_the_run_with_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--output", str(tmp_path),
         "--source-url", "http://127.0.0.1:9/UCF101.zip"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "cannot read a zip at http://127.0.0.1:9/UCF101.zip" in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("videoclf run:") and "download-subset" in last_line
    assert not (tmp_path / "summary.json").exists()


def test_cli_parses_bool_and_json_flags():
    from pipelines.cli import build_parser, pipeline_args

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


def check_report_in_a_browser(report: Path, tmp_path: Path) -> None:
    """Opens the report in headless Chromium, where .ci/run installs it: the page is parsed as
    HTML with its four figures, and its screenshot is not blank."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH for the browser check of the report")
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*browser, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "<pre" not in dom, "the browser showed the report as text"
    assert dom.count('<img alt="') == 4 and dom.count("<h2>") == 7
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1000,3000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (3000, 1000) and (pixels[..., :3] < 0.5).mean() > 0.01
