"""What serving costs: ``videoclf serve`` (KServe's model server) against the same Predictor
called in-process, in one run.

- cost: p50 and p95 latency of one client sending one request after another on a kept-alive
  connection, for one video file (v1, and a v2 ``BYTES`` input, base64) and one sampled clip
  (v1 JSON numbers or base64 bytes, v2 JSON numbers, and raw bytes in v2's binary tensor
  extension), each timed in turns with the same work done in-process.
- load: 1, 4 and 8 clients each sending whole video files (v1) as fast as they are answered:
  p50, p95, p99, requests per second; the latency of readiness and liveness probes (a new
  connection each, as the kubelet's) sent meanwhile; and the server's RSS before and after. The
  same at the highest count on Vertex AI's routes (``AIP_PREDICT_ROUTE``, ``AIP_HEALTH_ROUTE``).
- throughput: as many clients sending one clip each (binary), in clips per second, against the
  model called in-process on the very batches the server formed (as many of each size, from its
  ``videoclf_batch_clips`` metric), in turns.

The network is the tutorial's at its size (10 classes, 10 x 224 x 224), untrained: the cost does
not depend on the weights. The video is a real clip (``--clip``) or a synthetic one of UCF101's
format (320 x 240 XVID, 175 frames).

    python benchmarks/serve.py --clip ../shared/real-clips/mpeg4_320x240_25fps_164f.avi
    python benchmarks/serve.py --requests 3 --size 32 --seconds 2 --clients 1 2
"""

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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
V1, V2 = "/v1/models/video-classifier:predict", "/v2/models/video-classifier/infer"
VERTEX = {"AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health"}
PROBES = {"kserve": ("/v2/health/ready", "/v2/health/live"), "vertex": ("/health",)}
PROBE_EVERY = 0.05  # seconds between probes


def model_folder(path: Path, frames: int, size: int) -> Path:
    """A model folder as training writes it, with an untrained network."""
    path.mkdir()
    build_model(CLASSES, frames, size, size).save(path / MODEL_FILE)
    write_json(path / CLASSES_FILE, [f"Class{i}" for i in range(CLASSES)])
    write_json(path / SAMPLING_FILE, {"frame_shape": [frames, size, size, 3], "frame_step": FRAME_STEP,
                                      "clip_seconds": 0.0, "train_fps": TRAIN_FPS, "eval_clips_per_video": 1})
    return path


def summary(times: list[float], seconds: float | None = None) -> dict:
    """p50, p95, p99 in ms, and calls per second (over ``seconds`` where the calls overlapped)."""
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {"p50_ms": 1000 * float(p50), "p95_ms": 1000 * float(p95), "p99_ms": 1000 * float(p99),
            "max_ms": 1000 * max(times), "count": len(times),
            "per_second": len(times) / (seconds or sum(times))}


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


class Served:
    """``videoclf serve`` in a subprocess, with Vertex AI's routes as well as KServe's."""

    def __init__(self, model_dir: Path, port: int):
        self.port = port
        self.process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model",
                                         str(model_dir), "--port", str(port)], env={**os.environ, **VERTEX},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                if self.get("/v2/health/ready") == 200:
                    return
            except OSError:  # not listening yet
                time.sleep(0.3)
        self.close()
        raise RuntimeError("the server did not start")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)

    def get(self, path: str) -> int:
        """A GET on a new connection, as the kubelet probes: its status."""
        connection = self.connection()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    def batch_sizes(self) -> Counter:
        """How many model batches of each size (in clips, up to 32) the server has run, from
        its ``videoclf_batch_clips`` histogram."""
        connection = self.connection()
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
        cumulative = {int(float(line.split('le="')[1].split('"')[0])): float(line.split()[-1])
                      for line in text.splitlines()
                      if line.startswith("videoclf_batch_clips_bucket") and 'le="+Inf"' not in line}
        sizes = sorted(size for size in cumulative if size <= 32)
        return Counter({size: int(cumulative[size] - cumulative.get(size - 1, 0)) for size in sizes})

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def post(connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict | None) -> dict:
    connection.request("POST", path, body, headers or {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {answer}")
    return answer


def binary_request(name: str, array: np.ndarray) -> tuple[bytes, dict]:
    """A v2 request whose tensor travels as raw bytes after its JSON header (the binary tensor
    extension), and its headers."""
    header = json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    return header + array.tobytes(), {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(header))}


def requests_of(video: Path, clip: np.ndarray) -> dict[str, tuple[str, bytes, dict | None]]:
    """Each kind of request: its route, body and headers."""
    encoded = base64.b64encode(video.read_bytes()).decode()
    numbers = clip.ravel().tolist()
    return {
        "video_v1": (V1, json.dumps({"instances": [{"video": {"b64": encoded}}]}).encode(), None),
        "video_v2": (V2, json.dumps({"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1],
                                                 "data": [encoded]}]}).encode(), None),
        "clip_v1": (V1, json.dumps({"instances": [{"clips": clip.tolist()}]}).encode(), None),
        "clip_v1_b64": (V1, json.dumps({"instances": [{"clips": {"b64": base64.b64encode(clip.tobytes())
                                                                 .decode()}}]}).encode(), None),
        "clip_v2": (V2, json.dumps({"inputs": [{"name": "clips", "datatype": "UINT8",
                                                "shape": list(clip.shape), "data": numbers}]}).encode(),
                    None),
        "clip_v2_binary": (V2, *binary_request("clips", clip)),
    }


def cost(served: Served, predictor: Predictor, video: Path, clip: np.ndarray, requests: int) -> dict:
    """Each kind of request, one at a time, timed in turns with the same work in-process."""
    in_process = {"video": lambda: predictor.probabilities([predictor.video_clips(video)[0]]),
                  "clip": lambda: predictor.probabilities([clip])}
    results = {}
    connection = served.connection()
    for kind, (path, body, headers) in requests_of(video, clip).items():
        local = in_process[kind.split("_")[0]]
        answer = post(connection, path, body, headers)  # and a warm-up of both sides
        local()
        server_times, local_times = [], []
        for _ in range(requests):
            server_times.append(timed(lambda p=path, b=body, h=headers: post(connection, p, b, h)))
            local_times.append(timed(local))
        first = (answer["predictions"][0]["top"][0]["class"] if path == V1 else
                 answer["outputs"][0]["data"][0])
        server, local_summary = summary(server_times), summary(local_times)
        results[kind] = {"request_mb": len(body) / 2**20, "in_process": local_summary, "server": server,
                         "p50_ratio": server["p50_ms"] / local_summary["p50_ms"], "top_class": first}
        print(f"{kind:14s} ({len(body) / 2**20:5.2f} MB): in-process p50 {local_summary['p50_ms']:7.1f} ms, "
              f"server p50 {server['p50_ms']:7.1f} ms, p95 {server['p95_ms']:7.1f} ms: "
              f"{results[kind]['p50_ratio']:4.2f}x", file=sys.stderr, flush=True)
    connection.close()
    return results


def under_load(served: Served, clients: int, seconds: float, request: tuple[str, bytes, dict | None],
               probes: tuple[str, ...]) -> dict:
    """``clients`` threads sending ``request`` for ``seconds`` while probes are sent: latencies,
    requests per second, probe latencies, and the server's RSS before and after."""
    rss_before = served.rss_mb()
    times: list[float] = []
    probe_times: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        connection = served.connection()
        while not stop.is_set():
            try:
                times.append(timed(lambda: post(connection, *request)))
            except (OSError, RuntimeError) as e:
                failures.append(f"{request[0]}: {e}")
                connection.close()
        connection.close()

    def prober() -> None:
        n = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = served.get(probes[n % len(probes)])
            except OSError as e:
                status = e
            probe_times.append(time.perf_counter() - start)
            if status != 200:
                failures.append(f"{probes[n % len(probes)]}: {status}")
            n += 1
            time.sleep(PROBE_EVERY)

    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=prober)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": summary(times, elapsed), "probes": summary(probe_times),
            "failures": failures, "rss_mb_before": rss_before, "rss_mb_after": served.rss_mb()}


def throughput(served: Served, predictor: Predictor, clip: np.ndarray, clients: int, seconds: float,
               rounds: int = 3) -> dict:
    """Clips per second from ``clients`` sending one clip each (binary), against the model
    in-process running the very batches the server formed (as many of each size), in turns:
    ``rounds`` times, a load of ``seconds / rounds`` then its batches in-process."""
    request = (V2, *binary_request("clips", clip))
    served_clips = served_seconds = local_clips = local_seconds = 0.0
    sizes: Counter = Counter()
    probes = []
    for _ in range(rounds):
        before = served.batch_sizes()
        load = under_load(served, clients, seconds / rounds, request, PROBES["kserve"])
        formed = served.batch_sizes() - before
        served_clips += load["requests"]["count"] * len(clip)
        served_seconds += load["requests"]["count"] / load["requests"]["per_second"]
        probes.append(load["probes"]["max_ms"])
        for size, count in formed.items():
            batch = np.repeat(clip, size, axis=0)
            if size not in sizes:
                predictor.probabilities([batch])  # the first call at a size traces the model
            local_seconds += sum(timed(lambda b=batch: predictor.probabilities([b])) for _ in range(count))
            local_clips += size * count
        sizes += formed
    server, in_process = served_clips / served_seconds, local_clips / local_seconds
    return {"clients": clients, "batch_sizes": dict(sorted(sizes.items())),
            "mean_batch_clips": sum(s * c for s, c in sizes.items()) / sum(sizes.values()),
            "server_clips_per_second": server, "in_process_clips_per_second": in_process,
            "ratio": server / in_process, "probe_max_ms": max(probes)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests of each kind (cost)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds of each load level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="load levels")
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
        [expected] = predictor.probabilities([clip])
        served = Served(model_dir, free_port())
        try:
            costs = cost(served, predictor, video, clip, args.requests)
            video_request = requests_of(video, clip)["video_v1"]
            levels = [("kserve", clients, video_request) for clients in args.clients]
            levels.append(("vertex", max(args.clients), ("/predict", *video_request[1:])))
            load = []
            for routes, clients, request in levels:
                row = {"routes": routes, **under_load(served, clients, args.seconds, request, PROBES[routes])}
                load.append(row)
                done, probes = row["requests"], row["probes"]
                print(f"{routes:6s} {clients} clients: p50 {done['p50_ms']:7.1f} ms, "
                      f"p95 {done['p95_ms']:7.1f}, p99 {done['p99_ms']:7.1f}, {done['per_second']:5.2f}/s; "
                      f"probes p50 {probes['p50_ms']:5.1f} ms, p99 {probes['p99_ms']:5.1f}, "
                      f"max {probes['max_ms']:5.1f}; RSS {row['rss_mb_before']:.0f} -> "
                      f"{row['rss_mb_after']:.0f} MB", file=sys.stderr, flush=True)
            batched = throughput(served, predictor, clip, max(args.clients), args.seconds)
            print(f"{batched['clients']} clip clients: {batched['server_clips_per_second']:.1f} clips/s in "
                  f"batches of {batched['batch_sizes']}; in-process, the same batches: "
                  f"{batched['in_process_clips_per_second']:.1f} clips/s: {batched['ratio']:.2f}x",
                  file=sys.stderr, flush=True)
        finally:
            served.close()

    top = predictor.classes[int(expected.argmax())]
    print(json.dumps({"args": {**vars(args), "clip": args.clip and str(args.clip)},
                      "clip_shape": list(clip.shape),
                      "same_top_class": {kind: row.pop("top_class") == top for kind, row in costs.items()},
                      "cost": costs, "load": load, "throughput": batched}))


if __name__ == "__main__":
    main()
