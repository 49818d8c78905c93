"""The KFP pipeline: download -> extract frames -> train (GPU node) -> evaluate -> deploy (if asked).

Defaults are the tutorial's: 10 UCF101 classes, 30/10/10 clips per class, 10 frames every 15th
frame at 224 x 224, 50 epochs of batch 8, and its network's width and depth; the network is
trained with the ``videoclf`` recipe (AdamW, warm-up and cosine decay to a peak learning rate
of 1e-3), or with the tutorial's (Adam at 1e-4) by ``recipe``. Added: any source (a zip, folder
or annotation list), splits by group (no actor and scene in two splits) or UCF101's official
ones, sampling by time, random flips, mixed precision on GPUs, early stopping, checkpoints that a
retried or re-run training resumes, and a deploy gated on the test accuracy. The defaults are
written once, in the stages' settings (``SubsetSpec``, ``ClipSpec``, ``TrainConfig``).

``build_pipeline(target)`` fixes what depends on where the pipeline runs (``pipelines.targets``):
the GPU request (a Kubernetes resource name on Kubeflow, a machine-spec enum on Vertex AI), the
Kubernetes settings of the training pod, and the extraction fan-out. With one extraction part
(the default) frames are extracted by one task; with more, a ``dsl.ParallelFor`` runs a pod per
part and ``gather_frames`` merges them. Without a sweep one task trains; with one, a
``dsl.ParallelFor`` trains a trial per grid point on the frames extracted once (at most
``sweep_parallelism`` at a time), and ``select_trial`` keeps the trial of the lowest kept
validation loss, gathered with ``dsl.Collected``: only that model is evaluated and may be
deployed. On Vertex AI the sweep may run as a Vizier study instead (``vizier_study``), whose kept
trial goes on the same way. With an init model, a ``dsl.importer`` makes it an input artifact
of training.

Every task has CPU and memory requests equal to its limits (Vertex AI sizes its machine from the
limits), as the target sets them (``pipelines.targets.RESOURCES``). The training task asks for 3
retries with back-off (``set_retry``); a retry after a failure that would recur (a diverged loss,
a checkpoint volume it cannot write) ends at once with the same error. Which failures Kubeflow
retries is the cluster's Argo's choice, not the pipeline's: KFP compiles the retry as an Argo
``retryStrategy`` with a limit and a back-off and no ``retryPolicy`` (kubeflow/pipelines
``backend/src/v2/compiler/argocompiler/container.go``, ``getTaskRetryStrategyFromInput``,
2.17.0), and Argo merges its controller's ``templateDefaults`` under it
(argo-workflows ``workflow/controller/operator.go``, ``mergedTemplateDefaultsInto``, v4.0.5).
Without them (KFP 2.16.0 and earlier) Argo's default ``OnFailure`` retries a failed container and
not a pod deleted with its node (an ``Error``); KFP 2.17.0 installs ``retryPolicy: OnError``
(``manifests/kustomize/third-party/argo/base/workflow-controller-configmap-patch.yaml``), which
retries only the latter. ``videoclf doctor`` reads the cluster's; docs/training.md has the table.
Retrying the run resumes training from its checkpoints.

Identical runs are served from KFP's cache, whose key is a task's input values, its input
artifacts, its image and command, and its PVCs (``backend/src/v2/cacheutils/cache.go``,
``GenerateCacheKey``): no task gets a per-run value, except training the run's id where a
checkpoint volume needs a folder per run. The Kubeflow deploy step is never cached: it restores
the service a run deployed when it has been changed or deleted since, and with an unchanged
model it only sees it Ready.
"""

import tempfile
from pathlib import Path
from typing import NamedTuple

import yaml
from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Markdown, Metrics, Model, PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

from components import images
from components.download_subset.component import download_subset
from components.download_subset.config import SubsetSpec
from components.evaluate_model.component import evaluate_model
from components.extract_frames.component import extract_frames, gather_frames
from components.extract_frames.config import MAX_FAILED_FRACTION, ClipSpec
from components.serve_model import config as serving
from components.serve_model.component import deploy_model
from components.storage import S3_SECRET_KEYS
from components.train_model.component import (
    select_trial,
    select_vizier_trial,
    train_model,
    vizier_trial_spec,
)
from components.train_model.config import TrainConfig
from pipelines.targets import CHECKPOINT_MOUNT, DEFAULT_TARGET, VERTEX_TRIAL_MACHINE, Target, TargetError

PIPELINE_NAME = "video-action-classification"
DESCRIPTION = "Action recognition on a UCF101 subset with a (2+1)D ResNet."
COMPILED_YAML = Path(__file__).with_name("video_classification.yaml")
TRAIN_RETRIES = 3
IMAGE_OF = {"download": "data", "extract": "data", "gather": "data", "train": "trainer", "select": "trainer",
            "evaluate": "evaluator", "deploy": "serving"}  # the image each stage's task runs
VERTEX_SERVING_MACHINE = "n1-standard-4"
SUBSET, CLIPS, TRAIN = SubsetSpec(), ClipSpec(), TrainConfig()


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


class SweepOutputs(NamedTuple):
    """A sweep's outputs: the kept trial's model, training metrics and curves, and every trial's
    settings and scores."""
    model: Model
    training_metrics: Metrics
    learning_curves: HTML
    trials: Markdown
    sweep: Metrics
    test_metrics: Metrics
    confusion_matrix: ClassificationMetrics
    confusion_matrix_plot: Artifact
    summary: Markdown
    report: HTML


def build_pipeline(target: Target = DEFAULT_TARGET, image_names: dict[str, str] | None = None):
    """The pipeline for ``target``, its tasks running ``image_names`` (by default this
    checkout's images, ``components.images.image``)."""
    target.check()
    image_names = image_names or {name: images.image(name) for name in images.NAMES}
    serving_image = image_names["serving"]
    grid, swept = target.grid, target.swept
    outputs_type = SweepOutputs if grid else PipelineOutputs

    def place(task: dsl.PipelineTask, stage: str) -> dsl.PipelineTask:
        """Sets the task's image, CPU and memory, and its access to s3:// storage."""
        task.set_container_image(image_names[IMAGE_OF[stage]])
        cpu, memory = target.resources_of(stage)
        task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
        if target.s3_secret:
            kubernetes.use_secret_as_env(task, target.s3_secret, S3_SECRET_KEYS)
        if target.s3_endpoint:
            task.set_env_variable("AWS_ENDPOINT_URL", target.s3_endpoint)
        return task

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def video_classification_pipeline(
        source_url: str = SUBSET.source_url,
        classes: str = SUBSET.classes,
        num_classes: int = SUBSET.num_classes,
        class_names: str = SUBSET.class_names,
        train_per_class: float = SUBSET.train_per_class,
        val_per_class: float = SUBSET.val_per_class,
        test_per_class: float = SUBSET.test_per_class,
        split_by: str = SUBSET.split_by,
        group_pattern: str = SUBSET.group_pattern,
        n_frames: int = CLIPS.n_frames,
        frame_step: int = CLIPS.frame_step,
        clip_seconds: float = CLIPS.clip_seconds,
        height: int = CLIPS.height,
        width: int = CLIPS.width,
        clips_per_train_video: int = CLIPS.clips_per_train_video,
        eval_clips_per_video: int = CLIPS.eval_clips_per_video,
        frame_encoding: str = CLIPS.frame_encoding,
        max_failed_fraction: float = MAX_FAILED_FRACTION,
        epochs: int = TRAIN.epochs,
        batch_size: int = TRAIN.batch_size,
        recipe: str = TRAIN.recipe,
        learning_rate: float = TRAIN.learning_rate,
        seed: int = TRAIN.seed,
        random_flip: bool = TRAIN.random_flip,
        base_filters: int = TRAIN.base_filters,
        blocks_per_stage: int = TRAIN.blocks_per_stage,
        precision: str = TRAIN.precision,
        patience: int = TRAIN.patience,
        freeze_epochs: int = TRAIN.freeze_epochs,
        checkpoint_dir: str = "",
        accelerator_type: str = target.default_accelerator,
        accelerator_count: str = "1",  # a string: the KFP driver reads resource placeholders as strings
        gpu_node_selector: dict = {},  # noqa: B006 (a pipeline parameter's default, never mutated)
        gpu_tolerations: list = [],  # noqa: B006
        deploy: bool = False,
        min_accuracy: float = 0.8,
        deploy_name: str = serving.MODEL_NAME,
        deploy_namespace: str = "",
        deploy_service_account: str = "",
        deploy_timeout_seconds: int = serving.READY_TIMEOUT_S,
    ) -> outputs_type:
        download = place(download_subset(
            source_url=source_url, classes=classes, num_classes=num_classes, class_names=class_names,
            train_per_class=train_per_class, val_per_class=val_per_class, test_per_class=test_per_class,
            split_by=split_by, group_pattern=group_pattern, seed=seed), "download")

        sampling = dict(n_frames=n_frames, frame_step=frame_step, clip_seconds=clip_seconds,
                        height=height, width=width,
                        clips_per_train_video=clips_per_train_video,
                        eval_clips_per_video=eval_clips_per_video, frame_encoding=frame_encoding,
                        max_failed_fraction=max_failed_fraction, seed=seed)
        if target.extract_parts == 1:
            extract = place(extract_frames(videos=download.outputs["dataset"], part=0, num_parts=1,
                                           **sampling), "extract")
            frames = extract.outputs["frames"]
        else:
            with dsl.ParallelFor(items=list(range(target.extract_parts)), name="extract-parts") as part:
                extract = place(extract_frames(videos=download.outputs["dataset"], part=part,
                                               num_parts=target.extract_parts, **sampling), "extract")
            gather = place(gather_frames(parts=dsl.Collected(extract.outputs["frames"]),
                                         max_failed_fraction=max_failed_fraction), "gather")
            frames = gather.outputs["frames"]

        settings = dict(epochs=epochs, batch_size=batch_size, recipe=recipe, learning_rate=learning_rate,
                        seed=seed, random_flip=random_flip, base_filters=base_filters,
                        blocks_per_stage=blocks_per_stage, precision=precision, patience=patience,
                        freeze_epochs=freeze_epochs)
        if target.init_model:
            settings["init_model"] = dsl.importer(artifact_uri=target.init_model, artifact_class=Model,
                                                  reimport=False).output

        def train_task(**arguments) -> PipelineTask:
            train = place(train_model(
                frames=frames, checkpoint_dir=checkpoint_dir,
                checkpoint_volume=CHECKPOINT_MOUNT if target.checkpoint_pvc else "",
                **({"run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER} if target.checkpoint_pvc else {}),
                **arguments), "train")
            train.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
            train.set_retry(num_retries=TRAIN_RETRIES, backoff_duration="60s", backoff_factor=2,
                            backoff_max_duration=target.train_retry_window)
            if target.platform == "kubeflow":
                kubernetes.add_node_selector_json(train, gpu_node_selector)
                kubernetes.add_toleration_json(train, gpu_tolerations)
                if target.checkpoint_pvc:
                    kubernetes.mount_pvc(train, pvc_name=target.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
            return train

        if grid and target.vizier:
            trained = vizier_study(frames, settings, checkpoint_dir, accelerator_type, accelerator_count,
                                   image_names, target, place)
        elif grid:
            with dsl.ParallelFor(items=grid, parallelism=target.sweep_parallelism, name="sweep") as point:
                train = train_task(**{**settings, **loop_settings(point, swept)}, trial=point.trial)
                # The GPU's placeholders name pipeline parameters that the SDK does not pass into a
                # loop by itself (set_accelerator_type keeps only their text: kfp 2.17.0,
                # sdk/python/kfp/dsl/pipeline_task.py); registered, the loop's DAG takes them as inputs.
                train.register_pipeline_channels([accelerator_type, accelerator_count])
            trained = place(select_trial(models=dsl.Collected(train.outputs["model"]),
                                         metrics=dsl.Collected(train.outputs["metrics"]), swept=swept),
                            "select")
        else:
            trained = train_task(**settings)
        model = trained.outputs["model"]

        evaluate = place(evaluate_model(frames=frames, model=model), "evaluate")

        # Deployed when asked, and when the test accuracy reaches min_accuracy.
        with (dsl.If(deploy == True, name="deploy-asked"),  # noqa: E712 (a condition KFP compiles)
              dsl.If(evaluate.outputs["test_accuracy"] >= min_accuracy, name="accurate-enough")):
            if target.platform == "kubeflow":
                place(deploy_model(
                    model=model, name=deploy_name, namespace=deploy_namespace,
                    service_account=deploy_service_account, timeout_seconds=deploy_timeout_seconds,
                    serving_image=serving_image, s3_endpoint=target.s3_endpoint,
                    s3_secret=target.s3_secret), "deploy").set_caching_options(False)
            else:
                deploy_on_vertex(model, deploy_name, image_names, target)

        if grid:
            training = {"training_metrics": trained.outputs["training_metrics"],
                        "trials": trained.outputs["trials"], "sweep": trained.outputs["sweep_metrics"]}
        else:
            training = {"training_metrics": trained.outputs["metrics"],
                        "tensorboard": trained.outputs["tensorboard"]}
        return outputs_type(
            model=model,
            learning_curves=trained.outputs["learning_curves"],
            **training,
            test_metrics=evaluate.outputs["metrics"],
            confusion_matrix=evaluate.outputs["confusion_matrix"],
            confusion_matrix_plot=evaluate.outputs["confusion_matrix_plot"],
            summary=evaluate.outputs["summary"],
            report=evaluate.outputs["report"],
        )

    return video_classification_pipeline


def loop_settings(point: PipelineChannel, swept: list[str]) -> dict[str, PipelineChannel]:
    """The swept settings of a sweep's loop item, each typed as its setting (KFP types a field
    of a dict item as a string; the backend hands over the item's JSON value as it is)."""
    from components.train_model.sweep import setting_types

    kfp_types = {int: "Integer", float: "Float", bool: "Boolean", str: "String"}
    channels = {}
    for name in swept:
        channels[name] = getattr(point, name)
        channels[name].channel_type = kfp_types[setting_types()[name]]
    return channels


def vizier_study(frames: PipelineChannel, settings: dict, checkpoint_dir: PipelineChannel,
                 accelerator_type: PipelineChannel, accelerator_count: PipelineChannel,
                 image_names: dict[str, str], target: Target, place) -> PipelineTask:
    """The sweep as a Vertex AI Vizier study, with google-cloud-pipeline-components 2.22.0's
    ``HyperparameterTuningJobRunOp`` (``v1/hyperparameter_tuning_job/component.py``): a study
    minimising the kept validation loss over a discrete (numbers) or categorical (text, true or
    false) parameter per swept setting with its listed values, ``target.sweep_trials`` trials,
    ``target.parallel_trials`` at once, each the trainer image's trial command on a machine of
    ``target.trial_machine_type`` with the run's GPU (``vizier_trial_spec``). Then
    ``select_vizier_trial`` keeps the trial of the lowest kept validation loss from the model folders
    the trials wrote: its outputs are ``select_trial``'s.

    GCPC 2.x has no step that reads a tuning job's trials back: its ``GetTrialsOp``,
    ``GetBestTrialOp`` and ``GetBestHyperparametersOp`` were in ``experimental`` (1.0.x), which
    2.0.0 dropped (``experimental/hyperparameter_tuning_job/utils.py``, removed by
    kubeflow/pipelines e2b4afb96e), and returned the best trial's values, not its model."""
    try:
        from google.cloud.aiplatform import hyperparameter_tuning as hpt
        from google_cloud_pipeline_components import _placeholders
        from google_cloud_pipeline_components.v1.hyperparameter_tuning_job import (
            HyperparameterTuningJobRunOp,
            serialize_metrics,
            serialize_parameters,
        )

        from components.train_model import vizier
    except ImportError as e:
        raise TargetError("compiling a Vizier study needs google-cloud-pipeline-components: "
                          "pip install 'videoclf[vertex]'") from e

    def parameter(values: list) -> hpt._ParameterSpec:
        """Numbers as a discrete parameter (on a log scale where all are above 0, as learning rates
        and widths are compared), text and true or false as a categorical one."""
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return hpt.DiscreteParameterSpec(values=sorted(float(v) for v in values),
                                             scale="log" if min(values) > 0 else "linear")
        return hpt.CategoricalParameterSpec(values=[vizier.value_text(v) for v in values])

    study = {"metrics": serialize_metrics({vizier.METRIC: "minimize"}),
             "parameters": serialize_parameters({name: parameter(values)
                                                 for name, values in target.sweep_values.items()}),
             "max_trial_count": target.sweep_trials, "parallel_trial_count": target.parallel_trials}
    swept = list(target.sweep_values)
    spec = place(vizier_trial_spec(
        frames=frames, **settings, checkpoint_dir=checkpoint_dir, swept=swept,
        trainer_image=image_names["trainer"], machine_type=target.trial_machine_type or VERTEX_TRIAL_MACHINE,
        accelerator_type=accelerator_type, accelerator_count=accelerator_count, study=study), "select")
    # The project and region of the run (GCPC's default location is us-central1), and its service
    # account, which the trials run as: they read the run's frames and write to its bucket.
    tuning = HyperparameterTuningJobRunOp(
        display_name=f"{PIPELINE_NAME}-sweep", base_output_directory=spec.outputs["base_output_directory"],
        worker_pool_specs=spec.outputs["worker_pool_specs"], study_spec_metrics=study["metrics"],
        study_spec_parameters=study["parameters"], max_trial_count=study["max_trial_count"],
        parallel_trial_count=study["parallel_trial_count"],
        project=_placeholders.PROJECT_ID_PLACEHOLDER, location=_placeholders.LOCATION_PLACEHOLDER,
        service_account=_placeholders.SERVICE_ACCOUNT_PLACEHOLDER)
    return place(select_vizier_trial(frames=frames, trials_folder=spec.outputs["trials_folder"],
                                     tuning_job=tuning.outputs["gcp_resources"], swept=swept), "select")


def deploy_on_vertex(model: PipelineChannel, name: PipelineChannel, image_names: dict[str, str],
                     target: Target) -> None:
    """Uploads the model to Vertex AI's Model Registry (a new version of ``target``'s parent model
    where it names one), deploys it with all the traffic to ``target``'s endpoint, else to the
    endpoint named ``name`` (created the first time), and then undeploys the models it replaces,
    with google-cloud-pipeline-components and ``components.serve_model.vertex``."""
    try:
        from google_cloud_pipeline_components import _placeholders
        from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint, VertexModel
        from google_cloud_pipeline_components.v1.endpoint import ModelDeployOp
        from google_cloud_pipeline_components.v1.model import ModelUploadOp

        from components.serve_model.vertex import undeploy_replaced, vertex_endpoint, vertex_serving_model
    except ImportError as e:
        raise TargetError("compiling for Vertex AI needs google-cloud-pipeline-components: "
                          "pip install 'videoclf[vertex]'") from e

    where = {"project": _placeholders.PROJECT_ID_PLACEHOLDER,
             "location": _placeholders.LOCATION_PLACEHOLDER}
    container = vertex_serving_model(model=model, name=name, serving_image=image_names["serving"],
                                     port=serving.SERVING_PORT)
    ours = [container]  # sized as the deploy stage; GCPC's own tasks keep Vertex AI's default machine
    parent = {}
    if target.vertex_parent_model:
        parent["parent_model"] = dsl.importer(
            artifact_uri=vertex_uri(target.vertex_parent_model), artifact_class=VertexModel,
            metadata={"resourceName": target.vertex_parent_model}).output
    upload = ModelUploadOp(display_name=name, unmanaged_container_model=container.outputs["unmanaged_model"],
                           **parent, **where)
    if target.vertex_endpoint:
        endpoint = dsl.importer(artifact_uri=vertex_uri(target.vertex_endpoint),
                                artifact_class=VertexEndpoint,
                                metadata={"resourceName": target.vertex_endpoint}).output
    else:
        ours.append(vertex_endpoint(name=name, **where))
        endpoint = ours[-1].outputs["endpoint"]
    deploy = ModelDeployOp(endpoint=endpoint, model=upload.outputs["model"], deployed_model_display_name=name,
                           dedicated_resources_machine_type=VERTEX_SERVING_MACHINE,
                           dedicated_resources_min_replica_count=1, dedicated_resources_max_replica_count=1,
                           traffic_split={"0": 100})
    ours.append(undeploy_replaced(endpoint=endpoint, model=upload.outputs["model"]).after(deploy))
    cpu, memory = target.resources_of("deploy")
    for task in ours:
        task.set_cpu_limit(cpu).set_memory_limit(memory)


def vertex_uri(resource_name: str) -> str:
    """The API URI of a Vertex AI resource (``projects/p/locations/l/models/m``)."""
    location = resource_name.split("/")[3]
    return f"https://{location}-aiplatform.googleapis.com/v1/{resource_name}"


def reference_images() -> dict[str, str]:
    """The images the committed YAML names: local ones, under a tag no build carries."""
    return {name: images.image(name, images.LOCAL_REGISTRY, images.REFERENCE_TAG) for name in images.NAMES}


def compile_pipeline(path: Path = COMPILED_YAML, target: Target = DEFAULT_TARGET,
                     image_names: dict[str, str] | None = None, enable_caching: bool = True) -> Path:
    """Compiles the pipeline for ``target`` to YAML naming ``image_names`` (by default the
    reference images of the committed YAML)."""
    reference = image_names is None
    image_names = image_names or reference_images()
    recompile = "videoclf compile --target kubeflow|vertex --registry REGISTRY"
    return write_compiled(build_pipeline(target, image_names), path, target, enable_caching, PIPELINE_NAME,
                          target.min_backend, [image_names[name] for name in images.NAMES],
                          recompile if reference else "")


def write_compiled(pipeline, path: Path, target: Target, enable_caching: bool, name: str, min_backend: str,
                   image_list: list[str], recompile: str = "") -> Path:
    """Compiles ``pipeline`` to YAML at ``path`` behind a header naming its platform and images
    (and, for a reference build, ``recompile``: how to compile it for a cluster); the platform
    spec only for Kubeflow. Without caching, every task of every DAG has it off (``kfp.Client``
    turns it off for the root DAG's tasks only, not for those in a loop)."""
    with tempfile.TemporaryDirectory(prefix="videoclf-compile-") as tmp:
        compiled = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(compiled))
        pipeline_spec, *platform_spec = yaml.safe_load_all(compiled.read_text())
    if not enable_caching:
        for task in all_tasks(pipeline_spec):
            task["cachingOptions"] = {"enableCache": False}
    documents = [pipeline_spec] + (platform_spec if target.platform == "kubeflow" else [])
    where = ("Vertex AI Pipelines" if target.platform == "vertex"
             else f"Kubeflow Pipelines (backend {min_backend} or newer)")
    header = f"# {name}, compiled by videoclf for {where}.\n# Images: {', '.join(image_list)}\n"
    if recompile:
        header += ("# The reference build, kept for review: its images are local. For a cluster, compile\n"
                   f"# with: {recompile}\n")
    Path(path).write_text(header + yaml.safe_dump_all(documents, sort_keys=True))
    return Path(path)


def all_tasks(pipeline_spec: dict):
    """Every task of a compiled pipeline spec: its root DAG's and its sub-DAGs'."""
    components = pipeline_spec["components"].values()
    for dag in [pipeline_spec["root"]["dag"], *(c["dag"] for c in components if "dag" in c)]:
        yield from dag["tasks"].values()
