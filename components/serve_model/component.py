"""The KFP component of the serve model stage on Kubeflow: a thin typed wrapper.

``deploy_model`` deploys on Kubeflow (a KServe InferenceService) and waits until it serves the
model; Vertex AI's deploy components are in ``components.serve_model.vertex``.
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import latest


@dsl.component(base_image=latest("serving"), install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    name: str,
    namespace: str,
    service_account: str,
    timeout_seconds: int,
    serving_image: str,
    s3_endpoint: str,
    s3_secret: str,
    manifest: Output[Artifact],
):
    """Creates or updates the KServe InferenceService that serves the model, and waits until it
    serves it; its manifest is the output.

    The predictor reads the model from the store the pipeline wrote it to: ``s3_endpoint`` and
    ``s3_secret`` where the pipeline was compiled with them, else the store of the pipeline's
    ``kfp-launcher`` ConfigMap (Kubeflow's SeaweedFS by default). It runs as ``service_account``,
    else as the pipeline's own where it deploys in the pipeline's namespace.
    """
    from pathlib import Path

    import yaml
    from kserve.utils.utils import get_default_target_namespace

    from components.common import atomic_write_bytes, lineage, setup_logging
    from components.launcher_config import serving_store
    from components.serve_model import deploy

    setup_logging()
    own_namespace = get_default_target_namespace().strip()
    namespace = namespace or own_namespace  # empty: the pipeline's own
    api = deploy.kube_client()
    store = serving_store(model.uri, lambda: deploy.launcher_config(api, own_namespace), s3_endpoint,
                          s3_secret)  # None for gs:// or a local path: the service account's credentials
    if not service_account and namespace == own_namespace:
        service_account = deploy.own_service_account()
    service = deploy.inference_service(name, namespace, serving_image, deploy.storage_uri(model.uri), store,
                                       service_account, labels={"app.kubernetes.io/part-of": "videoclf"})
    atomic_write_bytes(Path(manifest.path), yaml.safe_dump(service, sort_keys=False).encode())
    rollout = deploy.apply(api, service)
    status = deploy.wait_ready(api, namespace, name, rollout, timeout_seconds)
    manifest.metadata.update({"service": f"{namespace}/{name}", "outcome": rollout.outcome,
                              "url": status.get("url", ""),
                              **lineage("deploy_model", {"name": name, "serving_image": serving_image},
                                        {"model": model.uri}, Path(manifest.path))})
