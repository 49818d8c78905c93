"""Loopback HTTP stand-ins for the APIs the tests talk to: a handler that answers JSON, and a
server for it on a free port, in a thread."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    """Reads and answers JSON bodies, and logs nothing; a subclass answers in ``answer(method)``."""

    def answer(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self):
        self.answer("GET")

    def do_POST(self):
        self.answer("POST")

    def do_PATCH(self):
        self.answer("PATCH")

    def log_message(self, *args):
        pass

    def json_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """Serves ``handler`` on 127.0.0.1 at a free port until ``shutdown()``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
