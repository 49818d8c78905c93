"""Submits a run of the pipeline to Kubeflow Pipelines (``kfp.Client``) or to Vertex AI Pipelines
(``google-cloud-aiplatform``'s ``PipelineJob``, the ``vertex`` extra).

The pipeline is compiled afresh for each submission, so the images it names are those of
``components/images.py`` at that moment (``VIDEOCLF_REGISTRY``, ``VIDEOCLF_TAG``).
"""

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from pipelines.video_classification import PIPELINE_NAME, compile_pipeline

log = logging.getLogger(__name__)


class SubmitError(RuntimeError):
    """The run could not be submitted, or could not be followed: says where and why."""


def all_tasks(pipeline_spec: dict) -> Iterator[dict]:
    """Every task of a compiled pipeline spec: its root DAG's and its sub-DAGs'."""
    components = pipeline_spec["components"].values()
    for dag in [pipeline_spec["root"]["dag"], *(c["dag"] for c in components if "dag" in c)]:
        yield from dag["tasks"].values()


@contextmanager
def compiled_package(enable_caching: bool = True, kubernetes: bool = True) -> Iterator[Path]:
    """The pipeline compiled to a temporary YAML file.

    Without caching, every task of every DAG has it off (``kfp.Client`` turns it off for the
    root DAG's tasks only, not for those in a ``ParallelFor``). Without ``kubernetes``, the file
    holds the pipeline spec alone, without the Kubernetes platform spec (GPU node selector and
    tolerations), which Vertex AI neither reads nor needs.
    """
    with tempfile.TemporaryDirectory(prefix="videoclf-submit-") as tmp:
        package = compile_pipeline(Path(tmp) / f"{PIPELINE_NAME}.yaml")
        if not (enable_caching and kubernetes):
            pipeline_spec, *platform_spec = yaml.safe_load_all(package.read_text())
            if not enable_caching:
                for task in all_tasks(pipeline_spec):
                    task["cachingOptions"] = {"enableCache": False}
            documents = [pipeline_spec, *platform_spec] if kubernetes else [pipeline_spec]
            package.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        yield package


def api_error(host: str, error: Exception) -> SubmitError:
    """A clear error from what the KFP client raised: an HTTP refusal, or no server at all."""
    status = getattr(error, "status", None)
    if status:
        body = (getattr(error, "body", "") or "").strip()
        return SubmitError(f"the Kubeflow Pipelines API at {host} refused the request: "
                           f"HTTP {status} {getattr(error, 'reason', '')}: {body[:500]}")
    return SubmitError(f"cannot reach the Kubeflow Pipelines API at {host}: {error}")


def submit_kubeflow(host: str, params: dict, experiment: str | None = None, run_name: str | None = None,
                    enable_caching: bool = True, namespace: str | None = None,
                    wait: bool = False, timeout_s: float | None = None, poll_s: float = 10) -> dict:
    """Creates a run with ``kfp.Client``; returns its id, URL and, if ``wait``, its final state."""
    import kfp
    import kfp_server_api
    import urllib3

    host = host.rstrip("/")
    client_errors = (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError)
    try:
        client = kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))
        with compiled_package(enable_caching) as package:
            run = client.create_run_from_pipeline_package(
                str(package), arguments=params, run_name=run_name, experiment_name=experiment,
                namespace=namespace, enable_caching=enable_caching)
    except client_errors as e:
        raise api_error(host, e) from e
    result = {"run_id": run.run_id, "url": f"{host}/#/runs/details/{run.run_id}"}
    log.info("submitted run %s: %s", run.run_id, result["url"])
    if wait:
        log.info("waiting for run %s to finish", run.run_id)
        try:
            finished = client.wait_for_run_completion(run.run_id, timeout=timeout_s or float("inf"),
                                                      sleep_duration=poll_s)
        except TimeoutError as e:
            raise SubmitError(f"run {run.run_id} did not finish within {timeout_s} s") from e
        except client_errors as e:
            raise api_error(host, e) from e
        result["state"] = str(finished.state).upper()
    return result


def vertex_job(package: Path, params: dict, project: str, region: str, pipeline_root: str,
               run_name: str | None = None, enable_caching: bool = True, credentials=None):
    """The ``aiplatform.PipelineJob`` that runs ``package`` on Vertex AI Pipelines."""
    if not pipeline_root.startswith("gs://"):
        raise SubmitError(f"--pipeline-root must be a gs:// folder, got {pipeline_root!r}")
    try:
        from google.cloud import aiplatform
    except ImportError as e:
        raise SubmitError("Vertex AI needs google-cloud-aiplatform: pip install 'videoclf[vertex]'") from e
    return aiplatform.PipelineJob(
        display_name=run_name or PIPELINE_NAME, template_path=str(package), pipeline_root=pipeline_root,
        parameter_values=params, enable_caching=enable_caching, project=project, location=region,
        credentials=credentials)


def submit_vertex(params: dict, project: str, region: str, pipeline_root: str,
                  run_name: str | None = None, enable_caching: bool = True,
                  service_account: str | None = None, wait: bool = False) -> dict:
    """Submits a Vertex AI PipelineJob; returns its resource name, console URL and, if ``wait``,
    its final state."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    try:
        with compiled_package(enable_caching, kubernetes=False) as package:
            job = vertex_job(package, params, project, region, pipeline_root, run_name, enable_caching)
            job.submit(service_account=service_account)
        result = {"run_id": job.resource_name, "url": job._dashboard_uri()}
        log.info("submitted %s: %s", job.resource_name, result["url"])
        if wait:
            job.wait()
            result["state"] = job.state.name.removeprefix("PIPELINE_STATE_")
    except (GoogleAPIError, GoogleAuthError) as e:
        raise SubmitError(f"Vertex AI Pipelines ({project}, {region}) refused the run: {e}") from e
    return result
