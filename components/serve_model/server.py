"""An HTTP inference server for a trained model folder, on KServe's Python model server.

KServe gives the routes: the v1 protocol (``POST /v1/models/<name>:predict`` with
``{"instances": [...]}``), the Open Inference Protocol v2 (``POST /v2/models/<name>/infer``),
health and readiness (``/v2/health/live``, ``/v2/health/ready``, ``/v1/models/<name>``) and
Prometheus metrics. The same image runs as a KServe ``InferenceService`` predictor and as a
Vertex AI custom prediction container: ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``,
``AIP_PREDICT_ROUTE`` (v1's request and answer, which are Vertex AI's) and ``AIP_STORAGE_URI``
(the model folder) are honoured when set.

A v1 instance is one video: ``{"video": {"b64": "<the file, base64>"}}``, sampled as ``videoclf
predict`` samples it, or ``{"clips": [...]}``, its clips already sampled (uint8, ``[clips, frames,
height, width, 3]`` or one clip without the first axis). Each answer is ``{"top": [{"class",
"probability"}, ...]}``, ``top_k`` classes (a request's ``parameters`` may set it). In v2, a
``BYTES`` input named ``video`` holds base64 video files, one a row, and a ``UINT8`` input named
``clips`` one clip a row; the outputs are ``classes`` and ``probabilities``, ``[rows, top_k]``.
All the clips of a request go through the model in one batch, so concurrent requests that a
KServe batcher gathers into one are answered in one batch too. A request that is too large, or a
video that cannot be decoded, is answered 4xx naming the problem, and the server goes on.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from components.serve_model.config import MAX_REQUEST_MB, MODEL_NAME, SERVING_PORT, TOP_K
from components.serve_model.predict import Predictor

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses the process's arguments as it is imported
try:
    import kserve
    from kserve.errors import InvalidInput
    from kserve.model_server import app
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv

log = logging.getLogger(__name__)


def decoded_clips(predictor: Predictor, instance: dict, where: str) -> np.ndarray:
    """The clips of one v1 instance: a base64 video file sampled, or clips given as they are."""
    if isinstance(instance, dict) and "video" in instance:
        encoded = instance["video"].get("b64") if isinstance(instance["video"], dict) else instance["video"]
        return video_clips(predictor, encoded, where)
    if isinstance(instance, dict) and "clips" in instance:
        return checked_clips(predictor, np.asarray(instance["clips"]), where)
    raise InvalidInput(f"{where}: an instance is {{\"video\": {{\"b64\": ...}}}} or {{\"clips\": [...]}}")


def video_clips(predictor: Predictor, encoded: str | bytes, where: str) -> np.ndarray:
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise InvalidInput(f"{where}: the video is not base64: {e}") from e
    with tempfile.NamedTemporaryFile(prefix="videoclf-request-", suffix=".video") as file:
        file.write(data)
        file.flush()
        clips, outcome = predictor.video_clips(Path(file.name))
    if clips is None:
        raise InvalidInput(f"{where}: {outcome['error'].replace(file.name, 'the video')}")
    return clips


def checked_clips(predictor: Predictor, clips: np.ndarray, where: str) -> np.ndarray:
    if clips.shape == predictor.clip_shape:
        clips = clips[None]
    if clips.shape[1:] != predictor.clip_shape or clips.size == 0:
        raise InvalidInput(f"{where}: clips of shape {list(clips.shape)}, but the model takes "
                           f"[clips, {', '.join(map(str, predictor.clip_shape))}]")
    if clips.min() < 0 or clips.max() > 255:
        raise InvalidInput(f"{where}: clip values must be uint8, 0 to 255")
    return clips.astype(np.uint8)


class VideoClassifier(kserve.Model):
    """The KServe model: v1 and v2 requests answered through a Predictor."""

    def __init__(self, name: str, model_uri: str, top_k: int):
        super().__init__(name)
        self.model_uri, self.top_k = model_uri, top_k

    def load(self) -> bool:
        self.predictor = Predictor(self.model_uri)
        self.ready = True
        log.info("model %s ready: %d classes, clips of %s", self.name, len(self.predictor.classes),
                 list(self.predictor.clip_shape))
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        start = time.perf_counter()
        try:
            v2 = isinstance(payload, InferRequest)
            answer, what = self.infer(payload) if v2 else self.predict_v1(payload)
        except InvalidInput as e:
            log.warning("rejected a request: %s", e)
            raise
        log.info("answered %s in %.0f ms", what, (time.perf_counter() - start) * 1000)
        return answer

    def predict_v1(self, payload: dict) -> tuple[dict, str]:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("the request holds no \"instances\" list")
        k = int((payload.get("parameters") or {}).get("top_k", self.top_k))
        clips = [decoded_clips(self.predictor, instance, f"instance {n}")
                 for n, instance in enumerate(instances)]
        answers = [{"top": self.predictor.top(p, k)} for p in self.predictor.probabilities(clips)]
        return {"predictions": answers}, f"{len(instances)} instance(s): " + ", ".join(
            f"{a['top'][0]['class']} {a['top'][0]['probability']:.3f}" for a in answers)

    def infer(self, request: InferRequest) -> tuple[InferResponse, str]:
        inputs = {i.name: i for i in request.inputs}
        if "video" in inputs:
            videos = inputs["video"].as_numpy()
            rows = [video_clips(self.predictor, video, f"video {n}") for n, video in enumerate(videos)]
        elif "clips" in inputs:
            rows = list(checked_clips(self.predictor, inputs["clips"].as_numpy(), "clips")[:, None])
        else:
            raise InvalidInput(f"the inputs are {', '.join(inputs) or 'none'}: send \"video\" or \"clips\"")
        k = min(int((request.parameters or {}).get("top_k", self.top_k)), len(self.predictor.classes))
        tops = [self.predictor.top(p, k) for p in self.predictor.probabilities(rows)]
        classes = [t["class"] for top in tops for t in top]
        probabilities = [t["probability"] for top in tops for t in top]
        outputs = [InferOutput("classes", [len(tops), k], "BYTES", classes),
                   InferOutput("probabilities", [len(tops), k], "FP32", probabilities)]
        return (InferResponse(request.id or str(uuid.uuid4()), self.name, outputs),
                f"{len(tops)} row(s): " + ", ".join(top[0]["class"] for top in tops))


def add_routes(app: FastAPI, model: VideoClassifier, max_request_bytes: int) -> None:
    """Vertex AI's predict and health routes (where its variables name them), and a limit on the
    size of a request."""
    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = int(request.headers.get("content-length") or 0)
        if length > max_request_bytes:
            log.warning("rejected a request of %d bytes", length)
            return JSONResponse({"error": f"the request is {length} bytes, more than the {max_request_bytes} "
                                          "this server takes: send fewer or smaller videos"}, status_code=413)
        return await call_next(request)

    if route := os.environ.get("AIP_PREDICT_ROUTE"):
        async def vertex_predict(request: Request):
            try:
                return JSONResponse(model.predict(await request.json()))
            except InvalidInput as e:
                return JSONResponse({"error": str(e)}, status_code=400)

        app.add_api_route(route, vertex_predict, methods=["POST"])
    if route := os.environ.get("AIP_HEALTH_ROUTE"):
        async def vertex_health():
            return JSONResponse({"ready": model.ready}, status_code=200 if model.ready else 503)

        app.add_api_route(route, vertex_health, methods=["GET"])


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
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start([model])
