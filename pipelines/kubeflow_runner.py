"""Runs the pipeline on a Kubeflow Pipelines cluster (``kfp.Client``).

The pipeline is compiled for Kubeflow afresh for each run, with the images a cluster pulls
(``components.images.cluster_images``). Before submitting, the preflight (``pipelines.preflight``)
reads the server's version from its healthz endpoint (``/apis/v2beta1/healthz``, whose
``tag_name`` kubeflow/pipelines ``backend/src/apiserver/main.go`` serves) and, with a kubeconfig,
what the run will need of the cluster; a problem refuses the run.

Requests carry a bearer token where one is given (``--token``), else the one of the file that
``KF_PIPELINES_SA_TOKEN_PATH`` names, read afresh for each request as the KFP SDK's
``ServiceAccountTokenVolumeCredentials`` reads it: a multi-user API server authenticates a
request by the ``kubeflow-userid`` header its gateway sets or by that token (a TokenReview for
the audience ``pipelines.kubeflow.org``), and answers "there is no user identity header"
otherwise (``backend/src/apiserver/auth/auth.go``, ``common/const.go``, 2.17.0).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from pipelines import preflight
from pipelines.targets import SubmitError, Target
from pipelines.video_classification import PIPELINE_NAME, compile_pipeline

log = logging.getLogger(__name__)
TOKEN_AUDIENCE = "pipelines.kubeflow.org"  # the API server's TokenReview audience by default


def version_tuple(tag: str) -> tuple[int, ...] | None:
    """``"2.5.0"`` or ``"v2.14.3-rc.1"`` -> ``(2, 5, 0)``; None for a tag that is not a version."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", tag or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def kfp_client(host: str, namespace: str | None = None, token: str | None = None):
    """A ``kfp.Client`` of ``host`` sending ``token``, else the token of the file
    ``KF_PIPELINES_SA_TOKEN_PATH`` names, for runs in ``namespace``."""
    import kfp
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    options = {"namespace": namespace} if namespace else {}
    if token:
        options["existing_token"] = token
    elif os.environ.get(KF_PIPELINES_SA_TOKEN_ENV):
        options["credentials"] = ServiceAccountTokenVolumeCredentials()
    return kfp.Client(host=host, **options)


def api_error(host: str, error: Exception) -> SubmitError:
    """A clear error from what the KFP client raised: an HTTP refusal, or no server at all."""
    status = getattr(error, "status", None)
    if status:
        body = (getattr(error, "body", "") or "").strip()
        hint = ""
        if status in (401, 403) and "identity" in body:
            hint = ("; send a token: --token \"$(kubectl create token SERVICE_ACCOUNT -n NAMESPACE "
                    f"--audience {TOKEN_AUDIENCE})\", or set KF_PIPELINES_SA_TOKEN_PATH to a file "
                    "holding one")
        return SubmitError(f"the Kubeflow Pipelines API at {host} refused the request: "
                           f"HTTP {status} {getattr(error, 'reason', '')}: {body[:500]}{hint}")
    return SubmitError(f"cannot reach the Kubeflow Pipelines API at {host}: {error}")


def run_preflight(client, host: str, target: Target, params: dict, namespace: str | None = None,
                  service_account: str | None = None, kube: bool = True) -> list[preflight.Check]:
    """The preflight's checks, each logged; refuses the run on a problem."""
    checks = preflight.run_checks(client, host, target, params, namespace, service_account, kube)
    for check in checks:
        (log.warning if check.state != "ok" else log.info)("preflight: %s", check.line())
    found = preflight.problems(checks)
    if found:
        raise SubmitError("the preflight found what would stop the run: " +
                          "; ".join(f"{c.found} ({c.todo})" if c.todo else c.found for c in found))
    return checks


def client_errors() -> tuple[type[Exception], ...]:
    """What the KFP client raises when the API refuses a request or cannot be reached."""
    import kfp_server_api
    import urllib3

    return kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError


def check_cluster(host: str, params: dict, target: Target, namespace: str | None = None,
                  token: str | None = None, service_account: str | None = None,
                  kube: bool = True) -> list[preflight.Check]:
    """The preflight's checks of a run on ``host``, without submitting it (``videoclf doctor``)."""
    host = host.rstrip("/")
    try:
        return preflight.run_checks(kfp_client(host, namespace, token), host, target, params, namespace,
                                    service_account, kube)
    except client_errors() as e:
        raise api_error(host, e) from e


def submit_kubeflow(host: str, params: dict, target: Target, image_names: dict[str, str],
                    experiment: str | None = None, run_name: str | None = None, enable_caching: bool = True,
                    namespace: str | None = None, wait: bool = False, timeout_s: float | None = None,
                    poll_s: float = 10, token: str | None = None, service_account: str | None = None,
                    kube_checks: bool = True) -> dict:
    """Checks what the run needs, then creates it with ``kfp.Client``, its pods running as
    ``service_account`` where one is given; returns its id, URL and, if ``wait``, its final state."""
    target.check_params(params)
    host = host.rstrip("/")
    errors = client_errors()
    try:
        client = kfp_client(host, namespace, token)
        run_preflight(client, host, target, params, namespace, service_account, kube_checks)
        with tempfile.TemporaryDirectory(prefix="videoclf-submit-") as tmp:
            package = compile_pipeline(Path(tmp) / f"{PIPELINE_NAME}.yaml", target, image_names,
                                       enable_caching)
            # The run's pods run as the account the preflight checked: the API server sets it
            # on the workflow (backend/src/apiserver/template/template.go,
            # setDefaultServiceAccount, 2.17.0), else its default (pipeline-runner, or
            # default-editor in a multi-user namespace).
            run = client.create_run_from_pipeline_package(
                str(package), arguments=params, run_name=run_name, experiment_name=experiment,
                namespace=namespace, enable_caching=enable_caching, service_account=service_account)
    except errors as e:
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
        except errors as e:
            raise api_error(host, e) from e
        result["state"] = str(finished.state).upper()
    return result
