"""What serving costs: requests per second and p50/p95 latency of ``videoclf serve`` (KServe's
model server, one client sending one request after another on a kept-alive connection) against
the same Predictor called in-process, in one run, for one sampled clip (the v2 protocol's UINT8
``clips`` input, as JSON numbers, and as raw bytes in its binary tensor extension) and for one
video file (v1, base64, decoded and sampled by the server).
The network is the tutorial's at its size (10 classes, 10 x 224 x 224), untrained: the cost does
not depend on the weights. The video is a real clip (``--clip``) or a synthetic one of UCF101's
format (320 x 240 XVID, 175 frames).

    python benchmarks/serve.py --clip ../shared/real-clips/mpeg4_320x240_25fps_164f.avi
    python benchmarks/serve.py --requests 3 --size 32
"""

import argparse
import base64
import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from baseline import UCF101_FRAME_SIZE, UCF101_FRAMES

from components.common import write_json
from components.serve_model.predict import Predictor
from components.train_model.model import build_model
from components.train_model.model_folder import CLASSES_FILE, MODEL_FILE, SAMPLING_FILE
from pipelines.demo_data import encode_avi
from pipelines.motion_sets import MOTION_SETS, draw_look, render_clip

CLASSES = 10
FRAME_STEP, TRAIN_FPS = 15, 25


def model_folder(path: Path, frames: int, size: int) -> Path:
    """A model folder as training writes it, with an untrained network."""
    path.mkdir()
    build_model(CLASSES, frames, size, size).save(path / MODEL_FILE)
    write_json(path / CLASSES_FILE, [f"Class{i}" for i in range(CLASSES)])
    write_json(path / SAMPLING_FILE, {"frame_shape": [frames, size, size, 3], "frame_step": FRAME_STEP,
                                      "clip_seconds": 0.0, "train_fps": TRAIN_FPS, "eval_clips_per_video": 1})
    return path


def latencies(call, requests: int) -> dict:
    """p50, p95 and requests per second of ``requests`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": 1000 * float(p50), "p95_ms": 1000 * float(p95), "per_second": requests / sum(times)}


class Served:
    """``videoclf serve`` in a subprocess, and a kept-alive connection to it."""

    def __init__(self, model_dir: Path, port: int):
        self.process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model",
                                         str(model_dir), "--port", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        deadline = time.monotonic() + 180
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                self.post("/v2/health/ready", None, method="GET")
                return
            except OSError:  # not listening yet
                self.connection.close()
                time.sleep(0.3)
        self.close()
        raise RuntimeError("the server did not start")

    def post(self, path: str, body: bytes | None, method: str = "POST", headers: dict | None = None) -> dict:
        self.connection.request(method, path, body, headers or {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {answer}")
        return answer

    def close(self) -> None:
        self.connection.close()
        self.process.terminate()
        self.process.wait(timeout=60)


def binary_request(name: str, array: np.ndarray) -> tuple[bytes, dict]:
    """A v2 request whose tensor travels as raw bytes after its JSON header (the binary tensor
    extension), and its headers."""
    header = json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    return header + array.tobytes(), {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests of each kind")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--clip", type=Path, help="a real video file to send (default: a synthetic one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        model_dir = model_folder(Path(tmp) / "model", args.frames, args.size)
        video = args.clip or Path(tmp) / "video.avi"
        if args.clip is None:
            square, rng = MOTION_SETS["easy"], np.random.default_rng(0)
            look = draw_look(square, rng, UCF101_FRAME_SIZE)
            video.write_bytes(encode_avi(render_clip(square, "DriftRight", look, rng, UCF101_FRAMES,
                                                     UCF101_FRAME_SIZE)))
        predictor = Predictor(model_dir)
        clip = predictor.video_clips(video)[0]
        clip_body = json.dumps({"inputs": [{"name": "clips", "datatype": "UINT8", "shape": list(clip.shape),
                                            "data": clip.ravel().tolist()}]}).encode()
        binary_body, binary_headers = binary_request("clips", clip)
        video_body = json.dumps({"instances": [{"video": {"b64": base64.b64encode(video.read_bytes())
                                                          .decode()}}]}).encode()
        clip_in_process = latencies(lambda: predictor.probabilities([clip]), args.requests)
        in_process = {"clip": clip_in_process, "clip_binary": clip_in_process,
                      "video": latencies(lambda: predictor.probabilities([predictor.video_clips(video)[0]]),
                                         args.requests)}
        [expected] = predictor.probabilities([clip])
        requests = {"clip": ("/v2/models/video-classifier/infer", clip_body, None),
                    "clip_binary": ("/v2/models/video-classifier/infer", binary_body, binary_headers),
                    "video": ("/v1/models/video-classifier:predict", video_body, None)}
        served = Served(model_dir, free_port())
        try:
            answers = {kind: served.post(path, body, headers=headers)
                       for kind, (path, body, headers) in requests.items()}
            server = {kind: latencies(lambda r=request: served.post(r[0], r[1], headers=r[2]), args.requests)
                      for kind, request in requests.items()}
        finally:
            served.close()

    top = predictor.classes[int(expected.argmax())]
    results = {}
    for kind, (_, body, _) in requests.items():
        ratio = server[kind]["p50_ms"] / in_process[kind]["p50_ms"]
        results[kind] = {"request_mb": len(body) / 2**20, "in_process": in_process[kind],
                         "server": server[kind], "p50_ratio": ratio}
        print(f"{kind:11s} ({len(body) / 2**20:5.2f} MB a request): in-process p50 "
              f"{in_process[kind]['p50_ms']:7.1f} ms, p95 {in_process[kind]['p95_ms']:7.1f} ms, "
              f"{in_process[kind]['per_second']:6.2f}/s; server p50 {server[kind]['p50_ms']:7.1f} ms, "
              f"p95 {server[kind]['p95_ms']:7.1f} ms, {server[kind]['per_second']:6.2f}/s; {ratio:4.2f}x",
              flush=True)
    same = {kind: answers[kind]["outputs"][0]["data"][0] == top for kind in ("clip", "clip_binary")}
    same["video"] = answers["video"]["predictions"][0]["top"][0]["class"] == top
    print(json.dumps({"args": {**vars(args), "clip": args.clip and str(args.clip)},
                      "clip_shape": list(clip.shape), "same_top_class": same, "results": results}))


if __name__ == "__main__":
    main()
