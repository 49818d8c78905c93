"""Runs the pipeline on a Kubeflow Pipelines cluster (``kfp.Client``).

The pipeline is compiled for Kubeflow afresh for each run, with the images a cluster pulls
(``components.images.cluster_images``). Before submitting, the server's version is read from its
healthz endpoint (``/apis/v2beta1/healthz``, whose ``tag_name`` kubeflow/pipelines
``backend/src/apiserver/main.go`` serves) and a backend older than the spec needs is refused.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

from pipelines.targets import SubmitError, Target
from pipelines.video_classification import PIPELINE_NAME, compile_pipeline

log = logging.getLogger(__name__)


def version_tuple(tag: str) -> tuple[int, ...] | None:
    """``"2.5.0"`` or ``"v2.14.3-rc.1"`` -> ``(2, 5, 0)``; None for a tag that is not a version."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", tag or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def check_backend_version(client, host: str, target: Target) -> None:
    """Refuses a backend older than the compiled spec needs; warns when its version is unknown."""
    # kfp_server_api's healthz model drops tag_name, so the response is read as it came.
    response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    tag = json.loads(response.data or b"{}").get("tag_name", "")
    found, needed = version_tuple(tag), version_tuple(target.min_backend)
    if found is None:
        log.warning("the Kubeflow Pipelines backend at %s reports version %r: cannot check that it is "
                    "%s or newer", host, tag, target.min_backend)
    elif found < needed:
        why = " (extraction over several pods needs dsl.Collected)" if target.extract_parts > 1 else ""
        raise SubmitError(f"the Kubeflow Pipelines backend at {host} is {tag}; this pipeline needs "
                          f"{target.min_backend} or newer{why}: upgrade Kubeflow Pipelines")


def api_error(host: str, error: Exception) -> SubmitError:
    """A clear error from what the KFP client raised: an HTTP refusal, or no server at all."""
    status = getattr(error, "status", None)
    if status:
        body = (getattr(error, "body", "") or "").strip()
        return SubmitError(f"the Kubeflow Pipelines API at {host} refused the request: "
                           f"HTTP {status} {getattr(error, 'reason', '')}: {body[:500]}")
    return SubmitError(f"cannot reach the Kubeflow Pipelines API at {host}: {error}")


def submit_kubeflow(host: str, params: dict, target: Target, image_names: dict[str, str],
                    experiment: str | None = None, run_name: str | None = None, enable_caching: bool = True,
                    namespace: str | None = None, wait: bool = False, timeout_s: float | None = None,
                    poll_s: float = 10) -> dict:
    """Creates a run with ``kfp.Client``; returns its id, URL and, if ``wait``, its final state."""
    import kfp
    import kfp_server_api
    import urllib3

    target.check_params(params)
    host = host.rstrip("/")
    client_errors = (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError)
    try:
        client = kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))
        check_backend_version(client, host, target)
        with tempfile.TemporaryDirectory(prefix="videoclf-submit-") as tmp:
            package = compile_pipeline(Path(tmp) / f"{PIPELINE_NAME}.yaml", target, image_names,
                                       enable_caching)
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
