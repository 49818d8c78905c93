"""A loopback stand-in for the Kubernetes API server: namespaced objects (custom objects such as
InferenceServices, ConfigMaps, PVCs, Secrets, Services), RBAC, SelfSubjectAccessReviews and API
discovery, and a kubeconfig that points at it, for the deploy step's and the preflight's tests.

It keeps objects by path and answers as the API server does (k8s.io/apiserver, the REST handlers
behind ``/api/v1/namespaces/<ns>/<plural>`` and ``/apis/<group>/<version>/namespaces/<ns>/<plural>``):
GET of a missing object is 404 with a ``Status`` body, GET of a collection lists the objects
stored in it; POST to the collection creates (201) with ``metadata.generation`` 1, or 409 when
the name exists; PATCH with ``application/merge-patch+json`` merges by RFC 7386 and raises the
generation when the spec changed (a custom resource with a status subresource counts spec
changes only); any other patch type is 415 here (the client sends merge patches for custom
objects). Cluster-scoped objects (``/api/v1/namespaces/<name>``) are read as stored.

``statuses[path]`` is a sequence of ``status`` values the object shows, one per GET after each
write (the last one stays), as a controller would update it. ``rules`` (a Role's rules) are
enforced as RBAC does (rbac/v1 ``PolicyRule``: API group, resource, verb and resource name,
``*`` for any) on every request as the kubeconfig's user, and answer the
SelfSubjectAccessReviews (``authorization.k8s.io/v1``) of an impersonated one, unless
``account_rules`` gives that one rights of its own; ``impersonation`` false refuses
impersonation (403) as the API server does for a user without ``impersonate`` on service
accounts. Each request is recorded: method, path, content type, body and impersonated user.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.loopback import JsonHandler, start

VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
OBJECT_PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<namespace>[^/]+)/"
                         r"(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?$")
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
KSERVE_DISCOVERY = "/apis/serving.kserve.io/v1beta1"


def merge_patch(target, patch):
    """RFC 7386: objects merge key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def allows(rules: list[dict], group: str, resource: str, verb: str, name: str | None) -> bool:
    """Whether a Role's rules grant the verb on the resource (rbac/v1 PolicyRule semantics)."""
    return any((group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
               and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
               and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
               and (not rule.get("resourceNames") or name in rule["resourceNames"])
               for rule in rules)


class KubeApi:
    """The server, its recorded requests and stored objects; ``forbid`` answers every request 403."""

    def __init__(self, tmp_path: Path):
        self.requests: list[dict] = []
        self.objects: dict[str, dict] = {}
        self.statuses: dict[str, list[dict]] = {}
        self.reads: dict[str, int] = {}  # GETs of each object since its last write
        self.forbid = False
        self.rules: list[dict] | None = None  # None: everything is allowed
        self.account_rules: list[dict] | None = None  # the impersonated account's, where not ``rules``
        self.impersonation = True
        self.kserve = True  # whether serving.kserve.io/v1beta1 is served
        api = self

        class Handler(JsonHandler):
            def status(self, code: int, reason: str, message: str) -> None:
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def answer(self, method: str) -> None:
                body = self.json_body()
                user = self.headers.get("Impersonate-User")
                api.requests.append({"method": method, "path": self.path, "body": body, "user": user,
                                     "content_type": self.headers.get("Content-Type")})
                path = self.path.split("?")[0]
                if api.forbid:
                    return self.status(403, "Forbidden", f"{method} {path} is forbidden")
                if user and not api.impersonation:
                    return self.status(403, "Forbidden", f'cannot impersonate serviceaccounts "{user}"')
                if path == SSAR:
                    attributes = body["spec"]["resourceAttributes"]
                    rules = api.rules if api.account_rules is None else api.account_rules
                    allowed = rules is None or allows(rules, attributes.get("group", ""),
                                                      attributes["resource"], attributes["verb"],
                                                      attributes.get("name"))
                    return self.reply(201, {**body, "status": {"allowed": allowed}})
                if path == KSERVE_DISCOVERY:
                    if not api.kserve:
                        return self.status(404, "NotFound", "the server could not find the resource")
                    return self.reply(200, {"kind": "APIResourceList",
                                            "groupVersion": "serving.kserve.io/v1beta1",
                                            "resources": [{"name": "inferenceservices", "namespaced": True,
                                                           "kind": "InferenceService"}]})
                match = OBJECT_PATH.match(path)
                if match and api.rules is not None:
                    verb = VERBS[method] if method != "GET" or match["name"] else "list"
                    if not allows(api.rules, match["group"] or "", match["resource"], verb, match["name"]):
                        return self.status(403, "Forbidden", f"cannot {verb} {match['resource']} in "
                                                             f"{match['namespace']}")
                if method == "POST":
                    path = f"{path}/{body['metadata']['name']}"
                    if path in api.objects:
                        return self.status(409, "AlreadyExists", f"{path} already exists")
                    metadata = {**body["metadata"], "resourceVersion": "1", "generation": 1}
                    api.objects[path] = {**body, "metadata": metadata}
                    api.reads[path] = 0
                    return self.reply(201, api.objects[path])
                if method == "GET" and match and not match["name"]:
                    items = [obj for key, obj in api.objects.items() if key.rsplit("/", 1)[0] == path]
                    return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {},
                                            "items": items})
                if path not in api.objects:
                    return self.status(404, "NotFound", f"{path} not found")
                if method == "PATCH":
                    if self.headers.get("Content-Type") != "application/merge-patch+json":
                        return self.status(415, "UnsupportedMediaType", self.headers.get("Content-Type"))
                    old = api.objects[path]
                    new = merge_patch(old, body)
                    if new.get("spec") != old.get("spec"):
                        new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
                    api.objects[path] = new
                    api.reads[path] = 0
                elif method == "GET" and path in api.statuses:
                    sequence = api.statuses[path]
                    api.objects[path]["status"] = sequence[min(api.reads.get(path, 0), len(sequence) - 1)]
                    api.reads[path] = api.reads.get(path, 0) + 1
                return self.reply(200, api.objects[path])

        self.server = start(Handler)
        self.kubeconfig = tmp_path / "kubeconfig"
        server = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
            "clusters": [{"name": "loopback", "cluster": {"server": server}}],
            "users": [{"name": "pipeline", "user": {"token": "test-token"}}],
            "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "pipeline"}}]}))

    def add(self, path: str, obj: dict) -> None:
        """Stores an object, as created before the test."""
        self.objects[path] = obj

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
