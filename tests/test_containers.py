"""The components in their own images: the images themselves, and the pipeline run in them
through kfp.local.DockerRunner on the Docker API that DOCKER_HOST names (a Docker daemon, or
podman's from .ci/local-engine.sh).

Without an engine or the images (make images) these tests are skipped; where
VIDEOCLF_REQUIRE_CONTAINERS=1 (CI sets it), that is a failure instead.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.images import NAMES, image
from tests.conftest import BETTER_THAN_CHANCE, LEARNABLE_DEMO, free_port
from tests.test_serve_model import V1, V2, Client, assert_same_top, b64

ROOT = Path(__file__).resolve().parents[1]

CUDA_CHECK = r"""
import ctypes, json, re
from pathlib import Path
import tensorflow as tf

info = tf.sysconfig.get_build_info()
# TensorFlow finds the CUDA libraries it loads through the RUNPATH of its libraries: the lib
# folders of the nvidia wheels.
folders = set()
for library in Path(tf.__file__).parent.glob("libtensorflow*.so.2"):
    runpath = re.search(rb"(\$ORIGIN[^\x00]*nvidia[^\x00]*)\x00", library.read_bytes()).group(1).decode()
    folders |= {(library.parent / p.replace("$ORIGIN/", "")).resolve() for p in runpath.split(":")}
cuda, cudnn = info["cuda_version"].split(".")[0], info["cudnn_version"].split(".")[0]
wanted = [f"libcudart.so.{cuda}", f"libcublasLt.so.{cuda}", f"libcublas.so.{cuda}", "libcufft.so.11",
          f"libcusparse.so.{cuda}", "libcusolver.so.11", f"libcudnn.so.{cudnn}", "libnccl.so.2"]
loaded = {}
for name in wanted:
    found = [folder / name for folder in folders if (folder / name).exists()]
    if found:
        ctypes.CDLL(str(found[0]), mode=ctypes.RTLD_GLOBAL)  # loads with what it needs, no GPU asked
    loaded[name] = str(found[0]) if found else None
print(json.dumps({"is_cuda_build": info["is_cuda_build"], "cuda": info["cuda_version"],
                  "cudnn": info["cudnn_version"], "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def engine():
    """A Docker API client, once the images of this source are there."""
    import docker

    from pipelines.local_runner import EngineError, docker_runner

    try:
        with docker_runner():
            pass
    except EngineError as e:
        if os.environ.get("VIDEOCLF_REQUIRE_CONTAINERS") == "1":
            pytest.fail(str(e))
        pytest.skip(str(e))
    client = docker.from_env()
    yield client
    client.close()


def run_in(client, image_name: str, command: list[str]) -> tuple[int, str]:
    """Runs a command in an image as the image's own user; its exit status and output."""
    container = client.containers.run(image_name, command, detach=True)
    try:
        status = container.wait()["StatusCode"]
        return status, container.logs().decode()
    finally:
        container.remove(force=True)


def videoclf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args, "--runner", "docker"],
                          capture_output=True, text=True, timeout=900)


def test_demo_pipeline_runs_in_the_images(engine, tmp_path):
    result = videoclf("demo", "--output", str(tmp_path), *LEARNABLE_DEMO, "--extract-parts", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["num_classes"] == 4 and summary["test_accuracy"] >= BETTER_THAN_CHANCE
    run_dir = Path(summary["run_dir"])
    frames = json.loads((run_dir / "gather-frames" / "frames" / "manifest.json").read_text())
    assert frames["counts"] == {"train": 96, "val": 16, "test": 32} and frames["part"] == [0, 1]
    assert (Path(summary["model"])).stat().st_uid == os.getuid()  # written as this user, not the image's
    # Each stage ran in its own image.
    for name in ("data", "trainer", "evaluator"):
        assert f"starting a container of {image(name)}" in result.stdout + result.stderr


def test_a_failing_container_fails_the_run(engine, tmp_path):
    result = videoclf("run", "--output", str(tmp_path), "--source-url", "http://127.0.0.1:9/UCF101.zip")
    assert result.returncode == 1
    assert "cannot read the source http://127.0.0.1:9/UCF101.zip" in result.stdout + result.stderr
    assert "download-subset" in result.stderr.strip().splitlines()[-1]


def test_the_trainer_image_holds_tensorflow_for_cuda_and_the_libraries_it_loads(engine):
    status, output = run_in(engine, image("trainer"), ["python", "-c", CUDA_CHECK])
    assert status == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert report["is_cuda_build"] and report["cuda"].startswith("12.")
    assert all(report["loaded"].values()), report["loaded"]


@pytest.mark.parametrize("name", NAMES)
def test_images_run_as_their_own_non_root_user(engine, name):
    """A cluster runs the image as its USER (the local runner runs it as the caller instead)."""
    script = ("import os, tempfile, pathlib; import components.download_subset.download; "
              "tempfile.NamedTemporaryFile(); (pathlib.Path.home() / 'probe').write_text('ok'); "
              "print(os.getuid(), os.getgid())")
    status, output = run_in(engine, image(name), ["python", "-c", script])
    assert status == 0, output
    assert output.split()[-2:] == ["1000", "1000"]


def test_the_build_context_leaves_out_the_virtualenv_runs_and_git(engine, tmp_path):
    """What make images sends to the engine, with the repository's .dockerignore."""
    tool = shutil.which("podman") or shutil.which("docker")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {image('data')}\nCOPY . /home/context\n")
    (ROOT / "runs").mkdir(exist_ok=True)  # a local run's folder, as make demo leaves one
    tag = "localhost/videoclf/context-probe:test"
    subprocess.run([tool, "build", "-q", "-f", str(dockerfile), "-t", tag, str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    try:
        listing = subprocess.run([tool, "run", "--rm", tag, "ls", "-A", "/home/context"], check=True,
                                 capture_output=True, text=True).stdout.split()
    finally:
        subprocess.run([tool, "rmi", "-f", tag], capture_output=True)
    assert {"components", "pipelines", "images", "pyproject.toml"} <= set(listing)
    assert not {".venv", ".git", "runs", "tests"} & set(listing), listing


def test_the_serving_image_answers_as_kserve_and_as_vertex_ai_run_it(engine, model_dir, real_clips, tmp_path):
    """The serving image run as the deploy step's InferenceService runs it (its command and
    arguments) and as Vertex AI runs it (the model upload's container spec, the AIP_* variables),
    as the image's own user, answering real requests as ``predict`` answers them."""
    from kfp.dsl import Artifact, Model

    from components.serve_model.config import SERVING_PORT
    from components.serve_model.deploy import inference_service
    from components.serve_model.predict import predict_videos
    from components.serve_model.vertex import vertex_serving_model

    model = shutil.copytree(model_dir, tmp_path / "ucf10")
    for path in [model, *model.rglob("*")]:  # readable by the image's user
        path.chmod(0o755 if path.is_dir() else 0o644)
    mount = {str(model): {"bind": "/models/ucf10", "mode": "ro"}}
    video = real_clips["h264_340x256_56fps_560f.mp4"]
    [expected] = predict_videos(model_dir, [video], top_k=3)

    [kserve] = inference_service("video-classifier", "default", image("serving"),
                                 "/models/ucf10")["spec"]["predictor"]["containers"]
    vertex = Artifact(uri="", metadata={})
    vertex_serving_model.python_func(model=Model(uri="/models/ucf10"), name="video-classifier",
                                     serving_image=image("serving"), port=SERVING_PORT,
                                     unmanaged_model=vertex)
    spec = vertex.metadata["containerSpec"]
    vertex_env = {"AIP_HTTP_PORT": str(spec["ports"][0]["containerPort"]), "AIP_STORAGE_URI": vertex.uri,
                  "AIP_HEALTH_ROUTE": spec["healthRoute"], "AIP_PREDICT_ROUTE": spec["predictRoute"]}
    for command, args, env, port, health, predict in [
            (kserve["command"], kserve["args"], {}, SERVING_PORT, "/v2/health/ready", V1),
            (spec["command"], spec["args"], vertex_env, int(vertex_env["AIP_HTTP_PORT"]), spec["healthRoute"],
             spec["predictRoute"])]:
        client = Client(free_port())
        container = engine.containers.run(image("serving"), args, entrypoint=command, environment=env,
                                          volumes=mount, ports={f"{port}/tcp": ("127.0.0.1", client.port)},
                                          detach=True)
        try:
            def running(container=container):
                container.reload()
                return container.status == "running"

            assert client.wait_ready(running, health, timeout=180), container.logs().decode()[-3000:]
            status, answer = client.post(predict, {"instances": [{"video": {"b64": b64(video)}}],
                                                   "parameters": {"top_k": 3}})
            assert status == 200, answer
            assert_same_top(answer["predictions"][0]["top"], expected["top"])
            status, answer = client.post(V2, {"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1],
                                                          "data": [b64(ROOT / "README.md")]}]})
            assert status == 400 and "cannot open" in answer["error"]
        finally:
            logs = container.logs().decode()
            container.remove(force=True)
        assert "answered 1 instance(s)" in logs and "rejected a request: video 0" in logs
