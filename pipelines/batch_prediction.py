"""The batch prediction pipeline: a trained model labels every video of a source.

```
model_uri ──► importer (Model) ───────────────┐
source_url ─► list_videos ──► batch_predict ×shards (ParallelFor) ──► gather_predictions
              Dataset (the     Dataset per shard: a JSON line per      Dataset (JSON lines, the listing's
              listing, cut     video, in order                         order), Markdown summary, HTML report
              into shards)                                             (a timeline per video of a segment run)
```

The model is a model folder's URI (``gs://``, ``s3://``, Kubeflow's ``minio://`` artifact URIs, or
a local path for ``kfp.local``), imported as a Model artifact, which each shard's pod gets as a
local folder: KFP's launcher downloads every object under the URI (kubeflow/pipelines
``backend/src/v2/component/launcher_v2.go``, ``downloadArtifacts``, and
``backend/src/v2/objectstore/object_store.go``, ``DownloadBlob``, 2.16.0), and Vertex AI mounts
``gs://`` under ``/gcs/``. The listing is cut into shards of ``videos_per_shard`` at run time; a
``dsl.ParallelFor`` over the shards' numbers runs a pod each, and ``dsl.Collected`` gathers them
(Kubeflow Pipelines 2.14 or newer, as extraction's fan-out). The gather step orders the shards by
the number each one records, and checks that all are there and whole, so the answers come in the
listing's order whatever order a backend collects them in.

A shard's task is retried when its pod fails. A re-run with the same parameters resumes: KFP's
cache key is a task's parameter values and input artifacts (kubeflow/pipelines
``backend/src/v2/cacheutils/cache.go``, ``GenerateCacheKey``, 2.16.0), so the listing is served
from the cache, the importer (``reimport=False``) gives the model artifact already recorded for the
URI (``backend/src/v2/component/importer_launcher.go``), and every shard that finished is served
too (run without the cache to list a source that has changed since).
"""

from pathlib import Path
from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Dataset, Markdown, Model

from components import images
from components.serve_model.component import batch_predict, gather_predictions, list_videos
from components.serve_model.config import BATCH_SIZE, TOP_K, VIDEOS_PER_SHARD
from components.storage import S3_SECRET_KEYS
from pipelines.targets import DEFAULT_TARGET, MIN_BACKEND_FAN_OUT, Target
from pipelines.video_classification import reference_images, write_compiled

PIPELINE_NAME = "video-batch-prediction"
DESCRIPTION = "Labels every video of a source with a trained video classifier, as JSON lines."
COMPILED_YAML = Path(__file__).with_name("batch_prediction.yaml")
SHARD_RETRIES = 2
# CPU and memory of each task, requested and as its limit; a shard's fits a node of 4 vCPUs.
RESOURCES = {"list": ("1", "2Gi"), "predict": ("3", "8Gi"), "gather": ("1", "2Gi")}
IMAGE_OF = {"list": "data", "predict": "serving", "gather": "data"}


class BatchOutputs(NamedTuple):
    predictions: Dataset
    summary: Markdown
    report: HTML


def build_pipeline(target: Target = DEFAULT_TARGET, image_names: dict[str, str] | None = None):
    """The batch pipeline for ``target`` (its platform and S3 settings), its tasks running
    ``image_names`` (by default this checkout's images)."""
    target.check()
    image_names = image_names or {name: images.image(name) for name in images.NAMES}

    def place(task: dsl.PipelineTask, stage: str) -> dsl.PipelineTask:
        """Sets the task's image, CPU and memory, and its access to s3:// storage."""
        task.set_container_image(image_names[IMAGE_OF[stage]])
        cpu, memory = RESOURCES[stage]
        task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
        if target.s3_secret:
            kubernetes.use_secret_as_env(task, target.s3_secret, S3_SECRET_KEYS)
        if target.s3_endpoint:
            task.set_env_variable("AWS_ENDPOINT_URL", target.s3_endpoint)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def batch_prediction_pipeline(
        source_url: str,
        model_uri: str,
        top_k: int = TOP_K,
        segments: float = 0.0,
        videos_per_shard: int = VIDEOS_PER_SHARD,
        batch_size: int = BATCH_SIZE,
    ) -> BatchOutputs:
        model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
        listing = place(list_videos(source_url=source_url, videos_per_shard=videos_per_shard), "list")
        with dsl.ParallelFor(items=listing.outputs["Output"], name="shards") as shard:
            predict = place(batch_predict(videos=listing.outputs["videos"], model=model.output, shard=shard,
                                          top_k=top_k, segments=segments, batch_size=batch_size), "predict")
            predict.set_retry(num_retries=SHARD_RETRIES, backoff_duration="30s", backoff_factor=2)
        gather = place(gather_predictions(parts=dsl.Collected(predict.outputs["predictions"])), "gather")
        return BatchOutputs(predictions=gather.outputs["predictions"], summary=gather.outputs["summary"],
                            report=gather.outputs["report"])

    return batch_prediction_pipeline


def compile_pipeline(path: Path = COMPILED_YAML, target: Target = DEFAULT_TARGET,
                     image_names: dict[str, str] | None = None, enable_caching: bool = True) -> Path:
    """Compiles the batch pipeline for ``target`` to YAML naming ``image_names`` (by default the
    reference images of the committed YAML)."""
    reference = image_names is None
    image_names = image_names or reference_images()
    recompile = "videoclf batch --compile FILE --target kubeflow|vertex --registry REGISTRY"
    return write_compiled(build_pipeline(target, image_names), path, target, enable_caching, PIPELINE_NAME,
                          MIN_BACKEND_FAN_OUT, sorted({image_names[IMAGE_OF[stage]] for stage in IMAGE_OF}),
                          recompile if reference else "")
