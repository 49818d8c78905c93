"""The KFP components of the serve model stage: thin typed wrappers.

``deploy_model`` deploys on Kubeflow (a KServe InferenceService); ``vertex_serving_model`` turns
the model artifact into what Google Cloud Pipeline Components' ``ModelUploadOp`` uploads to
Vertex AI's Model Registry as a ``google.UnmanagedContainerModel``: the model folder's URI and
the container spec of the same serving image. (A generic Artifact, which KFP lets pass for any
type: a class of that schema would have to be importable where the component runs.)
"""

from typing import List  # noqa: UP035 (KFP reads typing.List in component signatures)

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from components.images import latest


@dsl.component(base_image=latest("data"), install_kfp_package=False)
def list_videos(
    source_url: str,
    videos_per_shard: int,
    videos: Output[Dataset],
) -> List[int]:  # noqa: UP006 (KFP reads typing.List)
    """Lists the videos of a source (a folder, bucket prefix, zip, list or video file) into
    shards of ``videos_per_shard``; the shards' numbers, for the ParallelFor over them."""
    from pathlib import Path

    from components.common import lineage, setup_logging
    from components.serve_model.batch import write_listing

    setup_logging()
    shards = write_listing([source_url], Path(videos.path), videos_per_shard)
    parameters = {"source_url": source_url, "videos_per_shard": videos_per_shard}
    videos.metadata.update({"shards": len(shards),
                            **lineage("list_videos", parameters, {}, Path(videos.path))})
    return shards


@dsl.component(base_image=latest("serving"), install_kfp_package=False)
def batch_predict(
    videos: Input[Dataset],
    model: Input[Model],
    shard: int,
    top_k: int,
    segments: float,
    batch_size: int,
    predictions: Output[Dataset],
):
    """Answers one shard of the listed videos with the model: a JSON line each, in the listing's
    order (with ``segments`` above 0, labels over time every that many seconds)."""
    from pathlib import Path

    from components.common import lineage, setup_logging
    from components.serve_model.batch import predict_shard

    setup_logging()
    record = predict_shard(Path(videos.path), shard, Path(model.path), Path(predictions.path), top_k,
                           segments, batch_size)
    parameters = {"shard": shard, "top_k": top_k, "segments": segments, "batch_size": batch_size}
    predictions.metadata.update({k: record[k] for k in ("shard", "shards", "answered", "failed")} | lineage(
        "batch_predict", parameters, {"videos": videos.uri, "model": model.uri}, Path(predictions.path)))


@dsl.component(base_image=latest("data"), install_kfp_package=False)
def gather_predictions(
    parts: Input[List[Dataset]],  # noqa: UP006
    predictions: Output[Dataset],
    summary: Output[Markdown],
    report: Output[HTML],
):
    """Joins the shards' answers in the listing's order into one JSON Lines file; its summary
    (counts per predicted class, failures) and a report page with a timeline per video."""
    from pathlib import Path

    from components.common import atomic_write_bytes, lineage, setup_logging
    from components.serve_model.batch import gather_shards, summarize
    from components.serve_model.batch_report import report_html, summary_markdown

    setup_logging()
    lines, classes = gather_shards([Path(p.path) for p in parts], Path(predictions.path))
    counts = summarize(lines)
    atomic_write_bytes(Path(summary.path), summary_markdown(counts).encode())
    atomic_write_bytes(Path(report.path), report_html(counts, lines, classes).encode())
    inputs = {"parts": [p.uri for p in parts]}
    for artifact in (predictions, summary, report):
        artifact.metadata.update({k: counts[k] for k in ("videos", "answered", "failed")} | lineage(
            "gather_predictions", {}, inputs, Path(artifact.path)))
    if lines and not counts["answered"]:
        raise RuntimeError(f"none of the {len(lines)} videos could be read: the first failed with "
                           f"{counts['failures'][0]['error']}")


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

