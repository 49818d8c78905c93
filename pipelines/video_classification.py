"""The KFP pipeline: download -> extract frames -> train (GPU node) -> evaluate.

Defaults are the tutorial's: 10 UCF101 classes, 30/10/10 clips per class, 10 frames every 15th
frame at 224 x 224, 50 epochs of batch 8 at a learning rate of 1e-4, and its network's width
and depth. Added: splits by group (no actor and scene in two splits), random flips, mixed
precision on GPUs, early stopping after 10 epochs without a better validation accuracy, and
checkpoints that a retried or re-run training resumes.

Extraction fans out over ``extract_parts`` pods (``dsl.ParallelFor``), and ``gather_frames``
merges their outputs into the one dataset that training and evaluation read.

The training task asks for ``accelerator_count`` GPUs of ``accelerator_type``, and is retried
when its node goes away. On Kubernetes its pod also gets ``gpu_node_selector`` and
``gpu_tolerations`` (JSON, as in a pod spec). Both are empty by default: GKE, and clusters with
the ExtendedResourceToleration admission plugin, add the toleration of the ``nvidia.com/gpu``
taint to pods that ask for GPUs themselves. (A non-empty dict default would make the compiled
YAML's header differ from one compile to the next: KFP writes it from an unordered map.)
"""

from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Markdown, Metrics, Model

from components.download_subset.component import download_subset
from components.download_subset.download import UCF101_URL
from components.evaluate_model.component import evaluate_model
from components.extract_frames.component import extract_frames, extraction_parts, gather_frames
from components.train_model.component import train_model

PIPELINE_NAME = "video-action-classification"
COMPILED_YAML = Path(__file__).with_name("video_classification.yaml")
NO_NODE_SELECTOR: dict = {}
NO_TOLERATIONS: list = []
TRAIN_RETRIES = 3


class PipelineOutputs(NamedTuple):
    model: Model
    training_metrics: Metrics
    learning_curves: HTML
    tensorboard: Artifact
    test_metrics: Metrics
    confusion_matrix: ClassificationMetrics
    confusion_matrix_plot: Artifact
    summary: Markdown
    report: HTML


@dsl.pipeline(name=PIPELINE_NAME,
              description="Action recognition on a UCF101 subset with a (2+1)D ResNet.")
def video_classification_pipeline(
    source_url: str = UCF101_URL,
    num_classes: int = 10,
    train_per_class: int = 30,
    val_per_class: int = 10,
    test_per_class: int = 10,
    split_by: str = "group",
    n_frames: int = 10,
    frame_step: int = 15,
    height: int = 224,
    width: int = 224,
    clips_per_train_video: int = 3,
    eval_clips_per_video: int = 1,
    frame_encoding: str = "raw",
    max_failed_fraction: float = 0.01,
    extract_parts: int = 1,
    epochs: int = 50,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    seed: int = 42,
    random_flip: bool = True,
    base_filters: int = 16,
    blocks_per_stage: int = 1,
    precision: str = "auto",
    patience: int = 10,
    checkpoint_dir: str = "",
    accelerator_type: str = "NVIDIA_TESLA_T4",
    accelerator_count: int = 1,
    gpu_node_selector: dict = NO_NODE_SELECTOR,
    gpu_tolerations: list = NO_TOLERATIONS,
) -> PipelineOutputs:
    download = download_subset(
        source_url=source_url, num_classes=num_classes, train_per_class=train_per_class,
        val_per_class=val_per_class, test_per_class=test_per_class, seed=seed, split_by=split_by)
    download.set_cpu_request("1").set_memory_request("2G")

    parts = extraction_parts(num_parts=extract_parts)
    parts.set_cpu_request("0.1").set_memory_request("256M")
    with dsl.ParallelFor(items=parts.output, name="extract-parts") as part:
        extract = extract_frames(
            videos=download.outputs["dataset"], part=part, num_parts=extract_parts, n_frames=n_frames,
            frame_step=frame_step, height=height, width=width,
            clips_per_train_video=clips_per_train_video, eval_clips_per_video=eval_clips_per_video,
            frame_encoding=frame_encoding,
            max_failed_fraction=max_failed_fraction, seed=seed)
        extract.set_cpu_request("4").set_memory_request("8G")
    gather = gather_frames(parts=dsl.Collected(extract.outputs["frames"]),
                           max_failed_fraction=max_failed_fraction)
    gather.set_cpu_request("1").set_memory_request("2G")

    train = train_model(
        frames=gather.outputs["frames"], epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, seed=seed, random_flip=random_flip, base_filters=base_filters,
        blocks_per_stage=blocks_per_stage, precision=precision, patience=patience,
        checkpoint_dir=checkpoint_dir)
    train.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    train.set_cpu_request("4").set_memory_request("16G")
    train.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2)
    kubernetes.add_node_selector_json(train, gpu_node_selector)
    kubernetes.add_toleration_json(train, gpu_tolerations)

    evaluate = evaluate_model(frames=gather.outputs["frames"], model=train.outputs["model"])
    evaluate.set_cpu_request("2").set_memory_request("8G")

    return PipelineOutputs(
        model=train.outputs["model"],
        training_metrics=train.outputs["metrics"],
        learning_curves=train.outputs["learning_curves"],
        tensorboard=train.outputs["tensorboard"],
        test_metrics=evaluate.outputs["metrics"],
        confusion_matrix=evaluate.outputs["confusion_matrix"],
        confusion_matrix_plot=evaluate.outputs["confusion_matrix_plot"],
        summary=evaluate.outputs["summary"],
        report=evaluate.outputs["report"],
    )


def compile_pipeline(path: Path = COMPILED_YAML) -> Path:
    """Compiles the pipeline to YAML for Kubeflow Pipelines or Vertex AI Pipelines."""
    compiler.Compiler().compile(video_classification_pipeline, str(path))
    return path
