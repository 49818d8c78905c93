"""Submission to Kubeflow Pipelines (against a loopback server implementing the v2beta1 endpoints
that kfp.Client uses) and to Vertex AI (up to the PipelineJob it would submit)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from pipelines.cli import main
from pipelines.submit import SubmitError, all_tasks, compiled_package, vertex_job
from pipelines.video_classification import PIPELINE_NAME


class KfpApi(BaseHTTPRequestHandler):
    """The few KFP v2beta1 endpoints of a submission: healthz, experiments, runs."""

    requests: list  # (method, path, JSON body) of each request, set per server
    refuse_runs = False

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/runs/"):
            self.reply(200, {"run_id": self.path.rsplit("/", 1)[1], "state": "SUCCEEDED"})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self.reply(200, {})  # no experiment of that name yet
        else:
            self.reply(200, {"multi_user": False})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self.reply(200, {"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.refuse_runs:
            self.reply(400, {"error": "pipeline spec is invalid", "code": 3})
        else:
            self.reply(200, {"run_id": "run-1", "display_name": body["display_name"], "state": "PENDING"})


@pytest.fixture
def kfp_api():
    """A loopback KFP API: yields (url, handler class), whose ``requests`` it records."""
    handler = type("Handler", (KfpApi,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def compiled_specs() -> tuple[dict, dict]:
    """The compiled pipeline spec and platform (Kubernetes) spec."""
    with compiled_package() as package:
        pipeline_spec, platform_spec = yaml.safe_load_all(package.read_text())
    return pipeline_spec, platform_spec


def task_caching(spec: dict) -> set:
    """The enableCache settings of every task of the pipeline and its sub-DAGs (unset is false)."""
    return {task.get("cachingOptions", {}).get("enableCache", False) for task in all_tasks(spec)}


def test_kubeflow_run_gets_the_compiled_pipeline_and_the_parameters(kfp_api, capsys):
    url, api = kfp_api
    main(["submit", "--host", url, "--experiment", "nightly", "--run-name", "ucf10-a", "--no-cache",
          "--num-classes", "5", "--epochs", "3", "--gpu-node-selector", '{"pool": "gpu"}', "--wait"])
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
    assert run["pipeline_spec"]["platform_spec"] == platform_spec  # node selector, tolerations
    assert sent["pipelineInfo"]["name"] == PIPELINE_NAME
    assert sent["deploymentSpec"] == expected["deploymentSpec"]  # the images and commands
    assert sent["root"]["inputDefinitions"] == expected["root"]["inputDefinitions"]
    assert task_caching(sent) == {False} and True in task_caching(expected)
    assert ("GET", "/apis/v2beta1/runs/run-1", None) in api.requests


def test_a_refused_run_is_a_clear_error(kfp_api):
    url, api = kfp_api
    api.refuse_runs = True
    with pytest.raises(SystemExit, match=r"refused the request: HTTP 400 .*pipeline spec is invalid") as e:
        main(["submit", "--host", url])
    assert url in str(e.value)


def test_no_server_is_a_clear_error():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SystemExit, match=rf"cannot reach the Kubeflow Pipelines API at http://127.0.0.1:{port}"):
        main(["submit", "--host", f"http://127.0.0.1:{port}"])


def test_vertex_job_holds_the_pipeline_root_parameters_and_caching():
    from google.auth.credentials import AnonymousCredentials

    with compiled_package(enable_caching=False, kubernetes=False) as package:
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


def test_vertex_needs_a_gcs_root_and_its_flags(capsys):
    with compiled_package() as package, pytest.raises(SubmitError, match="must be a gs:// folder"):
        vertex_job(package, {}, "p", "us-central1", "/tmp/runs")
    with pytest.raises(SystemExit):
        main(["submit", "--vertex", "--project", "p"])
    assert "--vertex needs --region, --pipeline-root" in capsys.readouterr().err
