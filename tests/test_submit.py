"""Compiling for a cluster and submitting to Kubeflow Pipelines (against a loopback server
implementing the v2beta1 endpoints that kfp.Client uses, its healthz as
kubeflow/pipelines backend/src/apiserver/main.go serves it, and a multi-user server's refusal of a
request without an identity, backend/src/apiserver/auth/auth.go), the preflight of
``videoclf submit`` and ``videoclf doctor`` (against that server and the loopback Kubernetes API
of tests/kube_api.py), and Vertex AI (up to the PipelineJob it would submit)."""

import json
import tempfile
from pathlib import Path

import pytest
import yaml

from components import images
from pipelines.cli import main
from pipelines.preflight import RBAC_DIR
from pipelines.targets import DEFAULT_TARGET, SubmitError, Target
from pipelines.vertex_runner import vertex_job
from pipelines.video_classification import PIPELINE_NAME, all_tasks, compile_pipeline
from tests.conftest import free_port
from tests.loopback import JsonHandler, start

REGISTRY = "europe-docker.pkg.dev/my-project/videoclf"


class KfpApi(JsonHandler):
    """The few KFP v2beta1 endpoints of a submission: healthz, experiments, runs. With ``token``
    set, it is multi-user and answers a request without that bearer token as the API server
    answers one without an identity (HTTP 401, gRPC code 16, Unauthenticated)."""

    requests: list  # (method, path, JSON body) of each request, set per server
    authorizations: list  # the Authorization header of each request but healthz
    refuse_runs = False
    version = "2.5.0"
    token = None

    def answer(self, method: str) -> None:
        body = self.json_body()
        self.requests.append((method, self.path, body))
        if not self.path.startswith("/apis/v2beta1/healthz"):
            self.authorizations.append(self.headers.get("Authorization"))
            if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
                message = "Request header error: there is no user identity header."
                return self.reply(401, {"error": message, "code": 16, "message": message})
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
            self.reply(200, {"commit_sha": "0123abc", "tag_name": self.version,
                             "multi_user": self.token is not None})


@pytest.fixture
def kfp_api():
    """A loopback KFP API: yields (url, handler class), whose ``requests`` it records."""
    handler = type("Handler", (KfpApi,), {"requests": [], "authorizations": []})
    server = start(handler)
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def committed_images(monkeypatch, tmp_path):
    """Images tagged with a commit, as a clean checkout tags them; no digests recorded; no
    kubeconfig (the kube_api fixture gives one) and no token file."""
    monkeypatch.setattr(images, "source_tag", lambda: "0123456789ab")
    monkeypatch.setattr(images, "DIGESTS", tmp_path / "digests.json")
    monkeypatch.delenv("VIDEOCLF_TAG", raising=False)
    monkeypatch.delenv("VIDEOCLF_REGISTRY", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)


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


def test_a_sweep_is_refused_by_a_backend_that_cannot_collect_artifacts(kfp_api):
    url, api = kfp_api
    api.version = "2.13.0"
    with pytest.raises(SystemExit, match=r"needs 2.14.0 or newer \(a sweep needs dsl.Collected\)"):
        main(["submit", "--host", url, "--registry", REGISTRY, "--sweep", "learning_rate=1e-3,1e-4"])
    assert not any(method == "POST" for method, _, _ in api.requests)


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
    (["--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", "--checkpoint-dir",
      "s3://b/checkpoints"], "checkpoint_dir 's3://b/checkpoints' is in S3, for which a Vertex AI run has no "
                             "credentials"),
    (["--vertex", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/r", "--s3-endpoint",
      "http://seaweedfs.kubeflow:9000"], "--s3-endpoint is for Kubeflow"),
    (["--host", "URL", "--resources", "training=2,8Gi"], "--resources names no stage 'training'"),
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


def test_a_multi_user_server_gets_the_token_and_the_namespace(kfp_api, tmp_path, monkeypatch):
    """Without a token a multi-user API answers 401 "no user identity header", and the error says
    how to send one; ``--token``, or the file of KF_PIPELINES_SA_TOKEN_PATH, is sent as a bearer
    token, and the run goes to --namespace."""
    url, api = kfp_api
    api.token = "user-token"
    args = ["submit", "--host", url, "--registry", REGISTRY, "--namespace", "team-a", "--experiment", "e"]
    with pytest.raises(SystemExit, match=r"HTTP 401 .*there is no user identity header.*--token .*"
                                         r"--audience pipelines.kubeflow.org.*KF_PIPELINES_SA_TOKEN_PATH"):
        main(args)
    assert not any(path == "/apis/v2beta1/runs" for _, path, _ in api.requests)
    main([*args, "--token", "user-token"])
    experiment = next(body for method, path, body in api.requests if path == "/apis/v2beta1/experiments"
                      and method == "POST")
    assert experiment["namespace"] == "team-a"
    token_file = tmp_path / "token"
    token_file.write_text("user-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    api.authorizations.clear()
    main(args)
    assert set(api.authorizations) == {"Bearer user-token"}
    assert [path for method, path, _ in api.requests if method == "POST"].count("/apis/v2beta1/runs") == 2


def test_the_run_runs_as_the_service_account_the_preflight_checked(kfp_api, kube_api):
    """--service-account is the account the rights are asked as and the one the run's pods get:
    the API server sets a run's ``service_account`` on its workflow, else its own default
    (kubeflow/pipelines backend/src/apiserver/template/template.go, setDefaultServiceAccount, 2.17.0)."""
    url, api = kfp_api
    standalone_cluster(kube_api)
    main(["submit", "--host", url, "--registry", REGISTRY, "--deploy", "true", "--service-account",
          "videoclf-runner"])
    reviews = [r for r in kube_api.requests if r["path"].endswith("selfsubjectaccessreviews")]
    assert {r["user"] for r in reviews} == {"system:serviceaccount:kubeflow:videoclf-runner"}
    main(["submit", "--host", url, "--registry", REGISTRY])
    runs = [body for method, path, body in api.requests if (method, path) == ("POST", "/apis/v2beta1/runs")]
    assert runs[0]["service_account"] == "videoclf-runner"
    assert not runs[1].get("service_account")  # the server's default


def test_a_multi_user_run_needs_a_namespace(kfp_api):
    url, api = kfp_api
    api.token = "user-token"
    with pytest.raises(SystemExit, match="multi-user and no namespace was given.*--namespace"):
        main(["submit", "--host", url, "--registry", REGISTRY, "--token", "user-token"])
    assert not any(method == "POST" for method, _, _ in api.requests)


# kubeflow/pipelines 2.17.0 manifests/kustomize/base/pipeline/pipeline-runner-role.yaml, the rules
# that matter here: it may read Secrets and ConfigMaps, and has no serving.kserve.io rule.
PIPELINE_RUNNER_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "watch", "list"]},
    {"apiGroups": [""], "resources": ["persistentvolumes", "persistentvolumeclaims"], "verbs": ["*"]},
    {"apiGroups": [""], "resources": ["pods", "pods/exec", "pods/log", "services"], "verbs": ["*"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["*"], "verbs": ["*"]},
]
KUBEFLOW = "/api/v1/namespaces/kubeflow"
# kubeflow/pipelines 2.17.0 (and 2.16.0) manifests/kustomize/third-party/seaweedfs/base/seaweedfs/
# seaweedfs-networkpolicy.yaml, in the standalone and the multi-user installs alike.
SEAWEEDFS_POLICY = {"metadata": {"name": "seaweedfs", "namespace": "kubeflow"}, "spec": {
    "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["seaweedfs"]}]},
    "policyTypes": ["Ingress"],
    "ingress": [
        {"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "app.kubernetes.io/part-of", "operator": "In", "values": ["kubeflow-profile"]}]}}],
         "ports": [{"port": 8333}]},
        {"from": [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["istio-system"]}]}}]},
        {"from": [{"podSelector": {}}], "ports": [{"port": 8333}]}]}}


# The workflowDefaults of kubeflow/pipelines 2.17.0 manifests/kustomize/third-party/argo/base/
# workflow-controller-configmap-patch.yaml (2.16.0 has none).
WORKFLOW_DEFAULTS_2_17 = """spec:
  ttlStrategy:
    secondsAfterCompletion: 3600
    secondsAfterSuccess: 3600
    secondsAfterFailure: 3600
  templateDefaults:
    retryStrategy:
      limit: '2'
      retryPolicy: OnError
"""


def namespace(name: str, **labels) -> dict:
    """A Namespace as the API server keeps it: with its kubernetes.io/metadata.name label."""
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}}


def standalone_cluster(kube_api) -> None:
    """What a standalone 2.17 install has: its Argo's settings, its store's Service (port 9000 to
    the pods' 8333) and NetworkPolicy, its MinIO-style Secret, a PVC."""
    kube_api.add(KUBEFLOW, namespace("kubeflow"))
    kube_api.add(f"{KUBEFLOW}/configmaps/workflow-controller-configmap", {
        "metadata": {"name": "workflow-controller-configmap"},
        "data": {"workflowDefaults": WORKFLOW_DEFAULTS_2_17}})
    kube_api.add(f"{KUBEFLOW}/services/seaweedfs", {"metadata": {"name": "seaweedfs"}, "spec": {
        "selector": {"app": "seaweedfs"},
        "ports": [{"name": "http-s3", "port": 8333, "targetPort": 8333},
                  {"name": "http-s3-compat", "port": 9000, "targetPort": 8333}]}})
    kube_api.add("/apis/networking.k8s.io/v1/namespaces/kubeflow/networkpolicies/seaweedfs", SEAWEEDFS_POLICY)
    kube_api.add(f"{KUBEFLOW}/secrets/mlpipeline-minio-artifact", {
        "metadata": {"name": "mlpipeline-minio-artifact"},
        "data": {"accesskey": "bWluaW8=", "secretkey": "eA=="}})
    kube_api.add(f"{KUBEFLOW}/persistentvolumeclaims/videoclf-checkpoints", {
        "metadata": {"name": "videoclf-checkpoints"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard-rwo"},
        "status": {"phase": "Bound"}})


DOCTOR = ["doctor", "--deploy", "true", "--checkpoint-pvc", "videoclf-checkpoints", "--s3-secret",
          "mlpipeline-minio-artifact"]


def doctor_lines(capsys) -> dict[str, str]:
    """The doctor's printed checks, by name."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return {line[9:].split(":", 1)[0]: line for line in lines}


def test_the_doctor_finds_what_a_standalone_install_lacks(kfp_api, kube_api, capsys):
    """Against a standalone 2.17 install whose pipeline-runner has the install's own Role: the
    deploy rights are missing (with the command that grants them), a MinIO endpoint names no
    Service, and the rest passes; asked as the run's service account, by impersonation."""
    url, api = kfp_api
    api.version = "2.17.0"
    standalone_cluster(kube_api)
    kube_api.rules = PIPELINE_RUNNER_RULES
    with pytest.raises(SystemExit, match="2 of 10 checks found a problem"):
        main([*DOCTOR, "--host", url, "--s3-endpoint", "http://minio-service.kubeflow:9000"])
    checks = doctor_lines(capsys)
    assert list(checks) == ["backend", "KServe", "deploy rights", "serving secret", "store access",
                            "S3 secret", "checkpoint PVC", "pipeline store", "S3 endpoint",
                            "training retries"]
    assert checks["backend"].startswith("ok") and "Kubeflow Pipelines 2.17.0" in checks["backend"]
    assert checks["deploy rights"].startswith("PROBLEM")
    assert "may not get, create, patch inferenceservices in kubeflow -> videoclf doctor --rbac --namespace " \
        "kubeflow --service-account pipeline-runner" in checks["deploy rights"]
    assert checks["S3 endpoint"].startswith("PROBLEM")
    assert "no minio-service in kubeflow" in checks["S3 endpoint"]
    assert "seaweedfs.kubeflow:9000" in checks["S3 endpoint"]
    assert checks["pipeline store"].startswith("ok") and "minio://mlpipeline/v2/artifacts (the launcher's " \
        "default) at http://seaweedfs.kubeflow:9000: http://seaweedfs.kubeflow:9000 is the Service " \
        "kubeflow/seaweedfs, port 9000" in checks["pipeline store"]
    assert checks["checkpoint PVC"].startswith("ok") and "Bound, ReadWriteOnce" in checks["checkpoint PVC"]
    assert checks["S3 secret"].startswith("ok")
    reviews = [r for r in kube_api.requests if r["path"].endswith("selfsubjectaccessreviews")]
    assert {r["user"] for r in reviews} == {"system:serviceaccount:kubeflow:pipeline-runner"}
    assert {r["body"]["spec"]["resourceAttributes"]["verb"] for r in reviews} == {"get", "create", "patch"}

    # With the Role the project ships, applied as the doctor prints it, the deploy rights pass.
    main(["doctor", "--rbac"])
    role = next(d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Role")
    kube_api.rules = PIPELINE_RUNNER_RULES + role["rules"]
    main([*DOCTOR, "--host", url])
    checks = doctor_lines(capsys)
    assert len(checks) == 9 and all(line.startswith("ok") for line in checks.values()), checks
    # As KFP 2.17.0 installs Argo, a training container that fails is not retried; a lost pod is.
    assert "retries the training task (retryPolicy OnError) when its pod is lost with its node; not when " \
        "its container fails" in checks["training retries"] and "retry the run" in checks["training retries"]


def test_the_doctor_checks_what_the_predictor_reads_the_model_with(kfp_api, kube_api, capsys):
    """The predictor in --deploy-namespace reads the model from the store the launcher used (by
    default SeaweedFS, kubeflow/seaweedfs:9000, with the Secret mlpipeline-minio-artifact): that
    Secret must be in the deploy namespace, and the store's NetworkPolicy must admit its pods. The
    run's own account needs no right on the S3 Secret: the kubelet reads it for the pod
    (kubeflow/pipelines backend/src/v2/driver/k8s.go, 2.17.0, only writes a secretKeyRef)."""
    url, _ = kfp_api
    standalone_cluster(kube_api)
    role = yaml.safe_load((RBAC_DIR / "role.yaml").read_text())
    no_secrets = [rule for rule in PIPELINE_RUNNER_RULES if rule["resources"] != ["secrets"]]
    kube_api.account_rules = no_secrets + role["rules"]
    kube_api.add("/api/v1/namespaces/serving", namespace("serving"))
    profile = {"app.kubernetes.io/part-of": "kubeflow-profile"}
    kube_api.add("/api/v1/namespaces/team-a", namespace("team-a", **profile))
    kube_api.add("/api/v1/namespaces/team-a/secrets/mlpipeline-minio-artifact", {
        "metadata": {"name": "mlpipeline-minio-artifact"},
        "data": {"accesskey": "bWluaW8=", "secretkey": "eA=="}})
    doctor = ["doctor", "--host", url, "--deploy", "true", "--s3-secret", "mlpipeline-minio-artifact"]
    with pytest.raises(SystemExit, match="1 of 8 checks found a problem"):
        main([*doctor, "--deploy-namespace", "serving"])
    checks = doctor_lines(capsys)
    assert checks["S3 secret"].startswith("ok"), checks["S3 secret"]
    assert checks["serving secret"].startswith("PROBLEM") and "no Secret mlpipeline-minio-artifact in " \
        "serving -> create it there with keys accesskey and secretkey: the predictor in serving reads the " \
        "model with them (a copy of kubeflow/mlpipeline-minio-artifact)" in checks["serving secret"]
    assert checks["store access"].startswith("ok")  # --s3-secret without --s3-endpoint: AWS's own S3

    with pytest.raises(SystemExit, match="2 of 7 checks found a problem"):  # the launcher's store
        main(["doctor", "--host", url, "--deploy", "true", "--deploy-namespace", "serving"])
    checks = doctor_lines(capsys)
    assert checks["store access"].startswith("PROBLEM") and "the NetworkPolicy seaweedfs of kubeflow " \
        "admits no pod of serving to seaweedfs, port 8333" in checks["store access"]
    for deploy_namespace in ("team-a", "kubeflow"):  # a profile's namespace, and the store's own
        main(["doctor", "--host", url, "--deploy", "true", "--deploy-namespace", deploy_namespace])
        checks = doctor_lines(capsys)
        assert all(line.startswith("ok") for line in checks.values()), checks
        assert f"admits pods of {deploy_namespace} to seaweedfs, port 8333" in checks["store access"]


def test_the_doctor_says_unknown_where_it_may_not_ask(kfp_api, kube_api, capsys):
    url, _ = kfp_api
    standalone_cluster(kube_api)
    kube_api.impersonation = False
    main([*DOCTOR, "--host", url])
    checks = doctor_lines(capsys)
    assert checks["deploy rights"].startswith("unknown") and "kubectl auth can-i" in checks["deploy rights"]
    assert checks["checkpoint PVC"].startswith("ok")


def test_submit_refuses_a_run_the_preflight_finds_a_problem_with(kfp_api, kube_api):
    url, api = kfp_api
    standalone_cluster(kube_api)
    with pytest.raises(SystemExit, match="no PersistentVolumeClaim ckpt in kubeflow"):
        main(["submit", "--host", url, "--registry", REGISTRY, "--checkpoint-pvc", "ckpt"])
    assert not any(method == "POST" for method, _, _ in api.requests)
    main(["submit", "--host", url, "--registry", REGISTRY, "--checkpoint-pvc", "ckpt", "--no-kube-checks"])
    assert any(path == "/apis/v2beta1/runs" for _, path, _ in api.requests)
