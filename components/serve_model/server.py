"""An HTTP inference server for a trained model folder, on KServe's Python model server.

KServe gives the server (uvicorn), health and readiness (``/v2/health/live``,
``/v2/health/ready``, ``/v1/models/<name>``), model metadata and Prometheus metrics. The routes
that answer requests are this module's, in front of KServe's own, so that a request's body is
read into arrays on worker threads rather than on the event loop: the v1 protocol (``POST
/v1/models/<name>:predict`` with ``{"instances": [...]}``) and the Open Inference Protocol v2
(``POST /v2/models/<name>/infer``, JSON or its binary tensor extension); ``protocol.py`` reads
and writes both. The same image runs as a KServe ``InferenceService`` predictor and as a Vertex
AI custom prediction container: ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``
(v1's request and answer, which are Vertex AI's) and ``AIP_STORAGE_URI`` (the model folder)
are honoured when set.

A request goes through KServe's ``Model.__call__`` (its latency metrics and log line):
``preprocess`` reads the body and decodes each video on a pool of threads, one a core;
``predict`` hands the videos to the ``Batcher``, which runs those of concurrent requests through
the model together on a thread of its own; ``postprocess`` keeps each request's own ``top_k``.
The event loop only moves bytes, so probes are answered while the model works. A request whose
body passes ``--max-request-mb`` is answered 413 as soon as it does (declared or chunked); a
malformed one 400 naming the problem; an unknown model 404; and the server goes on. On SIGTERM
it stops taking connections, finishes the requests in flight (``SHUTDOWN_GRACE_SECONDS``) and
exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from components.extract_frames.extract import cores
from components.serve_model import protocol
from components.serve_model.batcher import Batcher
from components.serve_model.config import (
    MAX_BATCH_CLIPS,
    MAX_REQUEST_MB,
    MODEL_NAME,
    SERVING_PORT,
    SHUTDOWN_GRACE_SECONDS,
    TOP_K,
)
from components.serve_model.predict import Predictor

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses the process's arguments as it is imported
try:
    import kserve
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
    from kserve.model_server import app
finally:
    sys.argv = _argv

log = logging.getLogger(__name__)


@dataclass
class Body:
    """A request as it came: which protocol, its body, its headers."""

    protocol: str  # "v1" or "v2"
    data: bytes
    headers: dict[str, str]


@dataclass
class Rows:
    """A request read and its videos decoded: each row's clips."""

    parsed: protocol.Parsed
    clips: list[np.ndarray]


class VideoClassifier(kserve.Model):
    """The KServe model: requests read and videos decoded on worker threads, the model run by a
    Batcher over concurrent requests."""

    def __init__(self, name: str, model_uri: str, top_k: int, max_batch_clips: int = MAX_BATCH_CLIPS):
        super().__init__(name)
        self.model_uri, self.top_k, self.max_batch_clips = model_uri, top_k, max_batch_clips

    def load(self) -> bool:
        self.predictor = Predictor(self.model_uri)
        self.shape = protocol.ModelShape(self.predictor.clip_shape, len(self.predictor.classes), self.top_k)
        for size in (1, 2):  # traces the model's function, for batches of any size, before the first request
            self.predictor.probabilities([np.zeros((size, *self.shape.clip), np.uint8)])
        threads = cores()
        self.workers = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        self.batcher = Batcher(self.predictor.probabilities, self.max_batch_clips)
        self.ready = True
        log.info("model %s ready: %d classes, clips of %s; %d decoding threads, batches of up to %d clips",
                 self.name, self.shape.classes, list(self.shape.clip), threads, self.max_batch_clips)
        return self.ready

    async def preprocess(self, body: Body, headers: dict[str, str] | None = None) -> Rows:
        loop = asyncio.get_running_loop()
        parse = (partial(protocol.parse_v1, body.data, self.shape) if body.protocol == "v1" else
                 partial(protocol.parse_v2, body.data, body.headers, self.shape))
        parsed = await loop.run_in_executor(self.workers, parse)

        async def clips_of(row: bytes | np.ndarray, where: str) -> np.ndarray:
            if isinstance(row, np.ndarray):  # clips as sent
                return row
            return await loop.run_in_executor(self.workers, self.decoded, row, where)

        rows = zip(parsed.rows, parsed.where, strict=True)
        clips = await asyncio.gather(*(clips_of(row, where) for row, where in rows), return_exceptions=True)
        if errors := [c for c in clips if isinstance(c, BaseException)]:
            raise errors[0]
        return Rows(parsed, clips)

    def decoded(self, video: bytes, where: str) -> np.ndarray:
        try:
            return self.predictor.file_clips(video)
        except ValueError as e:
            raise InvalidInput(f"{where}: {e}") from e

    async def predict(self, rows: Rows, headers: dict[str, str] | None = None
                      ) -> tuple[protocol.Parsed, list[list[dict]]]:
        """The request, and its ``top_k`` classes of each row."""
        probabilities = await self.batcher(rows.clips)
        return rows.parsed, [self.predictor.top(p, rows.parsed.top_k) for p in probabilities]

    def stop(self) -> None:
        super().stop()
        self.batcher.close()
        self.workers.shutdown()


class BodyLimit:
    """ASGI middleware: a request whose body passes ``max_bytes`` is answered 413, as soon as
    its ``Content-Length`` says so or, sent without one (chunked), as soon as that many bytes
    have come, and its connection closed; the rest is never read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            return await self.refuse(send, 400, f"Content-Length is {declared.decode(errors='replace')!r}")
        if int(declared) > self.max_bytes:
            return await self.refuse(send, 413, f"the request is {int(declared)} bytes, more than the "
                                                f"{self.max_bytes} this server takes: send fewer or smaller "
                                                "videos")
        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLargeError
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError:
            if started:
                raise
            await self.refuse(send, 413, f"the request's body passed the {self.max_bytes} bytes this server "
                                         "takes: send fewer or smaller videos")

    async def refuse(self, send, status: int, error: str) -> None:
        log.warning("rejected a request: %s", error)
        response = JSONResponse({"error": error}, status_code=status, headers={"Connection": "close"})
        await response({"type": "http"}, None, send)


class BodyTooLargeError(Exception):
    """A request body that passed the size limit as it came in."""


def json_response(answer: dict) -> Response:
    return Response(orjson.dumps(answer), media_type="application/json")


def add_routes(app: FastAPI, model: VideoClassifier, max_request_bytes: int) -> None:
    """The inference routes (v1, v2, and Vertex AI's predict and health routes where its
    variables name them), ahead of KServe's own, and the limit on a request's size."""
    async def answer(request: Request, model_name: str, version: str) -> Response:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        if not model.ready:
            raise ModelNotReady(model_name)
        start = time.perf_counter()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            (parsed, tops), _ = await model(Body(version, await request.body(), headers), headers)
        except InvalidInput as e:
            log.warning("rejected a request: %s", e)
            raise
        rows = f"{len(tops)} {'instance' if version == 'v1' else 'row'}(s)"
        log.info("answered %s in %.0f ms: %s", rows, (time.perf_counter() - start) * 1000,
                 ", ".join(f"{top[0]['class']} {top[0]['probability']:.3f}" for top in tops))
        if version == "v1":
            return json_response(protocol.v1_answer(tops))
        request_id = parsed.request_id or headers.get("x-request-id") or str(uuid.uuid4())
        return json_response(protocol.v2_answer(tops, parsed, model.name, request_id))

    async def v1_predict(request: Request, model_name: str):
        return await answer(request, model_name, "v1")

    async def v2_infer(request: Request, model_name: str):
        return await answer(request, model_name, "v2")

    app.add_api_route("/v1/models/{model_name}:predict", v1_predict, methods=["POST"])
    app.add_api_route("/v2/models/{model_name}/infer", v2_infer, methods=["POST"])
    if route := os.environ.get("AIP_PREDICT_ROUTE"):
        async def vertex_predict(request: Request):
            return await answer(request, model.name, "v1")

        app.add_api_route(route, vertex_predict, methods=["POST"])
    if route := os.environ.get("AIP_HEALTH_ROUTE"):
        async def vertex_health():
            return JSONResponse({"ready": model.ready}, status_code=200 if model.ready else 503)

        app.add_api_route(route, vertex_health, methods=["GET"])
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)


def serve(model_uri: str | None = None, port: int | None = None, name: str = MODEL_NAME,
          top_k: int = TOP_K, max_request_mb: int = MAX_REQUEST_MB) -> None:
    """Loads the model and serves it until stopped; ``AIP_STORAGE_URI`` and ``AIP_HTTP_PORT``
    stand in for the model and port when they are not given."""
    model_uri = model_uri or os.environ.get("AIP_STORAGE_URI")
    if not model_uri:
        raise ValueError("give the model folder: --model DIR|gs://...|s3://..., or AIP_STORAGE_URI")
    port = port or int(os.environ.get("AIP_HTTP_PORT", SERVING_PORT))
    model = VideoClassifier(name, model_uri, top_k)
    model.load()
    add_routes(app, model, max_request_mb << 20)
    log.info("serving %s as %s on port %d", model_uri, name, port)
    # One process: the model is loaded once, and the batcher sees every request. The log line of
    # each request says what it was answered and how long it took: KServe's own is left out.
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False,
                       grace_period=SHUTDOWN_GRACE_SECONDS).start([model])
