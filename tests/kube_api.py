"""A loopback stand-in for the Kubernetes API server's custom-object routes, and a kubeconfig
that points at it, for the deploy step's tests.

It keeps objects by path and answers as the API server does for a custom resource
(k8s.io/apiserver, the REST handlers behind ``/apis/<group>/<version>/namespaces/<ns>/<plural>``):
GET of a missing object is 404 with a ``Status`` body; POST to the collection creates (201), or
409 when the name exists; PATCH with ``application/merge-patch+json`` merges by RFC 7386 and any
other patch type is 415 here (the client sends merge patches for custom objects). Each request is
recorded: method, path, content type and body.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.loopback import JsonHandler, start


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


class KubeApi:
    """The server, its recorded requests and stored objects; ``forbid`` answers every request 403."""

    def __init__(self, tmp_path: Path):
        self.requests: list[dict] = []
        self.objects: dict[str, dict] = {}
        self.forbid = False
        api = self

        class Handler(JsonHandler):
            def status(self, code: int, reason: str, message: str) -> None:
                self.reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": message, "reason": reason, "code": code})

            def answer(self, method: str) -> None:
                body = self.json_body()
                api.requests.append({"method": method, "path": self.path, "body": body,
                                     "content_type": self.headers.get("Content-Type")})
                path = self.path.split("?")[0]
                if api.forbid:
                    return self.status(403, "Forbidden", f"{method} {path} is forbidden")
                if method == "POST":
                    path = f"{path}/{body['metadata']['name']}"
                    if path in api.objects:
                        return self.status(409, "AlreadyExists", f"{path} already exists")
                    api.objects[path] = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
                    return self.reply(201, api.objects[path])
                if path not in api.objects:
                    return self.status(404, "NotFound", f"{path} not found")
                if method == "PATCH":
                    if self.headers.get("Content-Type") != "application/merge-patch+json":
                        return self.status(415, "UnsupportedMediaType", self.headers.get("Content-Type"))
                    api.objects[path] = merge_patch(api.objects[path], body)
                return self.reply(200, api.objects[path])

        self.server = start(Handler)
        self.kubeconfig = tmp_path / "kubeconfig"
        server = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
            "clusters": [{"name": "loopback", "cluster": {"server": server}}],
            "users": [{"name": "pipeline", "user": {"token": "test-token"}}],
            "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "pipeline"}}]}))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
