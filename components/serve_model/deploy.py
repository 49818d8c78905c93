"""Deploying a trained model on Kubeflow: a KServe ``InferenceService`` whose predictor is the
serving image (``videoclf serve``) reading the model folder where the pipeline stored it.

The manifest is built from KServe's own typed models (so a field KServe does not know cannot be
written) and applied with the Kubernetes client (``serving.kserve.io/v1beta1`` custom objects):
created when the service is new, patched when it exists, so each deployment rolls the service
to the new model. The pipeline's service account needs the right to get, create and patch
``inferenceservices`` in the namespace.
"""

from __future__ import annotations

import logging
import os

from kserve import (
    V1beta1Batcher,
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1PredictorSpec,
    constants,
)
from kubernetes import client

from components.serve_model.config import SERVING_PORT
from components.storage import S3_SECRET_KEYS

log = logging.getLogger(__name__)

RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
BATCHER = V1beta1Batcher(max_batch_size=8, max_latency=100)  # KServe gathers concurrent requests


def storage_uri(artifact_uri: str) -> str:
    """The URI a server reads an artifact from: Kubeflow's ``minio://bucket/key`` is S3's."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri.removeprefix("minio://")
    return artifact_uri


def inference_service(name: str, namespace: str, image: str, model_uri: str, s3_endpoint: str = "",
                      s3_secret: str = "", labels: dict | None = None) -> dict:
    """The InferenceService that serves ``model_uri`` with the serving image, probed on KServe's
    readiness route, its storage credentials from ``s3_secret`` (keys accesskey and secretkey)."""
    env = [client.V1EnvVar(name="AWS_ENDPOINT_URL", value=s3_endpoint)] if s3_endpoint else []
    if s3_secret:
        env += [client.V1EnvVar(name=variable, value_from=client.V1EnvVarSource(
            secret_key_ref=client.V1SecretKeySelector(name=s3_secret, key=key)))
            for key, variable in S3_SECRET_KEYS.items()]
    container = client.V1Container(
        name="kserve-container", image=image, command=["videoclf", "serve"],
        args=["--model", model_uri, "--name", name, "--port", str(SERVING_PORT)],
        ports=[client.V1ContainerPort(container_port=SERVING_PORT, protocol="TCP")], env=env,
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/v2/health/ready",
                                                                        port=SERVING_PORT)),
        resources=client.V1ResourceRequirements(**RESOURCES))
    service = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1, kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels or {}),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(
            min_replicas=1, containers=[container], batcher=BATCHER)))
    return client.ApiClient().sanitize_for_serialization(service)


def apply(manifest: dict) -> str:
    """Creates the InferenceService, or patches it where it exists; ``created`` or ``updated``.
    The cluster is the pod's own, else the one of ``KUBECONFIG``."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(os.environ.get("KUBECONFIG"))  # read now: the client reads it at import
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        outcome = create_or_patch(client.CustomObjectsApi(), namespace, name, manifest)
    except client.ApiException as e:
        if e.status == 403:
            raise PermissionError(f"the pipeline's service account may not get, create or patch "
                                  f"inferenceservices in the namespace {namespace}: grant it that "
                                  "role") from e
        raise
    log.info("%s the InferenceService %s/%s", outcome, namespace, name)
    return outcome


def create_or_patch(api: client.CustomObjectsApi, namespace: str, name: str, manifest: dict) -> str:
    """Creates the InferenceService where the API has none of that name (404), else patches it."""
    where = (constants.KSERVE_GROUP, constants.KSERVE_V1BETA1_VERSION, namespace,
             constants.KSERVE_PLURAL_INFERENCESERVICE)
    try:
        api.get_namespaced_custom_object(*where, name)
    except client.ApiException as e:
        if e.status != 404:
            raise
        api.create_namespaced_custom_object(*where, manifest)
        return "created"
    api.patch_namespaced_custom_object(*where, name, manifest)
    return "updated"
