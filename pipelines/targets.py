"""Where the pipeline runs, and what that fixes in its compiled spec.

Kubeflow Pipelines and Vertex AI read the same pipeline spec differently:

- The GPU. The KFP v2 driver copies the task's accelerator type verbatim into the pod's resource
  limits as a resource name (kubeflow/pipelines ``backend/src/v2/driver/driver.go``, where the
  container's ``ResourceRequirements`` are built), so on Kubeflow it must be a Kubernetes
  resource name such as ``nvidia.com/gpu``, with the GPU model chosen by a node selector
  (``cloud.google.com/gke-accelerator`` on GKE). Vertex AI takes the machine-spec enum
  (``NVIDIA_TESLA_T4``, ``NVIDIA_L4``, ...).
- The Kubernetes platform spec (node selector, tolerations, volumes, secrets) is Kubeflow's
  alone; Vertex AI gets the pipeline spec without it.
- The backend version: the spec needs features the open-source backend gained over time.
- Each task's CPU and memory (``RESOURCES``, overridable per stage): requested and as the limit,
  from which Vertex AI sizes its machine.
- A sweep (``sweep``): a ``dsl.ParallelFor`` of training tasks over a grid of settings and a step
  that keeps one trial (on Vertex AI within its limit on collected artifacts), or on Vertex AI
  alone a Vizier study of ``sweep_trials`` trials over the same values (``sweep_engine``); and a
  warm start (``init_model``): a model folder imported as an input artifact of training.
"""

from __future__ import annotations

import dataclasses
import re

PLATFORMS = ("kubeflow", "vertex")
KUBEFLOW_GPU = "nvidia.com/gpu"
VERTEX_GPU = "NVIDIA_TESLA_T4"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
CHECKPOINT_MOUNT = "/videoclf-checkpoints"  # where a checkpoint PVC is mounted in the training pod

# CPU and memory of each stage's task, requested and as its limit. Every task fits a node of 4
# vCPUs (n1-standard-4 with a T4, g2-standard-4 with an L4, e2-standard-4), whose allocatable is
# 3.92 CPUs and 12.4 or 13.3 GiB after GKE's reservations (6 % of the first core, 1 % of the
# second, 0.5 % of the next two; 25 % of the first 4 GiB of memory, 20 % of the next 4, 10 % of
# the next 8, and a 100 MiB eviction threshold: GKE's "Plan GKE Standard node sizes"), leaving
# 0.9 CPU and 2.4 GiB for the node's DaemonSets. Argo's wait sidecar requests nothing: KFP's
# workflow-controller-configmap sets no executor resources (manifests/kustomize/third-party/argo/
# base/workflow-controller-configmap-patch.yaml, 2.17.0) and Argo then gives it none
# (workflow/controller/workflowpod.go, newExecContainer, v4.0.5); KFP's launcher init container
# requests 0.1 CPU (backend/src/v2/compiler/argocompiler/argo.go, launcherResources), which the
# scheduler counts as the larger of it and the main container, not on top.
RESOURCES = {"download": ("1", "2Gi"), "extract": ("3", "8Gi"), "gather": ("1", "2Gi"),
             "train": ("3", "10Gi"), "select": ("1", "2Gi"), "evaluate": ("2", "8Gi"),
             "deploy": ("0.5", "1Gi")}
CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
MEMORY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")

# How long after the training task's first attempt started Kubeflow still retries it. KFP
# compiles set_retry's backoff_max_duration into the retry template's backoff.maxDuration
# (kubeflow/pipelines backend/src/v2/compiler/argocompiler/container.go,
# getTaskRetryStrategyFromInput, 2.5.0 to 2.17.0), and Argo retries no failure that ends past it
# ("Max duration limit exceeded"), nor one whose back-off would, and ends a retry's pod at that
# deadline (argo-workflows workflow/controller/operator.go, processNodeRetries, executionDeadline,
# v3.7.3 and v4.0.5, the releases KFP 2.16.0 and 2.17.0 install). The SDK's default, 3600 s, would
# leave a training that fails after its first hour unretried. Vertex AI reads the field as the
# cap of each back-off (its "Configure retries" page), which 60 s doubling three times never
# reaches: there it keeps the SDK's default.
TRAIN_RETRY_WINDOW = "168h"

# The oldest Kubeflow Pipelines backend that runs the compiled spec, and why:
# 2.5.0: node selector and tolerations as JSON parameters, PVC and secret names as parameters
#   (kubeflow/pipelines#11770), resource requests and the accelerator as placeholders
#   (#11501, 2.4.0), job placeholders such as {{$.pipeline_job_uuid}} (#11599), and retry
#   back-off on the Argo back end (#11673).
# 2.14.0: with extraction fanned out over several pods, or a sweep, dsl.Collected artifact lists
#   (#11725, "enable dsl.Collected for parameters & artifacts": backend/src/v2/driver/resolve.go,
#   CollectInputs, which gathers a ParallelFor's iterations in order). A sweep's parallelism
#   bound compiles to the loop template's Argo parallelism from 2.4.0 on
#   (backend/src/v2/compiler/argocompiler/dag.go, iteratorPolicy.parallelismLimit, 2.4.0 to 2.17.0).
MIN_BACKEND = "2.5.0"
MIN_BACKEND_FAN_OUT = "2.14.0"

# Vertex AI Pipelines refuses a task whose collected input artifacts number more than 100:
# "Maximum number of artifacts exceeded. Maximum allowed: 100" (kubeflow/kubeflow#7513, a
# dsl.Collected over a ParallelFor of more than 100 iterations on Vertex AI Pipelines; Google
# documents no other limit on a loop's iterations). A grid sweep's selection step collects two
# artifacts a trial (its model and metrics), counted together: at most 50 trials.
VERTEX_MAX_COLLECTED_ARTIFACTS = 100
COLLECTED_PER_TRIAL = 2
SWEEP_PARALLELISM = 4  # trials trained at once by default (each asks for the training task's GPU)
SWEEP_ENGINES = ("grid", "vizier")  # a ParallelFor over the grid; a Vertex AI Vizier study over its values
# The machine of a Vizier trial (a Vertex AI custom job names one, where a pipeline task is sized
# from its limits): 4 vCPUs and 15 GB, which a T4 (the default GPU on Vertex AI) attaches to;
# other GPUs need their own series (an L4 a g2-standard-4, an A100 an a2-highgpu-1g).
VERTEX_TRIAL_MACHINE = "n1-standard-4"

# A Kubernetes resource name that a pod's limits accept for an extended resource: domain/name.
K8S_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
VERTEX_ACCELERATOR = re.compile(r"^(NVIDIA|TPU)_[A-Z0-9_]+$")


class TargetError(ValueError):
    """A setting that the target platform cannot run; says what to pass instead."""


class SubmitError(RuntimeError):
    """A run could not be submitted to a cluster, or could not be followed: says where and why."""


def check_accelerator(platform: str, accelerator_type: str) -> None:
    """Refuses a GPU name written for the other platform, saying what to pass."""
    if platform == "kubeflow" and not K8S_RESOURCE.match(accelerator_type):
        hint = ""
        if VERTEX_ACCELERATOR.match(accelerator_type):
            label = accelerator_type.lower().replace("_", "-")
            hint = (f"; to ask for that model on GKE, add --gpu-node-selector "
                    f"'{{\"{GKE_ACCELERATOR_LABEL}\": \"{label}\"}}'")
        raise TargetError(f"accelerator_type {accelerator_type!r} is not a Kubernetes resource name: on "
                          f"Kubeflow pass --accelerator-type {KUBEFLOW_GPU} (or your device plugin's "
                          f"resource, e.g. amd.com/gpu){hint}")
    if platform == "vertex" and not VERTEX_ACCELERATOR.match(accelerator_type):
        raise TargetError(f"accelerator_type {accelerator_type!r} is not a Vertex AI accelerator: pass "
                          f"its machine-spec name, e.g. --accelerator-type {VERTEX_GPU} or NVIDIA_L4")


@dataclasses.dataclass(frozen=True)
class Target:
    """What is fixed when the pipeline is compiled, rather than chosen per run."""

    platform: str = "kubeflow"  # kubeflow or vertex; kfp.local runs the kubeflow form
    extract_parts: int = 1  # extraction pods; above 1, a ParallelFor and a gather step
    checkpoint_pvc: str = ""  # Kubeflow: an existing PVC the training pod mounts for checkpoints
    s3_secret: str = ""  # Kubeflow: a Secret whose accesskey and secretkey every task gets for s3://
    s3_endpoint: str = ""  # every task's AWS_ENDPOINT_URL, e.g. Kubeflow's http://seaweedfs.kubeflow:9000
    vertex_parent_model: str = ""  # Vertex AI: a model whose new version a deploy uploads
    vertex_endpoint: str = ""  # Vertex AI: the endpoint a deploy serves on; else the one of its name
    resources: tuple[tuple[str, str, str], ...] = ()  # (stage, cpu, memory) in place of RESOURCES'
    sweep: tuple[str, ...] = ()  # NAME=V1,V2 per swept training setting: a trial per grid point
    sweep_parallelism: int = SWEEP_PARALLELISM  # trials at once; 0: all
    sweep_engine: str = "grid"  # grid (every point, a ParallelFor) or vizier (Vertex AI: a study)
    sweep_trials: int = 0  # vizier: the study's trial budget, at most the grid's points
    trial_machine_type: str = ""  # vizier: each trial's machine; "": VERTEX_TRIAL_MACHINE
    init_model: str = ""  # a model folder to start training from, imported as an input artifact

    def check(self) -> None:
        """Raises TargetError naming the setting this platform cannot take."""
        if self.platform not in PLATFORMS:
            raise TargetError(f"target must be one of {', '.join(PLATFORMS)}, got {self.platform!r}")
        if self.extract_parts < 1:
            raise TargetError(f"extract_parts must be at least 1, got {self.extract_parts}")
        self.check_sweep()
        if self.platform == "vertex":
            for flag, value in (("--checkpoint-pvc", self.checkpoint_pvc), ("--s3-secret", self.s3_secret),
                                ("--s3-endpoint", self.s3_endpoint)):
                if value:
                    raise TargetError(f"{flag} is for Kubeflow: Vertex AI mounts no PVC or Secret and "
                                      "holds no S3 credentials; use gs:// paths, which the run's service "
                                      "account reads")
        for stage, cpu, memory in self.resources:
            if stage not in RESOURCES:
                raise TargetError(f"--resources names no stage {stage!r}: one of {', '.join(RESOURCES)}")
            if not CPU.match(cpu) or not MEMORY.match(memory):
                raise TargetError(f"--resources {stage}={cpu},{memory}: give CPUs (2, 0.5 or 500m) and "
                                  "memory (8Gi, 512Mi)")
        for flag, value, kind in (("--vertex-parent-model", self.vertex_parent_model, "models"),
                                  ("--vertex-endpoint", self.vertex_endpoint, "endpoints")):
            if value and self.platform != "vertex":
                raise TargetError(f"{flag} is for Vertex AI")
            if value and not re.fullmatch(rf"projects/[^/]+/locations/[^/]+/{kind}/[^/]+", value):
                raise TargetError(f"{flag} must be a resource name, projects/P/locations/L/{kind}/ID, "
                                  f"got {value!r}")

    @property
    def sweep_values(self) -> dict[str, list]:
        """Each swept setting's values, in the order given."""
        from components.train_model import sweep

        try:
            return sweep.parse(self.sweep)
        except sweep.SweepError as e:
            raise TargetError(str(e)) from e

    @property
    def grid(self) -> list[dict]:
        """The sweep's trials: each grid point's settings and name (none without a sweep)."""
        from components.train_model import sweep

        return sweep.grid(self.sweep_values) if self.sweep else []

    @property
    def vizier(self) -> bool:
        """Whether the sweep runs as a Vertex AI Vizier study."""
        return self.sweep_engine == "vizier"

    @property
    def swept(self) -> list[str]:
        """The training settings the sweep sets."""
        return [name for name in self.grid[0] if name != "trial"] if self.sweep else []

    def check_sweep(self) -> None:
        """Refuses a sweep this platform cannot run, naming the limit it passes."""
        trials = len(self.grid)
        if self.sweep_parallelism < 0:
            raise TargetError(f"--sweep-parallelism must be 0 (all at once) or more, "
                              f"got {self.sweep_parallelism}")
        if self.sweep_engine not in SWEEP_ENGINES:
            raise TargetError(f"--sweep-engine must be one of {', '.join(SWEEP_ENGINES)}, "
                              f"got {self.sweep_engine!r}")
        if self.vizier:
            self.check_vizier(trials)
            return
        for flag, value in (("--sweep-trials", self.sweep_trials),
                            ("--trial-machine-type", self.trial_machine_type)):
            if value:
                raise TargetError(f"{flag} is for --sweep-engine vizier: the grid trains every point")
        most = VERTEX_MAX_COLLECTED_ARTIFACTS // COLLECTED_PER_TRIAL
        if self.platform == "vertex" and trials > most:
            raise TargetError(
                f"the sweep has {trials} trials, but Vertex AI gathers at most "
                f"{VERTEX_MAX_COLLECTED_ARTIFACTS} artifacts into one task ({COLLECTED_PER_TRIAL} a trial: "
                f"at most {most} trials): sweep fewer values")

    def check_vizier(self, points: int) -> None:
        """Refuses a Vizier study that Vertex AI could not run, or would run for nothing."""
        if self.platform != "vertex":
            raise TargetError("--sweep-engine vizier runs only on Vertex AI (a hyperparameter tuning job): "
                              "compile with --target vertex or submit with --vertex; a local run and "
                              "Kubeflow train the grid (--sweep-engine grid)")
        if not points:
            raise TargetError("--sweep-engine vizier searches the values of --sweep NAME=V1,V2: give one")
        if not 1 <= self.sweep_trials <= points:
            raise TargetError(f"--sweep-engine vizier needs --sweep-trials N, the study's trial budget, "
                              f"from 1 to the grid's {points} points (more would train settings again), "
                              f"got {self.sweep_trials}")

    def check_swept(self, params: dict) -> None:
        """Refuses a run parameter that the sweep sets in each trial."""
        given = [name for name in self.swept if name in params]
        if given:
            raise TargetError(f"--{given[0].replace('_', '-')} is swept (--sweep {given[0]}=...): each trial "
                              "takes its value from the sweep; drop the parameter")

    def check_params(self, params: dict) -> None:
        """Refuses run parameters this platform would not run as meant."""
        self.check_swept(params)
        kept = ("gs://",) if self.platform == "vertex" else ("gs://", "s3://")
        if self.init_model and not self.init_model.startswith(kept):
            raise TargetError(f"--init-model {self.init_model!r} is not in a bucket the cluster reads: "
                              f"give a {' or '.join(kept)} model folder, e.g. the model artifact of an "
                              "earlier run")
        check_accelerator(self.platform, params.get("accelerator_type", self.default_accelerator))
        if not 0 <= params.get("min_accuracy", 0) <= 1:
            raise TargetError(f"min_accuracy is a test accuracy, from 0 to 1, got {params['min_accuracy']}")
        if not re.fullmatch(r"\d+", str(params.get("accelerator_count", "1"))):
            raise TargetError(f"accelerator_count must be a whole number of GPUs, got "
                              f"{params['accelerator_count']!r}")
        if self.platform == "vertex":
            for name in ("gpu_node_selector", "gpu_tolerations"):
                if params.get(name):
                    raise TargetError(f"--{name.replace('_', '-')} is for Kubernetes: on Vertex AI the "
                                      "training machine follows --accelerator-type and --accelerator-count")
        checkpoint_dir = params.get("checkpoint_dir", "")
        if self.platform == "vertex":
            for name in ("checkpoint_dir", "source_url"):
                if str(params.get(name, "")).startswith("s3://"):
                    raise TargetError(f"{name} {params[name]!r} is in S3, for which a Vertex AI run has no "
                                      "credentials: copy it to gs:// (the run's service account reads it)")
            for name in ("deploy_namespace", "deploy_service_account"):
                if params.get(name):
                    raise TargetError(f"--{name.replace('_', '-')} is for Kubeflow's InferenceService")
        kept = ("gs://", "/gcs/") if self.platform == "vertex" else ("gs://", "s3://")
        on_volume = self.checkpoint_pvc and checkpoint_dir.startswith(f"{CHECKPOINT_MOUNT}/")
        if checkpoint_dir and not checkpoint_dir.startswith(kept) and not on_volume:
            raise TargetError(
                f"checkpoint_dir {checkpoint_dir!r} is on the training pod's own disk, which a retried "
                "pod does not see: give a gs:// or s3:// folder"
                + (f", or mount a volume with --checkpoint-pvc NAME (checkpoints then go to "
                   f"{CHECKPOINT_MOUNT}/<run id>)" if self.platform == "kubeflow" else ""))

    def resources_of(self, stage: str) -> tuple[str, str]:
        """The CPU and memory of a stage's task: its ``--resources``, else RESOURCES'."""
        given = {name: (cpu, memory) for name, cpu, memory in self.resources}
        return given.get(stage, RESOURCES[stage])

    @property
    def default_accelerator(self) -> str:
        return VERTEX_GPU if self.platform == "vertex" else KUBEFLOW_GPU

    @property
    def train_retry_window(self) -> str | None:
        """The training task's ``backoff_max_duration``: TRAIN_RETRY_WINDOW on Kubeflow, else the
        SDK's default."""
        return TRAIN_RETRY_WINDOW if self.platform == "kubeflow" else None

    @property
    def parallel_trials(self) -> int:
        """A Vizier study's trials at once: ``sweep_parallelism``, at most the budget (0: all)."""
        return min(self.sweep_parallelism or self.sweep_trials, self.sweep_trials)

    @property
    def min_backend(self) -> str:
        """The oldest Kubeflow Pipelines backend that runs this spec."""
        return MIN_BACKEND_FAN_OUT if self.extract_parts > 1 or self.sweep else MIN_BACKEND


DEFAULT_TARGET = Target()
