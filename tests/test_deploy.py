"""The deploy step on Kubeflow, against the loopback Kubernetes API (tests/kube_api.py): the
InferenceService it builds, the store it hands the predictor (the KFP launcher's, checked on
upstream's own test cases), the wait until the applied spec serves (condition sequences as KServe
reports them), and the RBAC the project ships, enforced by the stand-in and validated against the
Kubernetes schemas."""

import base64
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.launcher_config import S3Store, store_of
from components.serve_model import deploy
from components.serve_model.config import SERVING_PORT
from pipelines.preflight import RBAC_DIR, rbac_manifests

ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices"
KUBERNETES_VERSION = "1.33.0"  # GKE's regular channel, and what KServe HEAD's go.mod builds against


def ready(revision: str, serving: str | None = None, canary: tuple[int, str] | None = None, **extra) -> dict:
    """A Serverless InferenceService's status: ``revision`` the latest created, ``serving`` (by
    default the same) the latest ready; Ready True when they are one (kserve
    inference_service_status.go, PropagateStatus, which copies the Knative route's traffic). The
    latest ready revision has all the traffic, or with ``canary`` (percent, revision before) that
    percent and the revision before the rest, as KServe routes a canaryTrafficPercent (kserve
    pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go, v0.20.0)."""
    serving = revision if serving is None else serving
    status = "True" if serving == revision else "Unknown"
    traffic = [{"revisionName": serving, "latestRevision": True, "percent": 100}] if serving else []
    if canary:
        percent, before = canary
        traffic = [{**traffic[0], "percent": percent},
                   {"revisionName": before, "latestRevision": False, "percent": 100 - percent, "tag": "prev"}]
    return {"url": "http://ucf10.team-a.example.com", "deploymentMode": "Serverless",
            "conditions": [{"type": "Ready", "status": "True" if "failed" not in extra else "False"},
                           {"type": "PredictorReady", "status": status}],
            "components": {"predictor": {"latestCreatedRevision": revision, "latestReadyRevision": serving,
                                         "traffic": traffic}},
            **extra.get("failed", {})}


FAILED = {"modelStatus": {"transitionStatus": "BlockedByFailedLoad", "lastFailureInfo": {
    "reason": "ModelLoadFailed", "exitCode": 1,
    "message": "videoclf serve: cannot read s3://mlpipeline/v2/artifacts/run-2/train-model/model: "
               "NoCredentialsError"}},
    "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed",
                    "message": 'Revision "ucf10-predictor-00002" failed with message: exit code 1'}]}


def raw(replica_set: str, reason: str = "NewReplicaSetAvailable", status: str = "True") -> dict:
    """A RawDeployment InferenceService's status: PredictorReady carries the Deployment's
    Progressing condition (kserve inference_service_status.go, PropagateRawStatus)."""
    message = (f'ReplicaSet "{replica_set}" has successfully progressed.'
               if reason == "NewReplicaSetAvailable" else "Deployment has minimum availability.")
    return {"deploymentMode": "RawDeployment",
            "conditions": [{"type": "Ready", "status": status},
                           {"type": "PredictorReady", "status": status, "reason": reason,
                            "message": message}]}


class Clock:
    """Time that passes only when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def rollout(api, model_uri: str, statuses: list[dict], timeout_s: float = 60, image: str = "serving:1"):
    """Applies an InferenceService for ``model_uri`` whose status then goes through ``statuses``,
    and waits for it; returns the status it ended on and the number of polls."""
    client = deploy.kube_client()
    manifest = deploy.inference_service("ucf10", "team-a", image, model_uri)
    applied = deploy.apply(client, manifest)  # it reads the status the service had
    api.statuses[f"{ISVC}/ucf10"] = statuses
    clock = Clock()
    before = len(api.requests)
    status = deploy.wait_ready(client, "team-a", "ucf10", applied, timeout_s, poll_s=5, clock=clock,
                               sleep=clock.sleep)
    return status, len(api.requests) - before


def test_the_inference_service_reads_a_kubeflow_artifact_from_the_launchers_store():
    """The manifest for a model in Kubeflow's own store: ``videoclf serve`` on the artifact's
    s3:// form, the store's endpoint and its Secret's keys as AWS settings, the pipeline's service
    account, no batcher."""
    store = store_of("minio://mlpipeline/v2/artifacts/run-1/train-model/model", None)
    service = deploy.inference_service("ucf10", "team-a", "registry.example/videoclf/serving:0123456789ab",
                                       deploy.storage_uri("minio://mlpipeline/v2/artifacts/run-1/train-model/model"),
                                       store, "pipeline-runner")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert service["metadata"] == {"name": "ucf10", "namespace": "team-a", "labels": {}}
    predictor = service["spec"]["predictor"]
    [container] = predictor["containers"]
    args = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
    assert args == {"--model": "s3://mlpipeline/v2/artifacts/run-1/train-model/model", "--name": "ucf10",
                    "--port": str(SERVING_PORT)}
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env == {"AWS_ENDPOINT_URL": "http://seaweedfs.kubeflow:9000", "AWS_DEFAULT_REGION": "minio",
                   "AWS_ACCESS_KEY_ID": {"name": "mlpipeline-minio-artifact", "key": "accesskey"},
                   "AWS_SECRET_ACCESS_KEY": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": SERVING_PORT}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert predictor["serviceAccountName"] == "pipeline-runner"
    # The account's cloud identity, not its Kubernetes token, which would give a network-facing
    # server the pipeline's rights; false is the one value Knative keeps (knative/serving
    # pkg/apis/serving/fieldmask.go, PodSpecMask, knative-v1.23.0).
    assert predictor["automountServiceAccountToken"] is False
    assert "batcher" not in predictor  # KServe's drops parameters and answers errors 200
    assert deploy.storage_uri("gs://bucket/model") == "gs://bucket/model"
    plain = deploy.inference_service("ucf10", "team-a", "serving:1", "gs://bucket/model")["spec"]["predictor"]
    assert "serviceAccountName" not in plain and "env" not in plain["containers"][0]


# kubeflow/pipelines 2.17.0 backend/src/v2/config/testdata/provider_cases.yaml (cases 5, 6, 9 and
# 10, abridged) with the session env_test.go (TestGetBucketSessionInfo) expects of each.
PROVIDERS = {
    "case5": """
      minio:
        default:
          endpoint: minio-endpoint-5.com
          region: minio
          disableSSL: true
          credentials:
            fromEnv: false
            secretRef: {secretName: test-secret-5, accessKeyKey: test-accessKeyKey-5,
                        secretKeyKey: test-secretKeyKey-5}
        overrides: []""",
    "case6": """
      minio:
        default:
          endpoint: minio-endpoint-6.com
          region: minio
          disableSSL: true
          credentials:
            fromEnv: false
            secretRef: {secretName: minio-test-secret-6, accessKeyKey: minio-test-accessKeyKey-6,
                        secretKeyKey: minio-test-secretKeyKey-6}
        overrides:
          - endpoint: minio-endpoint-6.com
            region: minio-a
            disableSSL: true
            bucketName: minio-bucket-a
            keyPrefix: some/minio/path/a
            credentials:
              fromEnv: false
              secretRef: {secretName: minio-test-secret-6-a, accessKeyKey: minio-test-accessKeyKey-6-a,
                          secretKeyKey: minio-test-secretKeyKey-6-a}""",
    "case9": """
      minio:
        default:
          endpoint: minio-endpoint-9.com
          region: minio
          disableSSL: true
          credentials:
            fromEnv: false
            secretRef: {secretName: minio-test-secret-9, accessKeyKey: k9, secretKeyKey: s9}
        overrides:
          - {endpoint: minio-endpoint-9.com, region: minio-a, disableSSL: true, bucketName: minio-bucket-a,
             keyPrefix: some/minio/path/a, credentials: {fromEnv: true}}""",
    "case10": """
      minio:
        default:
          endpoint: minio-endpoint-10.com
          region: minio
          disableSSL: true
          credentials: {fromEnv: true}
        overrides:
          - endpoint: minio-endpoint-10.com
            region: minio-a
            disableSSL: true
            bucketName: minio-bucket-a
            keyPrefix: some/minio/path/a
            credentials:
              fromEnv: false
              secretRef: {secretName: minio-test-secret-10, accessKeyKey: minio-test-accessKeyKey-10,
                          secretKeyKey: minio-test-secretKeyKey-10}""",
}


@pytest.mark.parametrize(("uri", "case", "expected"), [
    ("minio://my-bucket/v2/artifacts", None,
     S3Store("http://seaweedfs.kubeflow:9000", "mlpipeline-minio-artifact", region="minio")),
    ("minio://my-bucket/v2/artifacts", "minio: {}",
     S3Store("http://seaweedfs.kubeflow:9000", "mlpipeline-minio-artifact", region="minio")),
    ("s3://my-bucket", None, S3Store("", "")),  # fromEnv
    ("gs://my-bucket", None, None),
    ("minio://my-bucket/v2/artifacts", "case5",
     S3Store("http://minio-endpoint-5.com", "test-secret-5", "test-accessKeyKey-5", "test-secretKeyKey-5",
             "minio")),
    ("minio://minio-bucket-a/some/minio/path/a", "case6",
     S3Store("http://minio-endpoint-6.com", "minio-test-secret-6-a", "minio-test-accessKeyKey-6-a",
             "minio-test-secretKeyKey-6-a", "minio-a")),
    ("minio://minio-bucket-a/some/minio/path/a", "case9",
     S3Store("http://minio-endpoint-9.com", "", region="minio-a")),
    ("minio://minio-bucket-a/some/minio/path/a", "case10",
     S3Store("http://minio-endpoint-10.com", "minio-test-secret-10", "minio-test-accessKeyKey-10",
             "minio-test-secretKeyKey-10", "minio-a")),
])
def test_the_store_is_found_as_the_kfp_launcher_finds_it(uri, case, expected):
    config = None if case is None else {"providers": PROVIDERS.get(case, case)}
    assert store_of(uri, config) == expected


def test_a_provider_the_launcher_refuses_is_refused():
    with pytest.raises(ValueError, match="no default credentials"):  # env_test.go: case2 is invalid
        store_of("minio://my-bucket/v2/artifacts", {"providers": "minio:\n  overrides: []\n"})


def test_a_new_service_is_waited_for_until_ready(kube_api):
    status, polls = rollout(kube_api, "s3://models/run-1", [{}, ready("ucf10-predictor-00001", serving=""),
                                                            ready("ucf10-predictor-00001")])
    assert polls == 3 and status["url"] == "http://ucf10.team-a.example.com"


def test_a_patch_is_waited_for_until_its_revision_serves(kube_api):
    """Right after the patch the old revision is still Ready: the wait goes on until a revision
    created after it is the latest ready one."""
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    status, polls = rollout(kube_api, "s3://models/run-2", [
        ready("ucf10-predictor-00001"), ready("ucf10-predictor-00002", serving="ucf10-predictor-00001"),
        ready("ucf10-predictor-00002")])
    assert polls == 3 and status["components"]["predictor"]["latestReadyRevision"] == "ucf10-predictor-00002"
    assert kube_api.objects[f"{ISVC}/ucf10"]["metadata"]["generation"] == 2


def test_a_patch_that_never_rolls_out_fails_at_the_timeout(kube_api):
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    with pytest.raises(deploy.DeployError, match=r"did not serve the new model within 60 s: .*revision "
                                                 r"ucf10-predictor-00002 is not ready; "
                                                 r"ucf10-predictor-00001 serves"):
        rollout(kube_api, "s3://models/run-2", [
            ready("ucf10-predictor-00001"), ready("ucf10-predictor-00002", serving="ucf10-predictor-00001")])


def test_a_service_never_ready_fails_with_its_conditions(kube_api):
    unknown = {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "IngressNotConfigured",
                               "message": "Ingress has not yet been reconciled."}]}
    with pytest.raises(deploy.DeployError, match="within 60 s: Ready Unknown .IngressNotConfigured. "
                                                 ".Ingress has not yet been reconciled"):
        rollout(kube_api, "s3://models/run-1", [unknown])


def test_a_failed_revision_fails_at_once_with_the_predictors_own_message(kube_api):
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    with pytest.raises(deploy.DeployError, match="cannot serve the model: .*ModelLoadFailed videoclf "
                                                 "serve: cannot read s3://.*NoCredentialsError "
                                                 ".exit code 1."):
        rollout(kube_api, "s3://models/run-2", [
            ready("ucf10-predictor-00001"), ready("ucf10-predictor-00002", serving="ucf10-predictor-00001"),
            {**ready("ucf10-predictor-00002", serving="ucf10-predictor-00001"), **FAILED}])
    assert sum(r["method"] == "GET" for r in kube_api.requests[-3:]) == 3  # no poll after the failure


def test_an_old_failure_does_not_fail_the_new_revision(kube_api):
    """The failure the status shows before the new revision exists is the old one's."""
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    old_failed = {**ready("ucf10-predictor-00001"), **FAILED}
    status, polls = rollout(kube_api, "s3://models/run-2", [old_failed, ready("ucf10-predictor-00002")])
    assert polls == 2


def test_a_redeploy_restores_the_service_and_waits_for_all_the_traffic(kube_api):
    """A service changed since the run deployed it (a canary split that keeps 90 % of the
    traffic on the old revision, a transformer, another model) is restored by the next deploy:
    the spec is the manifest's again, and the step waits until the new revision is ready and
    has all the traffic. The first status after the patch is Ready, with the latest revision the
    latest ready one, yet serving 10 %: not the deployed model."""
    path = f"{ISVC}/ucf10"
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    changed = kube_api.objects[path]
    changed["spec"]["predictor"]["canaryTrafficPercent"] = 10
    changed["spec"]["predictor"]["containers"][0]["args"][1] = "s3://models/experiment"
    changed["spec"]["transformer"] = {"containers": [{"name": "kserve-container", "image": "transformer:1"}]}
    kube_api.statuses[path] = [ready("ucf10-predictor-00002", canary=(10, "ucf10-predictor-00001"))]
    status, polls = rollout(kube_api, "s3://models/run-1", [
        ready("ucf10-predictor-00002", canary=(10, "ucf10-predictor-00001")),
        ready("ucf10-predictor-00003", serving="ucf10-predictor-00002", canary=(10, "ucf10-predictor-00001")),
        ready("ucf10-predictor-00003", canary=(10, "ucf10-predictor-00002")),
        ready("ucf10-predictor-00003")])
    assert polls == 4 and status["components"]["predictor"]["traffic"][0]["percent"] == 100
    applied = deploy.inference_service("ucf10", "team-a", "serving:1", "s3://models/run-1")
    assert kube_api.objects[path]["spec"] == applied["spec"]  # no canary, no transformer, the run's model


def test_a_redeploy_that_only_ends_a_canary_split_makes_no_new_revision(kube_api):
    """The serving revision runs the run's model, with a canaryTrafficPercent left on it: the patch
    removes it, which changes the route and not the revision (KServe gives the latest revision
    all the traffic again), so the step waits for the traffic, not for a revision that never comes."""
    path = f"{ISVC}/ucf10"
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    kube_api.objects[path]["spec"]["predictor"]["canaryTrafficPercent"] = 10
    split = ready("ucf10-predictor-00003", canary=(10, "ucf10-predictor-00002"))
    kube_api.statuses[path] = [split]
    status, polls = rollout(kube_api, "s3://models/run-1", [split, split, ready("ucf10-predictor-00003")])
    assert polls == 3 and "canaryTrafficPercent" not in kube_api.objects[path]["spec"]["predictor"]


def test_a_canary_split_is_not_a_rollout(kube_api):
    """Ready True and the latest revision ready, but with 10 % of the traffic: the step waits, and
    fails at the timeout saying where the traffic goes."""
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    with pytest.raises(deploy.DeployError, match=r"within 60 s: .*revision ucf10-predictor-00002 has 10 % "
                                                 r"of the traffic .*ucf10-predictor-00001 90 %"):
        split = ready("ucf10-predictor-00002", canary=(10, "ucf10-predictor-00001"))
        rollout(kube_api, "s3://models/run-2", [ready("ucf10-predictor-00001"), split])


def test_a_raw_deployment_rollout_is_waited_for(kube_api):
    rollout(kube_api, "s3://models/run-1", [raw("ucf10-predictor-5d9f")])
    status, polls = rollout(kube_api, "s3://models/run-2", [
        raw("ucf10-predictor-5d9f"), raw("", reason="MinimumReplicasAvailable"), raw("ucf10-predictor-7c4b")])
    assert polls == 3 and "7c4b" in status["conditions"][1]["message"]


def test_an_unchanged_service_is_ready_at_once(kube_api):
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    status, polls = rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    assert polls == 1 and kube_api.objects[f"{ISVC}/ucf10"]["metadata"]["generation"] == 1


def test_the_shipped_role_lets_the_deploy_step_do_all_it_does(kube_api):
    """The stand-in enforces the Role of pipelines/rbac as RBAC does: create, patch and the wait
    pass; without the right to patch, the second deploy fails naming what to apply."""
    kube_api.rules = yaml.safe_load((RBAC_DIR / "role.yaml").read_text())["rules"]
    rollout(kube_api, "s3://models/run-1", [ready("ucf10-predictor-00001")])
    rollout(kube_api, "s3://models/run-2", [ready("ucf10-predictor-00002")])
    kube_api.rules = [{**rule, "verbs": [v for v in rule["verbs"] if v != "patch"]}
                      for rule in kube_api.rules]
    with pytest.raises(PermissionError, match=r"may not get, create or patch inferenceservices.serving."
                                              r"kserve.io in the namespace team-a: apply the Role that "
                                              r"videoclf ships"):
        rollout(kube_api, "s3://models/run-3", [ready("ucf10-predictor-00003")])


def test_the_rbac_is_valid_kubernetes_and_kustomize_names_it():
    kustomization = yaml.safe_load((RBAC_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == ["role.yaml", "rolebinding.yaml"]
    assert kustomization["namespace"] == "kubeflow"
    printed = rbac_manifests("team-a", "default-editor", "serving")
    shipped = [yaml.safe_load((RBAC_DIR / name).read_text()) for name in ("role.yaml", "rolebinding.yaml")]
    for manifest in [*shipped, *printed]:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    role, binding = printed
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "serving"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor",
                                    "namespace": "team-a"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_the_pipelines_own_service_account_is_read_from_its_token(tmp_path):
    claims = {"iss": "https://kubernetes.default.svc",
              "sub": "system:serviceaccount:kubeflow:pipeline-runner"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    (tmp_path / "token").write_text(f"eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJl")
    assert deploy.own_service_account(tmp_path) == "pipeline-runner"
    assert deploy.own_service_account(tmp_path / "absent") == ""


def test_the_deploy_component_applies_and_waits(kube_api, tmp_path):
    """The component in-process: the model in Kubeflow's store, no kfp-launcher ConfigMap (the
    launcher's default store), the manifest artifact naming the service and its URL."""
    from kfp.dsl import Artifact, Model

    from components.serve_model.component import deploy_model

    isvc = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
    kube_api.statuses[f"{isvc}/ucf10"] = [ready("ucf10-predictor-00001")]
    manifest = Artifact(uri="", metadata={})
    manifest.path = str(tmp_path / "manifest")
    deploy_model.python_func(model=Model(uri="minio://mlpipeline/v2/artifacts/run-1/train-model/model"),
                             name="ucf10", namespace="", service_account="", timeout_seconds=30,
                             serving_image="serving:1", s3_endpoint="", s3_secret="", manifest=manifest)
    assert [(r["method"], r["path"]) for r in kube_api.requests] == [
        ("GET", "/api/v1/namespaces/default/configmaps/kfp-launcher"), ("GET", f"{isvc}/ucf10"),
        ("POST", isvc), ("GET", f"{isvc}/ucf10")]
    applied = yaml.safe_load(Path(manifest.path).read_text())
    assert kube_api.requests[2]["body"] == applied
    env = {e["name"]: e.get("value") for e in applied["spec"]["predictor"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs.kubeflow:9000"
    assert manifest.metadata["url"] == "http://ucf10.team-a.example.com"
    assert manifest.metadata["service"] == "default/ucf10" and manifest.metadata["outcome"] == "created"


class VertexApi:
    """A loopback stand-in for the Vertex AI endpoints REST API (``/v1/{parent}/endpoints``, list
    with a ``display_name`` filter, create, get, ``:undeployModel``), each long-running operation
    answered done. As Vertex AI does, undeploying a model that still has traffic is refused
    (FAILED_PRECONDITION): the endpoint's traffic split must not name it."""

    PARENT = "projects/p/locations/europe-west4"

    def __init__(self):
        from tests.loopback import JsonHandler, start

        self.endpoints: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        api = self

        class Handler(JsonHandler):
            def answer(self, method: str) -> None:
                from urllib.parse import parse_qs, urlparse

                url = urlparse(self.path)
                body = self.json_body()
                api.requests.append((method, url.path))
                collection = f"/v1/{api.PARENT}/endpoints"
                if method == "GET" and url.path == collection:
                    wanted = parse_qs(url.query).get("filter", [""])[0]
                    found = [e for e in api.endpoints.values()
                             if wanted == f'display_name="{e["displayName"]}"']
                    return self.reply(200, {"endpoints": found})
                if method == "POST" and url.path == collection:
                    name = f"{api.PARENT}/endpoints/{len(api.endpoints) + 1}"
                    api.endpoints[name] = {"name": name, "displayName": body["displayName"]}
                    return self.done(name, "Endpoint", api.endpoints[name])
                name = url.path.removeprefix("/v1/").removesuffix(":undeployModel")
                endpoint = api.endpoints[name]
                if method == "GET":
                    return self.reply(200, endpoint)
                deployed = body["deployedModelId"]
                if endpoint.get("trafficSplit", {}).get(deployed, 0) > 0:
                    return self.reply(400, {"error": {"code": 400, "status": "FAILED_PRECONDITION",
                                                      "message": f"{deployed} has traffic"}})
                endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed]
                return self.done(name, "UndeployModelResponse", {})

            def done(self, name: str, kind: str, response: dict) -> None:
                self.reply(200, {"name": f"{name}/operations/1", "done": True, "response": {
                    "@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{kind}", **response}})

        self.server = start(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def vertex_api(monkeypatch):
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "p"))
    api = VertexApi()
    yield api
    api.server.shutdown()
    api.server.server_close()


def test_every_vertex_deploy_of_a_name_serves_on_one_endpoint(vertex_api):
    from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint

    from components.serve_model.vertex import vertex_endpoint

    names = []
    for _ in range(2):
        endpoint = VertexEndpoint(uri="", metadata={})
        vertex_endpoint.python_func(name="ucf10", project="p", location="europe-west4", endpoint=endpoint,
                                    api_endpoint=vertex_api.url)
        names.append(endpoint.metadata["resourceName"])
    assert names == [f"{VertexApi.PARENT}/endpoints/1"] * 2 and len(vertex_api.endpoints) == 1
    assert endpoint.uri == f"https://europe-west4-aiplatform.googleapis.com/v1/{names[0]}"
    assert [m for m, _ in vertex_api.requests] == ["GET", "POST", "GET"]  # created once, then found


def test_the_models_a_vertex_deploy_replaces_are_undeployed(vertex_api):
    """After ModelDeployOp gave the new version all the traffic, every other deployed model,
    earlier versions of the same model included, is undeployed; the new one stays."""
    from google_cloud_pipeline_components.types.artifact_types import VertexEndpoint, VertexModel

    from components.serve_model.vertex import undeploy_replaced

    name = f"{VertexApi.PARENT}/endpoints/1"
    model = f"{VertexApi.PARENT}/models/7"
    vertex_api.endpoints[name] = {"name": name, "displayName": "ucf10",
                                  "trafficSplit": {"3": 100, "1": 0, "2": 0},
                                  "deployedModels": [{"id": "1", "model": f"{VertexApi.PARENT}/models/5",
                                                      "modelVersionId": "1"},
                                                     {"id": "2", "model": model, "modelVersionId": "1"},
                                                     {"id": "3", "model": model, "modelVersionId": "2"}]}
    endpoint = VertexEndpoint(uri="", metadata={"resourceName": name})
    new = VertexModel(uri="", metadata={"resourceName": f"{model}@2"})
    undeployed = undeploy_replaced.python_func(endpoint=endpoint, model=new, api_endpoint=vertex_api.url)
    assert undeployed == ["1", "2"]
    assert vertex_api.endpoints[name]["deployedModels"] == [
        {"id": "3", "model": model, "modelVersionId": "2"}]
    with pytest.raises(RuntimeError, match="models/7@9 is not deployed on .*endpoints/1: nothing is "
                                           "undeployed"):
        undeploy_replaced.python_func(endpoint=endpoint, model=VertexModel(uri="", metadata={
            "resourceName": f"{model}@9"}), api_endpoint=vertex_api.url)
