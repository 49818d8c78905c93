import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import images
from pipelines.targets import CHECKPOINT_MOUNT, RESOURCES, Target
from pipelines.video_classification import COMPILED_YAML, all_tasks, compile_pipeline
from tests.conftest import BETTER_THAN_CHANCE, LEARNABLE_DEMO

DEMO_EPOCHS = int(LEARNABLE_DEMO[LEARNABLE_DEMO.index("--epochs") + 1])

STAGES = ["download-subset", "extract-frames", "train-model", "evaluate-model"]
TASK_STAGES = {"download-subset": "download", "extract-frames": "extract", "train-model": "train",
               "evaluate-model": "evaluate"}
REGISTRY = "europe-docker.pkg.dev/my-project/videoclf"


def compiled(tmp_path: Path, target: Target, **options) -> list[dict]:
    """The YAML documents of the pipeline compiled for ``target``, naming REGISTRY's images."""
    names = {name: f"{REGISTRY}/{name}:0123456789ab" for name in images.NAMES}
    path = compile_pipeline(tmp_path / f"{target.platform}.yaml", target, names, **options)
    return list(yaml.safe_load_all(path.read_text()))


def resolve(value: str, inputs: dict) -> str:
    """A resource field with its ``{{$.inputs.parameters['name']}}`` placeholder replaced by the
    task's input, as the KFP v2 driver resolves it (backend/src/v2/driver/resolve.go,
    resolvePodSpecInputRuntimeParameter): with the value's GetStringValue(), which is empty for a
    number or anything else that is not a string."""
    match = re.fullmatch(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", value)
    if not match:
        return value
    found = inputs[match.group(1)]
    return found if isinstance(found, str) else ""


def driver_resources(spec: dict, task: str, arguments: dict) -> dict[str, dict[str, str]]:
    """The container resources the KFP v2 driver gives a task's pod: requests and limits of cpu
    and memory, and the accelerator's type copied verbatim as a resource name under limits,
    modelled on kubeflow/pipelines backend/src/v2/driver/driver.go (initPodSpecPatch)."""
    root = spec["root"]
    run_inputs = {name: arguments.get(name, p.get("defaultValue")) for name, p in
                  root["inputDefinitions"]["parameters"].items()}
    task_inputs = {name: run_inputs[p["componentInputParameter"]]
                   for name, p in root["dag"]["tasks"][task]["inputs"].get("parameters", {}).items()
                   if "componentInputParameter" in p}
    resources = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]["resources"]
    pod = {"requests": {}, "limits": {}}
    for kind, key in (("requests", "Request"), ("limits", "Limit")):
        for resource in ("cpu", "memory"):
            if f"resource{resource.title()}{key}" in resources:
                pod[kind][resource] = resolve(resources[f"resource{resource.title()}{key}"], task_inputs)
    accelerator = resources.get("accelerator")
    if accelerator:
        kind, count = (resolve(accelerator[key], task_inputs) for key in ("resourceType", "resourceCount"))
        if kind and count:  # the driver asks for no accelerator when either resolves empty
            pod["limits"][kind] = count
    return pod


# Kubernetes accepts a standard resource name or a fully qualified extended one (domain/name).
KUBERNETES_RESOURCE = re.compile(r"^(cpu|memory|ephemeral-storage|[a-z0-9.-]+/[A-Za-z0-9_.-]+)$")


def test_committed_yaml_is_up_to_date(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml")
    assert fresh.read_text() == COMPILED_YAML.read_text(), (
        "pipelines/video_classification.yaml is stale: run `videoclf compile`")
    assert "localhost/videoclf/data:reference" in fresh.read_text()  # for review, not for a cluster


def test_yaml_has_typed_executors_and_a_gpu_on_training(tmp_path):
    spec, platform = compiled(tmp_path, Target())
    executors = spec["deploymentSpec"]["executors"]
    assert sorted(executors) == sorted(f"exec-{s}" for s in [*STAGES, "deploy-model"])
    components = spec["components"]
    artifacts = {name: {k: v["artifactType"]["schemaTitle"]
                        for kind in ("inputDefinitions", "outputDefinitions")
                        for k, v in c.get(kind, {}).get("artifacts", {}).items()}
                 for name, c in components.items()}
    assert artifacts["comp-download-subset"] == {"dataset": "system.Dataset"}
    assert artifacts["comp-extract-frames"] == {"videos": "system.Dataset", "frames": "system.Dataset"}
    assert artifacts["comp-train-model"] == {"frames": "system.Dataset", "init_model": "system.Model",
                                             "model": "system.Model",
                                             "metrics": "system.Metrics",
                                             "learning_curves": "system.HTML",
                                             "tensorboard": "system.Artifact"}
    assert artifacts["comp-evaluate-model"] == {
        "frames": "system.Dataset", "model": "system.Model", "metrics": "system.Metrics",
        "confusion_matrix": "system.ClassificationMetrics",
        "confusion_matrix_plot": "system.Artifact", "summary": "system.Markdown", "report": "system.HTML"}
    # One extraction part: no loop and no gather step; training reads the extraction's output.
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted([*STAGES, "condition-1"])  # no loop, no gather step; the deploy gate
    assert tasks["train-model"]["inputs"]["artifacts"]["frames"]["taskOutputArtifact"]["producerTask"] \
        == "extract-frames"
    assert tasks["train-model"]["retryPolicy"]["maxRetryCount"] == 3
    for executor in executors.values():  # the images carry kfp: nothing is pip-installed at start
        assert "pip install" not in " ".join(executor["container"]["command"])
    # On Kubernetes the GPU node's selector and tolerations are pipeline parameters.
    pod = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert pod["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "gpu_node_selector"
    assert pod["tolerations"][0]["tolerationJson"]["componentInputParameter"] == "gpu_tolerations"


def test_kubeflow_pods_ask_for_a_kubernetes_gpu_and_limits_on_every_task(tmp_path):
    spec, _ = compiled(tmp_path, Target("kubeflow"))
    for task in STAGES:
        pod = driver_resources(spec, task, {})
        assert set(pod["requests"]) == {"cpu", "memory"} and pod["requests"] == {
            k: v for k, v in pod["limits"].items() if k in ("cpu", "memory")}, task
        assert all(KUBERNETES_RESOURCE.match(name) for name in pod["limits"]), pod
    assert driver_resources(spec, "train-model", {})["limits"]["nvidia.com/gpu"] == "1"
    two = driver_resources(spec, "train-model", {"accelerator_count": "2"})
    assert two["limits"]["nvidia.com/gpu"] == "2"
    assert all(executor["container"]["image"].startswith(f"{REGISTRY}/")
               for executor in spec["deploymentSpec"]["executors"].values())


def gke_allocatable(vcpus: int, gib: float) -> tuple[float, float]:
    """A GKE Standard node's allocatable CPUs and GiB ("Plan GKE Standard node sizes"): CPU less 6 %
    of the first core, 1 % of the second, 0.5 % of the next two, 0.25 % of the rest; memory less
    25 % of the first 4 GiB, 20 % of the next 4, 10 % of the next 8, 6 % of the next 112, and a
    100 MiB eviction threshold."""
    cpu = vcpus - 0.06 - 0.01 * (vcpus > 1) - 0.005 * min(max(vcpus - 2, 0), 2) - 0.0025 * max(vcpus - 4, 0)
    reserved = sum(share * max(0.0, min(gib, top) - bottom) for bottom, top, share in
                   ((0, 4, 0.25), (4, 8, 0.20), (8, 16, 0.10), (16, 128, 0.06)))
    return cpu, gib - reserved - 100 / 1024


def quantity(value: str) -> float:
    """A Kubernetes CPU or memory quantity in cores or GiB."""
    units = {"m": 1e-3, "Ki": 2**-20, "Mi": 2**-10, "Gi": 1, "K": 1e3 / 2**30, "M": 1e6 / 2**30,
             "G": 1e9 / 2**30}
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", value).groups()
    return float(number) * units.get(unit, 1)


@pytest.mark.parametrize(("machine", "vcpus", "gib"), [("n1-standard-4", 4, 15), ("g2-standard-4", 4, 16)])
def test_every_task_fits_a_four_cpu_gpu_node_with_room_for_its_daemonsets(tmp_path, machine, vcpus, gib):
    """The pods the KFP driver builds, GPU included, fit the node's allocatable with 0.5 CPU and
    1 GiB left for the DaemonSets (Argo's wait sidecar and KFP's launcher init container add no
    request to it: see pipelines/targets.py)."""
    spec, _ = compiled(tmp_path, Target())
    cpu, memory = gke_allocatable(vcpus, gib)
    expected = {"n1-standard-4": (3.92, 12.4), "g2-standard-4": (3.92, 13.3)}  # the figures GKE documents
    assert (round(cpu, 2), round(memory, 1)) == expected[machine]
    for task in STAGES:
        pod = driver_resources(spec, task, {})
        assert quantity(pod["requests"]["cpu"]) <= cpu - 0.5, (task, pod)
        assert quantity(pod["requests"]["memory"]) <= memory - 1, (task, pod)


def test_a_stages_resources_are_a_compiled_setting(tmp_path):
    spec, _ = compiled(tmp_path, Target(resources=(("train", "2", "6Gi"), ("evaluate", "1500m", "4Gi"))))
    assert driver_resources(spec, "train-model", {})["requests"] == {"cpu": "2", "memory": "6Gi"}
    assert driver_resources(spec, "evaluate-model", {})["limits"] == {"cpu": "1500m", "memory": "4Gi"}
    extract = driver_resources(spec, "extract-frames", {})["limits"]
    assert (extract["cpu"], extract["memory"]) == RESOURCES["extract"]


# Placeholders that the KFP driver resolves to another value in each run.
PER_RUN = re.compile(r"\{\{\$\.pipeline_(?:job|task)_[a-z_]+\}\}")


def cache_keys(documents: list[dict], run: str) -> dict[str, tuple[bool, str]]:
    """Each task's caching flag and cache key as the KFP driver forms it for a run whose per-run
    placeholders resolve to ``run``, modelled on kubeflow/pipelines backend/src/v2/driver/cache.go
    (getFingerPrint) and backend/src/v2/cacheutils/cache.go (GenerateCacheKey): the input
    parameters' values, the input artifacts (the same ones when their producer was served from the
    cache, so its key stands for them), the outputs' names and types, the image, command and
    arguments, and the PVCs mounted."""
    spec, platform = documents[0], (documents[1] if len(documents) > 1 else {})
    kubernetes = platform.get("platforms", {}).get("kubernetes", {})
    mounts = kubernetes.get("deploymentSpec", {}).get("executors", {})
    keys = {}

    def dag_keys(dag: dict, outer: dict, path: str) -> None:
        memo = {}

        def source(given: dict):
            if "taskOutputArtifact" in given or "taskOutputParameter" in given:
                output = given.get("taskOutputArtifact") or given["taskOutputParameter"]
                return [key(output["producerTask"]),
                        output.get("outputArtifactKey") or output["outputParameterKey"]]
            if "componentInputArtifact" in given or "componentInputParameter" in given:
                return outer[given.get("componentInputArtifact") or given["componentInputParameter"]]
            return PER_RUN.sub(run, json.dumps(given["runtimeValue"]["constant"], sort_keys=True))

        def key(name: str) -> str:
            if name not in memo:
                task = dag["tasks"][name]
                inputs = {f"{kind}:{input_name}": source(given) for kind in ("parameters", "artifacts")
                          for input_name, given in task.get("inputs", {}).get(kind, {}).items()}
                component = spec["components"][task["componentRef"]["name"]]
                if "dag" in component:
                    dag_inputs = {n.split(":", 1)[1]: v for n, v in inputs.items()}
                    dag_keys(component["dag"], dag_inputs, f"{path}{name}/")
                    memo[name] = f"dag {name}"
                else:
                    label = component["executorLabel"]
                    executor = spec["deploymentSpec"]["executors"][label]
                    pvcs = [m["pvcNameParameter"]["runtimeValue"]["constant"]
                            for m in mounts.get(label, {}).get("pvcMount", [])]
                    fingerprint = json.dumps([inputs, component.get("outputDefinitions"), executor, pvcs],
                                             sort_keys=True)
                    memo[name] = hashlib.sha256(fingerprint.encode()).hexdigest()
                    keys[path + name] = (task.get("cachingOptions", {}).get("enableCache", False), memo[name])
            return memo[name]

        for name in dag["tasks"]:
            key(name)

    arguments = {name: ["argument", name] for name in spec["root"]["inputDefinitions"]["parameters"]}
    dag_keys(spec["root"]["dag"], arguments, "")
    return keys


@pytest.mark.parametrize("target", [Target(), Target("vertex")], ids=["kubeflow", "vertex"])
def test_an_identical_rerun_is_served_from_the_cache(tmp_path, target):
    """Compiled twice and keyed for two runs, every cached task has the same key: an identical
    re-run trains, evaluates and uploads nothing again. On Kubeflow the deploy step alone is not
    cached (it restores and checks the service)."""
    first = cache_keys(compiled(tmp_path, target), run="run-a")
    second = cache_keys(compiled(tmp_path, target), run="run-b")
    assert first.keys() == second.keys()
    uncached = {task for task, (cached, _) in first.items() if not cached}
    assert uncached == ({"condition-1/condition-2/deploy-model"} if target.platform == "kubeflow" else set())
    assert {task: key for task, (cached, key) in first.items() if cached} == \
        {task: key for task, (cached, key) in second.items() if cached}


def test_only_a_checkpoint_volume_gives_training_the_runs_id(tmp_path):
    """With a checkpoint PVC, training's checkpoints go to a folder of the run, so its key (and
    those downstream of it) changes with the run; the stages before it are still cached."""
    target = Target(checkpoint_pvc="videoclf-checkpoints")
    first, second = (cache_keys(compiled(tmp_path, target), run=run) for run in ("run-a", "run-b"))
    changed = {task for task in first if first[task] != second[task]}
    assert changed == {"train-model", "evaluate-model", "condition-1/condition-2/deploy-model"}


# What Kubeflow's Argo does with the training task's retry, modelled on the Argo releases that
# KFP 2.16.0 and 2.17.0 install (argo-workflows v3.7.3 and v4.0.5, the same in what follows).
# The controller's templateDefaults of each KFP release: none in 2.16.0; in 2.17.0, those of
# manifests/kustomize/third-party/argo/base/workflow-controller-configmap-patch.yaml.
TEMPLATE_DEFAULTS = {"2.16.0": None, "2.17.0": {"retryStrategy": {"limit": "2", "retryPolicy": "OnError"}}}
# The pods a training attempt can end with, as the kubelet leaves them: killed for memory, an
# error, a graceful node shutdown (the kubelet's nodeshutdown manager: phase Failed and a status
# message), and none at all (deleted with its node before Argo saw it end).
MAIN_EXIT = {"killed for memory": (137, "OOMKilled"), "an error": (1, "Error")}
ENDED_PODS = {
    **{name: {"status": {"phase": "Failed", "containerStatuses": [
        {"name": "main", "state": {"terminated": {"exitCode": code, "reason": reason}}}]}}
       for name, (code, reason) in MAIN_EXIT.items()},
    "a graceful node shutdown": {"status": {
        "phase": "Failed", "reason": "Terminated",
        "message": "Pod was terminated in response to imminent node shutdown."}},
    "the pod deleted with its node": None}


def argo_retry_strategy(task: dict) -> dict:
    """The retryStrategy of the pod template KFP compiles for a task with a retryPolicy, with the
    values it passes: a limit and a back-off in whole seconds, and no retryPolicy
    (kubeflow/pipelines backend/src/v2/compiler/argocompiler/container.go,
    getTaskRetryStrategyFromInput and getTaskRetryParametersWithValues, 2.17.0; its
    test_data/compiled-workflows/pipeline_with_retry.yaml shows "3", "0", "2", "3600")."""
    policy = task["retryPolicy"]
    return {"limit": str(policy["maxRetryCount"]),
            "backoff": {"duration": policy["backoffDuration"].removesuffix("s"),
                        "factor": f"{policy['backoffFactor']:g}",
                        "maxDuration": policy["backoffMaxDuration"].removesuffix("s")}}


def with_defaults(template, defaults):
    """The template merged onto the controller's templateDefaults, its own fields winning and maps
    merged key by key (workflow/controller/operator.go, mergedTemplateDefaultsInto: a strategic
    merge patch of the template onto the defaults)."""
    if not isinstance(template, dict) or not isinstance(defaults, dict):
        return defaults if template is None else template
    return {**defaults, **{key: with_defaults(value, defaults.get(key)) for key, value in template.items()}}


def retry_policy_actual(strategy: dict) -> str:
    """pkg/apis/workflow/v1alpha1/workflow_types.go, RetryStrategy.RetryPolicyActual."""
    return strategy.get("retryPolicy") or ("Always" if strategy.get("expression") else "OnFailure")


def node_phase(pod: dict | None) -> str:
    """The phase Argo gives an attempt's node: Error for a pod that is gone ("pod deleted",
    operator.go podReconciliation); for one that ended Failed, Failed where it has a status
    message or its main container exited non-zero (operator.go, inferFailedReason)."""
    if pod is None:
        return "Error"
    if pod["status"].get("message"):
        return "Failed"
    main = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "main")
    return "Failed" if main["state"]["terminated"]["exitCode"] else "Succeeded"


def retried(strategy: dict, phase: str, attempt: int, ended_s: float) -> bool:
    """Whether Argo starts another attempt after attempt ``attempt`` (1 the first) ended in
    ``phase``, ``ended_s`` seconds after the first attempt started (operator.go,
    processNodeRetries): not past the back-off's maxDuration, nor when the back-off would end past
    it; only the phases the policy covers (OnTransientError: a transient API or network error,
    which none of these is); at most ``limit`` retries."""
    backoff = strategy.get("backoff") or {}
    if backoff.get("maxDuration"):
        wait = int(backoff["duration"]) * int(backoff.get("factor") or 1) ** (attempt - 1)
        if ended_s + wait > int(backoff["maxDuration"]):
            return False
    covered = {"Always": {"Failed", "Error"}, "OnFailure": {"Failed"}, "OnError": {"Error"},
               "OnTransientError": set()}[retry_policy_actual(strategy)]
    return phase in covered and ("limit" not in strategy or attempt <= int(strategy["limit"]))


@pytest.mark.parametrize(("release", "retried_ends"), [
    ("2.16.0", {"killed for memory", "an error", "a graceful node shutdown"}),
    ("2.17.0", {"the pod deleted with its node"})])
def test_which_training_failures_a_kubeflow_release_retries(tmp_path, release, retried_ends):
    """KFP 2.17.0's Argo defaults reverse what a retry covers: a training container that fails
    (even two hours in: the retry window is the target's, not the SDK's hour) is retried on
    2.16.0 and not on 2.17.0, a pod lost with its node the other way round; and the doctor's
    reading of the controller's settings agrees with this model."""
    from pipelines.preflight import train_retry_policy

    spec, _ = compiled(tmp_path, Target("kubeflow"))
    template = {"name": "retry-system-container-impl",
                "retryStrategy": argo_retry_strategy(spec["root"]["dag"]["tasks"]["train-model"])}
    strategy = with_defaults(template, TEMPLATE_DEFAULTS[release])["retryStrategy"]
    assert strategy["limit"] == "3"  # the task's own, not the defaults' 2
    found = {end for end, pod in ENDED_PODS.items()
             if retried(strategy, node_phase(pod), 1, ended_s=2 * 3600)}
    assert found == retried_ends
    assert all(retried(strategy, node_phase(ENDED_PODS[end]), 3, ended_s=60) for end in retried_ends)
    assert not any(retried(strategy, node_phase(pod), 4, ended_s=60) for pod in ENDED_PODS.values())
    defaults = TEMPLATE_DEFAULTS[release]
    settings = defaults and yaml.safe_dump({"spec": {"templateDefaults": defaults}})
    assert train_retry_policy(settings) == retry_policy_actual(strategy)
    [vertex] = compiled(tmp_path, Target("vertex"))  # there the field caps each back-off
    assert vertex["root"]["dag"]["tasks"]["train-model"]["retryPolicy"]["backoffMaxDuration"] == "3600s"


def test_vertex_gets_the_machine_spec_enum_and_no_kubernetes_spec(tmp_path):
    [spec] = compiled(tmp_path, Target("vertex"))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["accelerator_type"]["defaultValue"] == "NVIDIA_TESLA_T4"
    for task, stage in TASK_STAGES.items():  # Vertex AI sizes its machine by the limits
        resources = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]["resources"]
        assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == RESOURCES[stage]
    assert "platforms" not in spec


def deploy_gate(spec: dict) -> tuple[list[str], dict]:
    """The trigger conditions from the root to the deploy step's DAG, and that DAG's tasks."""
    conditions, dag = [], spec["root"]["dag"]
    while gates := [t for t in dag["tasks"] if t.startswith("condition-")]:
        [name] = gates
        conditions.append(dag["tasks"][name]["triggerPolicy"]["condition"])
        dag = spec["components"][dag["tasks"][name]["componentRef"]["name"]]["dag"]
    return conditions, dag["tasks"]


GATE = ["inputs.parameter_values['pipelinechannel--deploy'] == true",
        "inputs.parameter_values['pipelinechannel--evaluate-model-test_accuracy'] "
        ">= inputs.parameter_values['pipelinechannel--min_accuracy']"]


def test_kubeflow_deploys_a_kserve_service_behind_the_gate(tmp_path):
    spec, _ = compiled(tmp_path, Target())
    conditions, tasks = deploy_gate(spec)
    assert conditions == GATE and list(tasks) == ["deploy-model"]
    image = tasks["deploy-model"]["inputs"]["parameters"]["serving_image"]["runtimeValue"]["constant"]
    assert image == f"{REGISTRY}/serving:0123456789ab"
    assert spec["deploymentSpec"]["executors"]["exec-deploy-model"]["container"]["image"] == image


def test_vertex_uploads_a_new_version_and_deploys_it_behind_the_gate(tmp_path):
    """On Vertex AI, Google Cloud Pipeline Components upload the model as a version of the parent
    model, typed as the UnmanagedContainerModel its upload takes, deploy it to the endpoint, and
    the models it replaces are undeployed after; the upload request carries the serving image's
    container spec, as GCPC's own launcher builds it from the artifact."""
    from google_cloud_pipeline_components import _image
    from google_cloud_pipeline_components.container.v1.model.upload_model.remote_runner import (
        append_unmanaged_model_artifact_into_payload,
    )
    from google_cloud_pipeline_components.types.artifact_types import UnmanagedContainerModel
    from kfp.dsl import Model

    from components.serve_model.vertex import vertex_serving_model

    parent = "projects/p/locations/europe-west4/models/123"
    endpoint = "projects/p/locations/europe-west4/endpoints/456"
    [spec] = compiled(tmp_path, Target("vertex", vertex_parent_model=parent, vertex_endpoint=endpoint))
    conditions, tasks = deploy_gate(spec)
    assert conditions == GATE
    assert sorted(tasks) == ["importer", "importer-2", "model-deploy", "model-upload", "undeploy-replaced",
                             "vertex-serving-model"]
    executors = spec["deploymentSpec"]["executors"]

    def imported(task: dict, name: str) -> str:
        producer = task["inputs"]["artifacts"][name]["taskOutputArtifact"]["producerTask"]
        return executors[f"exec-{producer}"]["importer"]["metadata"]["resourceName"]

    upload, deploy, undeploy = tasks["model-upload"], tasks["model-deploy"], tasks["undeploy-replaced"]
    assert imported(upload, "parent_model") == parent and imported(deploy, "endpoint") == endpoint
    assert upload["inputs"]["artifacts"]["unmanaged_container_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "unmanaged_model", "producerTask": "vertex-serving-model"}
    serving_outputs = spec["components"]["comp-vertex-serving-model"]["outputDefinitions"]["artifacts"]
    assert serving_outputs["unmanaged_model"]["artifactType"]["schemaTitle"] == \
        "google.UnmanagedContainerModel"
    assert deploy["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "model-upload"
    assert deploy["inputs"]["parameters"]["traffic_split"]["runtimeValue"]["constant"] == {"0": 100}
    assert "model-deploy" in undeploy["dependentTasks"]  # once the new model serves
    assert imported(undeploy, "endpoint") == endpoint
    assert undeploy["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "model-upload"
    for op in ("model-upload", "model-deploy", "vertex-serving-model", "undeploy-replaced"):
        assert executors[f"exec-{op}"]["container"]["image"] == _image.GCPC_IMAGE_TAG  # GCPC's, not ours
    for op in ("vertex-serving-model", "undeploy-replaced"):  # ours are sized as the deploy stage
        resources = executors[f"exec-{op}"]["container"]["resources"]
        assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == RESOURCES["deploy"]
    serving_image = tasks["vertex-serving-model"]["inputs"]["parameters"]["serving_image"]["runtimeValue"]
    assert serving_image["constant"] == f"{REGISTRY}/serving:0123456789ab"

    unmanaged = UnmanagedContainerModel(uri="", metadata={})
    vertex_serving_model.python_func(model=Model(uri="gs://bucket/root/train-model/model"), name="ucf10",
                                     serving_image=serving_image["constant"], port=8080,
                                     unmanaged_model=unmanaged)
    executor_input = {"inputs": {"artifacts": {"unmanaged_container_model": {"artifacts": [
        {"uri": unmanaged.uri, "metadata": unmanaged.metadata}]}}}}
    request = append_unmanaged_model_artifact_into_payload(json.dumps(executor_input), {})
    assert request["artifact_uri"] == "gs://bucket/root/train-model/model"  # Vertex sets AIP_STORAGE_URI
    container = request["container_spec"]
    assert container["image_uri"] == serving_image["constant"]
    assert container["command"] == ["videoclf", "serve"]
    assert (container["health_route"], container["predict_route"]) == ("/health", "/predict")
    assert container["ports"] == [{"container_port": 8080}]

    [spec] = compiled(tmp_path, Target("vertex"))  # no endpoint given: the one of the deploy's name
    _, tasks = deploy_gate(spec)
    assert sorted(tasks) == ["model-deploy", "model-upload", "undeploy-replaced", "vertex-endpoint",
                             "vertex-serving-model"]
    assert tasks["vertex-endpoint"]["inputs"]["parameters"]["name"]["componentInputParameter"] == \
        "pipelinechannel--deploy_name"
    assert "parent_model" not in tasks["model-upload"]["inputs"].get("artifacts", {})


def test_extraction_fans_out_over_pods_only_when_asked(tmp_path):
    spec, _ = compiled(tmp_path, Target(extract_parts=3))
    [loop] = [t for t in spec["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == "extract-parts"]
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2]
    gather = spec["components"]["comp-gather-frames"]["inputDefinitions"]["artifacts"]["parts"]
    assert gather["isArtifactList"]
    assert spec["root"]["dag"]["tasks"]["train-model"]["inputs"]["artifacts"]["frames"][
        "taskOutputArtifact"]["producerTask"] == "gather-frames"


def test_a_checkpoint_pvc_is_mounted_and_s3_credentials_reach_every_task(tmp_path):
    target = Target(checkpoint_pvc="videoclf-checkpoints", s3_secret="mlpipeline-minio-artifact",
                    s3_endpoint="http://seaweedfs.kubeflow:9000")
    spec, platform = compiled(tmp_path, target)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    [mount] = executors["exec-train-model"]["pvcMount"]
    assert mount["mountPath"] == CHECKPOINT_MOUNT
    assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "videoclf-checkpoints"
    train_inputs = spec["root"]["dag"]["tasks"]["train-model"]["inputs"]["parameters"]
    assert train_inputs["checkpoint_volume"]["runtimeValue"]["constant"] == CHECKPOINT_MOUNT
    assert train_inputs["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    for task in STAGES:
        [secret] = executors[f"exec-{task}"]["secretAsEnv"]
        assert {m["envVar"] for m in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        env = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]["env"]
        assert {"name": "AWS_ENDPOINT_URL", "value": "http://seaweedfs.kubeflow:9000"} in env


def test_caching_can_be_turned_off_in_every_dag(tmp_path):
    spec, _ = compiled(tmp_path, Target(extract_parts=2), enable_caching=False)
    assert {task["cachingOptions"].get("enableCache", False) for task in all_tasks(spec)} == {False}


def test_yaml_loads_back_as_a_pipeline_with_the_tutorials_defaults():
    from kfp import components

    pipeline = components.load_component_from_file(str(COMPILED_YAML))
    inputs = pipeline.component_spec.inputs
    defaults = {name: spec.default for name, spec in inputs.items()}
    assert defaults["num_classes"] == 10
    per_class = (defaults["train_per_class"], defaults["val_per_class"], defaults["test_per_class"])
    assert per_class == (30, 10, 10)
    assert (defaults["n_frames"], defaults["frame_step"], defaults["height"]) == (10, 15, 224)
    assert (defaults["epochs"], defaults["batch_size"]) == (50, 8)
    assert (defaults["recipe"], defaults["learning_rate"]) == ("videoclf", 0.0)  # 0: the recipe's
    assert defaults["source_url"] == "https://storage.googleapis.com/thumos14_files/UCF101_videos.zip"


def test_cli_compile_writes_the_same_yaml(tmp_path):
    out = tmp_path / "p.yaml"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--output", str(out)],
                   check=True, capture_output=True)
    assert out.read_text() == COMPILED_YAML.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["gs"], indirect=True)
def test_end_to_end_local_run(tmp_path, kube_api, bucket):
    """The whole pipeline under kfp.local, through the CLI, at a tiny size, its checkpoints in
    gs:// (the Cloud Storage emulator), deployed to a loopback Kubernetes API as its accuracy
    passes the gate, and waited for until Ready. Training is a sweep of two trials, one of which
    cannot learn (a learning rate of 1e-9; 0 is the recipe's own): the other is kept, and it
    alone is evaluated and deployed."""
    import fsspec

    isvc = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
    kube_api.statuses[f"{isvc}/video-classifier"] = [
        {}, {"url": "http://video-classifier.default.example.com",
             "conditions": [{"type": "Ready", "status": "True"}],
             "components": {"predictor": {"latestCreatedRevision": "video-classifier-predictor-00001",
                                          "latestReadyRevision": "video-classifier-predictor-00001"}}}]
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--output", str(out), *LEARNABLE_DEMO,
         "--extract-parts", "2", "--sweep", "learning_rate=0,1e-9", "--patience", "3",  # 1e-9 stops early
         "--checkpoint-dir", f"{bucket}/checkpoints/demo", "--deploy", "true",
         "--min-accuracy", str(BETTER_THAN_CHANCE)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == 4 and summary["test_accuracy"] >= BETTER_THAN_CHANCE
    fs = fsspec.filesystem("gs")  # each trial checkpoints to a folder of its own
    state = json.loads(fs.cat_file(f"{bucket}/checkpoints/demo/trial-0/state.json"))
    assert state["best"] == f"best-{summary['kept_epoch']:04d}.keras"  # the kept trial's own checkpoints
    assert fs.exists(f"{bucket}/checkpoints/demo/trial-0/{state['best']}")
    assert fs.exists(f"{bucket}/checkpoints/demo/trial-1/state.json")
    assert summary["params"]["epochs"] == DEMO_EPOCHS and summary["params"]["source_url"].startswith("http://127.0.0.1:")
    with open(summary["report"]) as f:
        assert "Confusion matrix" in f.read()
    with open(summary["confusion_matrix"], "rb") as f:
        assert f.read(4) == b"\x89PNG"
    from components.train_model.model_folder import load_model

    model, classes = load_model(Path(summary["model"]).parent)
    assert classes == summary["classes"] and model.output_shape == (None, 4)

    # The sweep: the trial that learns is kept on validation, evaluation ran once (on its model),
    # and the table lists both trials.
    from components.common import file_sha256

    run_dir = Path(summary["run_dir"])
    assert summary["kept_trial"] == "trial-0"
    rows = [line.split("|")[1:-1] for line in Path(summary["trials"]).read_text().splitlines()
            if line.startswith("| trial-")]
    assert [(cells[0].strip(), float(cells[1]), cells[-1].strip()) for cells in rows] == [
        ("trial-0", 0.0, "yes"), ("trial-1", 1e-9, "")]
    assert float(rows[0][3]) < float(rows[1][3])  # the kept validation losses
    assert [p.relative_to(run_dir) for p in run_dir.glob("**/evaluate-model")] == [Path("evaluate-model")]
    [trial_0] = run_dir.glob("for-loop-*-iteration-0/train-model")
    assert file_sha256(Path(summary["model"])) == file_sha256(trial_0 / "model" / "model.keras")
    with open(summary["report"]) as f:
        assert "<h2>Sweep</h2>" in f.read()

    # Lineage: every artifact names its producer, parameters, inputs and content hash.
    outputs = json.loads((trial_0 / "executor_output.json").read_text())
    meta = outputs["artifacts"]["model"]["artifacts"][0]["metadata"]
    assert meta["producer"] == "train_model" and meta["parameters"]["epochs"] == DEMO_EPOCHS
    assert meta["inputs"] == {"frames": str(run_dir / "gather-frames" / "frames")}
    assert meta["sha256"] == file_sha256(trial_0 / "model" / "model.keras")
    lineage = subprocess.run([sys.executable, "-c", CORE_ONLY + "main()", "lineage", str(run_dir)],
                             capture_output=True, text=True, timeout=120)
    assert lineage.returncode == 0, lineage.stderr
    text = "\n" + lineage.stdout
    for edge in ("<- videos from download-subset", r"<- parts from for-loop-\d+-iteration-0/extract-frames",
                 r"<- parts from for-loop-\d+-iteration-1/extract-frames", "<- frames from gather-frames",
                 r"<- trials from for-loop-\d+-iteration-0/train-model",
                 r"<- trials from for-loop-\d+-iteration-1/train-model", "<- model from select-trial"):
        assert re.search(edge, text), edge
    stages = ["\ndownload-subset", "\ngather-frames", "/train-model", "\nselect-trial", "\nevaluate-model"]
    assert [text.index(s) for s in stages] == sorted(text.index(s) for s in stages)
    assert text.index("\ndeploy-model") > text.index("\nselect-trial")
    assert "<svg" in (run_dir / "lineage.svg").read_text()

    # The deploy gate passed: the InferenceService of its manifest artifact was created, and the
    # step went on until it was Ready (the second status).
    manifest = yaml.safe_load((run_dir / "deploy-model" / "manifest").read_text())
    assert [(r["method"], r["path"]) for r in kube_api.requests] == [
        ("GET", f"{isvc}/video-classifier"), ("POST", isvc), ("GET", f"{isvc}/video-classifier"),
        ("GET", f"{isvc}/video-classifier")]
    assert kube_api.requests[1]["body"] == manifest
    [container] = manifest["spec"]["predictor"]["containers"]
    assert container["args"][:2] == ["--model", str(Path(summary["model"]).parent)]


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["s3"], indirect=True)
def test_a_run_reads_its_source_and_keeps_its_checkpoints_in_a_bucket(bucket, demo_zip, model_dir, tmp_path,
                                                                      kube_api):
    """videoclf run with the source zip, the checkpoints and the init model in s3:// (moto's S3
    server, as a MinIO or SeaweedFS would be reached), through fsspec; asked to deploy a model of
    one epoch only if it is perfect, it deploys nothing and the run succeeds. (The end-to-end run
    keeps its checkpoints in gs://; test_sources reads a source from either.)"""
    import fsspec

    from components.common import file_sha256
    from components.train_model.model_folder import CLASSES_FILE, MODEL_FILE, SAMPLING_FILE

    fs = fsspec.filesystem(bucket.split("://")[0])
    fs.put_file(str(demo_zip), f"{bucket}/datasets/UCF101.zip")
    for name in (MODEL_FILE, CLASSES_FILE, SAMPLING_FILE):
        fs.put_file(str(Path(model_dir) / name), f"{bucket}/runs/0/model/{name}")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--output", str(tmp_path), "--source-url",
         f"{bucket}/datasets/UCF101.zip", "--checkpoint-dir", f"{bucket}/checkpoints/run-1",
         "--num-classes", "4", "--train-per-class", "4", "--val-per-class", "2", "--test-per-class", "2",
         "--n-frames", "4", "--frame-step", "2", "--height", "32", "--width", "32", "--epochs", "1",
         "--random-flip", "false", "--init-model", f"{bucket}/runs/0/model",
         "--deploy", "true", "--min-accuracy", "1.0",
         "--deploy-timeout-seconds", "30"],  # a gate left open by mistake fails in seconds, not minutes
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["params"]["source_url"] == f"{bucket}/datasets/UCF101.zip"
    assert summary["test_accuracy"] < 1.0  # one epoch: the deploy gate stays shut
    assert kube_api.requests == [] and not (Path(summary["run_dir"]) / "deploy-model").exists()
    fs.invalidate_cache()
    state = json.loads(fs.cat_file(f"{bucket}/checkpoints/run-1/state.json"))
    assert state["epoch"] == 1 and fs.exists(f"{bucket}/checkpoints/run-1/{state['best']}")
    # The init model reached training through the pipeline's importer: its weights started the
    # run (their hash is in the checkpoint's fingerprint) and the model names it as an input.
    assert state["fingerprint"]["init_model"] == file_sha256(Path(model_dir) / MODEL_FILE)
    outputs = json.loads((Path(summary["run_dir"]) / "train-model" / "executor_output.json").read_text())
    assert outputs["artifacts"]["model"]["artifacts"][0]["metadata"]["inputs"]["init_model"] == \
        f"{bucket}/runs/0/model"
    videos = Path(summary["run_dir"]) / "download-subset" / "dataset"
    manifest = json.loads((videos / "manifest.json").read_text())
    assert manifest["source"] == f"{bucket}/datasets/UCF101.zip" and manifest["counts"]["train"] == 16


# Runs the CLI with only what `pip install .` installs: the stages' extras cannot be imported.
CORE_ONLY = """
import importlib.abc, sys
EXTRAS = {"tensorflow", "keras", "cv2", "sklearn", "scipy", "seaborn", "einops", "remotezip", "gcsfs",
          "s3fs", "fsspec", "google_crc32c", "tensorboard", "jax", "aiplatform"}
class Extras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError(f"{name} is not in the core install")
sys.meta_path.insert(0, Extras())
sys.argv[0] = "videoclf"
from pipelines.cli import main
"""


def test_a_failing_task_ends_the_run_with_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--output", str(tmp_path),
         "--source-url", "http://127.0.0.1:9/UCF101.zip"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "cannot read the source http://127.0.0.1:9/UCF101.zip" in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("videoclf run:") and "download-subset" in last_line
    assert not (tmp_path / "summary.json").exists()
