"""The components of a deploy on Vertex AI beside Google Cloud Pipeline Components' own
(``ModelUploadOp``, ``ModelDeployOp``): they run in GCPC's image, which holds GCPC's artifact
types and ``google-cloud-aiplatform``, so each is self-contained. Importing this module needs the
``vertex`` extra.

- ``vertex_serving_model`` turns the model artifact into the ``google.UnmanagedContainerModel``
  that ``ModelUploadOp`` takes (GCPC ``v1/model/upload_model/component.py``: its
  ``unmanaged_container_model`` input is of that type): the model folder's URI and the container
  spec of the serving image.
- ``vertex_endpoint`` finds the endpoint of a name, or creates it, so that every deploy of a name
  serves on one endpoint rather than each creating one (``EndpointCreateOp`` always creates).
- ``undeploy_replaced`` undeploys from the endpoint every model but the one just deployed, once
  ``ModelDeployOp`` has returned (its operation ends when the new model serves): a deploy with
  ``traffic_split={"0": 100}`` leaves the others deployed at 0 %, each on its own billed machine.
  GCPC's ``ModelUndeployOp`` undeploys one model named in advance, not every other one.

The three use the ``aiplatform_v1`` clients over REST; ``api_endpoint`` (by default the region's
``<location>-aiplatform.googleapis.com``) lets the tests point them at a loopback server.
"""

from google_cloud_pipeline_components import _image
from google_cloud_pipeline_components.types.artifact_types import (
    UnmanagedContainerModel,
    VertexEndpoint,
    VertexModel,
)
from kfp import dsl
from kfp.dsl import Input, Model, Output

GCPC_IMAGE = _image.GCPC_IMAGE_TAG


@dsl.component(base_image=GCPC_IMAGE, install_kfp_package=False)
def vertex_serving_model(
    model: Input[Model],
    name: str,
    serving_image: str,
    port: int,
    unmanaged_model: Output[UnmanagedContainerModel],
):
    """The model folder with the serving image's container spec, for Vertex AI's Model Registry."""
    unmanaged_model.uri = model.uri
    unmanaged_model.metadata = {"containerSpec": {
        "imageUri": serving_image, "command": ["videoclf", "serve"], "args": ["--name", name],
        "healthRoute": "/health", "predictRoute": "/predict", "ports": [{"containerPort": port}]}}


@dsl.component(base_image=GCPC_IMAGE, install_kfp_package=False)
def vertex_endpoint(
    name: str,
    project: str,
    location: str,
    endpoint: Output[VertexEndpoint],
    api_endpoint: str = "",
):
    """The Vertex AI endpoint whose display name is ``name``: the one there is, else a new one."""
    from google.cloud import aiplatform_v1

    host = api_endpoint or f"{location}-aiplatform.googleapis.com"
    service = aiplatform_v1.EndpointServiceClient(client_options={"api_endpoint": host}, transport="rest")
    parent = f"projects/{project}/locations/{location}"
    found = list(service.list_endpoints(request={"parent": parent, "filter": f'display_name="{name}"'}))
    if len(found) > 1:
        raise RuntimeError(f"{len(found)} endpoints in {parent} are named {name!r} "
                           f"({', '.join(e.name for e in found)}): compile with --vertex-endpoint to "
                           "choose one")
    if found:
        resource = found[0]
        print(f"deploying to the endpoint {resource.name}, named {name!r}")
    else:
        resource = service.create_endpoint(parent=parent, endpoint={"display_name": name}).result()
        print(f"created the endpoint {resource.name}, named {name!r}")
    endpoint.uri = f"https://{location}-aiplatform.googleapis.com/v1/{resource.name}"
    endpoint.metadata["resourceName"] = resource.name


@dsl.component(base_image=GCPC_IMAGE, install_kfp_package=False)
def undeploy_replaced(
    endpoint: Input[VertexEndpoint],
    model: Input[VertexModel],
    api_endpoint: str = "",
) -> list:
    """Undeploys from the endpoint every deployed model other than ``model`` (a version of the
    same model included); returns their deployed-model ids."""
    from google.cloud import aiplatform_v1

    name = endpoint.metadata["resourceName"]  # projects/P/locations/L/endpoints/ID
    host = api_endpoint or f"{name.split('/')[3]}-aiplatform.googleapis.com"
    service = aiplatform_v1.EndpointServiceClient(client_options={"api_endpoint": host}, transport="rest")
    kept, _, kept_version = model.metadata["resourceName"].partition("@")
    deployed_models = service.get_endpoint(name=name).deployed_models

    def is_kept(deployed) -> bool:
        return deployed.model == kept and kept_version in ("", deployed.model_version_id)

    if not any(is_kept(deployed) for deployed in deployed_models):
        raise RuntimeError(f"{model.metadata['resourceName']} is not deployed on {name}: "
                           "nothing is undeployed")
    replaced = [deployed for deployed in deployed_models if not is_kept(deployed)]
    for deployed in replaced:
        print(f"undeploying {deployed.model}@{deployed.model_version_id} ({deployed.id}) from {name}")
        service.undeploy_model(endpoint=name, deployed_model_id=deployed.id).result()
    return [deployed.id for deployed in replaced]
