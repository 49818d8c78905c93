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
4. the serving secret: the Secret of the store the predictor reads the model from
   (``components.launcher_config.serving_store``) and its keys, in the deploy namespace (with
   ``--deploy``);
5. the store access: whether the NetworkPolicies of the store's namespace admit the deploy
   namespace's pods to the store's Service (with ``--deploy``, for a store in the cluster);
6. the S3 secret: its keys (with ``--s3-secret``);
7. the checkpoint PVC: the PersistentVolumeClaim (with ``--checkpoint-pvc``);
8. the pipeline's store: the ``kfp-launcher`` ConfigMap of the run's namespace, resolved as the
   launcher resolves it (``components.launcher_config``), and the Service of its endpoint;
9. the ``--s3-endpoint`` Service, where it names one in the cluster (with ``--s3-endpoint``);
10. the training retries: which failures of the training task the cluster's Argo retries, from
   the ``workflowDefaults`` of its ``workflow-controller-configmap`` (Kubeflow Pipelines'
   namespace).

Secrets are read as the kubeconfig's user: a pod's service account needs no right on a Secret its
containers get variables from, since the KFP driver only writes a ``secretKeyRef`` into the pod
spec (``backend/src/v2/driver/k8s.go``, 2.17.0) and the kubelet reads the Secret.

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

from components.launcher_config import CONFIG_MAP, lowered, pipeline_root, serving_store, store_of
from components.storage import S3_SECRET_KEYS
from pipelines.targets import Target

log = logging.getLogger(__name__)

RBAC_DIR = Path(__file__).with_name("rbac")
STANDALONE = ("kubeflow", "pipeline-runner")  # the namespace and service account of a standalone install
MULTI_USER_ACCOUNT = "default-editor"
DEPLOY_VERBS = ("get", "create", "patch")  # what components/serve_model/deploy.py does
SECRET_KEYS = tuple(S3_SECRET_KEYS)  # the keys every task reads from --s3-secret
MARKS = {"ok": "ok", "problem": "PROBLEM", "unknown": "unknown"}
ARGO_CONFIG = "workflow-controller-configmap"  # Argo's controller reads its settings there
# The failures a retry policy retries (argo-workflows workflow/controller/operator.go,
# processNodeRetries, v4.0.5): a Failed node is a pod whose container failed, was killed for
# memory or was stopped by a graceful node shutdown (inferFailedReason); an Error one, a pod
# deleted with its node ("pod deleted", podReconciliation) or failed before its container
# started. OnTransientError retries either only when its message is a transient API or network
# error or matches the controller's TRANSIENT_ERROR_PATTERN (util/errors/errors.go), which none
# of these is.
RETRIED = {"Always": ("Failed", "Error"), "OnFailure": ("Failed",), "OnError": ("Error",),
           "OnTransientError": ()}


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

    def get(self, path: str) -> dict | None:
        """The JSON the API serves at ``path`` as the user; None where it has nothing (404)."""
        from kubernetes import client

        try:
            return self.api.call_api(path, "GET", response_type="object",
                                     header_params={"Accept": "application/json"},
                                     auth_settings=["BearerToken"], _return_http_data_only=True)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

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
    """Checks 2 to 10 of the module's list, as the run asks for them."""
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
        guarded("serving secret", lambda: serving_secret(cluster, target, deploy_namespace))
        guarded("store access", lambda: store_access(cluster, target, deploy_namespace))
    if target.s3_secret:
        guarded("S3 secret", lambda: secret_keys(cluster, "S3 secret", target.s3_secret, cluster.namespace,
                                                 tuple(SECRET_KEYS), "every task reads them as its AWS "
                                                 "credentials"))
    if target.checkpoint_pvc:
        guarded("checkpoint PVC", lambda: checkpoint_pvc(cluster, target.checkpoint_pvc))
    guarded("pipeline store", lambda: pipeline_store(cluster))
    if target.s3_endpoint:
        guarded("S3 endpoint", lambda: s3_endpoint(cluster, target.s3_endpoint))
    guarded("training retries", lambda: training_retries(cluster))
    return checks


def kserve_api(cluster: Cluster) -> Check:
    found = cluster.get("/apis/serving.kserve.io/v1beta1")
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


def secret_keys(cluster: Cluster, name: str, secret: str, namespace: str, keys: tuple[str, ...],
                why: str) -> Check:
    """Whether the Secret is there with those keys, read as the kubeconfig's user: a pod gets a
    Secret's keys through the kubelet, not through its service account's rights."""
    found = cluster.read("secret", secret, namespace)
    if found is None:
        return Check(name, "problem", f"no Secret {secret} in {namespace}",
                     f"create it there with keys {' and '.join(keys)}: {why}")
    missing = [key for key in keys if key not in (found.data or {})]
    if missing:
        return Check(name, "problem", f"the Secret {namespace}/{secret} has no {', '.join(missing)}",
                     f"give it keys {' and '.join(keys)}: {why}")
    return Check(name, "ok", f"the Secret {namespace}/{secret} has {' and '.join(keys)}")


def serving_store_of(cluster: Cluster, target: Target):
    """The store the deploy step hands the predictor for a model under the run's pipeline root."""
    config = cluster.read("config_map", CONFIG_MAP, cluster.namespace)
    data = None if config is None else (config.data or {})
    return serving_store(pipeline_root(data), lambda: data, target.s3_endpoint, target.s3_secret)


def serving_secret(cluster: Cluster, target: Target, namespace: str) -> Check:
    store = serving_store_of(cluster, target)
    if store is None or not store.secret:
        return Check("serving secret", "ok", "the predictor reads the model with its service account's own "
                     "credentials (no Secret)")
    return secret_keys(cluster, "serving secret", store.secret, namespace,
                       (store.access_key_key, store.secret_key_key),
                       f"the predictor in {namespace} reads the model with them"
                       + (f" (a copy of {cluster.namespace}/{store.secret})" if namespace != cluster.namespace
                          else ""))


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (metav1 ``LabelSelector``: ``matchLabels`` and ``matchExpressions``
    with In, NotIn, Exists, DoesNotExist) selects these labels; an empty one selects all."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if {"In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels, "DoesNotExist": key not in labels}.get(operator) is not True:
            return False
    return True


def admits(rule: dict, policy_namespace: str, namespace: str, labels: dict, port) -> bool:
    """Whether a NetworkPolicy's ingress rule admits every pod of ``namespace`` (whose labels are
    ``labels``) to ``port`` (networking/v1 ``NetworkPolicyIngressRule``: no ``from`` admits all; a
    peer's ``podSelector`` alone means pods of the policy's own namespace; a ``namespaceSelector``
    with a non-empty ``podSelector`` admits only some pods, so not the predictor's for sure; no
    ``ports`` means all ports)."""
    ports = rule.get("ports") or []
    if ports and not any(p.get("port") is None or str(p["port"]) == str(port)
                         or (p.get("endPort") and str(port).isdigit()
                             and int(p["port"]) <= int(port) <= int(p["endPort"])) for p in ports):
        return False
    peers = rule.get("from") or []
    for peer in peers:
        if "namespaceSelector" in peer:
            in_namespace = selects(peer["namespaceSelector"], labels)
        else:
            in_namespace = "podSelector" in peer and namespace == policy_namespace
        pod_selector = peer.get("podSelector") or {}
        if in_namespace and not pod_selector.get("matchLabels") and not pod_selector.get("matchExpressions"):
            return True
    return not peers


def store_access(cluster: Cluster, target: Target, namespace: str) -> Check:
    """Whether the NetworkPolicies of the store's namespace let the predictor's pods in ``namespace``
    reach the store's Service. Kubeflow Pipelines' own admits port 8333 (the target of the
    ``seaweedfs`` Service's port 9000) only from namespaces labelled
    ``app.kubernetes.io/part-of: kubeflow-profile``, from ``istio-system``, and from pods of its own
    namespace (``manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-networkpolicy.yaml``,
    2.16.0 and 2.17.0, in the standalone and the multi-user installs)."""
    store = serving_store_of(cluster, target)
    where = service_of(store.endpoint) if store and store.endpoint else None
    if where is None:
        return Check("store access", "ok", "the model's store is not a Service of the cluster: not checked")
    name, store_namespace, port = where
    service = cluster.get(f"/api/v1/namespaces/{store_namespace}/services/{name}")
    if service is None:
        return Check("store access", "unknown", f"there is no Service {name} in {store_namespace}",
                     "see the pipeline store check")
    target_port = next((p.get("targetPort", p["port"]) for p in service["spec"].get("ports") or []
                        if p["port"] == port), port)
    pods = service["spec"].get("selector") or {}
    listed = cluster.get(f"/apis/networking.k8s.io/v1/namespaces/{store_namespace}/networkpolicies") or {}
    policies = [p for p in listed.get("items") or []
                if "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
                and selects(p["spec"].get("podSelector"), pods)]
    if not policies:
        return Check("store access", "ok", f"no NetworkPolicy limits who reaches {store_namespace}/{name}")
    names = ", ".join(p["metadata"]["name"] for p in policies)
    found = cluster.get(f"/api/v1/namespaces/{namespace}") or {}
    labels = (found.get("metadata") or {}).get("labels") or {}
    if any(admits(rule, store_namespace, namespace, labels, target_port)
           for policy in policies for rule in policy["spec"].get("ingress") or []):
        return Check("store access", "ok", f"the NetworkPolicy {names} of {store_namespace} admits pods of "
                     f"{namespace} to {name}, port {target_port}")
    return Check("store access", "problem",
                 f"the NetworkPolicy {names} of {store_namespace} admits no pod of {namespace} to {name}, "
                 f"port {target_port}: the predictor could not read the model",
                 f"deploy to a namespace it admits (the pipeline's own, or a Kubeflow profile's: labelled "
                 f"app.kubernetes.io/part-of=kubeflow-profile), or have an admin add a rule that admits "
                 f"{namespace}")


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


def train_retry_policy(workflow_defaults: str | None) -> str:
    """The ``retryPolicy`` Argo gives the training task, from the ``workflowDefaults`` of its
    controller's ConfigMap: KFP's retry template sets none (``backend/src/v2/compiler/argocompiler/
    container.go``, 2.17.0), Argo merges ``templateDefaults`` under the template
    (``workflow/controller/operator.go``, ``mergedTemplateDefaultsInto``, v4.0.5), and takes
    OnFailure where neither sets one, Always where an ``expression`` is set
    (``pkg/apis/workflow/v1alpha1/workflow_types.go``, ``RetryPolicyActual``)."""
    defaults = lowered(yaml.safe_load(workflow_defaults or "") or {})
    strategy = ((defaults.get("spec") or {}).get("templatedefaults") or {}).get("retrystrategy") or {}
    return strategy.get("retrypolicy") or ("Always" if strategy.get("expression") else "OnFailure")


def training_retries(cluster: Cluster) -> Check:
    config = cluster.read("config_map", ARGO_CONFIG, STANDALONE[0])
    if config is None:
        return Check("training retries", "unknown", f"no ConfigMap {ARGO_CONFIG} in {STANDALONE[0]}",
                     "cannot tell which failures of the training task Argo retries (docs/training.md)")
    policy = train_retry_policy((config.data or {}).get("workflowDefaults"))
    retried = RETRIED.get(policy, ())
    what = {"Failed": "its container fails (killed for memory, an error, a node shut down gracefully)",
            "Error": "its pod is lost with its node"}
    found = (f"Argo retries the training task (retryPolicy {policy}) "
             + (" and ".join(f"when {what[phase]}" for phase in retried) or "on neither kind of failure")
             + "".join(f"; not when {what[phase]}" for phase in what if phase not in retried))
    todo = "" if "Failed" in retried else ("a failed training resumes when you retry the run, from a "
                                           "--checkpoint-dir or --checkpoint-pvc (docs/training.md)")
    return Check("training retries", "ok", found, todo)


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

