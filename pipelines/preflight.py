"""What is checked before a run is submitted to Kubeflow Pipelines (``videoclf submit``), or on
its own (``videoclf doctor``): that the cluster can run what the run asks, before a GPU is spent.

Each check reads one thing and says what it found and what to do:

1. the backend: the KFP API's healthz (version, multi-user), as ``kfp.Client`` reaches it;
and where a kubeconfig is at hand (``KUBECONFIG`` or ``~/.kube/config``; none of it needs
cluster-admin):
2. KServe's API: the discovery document of ``serving.kserve.io/v1beta1`` (with ``--deploy``);
3. the deploy rights: SelfSubjectAccessReviews of get, create and patch on
   ``inferenceservices`` in the deploy namespace, asked as the run's service account through
   impersonation, which a namespace's ``edit`` and ``admin`` roles allow (with ``--deploy``);
4. the S3 secret: a SelfSubjectAccessReview of get on it as the run's service account, then its
   keys (with ``--s3-secret``);
5. the checkpoint PVC: the PersistentVolumeClaim (with ``--checkpoint-pvc``);
6. the pipeline's store: the ``kfp-launcher`` ConfigMap of the run's namespace, resolved as the
   launcher resolves it (``components.launcher_config``), and the Service of its endpoint;
7. the ``--s3-endpoint`` Service, where it names one in the cluster (with ``--s3-endpoint``).

The run's service account is ``pipeline-runner`` in ``kubeflow`` on a standalone install
(backend/src/apiserver/common/const.go, ``DefaultPipelineRunnerServiceAccount``) and
``default-editor`` in the user's namespace on a multi-user one
(manifests/kustomize/base/installs/multi-user/api-service/params.env).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import yaml

from components.launcher_config import CONFIG_MAP, pipeline_root, store_of
from components.storage import S3_SECRET_KEYS
from pipelines.targets import Target

log = logging.getLogger(__name__)

RBAC_DIR = Path(__file__).with_name("rbac")
STANDALONE = ("kubeflow", "pipeline-runner")  # the namespace and service account of a standalone install
MULTI_USER_ACCOUNT = "default-editor"
DEPLOY_VERBS = ("get", "create", "patch")  # what components/serve_model/deploy.py does
SECRET_KEYS = tuple(S3_SECRET_KEYS)  # the keys every task reads from --s3-secret
MARKS = {"ok": "ok", "problem": "PROBLEM", "unknown": "unknown"}


@dataclasses.dataclass
class Check:
    """One check: what it read, what it found, and what to do when that is not ``ok``."""

    name: str
    state: str  # ok, problem or unknown
    found: str
    todo: str = ""

    def line(self) -> str:
        return f"{MARKS[self.state]:8} {self.name}: {self.found}" + (f" -> {self.todo}" if self.todo else "")


class Cluster:
    """The Kubernetes API as the kubeconfig's user, and as the run's service account."""

    def __init__(self, namespace: str, service_account: str):
        from kubernetes import client, config

        self.namespace, self.service_account = namespace, service_account
        self.user = f"system:serviceaccount:{namespace}:{service_account}"
        configuration = client.Configuration()
        config.load_kube_config(os.environ.get("KUBECONFIG"), client_configuration=configuration)
        self.api = client.ApiClient(configuration)
        self.as_run = client.ApiClient(configuration, header_name="Impersonate-User", header_value=self.user)

    def may(self, verb: str, resource: str, namespace: str, group: str = "", name: str = "") -> bool:
        """Whether the run's service account may, by a SelfSubjectAccessReview asked as it."""
        from kubernetes import client

        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, group=group,
                                                            namespace=namespace, name=name or None)))
        return client.AuthorizationV1Api(self.as_run).create_self_subject_access_review(review).status.allowed

    def read(self, kind: str, name: str, namespace: str):
        """A core object (config_map, persistent_volume_claim, secret, service) as the user; None
        where there is none."""
        from kubernetes import client

        try:
            return getattr(client.CoreV1Api(self.api), f"read_namespaced_{kind}")(name, namespace)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise


def kubeconfig_at_hand() -> bool:
    return any(Path(p).expanduser().is_file()
               for p in os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep) if p)


def backend(client, host: str, target: Target) -> tuple[Check, dict]:
    """The backend's version against the oldest the compiled spec runs on, and its healthz."""
    from pipelines.kubeflow_runner import version_tuple

    # kfp_server_api's healthz model drops tag_name, so the response is read as it came.
    response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    healthz = json.loads(response.data or b"{}")
    tag = healthz.get("tag_name", "")
    found, needed = version_tuple(tag), version_tuple(target.min_backend)
    mode = "multi-user" if healthz.get("multi_user") else "standalone"
    if found is None:
        return Check("backend", "unknown", f"{host} reports version {tag!r} ({mode})",
                     f"cannot check that it is {target.min_backend} or newer"), healthz
    if found < needed:
        uses = [what for what, used in (("extraction over several pods", target.extract_parts > 1),
                                        ("a sweep", bool(target.sweep))) if used]
        why = f" ({' and '.join(uses)} need{'s' if len(uses) == 1 else ''} dsl.Collected)" if uses else ""
        return Check("backend", "problem", f"the Kubeflow Pipelines backend at {host} is {tag}; this "
                     f"pipeline needs {target.min_backend} or newer{why}",
                     "upgrade Kubeflow Pipelines"), healthz
    return Check("backend", "ok", f"Kubeflow Pipelines {tag} at {host} ({mode})"), healthz


def run_identity(healthz: dict, namespace: str | None, service_account: str | None) -> tuple[str, str]:
    """The namespace and service account the run's pods get."""
    if healthz.get("multi_user"):
        return namespace or "", service_account or MULTI_USER_ACCOUNT
    return namespace or STANDALONE[0], service_account or STANDALONE[1]


def kube_checks(cluster: Cluster, target: Target, params: dict) -> list[Check]:
    """Checks 2 to 7 of the module's list, as the run asks for them."""
    from kubernetes import client

    checks = []
    deploy_namespace = params.get("deploy_namespace") or cluster.namespace

    def guarded(name: str, check) -> None:
        """Runs a check; a refusal of its own requests (403) makes it unknown, naming why."""
        try:
            checks.append(check())
        except client.ApiException as e:
            if e.status != 403:
                raise
            checks.append(Check(name, "unknown", f"the API refused the check's request: {e.reason}",
                                "a kubeconfig with the namespace's edit role may impersonate the run's "
                                "service account; or ask its admin: kubectl auth can-i ... "
                                f"--as {cluster.user}"))

    if params.get("deploy"):
        guarded("KServe", lambda: kserve_api(cluster))
        guarded("deploy rights", lambda: deploy_rights(cluster, deploy_namespace))
    if target.s3_secret:
        guarded("S3 secret", lambda: s3_secret(cluster, target.s3_secret))
    if target.checkpoint_pvc:
        guarded("checkpoint PVC", lambda: checkpoint_pvc(cluster, target.checkpoint_pvc))
    guarded("pipeline store", lambda: pipeline_store(cluster))
    if target.s3_endpoint:
        guarded("S3 endpoint", lambda: s3_endpoint(cluster, target.s3_endpoint))
    return checks


def kserve_api(cluster: Cluster) -> Check:
    from kubernetes import client

    try:
        found = cluster.api.call_api("/apis/serving.kserve.io/v1beta1", "GET", response_type="object",
                                     header_params={"Accept": "application/json"},
                                     auth_settings=["BearerToken"], _return_http_data_only=True)
    except client.ApiException as e:
        if e.status != 404:
            raise
        found = {}
    if "inferenceservices" not in {r.get("name") for r in (found or {}).get("resources", [])}:
        return Check("KServe", "problem", "the cluster serves no serving.kserve.io/v1beta1 inferenceservices",
                     "install KServe, or run without --deploy true")
    return Check("KServe", "ok", "serving.kserve.io/v1beta1 inferenceservices are served")


def deploy_rights(cluster: Cluster, namespace: str) -> Check:
    missing = [verb for verb in DEPLOY_VERBS if not cluster.may(verb, "inferenceservices", namespace,
                                                                "serving.kserve.io")]
    if missing:
        return Check("deploy rights", "problem",
                     f"{cluster.user} may not {', '.join(missing)} inferenceservices in {namespace}",
                     f"videoclf doctor --rbac --namespace {cluster.namespace} --service-account "
                     f"{cluster.service_account}" + (f" --deploy-namespace {namespace}"
                                                    if namespace != cluster.namespace else "")
                     + " | kubectl apply -f -")
    return Check("deploy rights", "ok",
                 f"{cluster.user} may {', '.join(DEPLOY_VERBS)} inferenceservices in {namespace}")


def s3_secret(cluster: Cluster, name: str) -> Check:
    if not cluster.may("get", "secrets", cluster.namespace, name=name):
        return Check("S3 secret", "problem",
                     f"{cluster.user} may not read the Secret {cluster.namespace}/{name}",
                     "grant it get on that Secret (the install's pipeline-runner Role has it)")
    secret = cluster.read("secret", name, cluster.namespace)
    if secret is None:
        return Check("S3 secret", "problem", f"no Secret {name} in {cluster.namespace}",
                     f"create it with keys {' and '.join(SECRET_KEYS)}, or name another with --s3-secret")
    missing = [key for key in SECRET_KEYS if key not in (secret.data or {})]
    if missing:
        return Check("S3 secret", "problem",
                     f"the Secret {cluster.namespace}/{name} has no {', '.join(missing)}",
                     f"give it keys {' and '.join(SECRET_KEYS)}: every task reads them as its AWS "
                     "credentials")
    return Check("S3 secret", "ok", f"{cluster.user} may read {cluster.namespace}/{name}, which has "
                 f"{' and '.join(SECRET_KEYS)}")


def checkpoint_pvc(cluster: Cluster, name: str) -> Check:
    claim = cluster.read("persistent_volume_claim", name, cluster.namespace)
    if claim is None:
        return Check("checkpoint PVC", "problem", f"no PersistentVolumeClaim {name} in {cluster.namespace}",
                     "create it, or name another with --checkpoint-pvc: the training pod would stay Pending")
    found = (f"{cluster.namespace}/{name} is {claim.status.phase}, "
             f"{', '.join(claim.spec.access_modes or [])}, "
             f"storage class {claim.spec.storage_class_name or 'default'}")
    return Check("checkpoint PVC", "ok", found, "the images run as uid 1000: a new block volume's root is "
                 "root's, so the training step stops before epoch 1 unless an fsGroup is set "
                 "(docs/kubeflow.md)")


def service_of(endpoint: str) -> tuple[str, str, int] | None:
    """The Service name, namespace and port of an in-cluster endpoint (``host.namespace[.svc...]:port``)."""
    parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    parts = (parsed.hostname or "").split(".")
    if len(parts) < 2 or (len(parts) > 2 and parts[2] != "svc"):
        return None  # outside the cluster, e.g. s3.amazonaws.com
    return parts[0], parts[1], parsed.port or (443 if parsed.scheme == "https" else 80)


def service_check(cluster: Cluster, name: str, endpoint: str) -> Check:
    """Whether the Service an endpoint names exists and serves its port."""
    where = service_of(endpoint)
    if where is None:
        return Check(name, "ok", f"{endpoint} is outside the cluster: not checked")
    service_name, namespace, port = where
    service = cluster.read("service", service_name, namespace)
    if service is None:
        return Check(name, "problem",
                     f"{endpoint} names no Service: there is no {service_name} in {namespace}",
                     "Kubeflow Pipelines 2.16 and newer serve their store as seaweedfs.kubeflow:9000 "
                     "(minio-service is gone): fix the endpoint")
    if port not in {p.port for p in service.spec.ports or []}:
        return Check(name, "problem", f"the Service {namespace}/{service_name} has no port {port}",
                     f"use one of {sorted(p.port for p in service.spec.ports or [])}")
    return Check(name, "ok", f"{endpoint} is the Service {namespace}/{service_name}, port {port}")


def pipeline_store(cluster: Cluster) -> Check:
    config = cluster.read("config_map", CONFIG_MAP, cluster.namespace)
    data = None if config is None else (config.data or {})
    root = pipeline_root(data)
    store = store_of(root, data)
    source = f"{CONFIG_MAP} in {cluster.namespace}" if config is not None else "the launcher's default"
    if store is None:
        return Check("pipeline store", "ok", f"the pipeline root is {root} ({source})")
    if not store.endpoint:
        return Check("pipeline store", "ok", f"the pipeline root is {root} ({source}), with the AWS endpoint "
                     "and credentials of the launcher's environment")
    served = service_check(cluster, "pipeline store", store.endpoint)
    served.found = f"the pipeline root is {root} ({source}) at {store.endpoint}: {served.found}"
    return served


def s3_endpoint(cluster: Cluster, endpoint: str) -> Check:
    return service_check(cluster, "S3 endpoint", endpoint)


def run_checks(client, host: str, target: Target, params: dict, namespace: str | None = None,
               service_account: str | None = None, kube: bool = True) -> list[Check]:
    """Every check the run asks for; the Kubernetes ones only where a kubeconfig is at hand."""
    check, healthz = backend(client, host, target)
    checks = [check]
    if healthz.get("multi_user") and not namespace:
        checks.append(Check("namespace", "problem", "the cluster is multi-user and no namespace was given",
                            "pass --namespace with your profile's namespace"))
        return checks
    if not kube:
        return checks
    if not kubeconfig_at_hand():
        checks.append(Check("kubernetes", "unknown", "no kubeconfig (KUBECONFIG or ~/.kube/config)",
                            "the checks of rights, secret, PVC and store need one"))
        return checks
    run_namespace, account = run_identity(healthz, namespace, service_account)
    return checks + kube_checks(Cluster(run_namespace, account), target, params)


def rbac_manifests(namespace: str = STANDALONE[0], service_account: str = STANDALONE[1],
                   deploy_namespace: str | None = None) -> list[dict]:
    """The Role and RoleBinding of ``pipelines/rbac`` for this namespace and service account; the
    Role in ``deploy_namespace`` where it differs."""
    role, binding = (yaml.safe_load((RBAC_DIR / name).read_text())
                     for name in ("role.yaml", "rolebinding.yaml"))
    for document in (role, binding):
        document["metadata"]["namespace"] = deploy_namespace or namespace
    binding["subjects"] = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    return [role, binding]


def problems(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.state == "problem"]


def summary(checks: list[Check]) -> str:
    return "\n".join(check.line() for check in checks)

