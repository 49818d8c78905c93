"""Shared fixtures: a tiny UCF101-layout zip served over loopback, and the stages run on it."""

import fcntl
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from components.train_model.config import TrainConfig
from pipelines.demo_data import make_demo_zip
from pipelines.range_server import serve_directory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# gcsfs asks the gRPC Storage Control API whether a bucket is hierarchical; the emulator has none.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

REAL_CLIPS = Path(os.environ.get("VIDEOCLF_REAL_CLIPS",
                                 Path(__file__).resolve().parents[2] / "shared" / "real-clips"))
TINY = {"n_frames": 4, "frame_step": 2, "height": 32, "width": 32}
# The demo at a size that trains in seconds on two cores, and still learns: 24 training videos of
# each of the 4 classes, 32 test videos; chance is 0.25, and 0.5 or more is at most a 1-in-1000 fluke.
LEARNABLE_DEMO = ["--epochs", "8", "--train-per-class", "24", "--val-per-class", "4",
                  "--test-per-class", "8", "--height", "32", "--width", "32"]
BETTER_THAN_CHANCE = 0.5
# One epoch of the tutorial's recipe (no warm-up: patience counts from epoch 1), checkpointed.
CHECKPOINTED = TrainConfig(epochs=1, batch_size=4, seed=0, patience=0, recipe="tutorial")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: a worker that began one last would finish alone, long after the others."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def real_clips() -> dict[str, Path]:
    """The real recordings in ../shared/real-clips and its containers/, by file name."""
    clips = {p.name: p for p in sorted(REAL_CLIPS.rglob("*"))
             if p.suffix in (".avi", ".mp4", ".mkv", ".mov", ".webm")}
    if not clips:
        message = f"no real clips in {REAL_CLIPS} (set VIDEOCLF_REAL_CLIPS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return clips


@pytest.fixture(scope="session")
def demo_zip(tmp_path_factory) -> Path:
    """4 classes x 4 groups x 3 clips of 12 frames."""
    return make_demo_zip(tmp_path_factory.mktemp("zip") / "UCF101.zip", groups=4,
                         clips_per_group=3, frames_per_clip=12)


@pytest.fixture(scope="session")
def demo_url(demo_zip) -> str:
    with serve_directory(demo_zip.parent) as base_url:
        yield f"{base_url}/{demo_zip.name}"


@pytest.fixture(scope="session")
def videos_dir(demo_url, tmp_path_factory) -> Path:
    """The download stage's output: 4 classes, 4/2/3 clips per class."""
    from components.download_subset.config import SubsetSpec
    from components.download_subset.download import download_subset_to

    out = tmp_path_factory.mktemp("videos")
    download_subset_to(SubsetSpec(source_url=demo_url, num_classes=4, train_per_class=4, val_per_class=2,
                                  test_per_class=3, seed=0), out)
    return out


@pytest.fixture(scope="session")
def frames_dir(videos_dir, tmp_path_factory) -> Path:
    """The extraction stage's output at 4 frames of 32 x 32, the centred clip of each val and test video."""
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset

    out = tmp_path_factory.mktemp("frames")
    extract_dataset(videos_dir, out, ClipSpec(**TINY, clips_per_train_video=2, eval_clips_per_video=1,
                                              seed=0))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator() -> dict[str, str]:
    """A Cloud Storage API emulator on loopback; the environment that points gcsfs at it."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "FSSPEC_GS_TOKEN": "anon",
           "FSSPEC_GS_PROJECT": "videoclf-test"}
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> dict[str, str]:
    """moto's S3 server on loopback; the environment that points s3fs at it, as at a MinIO."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "videoclf",
           "AWS_SECRET_ACCESS_KEY": "videoclf-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    server.stop()


@pytest.fixture(params=["gs", "s3"])
def bucket(request, monkeypatch) -> str:
    """A new bucket, ``gs://`` in the Cloud Storage emulator or ``s3://`` in moto's S3 server,
    with the environment pointing gcsfs or s3fs at it; its URL."""
    import fsspec

    server = request.getfixturevalue("gcs_emulator" if request.param == "gs" else "s3_server")
    for name, value in server.items():
        monkeypatch.setenv(name, value)
    name = request.node.name.lower().replace("_", "-").replace("[", "-").strip("]")[:63]
    fs = fsspec.filesystem(request.param)
    fs.mkdir(name)
    return f"{request.param}://{name}"


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills once per test session: under pytest-xdist the first worker
    to ask builds it while the others wait on a file lock, then all read it."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture
def without_saved_model(monkeypatch):
    """Skips the SavedModel export where a test looks at training alone (it takes a fifth of a
    short training; test_training_writes_the_kept_model_and_its_metrics and the serving tests
    check it)."""
    from components.train_model import train as train_module

    monkeypatch.setattr(train_module, "export_saved_model", lambda model, path: Path(path).mkdir())


@pytest.fixture(scope="session")
def checkpointed(frames_dir, tmp_path_factory) -> Path:
    """The checkpoint folder of a run of CHECKPOINTED: the state a resume starts from, which a
    test copies rather than trains again (read-only)."""
    from components.train_model.train import train

    out = built_once(tmp_path_factory, "checkpointed",
                     lambda out: train(frames_dir, out / "model", CHECKPOINTED, str(out / "ckpt")))
    return out / "ckpt"


@pytest.fixture(scope="session")
def model_dir(frames_dir, tmp_path_factory) -> Path:
    """A model folder trained for one epoch on the tiny frames (read-only: copy it to change it)."""
    from components.train_model.config import TrainConfig
    from components.train_model.train import train

    return built_once(tmp_path_factory, "model",
                      lambda out: train(frames_dir, out, TrainConfig(epochs=1, batch_size=4, seed=0)))


@pytest.fixture
def kube_api(tmp_path, monkeypatch):
    """A loopback Kubernetes API (``tests.kube_api``), which KUBECONFIG points the client at."""
    from tests.kube_api import KubeApi

    api = KubeApi(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield api
    api.close()


@pytest.fixture
def headless_chromium(tmp_path) -> list[str]:
    """The command line of headless Chromium (which .ci/run installs) with a profile of its own."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH for the browser check of a report")
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}"]
