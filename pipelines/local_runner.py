"""Runs the whole pipeline on this machine with ``kfp.local``.

With the ``subprocess`` runner each component runs in a subprocess of this Python, which must have
the project installed. With the ``docker`` runner each runs in its own image (``make images``)
through the Docker API that ``DOCKER_HOST`` names: a Docker daemon, or podman's
(``.ci/local-engine.sh``). Artifacts land under ``output_dir``; a summary of the run is
written to ``summary.json``.
"""

import contextlib
import inspect
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from components.common import atomic_write_bytes, write_json
from pipelines.targets import DEFAULT_TARGET, Target

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
RUNNERS = ("subprocess", "docker")


class EngineError(RuntimeError):
    """No container engine to run the components in, or not the images they need."""


def run_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """Runs one task's container, prints its log and returns its exit status.

    Stands in for ``kfp.local``'s own, which starts containers with ``auto_remove=True``: one
    that exits before its log and status are read is gone by then, and kfp reports the task as
    succeeded whatever its exit status (seen with podman), or fails on the engine's error 500.
    This one removes the container once its status is read.
    """
    log.info("starting a container of %s", image)
    container = client.containers.run(image, command, detach=True, volumes=volumes, **run_args)
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="", flush=True)
        return container.wait()["StatusCode"]
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def docker_runner() -> Iterator:
    """A ``kfp.local.DockerRunner`` whose containers run as this user, so the artifacts they
    write are this user's, on the host's network, so a loopback source URL reaches its server."""
    import docker
    from kfp import local
    from kfp.local import docker_task_handler

    from components.images import NAMES, image

    where = os.environ.get("DOCKER_HOST", "the default Docker socket")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise EngineError(f"no Docker API at {where} ({e}): start Docker, or run "
                          ".ci/local-engine.sh and export the DOCKER_HOST it prints") from e
    missing = [image(name) for name in NAMES if not client.images.list(name=image(name))]
    client.close()
    if missing:
        raise EngineError(f"images not found at {where}: {', '.join(missing)}; build them from this "
                          "source with make images")
    own = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    try:
        yield local.DockerRunner(user=f"{os.getuid()}:{os.getgid()}", network_mode="host")
    finally:
        docker_task_handler.run_docker_container = own


def link(name: Path, artifact: str) -> str:
    """Copies a file artifact to a name with its extension, so a browser opens it as it is (a
    browser follows a symbolic link to the artifact's own name, which has none, and shows text)."""
    atomic_write_bytes(name, Path(artifact).read_bytes())
    return str(name)


def as_parameter_types(pipeline, params: dict) -> dict:
    """The parameters, a whole number given for a float parameter made a float (KFP refuses it)."""
    annotations = {name: parameter.annotation
                   for name, parameter in inspect.signature(pipeline.pipeline_func).parameters.items()}
    return {name: float(value) if annotations.get(name) is float and type(value) is int else value
            for name, value in params.items()}


@contextlib.contextmanager
def local_session(output_dir: Path, runner: str) -> Iterator[Path]:
    """``kfp.local`` set up to run pipelines on ``runner`` (``subprocess`` or ``docker``), their
    artifacts under ``output_dir``; the folder, made absolute."""
    from kfp import local

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_MININTERVAL", "5")  # the runner prints each bar update as a line
    # Image names and resource requests matter on a cluster only; the local runner warns of both.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    with (docker_runner() if runner == "docker"
          else contextlib.nullcontext(local.SubprocessRunner(use_venv=False))) as kfp_runner:
        local.init(runner=kfp_runner, pipeline_root=str(output_dir), raise_on_error=True)
        log.info("running locally with the %s runner; artifacts go to %s", runner, output_dir)
        yield output_dir


def run_local(params: dict, output_dir: Path, runner: str = "subprocess",
              target: Target = DEFAULT_TARGET) -> dict:
    """Runs the pipeline compiled for ``target`` (its extraction parts, sweep and init model)
    with ``params`` on ``runner`` (``subprocess`` or ``docker``); returns the summary it also
    writes to ``output_dir``."""
    from pipelines.video_classification import build_pipeline

    target.check()
    target.check_swept(params)
    with local_session(output_dir, runner) as output_dir:
        pipeline = build_pipeline(target)
        outputs = pipeline(**as_parameter_types(pipeline, params)).outputs
    test = outputs["test_metrics"].metadata
    training = outputs["training_metrics"].metadata
    run_dir = Path(outputs["report"].path).parents[1]
    summary = {
        "test_accuracy": test["test_accuracy"],
        "test_loss": test["test_loss"],
        "kept_epoch": int(training["kept_epoch"]),
        "kept_val_accuracy": training["kept_val_accuracy"],
        "kept_within_chance": bool(training["kept_within_chance"]),
        "last_epoch_val_accuracy": training["last_epoch_val_accuracy"],
        "epochs_run": int(training["epochs_run"]),
        "train_clips_per_second": training["train_clips_per_second"],
        "num_classes": len(outputs["model"].metadata["classes"]),
        "classes": outputs["model"].metadata["classes"],
        "report": link(run_dir / "report.html", outputs["report"].path),
        "model": str(Path(outputs["model"].path) / outputs["model"].metadata["file"]),
        "confusion_matrix": link(run_dir / "confusion_matrix.png",
                                 outputs["confusion_matrix_plot"].path),
        "learning_curves": link(run_dir / "learning_curves.html", outputs["learning_curves"].path),
        "summary": link(run_dir / "summary.md", outputs["summary"].path),
        "run_dir": str(run_dir),
        "params": params,
    }
    if "tensorboard" in outputs:
        summary["tensorboard"] = outputs["tensorboard"].path
    if "trials" in outputs:  # a sweep: every trial's settings and scores, and the one kept
        summary["trials"] = link(run_dir / "trials.md", outputs["trials"].path)
        summary["kept_trial"] = outputs["model"].metadata["trial"]
    write_json(output_dir / SUMMARY_FILE, summary)
    return summary


def print_summary(summary: dict) -> None:
    """Prints the summary as one line of JSON, the last line of a run's output."""
    print(json.dumps(summary), flush=True)


def run_batch_local(params: dict, output_dir: Path, runner: str = "subprocess") -> dict:
    """Runs the batch prediction pipeline with ``params`` on ``runner``; returns the summary it
    also writes to ``output_dir``: the counts, and the predictions, summary and report files."""
    from pipelines.batch_prediction import build_pipeline

    with local_session(output_dir, runner) as output_dir:
        pipeline = build_pipeline()
        outputs = pipeline(**as_parameter_types(pipeline, params)).outputs
    predictions = outputs["predictions"]
    run_dir = Path(predictions.path).parents[1]
    summary = {**{k: predictions.metadata[k] for k in ("videos", "answered", "failed")},
               "predictions": link(run_dir / "predictions.jsonl", predictions.path),
               "summary": link(run_dir / "summary.md", outputs["summary"].path),
               "report": link(run_dir / "report.html", outputs["report"].path),
               "run_dir": str(run_dir), "params": params}
    write_json(output_dir / SUMMARY_FILE, summary)
    return summary
