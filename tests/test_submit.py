"""Compiling for a cluster and submitting to Kubeflow Pipelines (against a loopback server
implementing the v2beta1 endpoints that kfp.Client uses, its healthz as
kubeflow/pipelines backend/src/apiserver/main.go serves it) and to Vertex AI (up to the
PipelineJob it would submit)."""

import json
import tempfile
from pathlib import Path

import pytest
import yaml

from components import images
from pipelines.cli import main
from pipelines.targets import DEFAULT_TARGET, SubmitError, Target
from pipelines.vertex_runner import vertex_job
from pipelines.video_classification import PIPELINE_NAME, all_tasks, compile_pipeline
from tests.conftest import free_port
from tests.loopback import JsonHandler, start

REGISTRY = "europe-docker.pkg.dev/my-project/videoclf"


class KfpApi(JsonHandler):
    """The few KFP v2beta1 endpoints of a submission: healthz, experiments, runs."""

    requests: list  # (method, path, JSON body) of each request, set per server
    refuse_runs = False
    version = "2.5.0"

    def answer(self, method: str) -> None:
        body = self.json_body()
        self.requests.append((method, self.path, body))
        if method == "POST" and self.path == "/apis/v2beta1/experiments":
            self.reply(200, {"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif method == "POST" and self.refuse_runs:
            self.reply(400, {"error": "pipeline spec is invalid", "code": 3})
        elif method == "POST":
            self.reply(200, {"run_id": "run-1", "display_name": body["display_name"], "state": "PENDING"})
        elif self.path.startswith("/apis/v2beta1/runs/"):
            self.reply(200, {"run_id": self.path.rsplit("/", 1)[1], "state": "SUCCEEDED"})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self.reply(200, {})  # no experiment of that name yet
        else:  # healthz
            self.reply(200, {"commit_sha": "0123abc", "tag_name": self.version, "multi_user": False})


@pytest.fixture
def kfp_api():
    """A loopback KFP API: yields (url, handler class), whose ``requests`` it records."""
    handler = type("Handler", (KfpApi,), {"requests": []})
    server = start(handler)
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def committed_images(monkeypatch, tmp_path):
    """Images tagged with a commit, as a clean checkout tags them; no digests recorded."""
    monkeypatch.setattr(images, "source_tag", lambda: "0123456789ab")
    monkeypatch.setattr(images, "DIGESTS", tmp_path / "digests.json")
    monkeypatch.delenv("VIDEOCLF_TAG", raising=False)
    monkeypatch.delenv("VIDEOCLF_REGISTRY", raising=False)


def compiled_specs(target: Target = DEFAULT_TARGET) -> tuple[dict, dict]:
    """The pipeline spec and platform (Kubernetes) spec compiled for a Kubeflow cluster."""
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_pipeline(Path(tmp) / "p.yaml", target, images.cluster_images(REGISTRY))
        return tuple(yaml.safe_load_all(path.read_text()))


def task_caching(spec: dict) -> set:
    """The enableCache settings of every task of the pipeline and its sub-DAGs (unset is false)."""
    return {task.get("cachingOptions", {}).get("enableCache", False) for task in all_tasks(spec)}


def test_kubeflow_run_gets_the_compiled_pipeline_and_the_parameters(kfp_api, capsys):
    url, api = kfp_api
    main(["submit", "--host", url, "--registry", REGISTRY, "--experiment", "nightly", "--run-name",
          "ucf10-a", "--no-cache", "--num-classes", "5", "--epochs", "3", "--gpu-node-selector",
          '{"pool": "gpu"}', "--wait"])
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer == {"run_id": "run-1", "url": f"{url}/#/runs/details/run-1", "state": "SUCCEEDED"}

    posts = {path: body for method, path, body in api.requests if method == "POST"}
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "nightly"
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "ucf10-a" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"num_classes": 5, "epochs": 3,
                                                   "gpu_node_selector": {"pool": "gpu"}}
    expected, platform_spec = compiled_specs()
    sent = run["pipeline_spec"]["pipeline_spec"]
    assert {e["container"]["image"] for e in sent["deploymentSpec"]["executors"].values()} == {
        f"{REGISTRY}/{name}:0123456789ab" for name in images.NAMES}
    assert run["pipeline_spec"]["platform_spec"] == platform_spec  # node selector, tolerations
    assert sent["pipelineInfo"]["name"] == PIPELINE_NAME
    assert sent["deploymentSpec"] == expected["deploymentSpec"]  # the images and commands
    assert sent["root"]["inputDefinitions"] == expected["root"]["inputDefinitions"]
    assert task_caching(sent) == {False} and True in task_caching(expected)
    assert ("GET", "/apis/v2beta1/runs/run-1", None) in api.requests
    assert ("GET", "/apis/v2beta1/healthz", None) in api.requests


def test_a_refused_run_is_a_clear_error(kfp_api):
    url, api = kfp_api
    api.refuse_runs = True
    with pytest.raises(SystemExit, match=r"refused the request: HTTP 400 .*pipeline spec is invalid") as e:
        main(["submit", "--host", url, "--registry", REGISTRY])
    assert url in str(e.value)


def test_no_server_is_a_clear_error():
    port = free_port()  # nothing listens on it
    with pytest.raises(SystemExit, match=rf"cannot reach the Kubeflow Pipelines API at http://127.0.0.1:{port}"):
        main(["submit", "--host", f"http://127.0.0.1:{port}", "--registry", REGISTRY])


def test_vertex_job_holds_the_pipeline_root_parameters_and_caching():
    from google.auth.credentials import AnonymousCredentials

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "p.yaml", Target("vertex"), images.cluster_images(REGISTRY),
                                   enable_caching=False)
        job = vertex_job(package, {"num_classes": 5, "split_by": "file"}, "my-project", "europe-west4",
                         "gs://my-bucket/runs", run_name="ucf10-b", enable_caching=False,
                         credentials=AnonymousCredentials())
    resource = job._gca_resource
    assert resource.display_name == "ucf10-b"
    assert resource.runtime_config.gcs_output_directory == "gs://my-bucket/runs"
    values = resource.runtime_config.parameter_values
    assert values["num_classes"] == 5 and values["split_by"] == "file"
    assert job.project == "my-project" and job.location == "europe-west4"
    spec = type(resource).to_dict(resource)["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    assert task_caching(spec) == {False}


def test_vertex_needs_a_gcs_root_and_its_flags(capsys, tmp_path):
    with pytest.raises(SubmitError, match="must be a gs:// folder"):
        vertex_job(tmp_path / "p.yaml", {}, "p", "us-central1", "/tmp/runs")
    with pytest.raises(SystemExit):
        main(["submit", "--vertex", "--project", "p"])
    assert "--vertex needs --region, --pipeline-root" in capsys.readouterr().err


@pytest.mark.parametrize(("version", "parts", "refused"), [
    ("2.4.0", 1, True), ("2.5.0", 1, False), ("v2.14.3", 1, False), ("2.13.0", 2, True),
    ("2.14.0", 2, False)])
def test_an_older_backend_is_refused_before_the_run(kfp_api, version, parts, refused):
    url, api = kfp_api
    api.version = version
    args = ["submit", "--host", url, "--registry", REGISTRY, "--extract-parts", str(parts)]
    if refused:
        needed = "2.14.0" if parts > 1 else "2.5.0"
        with pytest.raises(SystemExit, match=rf"backend at {url} is {version}; this pipeline needs {needed}"):
            main(args)
        assert not any(method == "POST" for method, _, _ in api.requests)
    else:
        main(args)
        assert any(path == "/apis/v2beta1/runs" for method, path, _ in api.requests)


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "URL", "--accelerator-type", "NVIDIA_TESLA_T4"],
     r"not a Kubernetes resource name: on Kubeflow pass --accelerator-type nvidia.com/gpu .*"
     r"--gpu-node-selector '\{\"cloud.google.com/gke-accelerator\": \"nvidia-tesla-t4\"\}'"),
    (["--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", "--accelerator-type",
      "nvidia.com/gpu"], r"not a Vertex AI accelerator: pass its machine-spec name, e.g. "
                         r"--accelerator-type NVIDIA_TESLA_T4"),
    (["--host", "URL", "--accelerator-count", "one"], "accelerator_count must be a whole number"),
    (["--host", "URL", "--checkpoint-dir", "/data/checkpoints"],
     "on the training pod's own disk.*--checkpoint-pvc NAME"),
    (["--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", "--checkpoint-pvc", "c"],
     "--checkpoint-pvc is for Kubeflow"),
    (["--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", "--gpu-node-selector",
      '{"a": "b"}'], "--gpu-node-selector is for Kubernetes"),
    (["--host", "URL", "--vertex-endpoint", "projects/p/locations/l/endpoints/1"],
     "--vertex-endpoint is for Vertex AI"),
    (["--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", "--vertex-parent-model",
      "123"], r"--vertex-parent-model must be a resource name, projects/P/locations/L/models/ID, got '123'"),
    (["--host", "URL", "--deploy", "true", "--min-accuracy", "80"],
     "min_accuracy is a test accuracy, from 0 to 1"),
])
def test_settings_the_platform_would_not_run_are_refused(kfp_api, args, message):
    url, api = kfp_api
    with pytest.raises(SystemExit, match=message):
        main(["submit", *[url if a == "URL" else a for a in args], "--registry", REGISTRY])
    assert not any(method == "POST" for method, _, _ in api.requests)


def test_a_cluster_yaml_needs_a_registry_and_an_immutable_tag(tmp_path, monkeypatch):
    out = tmp_path / "p.yaml"
    for registry in ([], ["--registry", "localhost/videoclf"]):
        with pytest.raises(SystemExit, match="needs the registry the cluster pulls the images from.*"
                                             "--registry or set VIDEOCLF_REGISTRY"):
            main(["compile", "--target", "kubeflow", "--output", str(out), *registry])
    assert not out.exists()
    monkeypatch.setattr(images, "source_tag", lambda: "0123456789ab-dirty-1a2b3c4d")
    with pytest.raises(SystemExit, match="uncommitted changes.*make push"):
        main(["compile", "--target", "vertex", "--output", str(out), "--registry", REGISTRY])
    # make push records each image's digest: the YAML then names that exact build.
    tagged = f"{REGISTRY}/trainer:0123456789ab-dirty-1a2b3c4d"
    images.DIGESTS.write_text(json.dumps({f"{REGISTRY}/{n}:0123456789ab-dirty-1a2b3c4d": f"sha256:{n:0>64}"
                                          for n in images.NAMES}))
    main(["compile", "--target", "vertex", "--output", str(out), "--registry", REGISTRY])
    [spec] = yaml.safe_load_all(out.read_text())
    train = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]["image"]
    assert train == f"{tagged}@sha256:{'trainer':0>64}"
