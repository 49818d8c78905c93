"""Deploying a trained model on Kubeflow: a KServe ``InferenceService`` whose predictor is the
serving image (``videoclf serve``) reading the model folder where the pipeline stored it, and a
wait until it serves that model.

The manifest is built from KServe's own typed models (so a field KServe does not know cannot be
written) and applied with the Kubernetes client (``serving.kserve.io/v1beta1`` custom objects):
created when the service is new, patched when it exists, with null for every field of its spec
that the manifest lacks, so that a re-deploy restores what a run deployed. The step then waits
for the service's ``Ready`` condition *for the applied spec*: right after a patch the status
still describes the revision that serves, which may be Ready while the new one never starts.

What KServe reports, kserve/kserve HEAD ``pkg/apis/serving/v1beta1/inference_service_status.go``:
``Ready`` aggregates ``PredictorReady`` and ``IngressReady``; in Serverless mode (the default of
``config/configmap/inferenceservice.yaml``) ``components.predictor`` names the
``latestCreatedRevision`` and the ``latestReadyRevision`` (``PropagateStatus``), so the applied
spec serves when a revision created after the patch is the latest ready one and has all the
traffic (``components.predictor.traffic``: a ``canaryTrafficPercent`` leaves the rest on the
revision before, while ``Ready`` is True); in RawDeployment
mode ``PredictorReady`` carries the Deployment's conditions (``PropagateRawStatus``), and a rollout
is complete when its reason is ``NewReplicaSetAvailable`` with a message naming a ReplicaSet other
than the one before the patch. A predictor that fails to start is ``modelStatus.transitionStatus``
``BlockedByFailedLoad`` with ``lastFailureInfo`` holding the container's termination message
(``PropagateModelStatus``); the container's ``FallbackToLogsOnError`` makes that the server's own
last log lines.

The predictor gets no batcher: KServe's (``pkg/batcher/handler.go``) forwards only the
``instances`` of the requests it merges, dropping their ``parameters`` (``top_k``), and answers
every request of a batch HTTP 200 with ``"predictions": null`` when the model answers one error.
It runs as the pipeline's own service account (or ``service_account``), so that Workload
Identity or IRSA bound to it reach the model too, rather than the namespace's ``default``, but
without that account's Kubernetes API token (``automountServiceAccountToken: false``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec, V1beta1PredictorSpec, constants
from kubernetes import client

from components.launcher_config import CONFIG_MAP, S3Store
from components.serve_model.config import SERVING_PORT

log = logging.getLogger(__name__)

RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
POLL_S = 5.0
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
RBAC_FIX = ("apply the Role that videoclf ships (kubectl apply -k <videoclf>/pipelines/rbac, or "
            "videoclf doctor --rbac | kubectl apply -f -)")


class DeployError(RuntimeError):
    """The InferenceService did not come to serve the model; says what its status reports."""


def storage_uri(artifact_uri: str) -> str:
    """The URI a server reads an artifact from: Kubeflow's ``minio://bucket/key`` is S3's."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri.removeprefix("minio://")
    return artifact_uri


def inference_service(name: str, namespace: str, image: str, model_uri: str, store: S3Store | None = None,
                      service_account: str = "", labels: dict | None = None) -> dict:
    """The InferenceService that serves ``model_uri`` with the serving image, probed on KServe's
    readiness route, reading the model from ``store`` with its Secret's credentials, as
    ``service_account`` but with no API token mounted."""
    env = []
    if store and store.endpoint:
        env.append(client.V1EnvVar(name="AWS_ENDPOINT_URL", value=store.endpoint))
    if store and store.region:
        env.append(client.V1EnvVar(name="AWS_DEFAULT_REGION", value=store.region))
    if store and store.secret:
        env += [client.V1EnvVar(name=variable, value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name=store.secret, key=key)))
            for key, variable in store.secret_keys.items()]
    container = client.V1Container(
        name="kserve-container", image=image, command=["videoclf", "serve"],
        args=["--model", model_uri, "--name", name, "--port", str(SERVING_PORT)],
        ports=[client.V1ContainerPort(container_port=SERVING_PORT, protocol="TCP")], env=env or None,
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/v2/health/ready",
                                                                        port=SERVING_PORT)),
        termination_message_policy="FallbackToLogsOnError",
        resources=client.V1ResourceRequirements(**RESOURCES))
    # No Kubernetes API token in the network-facing server: it never calls the API, and the
    # account's token would carry the pipeline's rights (pods/exec, secrets, workflows of the
    # pipeline-runner Role, manifests/kustomize/base/pipeline/pipeline-runner-role.yaml, 2.17.0).
    # Workload Identity (the GKE metadata server) and IRSA (its own projected token volume) do not
    # use it. KServe mounts it unless told (config/configmap/inferenceservice.yaml,
    # security.autoMountServiceAccountToken true, v0.20.0); Knative Serving keeps this field when
    # it is false, and only then (knative/serving pkg/apis/serving/fieldmask.go, PodSpecMask,
    # since knative-v1.0.0).
    predictor = V1beta1PredictorSpec(min_replicas=1, containers=[container],
                                     service_account_name=service_account or None,
                                     automount_service_account_token=False)
    service = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1, kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or {}),
        spec=V1beta1InferenceServiceSpec(predictor=predictor))
    return client.ApiClient().sanitize_for_serialization(service)


def own_service_account(directory: Path = SERVICE_ACCOUNT_DIR) -> str:
    """The service account this pod runs as, from its token's subject
    (``system:serviceaccount:<namespace>:<name>``); empty outside a pod."""
    try:
        payload = (directory / "token").read_text().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (OSError, IndexError, ValueError):
        return ""
    subject = str(claims.get("sub", ""))
    return subject.rsplit(":", 1)[1] if subject.startswith("system:serviceaccount:") else ""


def kube_client() -> client.ApiClient:
    """A client of the pod's own cluster, else of the one of ``KUBECONFIG``."""
    from kubernetes import config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:  # read now: the client reads KUBECONFIG at import
        config.load_kube_config(os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return client.ApiClient(configuration)


def launcher_config(api: client.ApiClient, namespace: str) -> dict | None:
    """The data of the namespace's ``kfp-launcher`` ConfigMap; None where it has none (the
    launcher then takes its defaults)."""
    try:
        return client.CoreV1Api(api).read_namespaced_config_map(CONFIG_MAP, namespace).data or {}
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What an apply did: ``created`` or ``updated``, whether the predictor's pods changed (so that
    a new revision, or ReplicaSet, rolls out), and the status before it, against which a new
    revision is told from the serving one."""

    outcome: str
    changed: bool
    before: dict


def replacing(current, desired):
    """The JSON merge patch (RFC 7386) that turns ``current`` into ``desired``: what ``desired``
    sets, and null for each key only ``current`` has, at every depth (lists are replaced whole)."""
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    return {**{key: None for key in current if key not in desired},
            **{key: replacing(current.get(key), value) for key, value in desired.items()}}


def apply(api: client.ApiClient, manifest: dict) -> Rollout:
    """Creates the InferenceService where the API has none of that name (404), else patches it
    so that its spec is the manifest's: a field added since (a ``canaryTrafficPercent`` that
    keeps most of the traffic on the old revision, a transformer) is removed, not kept as a plain
    merge patch would keep it. Labels are merged and annotations left as they are: KServe's
    defaulting writes ``serving.kserve.io/deploymentMode`` there, which its validation then
    refuses to change (``inference_service_defaults.go``, ``inference_service_validation.go``,
    ``validateDeploymentMode``, v0.20.0)."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    objects = client.CustomObjectsApi(api)
    where = (constants.KSERVE_GROUP, constants.KSERVE_V1BETA1_VERSION, namespace,
             constants.KSERVE_PLURAL_INFERENCESERVICE)
    try:
        try:
            existing = objects.get_namespaced_custom_object(*where, name)
        except client.ApiException as e:
            if e.status != 404:
                raise
            objects.create_namespaced_custom_object(*where, manifest)
            log.info("created the InferenceService %s/%s", namespace, name)
            return Rollout("created", True, {})
        patch = {**manifest, "spec": replacing(existing.get("spec") or {}, manifest["spec"])}
        patched = objects.patch_namespaced_custom_object(*where, name, patch)
    except client.ApiException as e:
        if e.status == 403:
            raise PermissionError(f"the pipeline's service account may not get, create or patch "
                                  f"inferenceservices.serving.kserve.io in the namespace {namespace}: "
                                  f"{RBAC_FIX}") from e
        raise
    # Both as stored, after KServe's defaulting webhook: a change of the predictor but for its
    # canaryTrafficPercent (the route's, not the revision's: kserve pkg/controller/v1beta1/
    # inferenceservice/reconcilers/knative/ksvc_reconciler.go, v0.20.0) makes a new revision.
    changed = pods_of(patched) != pods_of(existing)
    log.info("updated the InferenceService %s/%s%s", namespace, name, "" if changed else " (same predictor)")
    return Rollout("updated", changed, existing.get("status") or {})


def pods_of(service: dict) -> dict:
    """What of an InferenceService's predictor its revisions are made of: all but the traffic split."""
    predictor = (service.get("spec") or {}).get("predictor") or {}
    return {key: value for key, value in predictor.items() if key != "canaryTrafficPercent"}


def latest_traffic(predictor: dict) -> int | None:
    """The percent of the traffic on the latest ready revision (KServe copies the Knative route's
    ``traffic`` into ``components.predictor``: inference_service_status.go, PropagateStatus,
    v0.20.0); None where none is reported."""
    traffic = predictor.get("traffic") or []
    if not traffic:
        return None
    latest = predictor.get("latestReadyRevision")
    return sum(t.get("percent") or 0 for t in traffic if t.get("revisionName") == latest)


def condition(status: dict, kind: str) -> dict:
    """The status condition of that type, or an empty one."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def serverless(status: dict) -> bool:
    return bool(status.get("components", {}).get("predictor", {}).get("latestCreatedRevision"))


def rollout_mark(status: dict) -> str:
    """What changes when KServe starts rolling out a new spec: the latest created revision
    (Serverless), else the message of ``PredictorReady``, which names the Deployment's ReplicaSet."""
    if serverless(status):
        return status["components"]["predictor"]["latestCreatedRevision"]
    return condition(status, "PredictorReady").get("message", "")


def describe(status: dict) -> str:
    """What the status says about the predictor, in a line."""
    parts = []
    for kind in ("Ready", "PredictorReady", "LatestDeploymentReady"):
        found = condition(status, kind)
        if found:
            parts.append(f"{kind} {found.get('status')}"
                         + "".join(f" ({found[k]})" for k in ("reason", "message") if found.get(k)))
    predictor = status.get("components", {}).get("predictor", {})
    if predictor.get("latestCreatedRevision") and \
            predictor.get("latestReadyRevision") != predictor["latestCreatedRevision"]:
        parts.append(f"revision {predictor['latestCreatedRevision']} is not ready; "
                     f"{predictor.get('latestReadyRevision') or 'no revision'} serves")
    share = latest_traffic(predictor)
    if share not in (None, 100):
        others = ", ".join(f"{t.get('revisionName')} {t.get('percent') or 0} %" for t in predictor["traffic"]
                           if t.get("revisionName") != predictor.get("latestReadyRevision"))
        parts.append(f"revision {predictor.get('latestReadyRevision')} has {share} % of the traffic "
                     f"(a canaryTrafficPercent), the rest goes to {others}")
    failure = status.get("modelStatus", {}).get("lastFailureInfo")
    if failure:
        parts.append(f"the predictor failed: {failure.get('reason', '')} {failure.get('message', '')}".strip()
                     + (f" (exit code {failure['exitCode']})" if failure.get("exitCode") else ""))
    return "; ".join(parts) or "no status reported yet"


def wait_ready(api: client.ApiClient, namespace: str, name: str, rollout: Rollout, timeout_s: float,
               poll_s: float = POLL_S, clock=time.monotonic, sleep=time.sleep) -> dict:
    """Polls the InferenceService until the applied spec serves; returns its status. Raises
    DeployError with the predictor's own status at once when it fails to load, or when
    ``timeout_s`` passes."""
    objects = client.CustomObjectsApi(api)
    where = (constants.KSERVE_GROUP, constants.KSERVE_V1BETA1_VERSION, namespace,
             constants.KSERVE_PLURAL_INFERENCESERVICE, name)
    mark_before = rollout_mark(rollout.before) if rollout.changed else None
    deadline = clock() + timeout_s
    while True:
        status = objects.get_namespaced_custom_object(*where).get("status") or {}
        current = mark_before is None or (rollout_mark(status) or mark_before) != mark_before
        if current and status.get("modelStatus", {}).get("transitionStatus") in FAILED_TRANSITIONS:
            raise DeployError(f"the InferenceService {namespace}/{name} cannot serve the model: "
                              f"{describe(status)}")
        if current and rolled_out(status):
            log.info("the InferenceService %s/%s is Ready at %s", namespace, name, status.get("url", "?"))
            return status
        if clock() >= deadline:
            raise DeployError(f"the InferenceService {namespace}/{name} did not serve the new model within "
                              f"{timeout_s:g} s: {describe(status)}")
        log.info("waiting for the InferenceService %s/%s: %s", namespace, name, describe(status))
        sleep(poll_s)


def rolled_out(status: dict) -> bool:
    """Whether the status shows the service Ready on its latest spec, which has all the traffic:
    with a canary split, Ready is True and the latest revision is the latest ready one while the
    one before keeps the rest of the traffic."""
    if condition(status, "Ready").get("status") != "True":
        return False
    if serverless(status):
        predictor = status["components"]["predictor"]
        return (predictor.get("latestReadyRevision") == predictor["latestCreatedRevision"]
                and latest_traffic(predictor) in (None, 100))
    return condition(status, "PredictorReady").get("reason") == "NewReplicaSetAvailable"
