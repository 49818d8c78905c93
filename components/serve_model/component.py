"""The KFP components of the serve model stage: thin typed wrappers.

``deploy_model`` deploys on Kubeflow (a KServe InferenceService); ``vertex_serving_model`` turns
the model artifact into what Google Cloud Pipeline Components' ``ModelUploadOp`` uploads to
Vertex AI's Model Registry as a ``google.UnmanagedContainerModel``: the model folder's URI and
the container spec of the same serving image. (A generic Artifact, which KFP lets pass for any
type: a class of that schema would have to be importable where the component runs.)
"""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import latest


@dsl.component(base_image=latest("serving"), install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    name: str,
    namespace: str,
    serving_image: str,
    s3_endpoint: str,
    s3_secret: str,
    manifest: Output[Artifact],
):
    """Creates or updates the KServe InferenceService that serves the model; its manifest is the
    output."""
    from pathlib import Path

    import yaml
    from kserve.utils.utils import get_default_target_namespace

    from components.common import atomic_write_bytes, lineage, setup_logging
    from components.serve_model.deploy import apply, inference_service, storage_uri

    setup_logging()
    namespace = namespace or get_default_target_namespace().strip()  # empty: the pipeline's own
    service = inference_service(name, namespace, serving_image, storage_uri(model.uri),
                                s3_endpoint, s3_secret, labels={"app.kubernetes.io/part-of": "videoclf"})
    atomic_write_bytes(Path(manifest.path), yaml.safe_dump(service, sort_keys=False).encode())
    outcome = apply(service)
    manifest.metadata.update({"service": f"{service['metadata']['namespace']}/{name}", "outcome": outcome,
                              **lineage("deploy_model", {"name": name, "serving_image": serving_image},
                                        {"model": model.uri}, Path(manifest.path))})


@dsl.component(base_image=latest("data"), install_kfp_package=False)
def vertex_serving_model(
    model: Input[Model],
    name: str,
    serving_image: str,
    unmanaged_model: Output[Artifact],
):
    """The model folder with the serving image's container spec, for Vertex AI's Model Registry."""
    from components.serve_model.config import SERVING_PORT

    unmanaged_model.uri = model.uri
    unmanaged_model.metadata = {"containerSpec": {
        "imageUri": serving_image, "command": ["videoclf", "serve"], "args": ["--name", name],
        "healthRoute": "/health", "predictRoute": "/predict", "ports": [{"containerPort": SERVING_PORT}]}}
