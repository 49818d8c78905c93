"""The KFP component of the serve model stage on Kubeflow: a thin typed wrapper.

``deploy_model`` deploys on Kubeflow (a KServe InferenceService) and waits until it serves the
model; Vertex AI's deploy components are in ``components.serve_model.vertex``.
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
