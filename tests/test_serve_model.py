"""Predictions on new videos with a trained model folder."""

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_video
from components.serve_model.predict import eval_clips, predict_videos
from components.train_model.model_folder import load_model
from tests.conftest import free_port
from tests.index_videos import clip_numbers, time_video


def test_predict_answers_each_real_clip_and_names_the_bad_files(model_dir, real_clips, tmp_path):
    text = tmp_path / "notes.avi"
    text.write_text("not a video")
    real = list(map(str, real_clips.values()))
    videos = [*real, str(text), str(tmp_path / "missing.mp4")]
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", "--model",
                             str(model_dir / "model.keras"), "--top-k", "3", *videos],
                            capture_output=True, text=True, timeout=300)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["video"] for a in answers] == videos
    classes = json.loads((model_dir / "classes.json").read_text())
    for answer in answers[:len(real)]:
        top = answer["top"]
        assert len(top) == 3 and {t["class"] for t in top} <= set(classes)
        probabilities = [t["probability"] for t in top]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    assert "notes.avi: OpenCV cannot open" in answers[-2]["error"]
    assert "missing.mp4: no such file" in answers[-1]["error"]
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"videoclf predict: 2 of {len(videos)} videos could not be read"


def test_a_stream_opencv_gives_up_on_is_answered_as_an_error_and_the_rest_still_are(model_dir, real_clips,
                                                                                       monkeypatch):
    import cv2

    from components.extract_frames import video as video_module

    damaged = real_clips["h264_340x256_28fps_280f.mp4"]
    read = video_module.Video.read_clips

    def failing(self, *args):
        if self.path == damaged:
            raise cv2.error("OpenCV(5.0) error: (-215:Assertion failed) !buf.empty() in function 'imdecode'")
        return read(self, *args)

    monkeypatch.setattr(video_module.Video, "read_clips", failing)
    others = [p for p in real_clips.values() if p != damaged][:2]
    answers = predict_videos(model_dir, [damaged, *others], workers=1)  # decoded here, where the patch is
    assert "OpenCV" in answers[0]["error"] and str(damaged) in answers[0]["error"]
    assert all("top" in answer for answer in answers[1:])


@pytest.mark.parametrize("count", [1, 3])
def test_predict_samples_as_evaluation_does(model_dir, real_clips, tmp_path, count):
    """A video at the training videos' frame rate (25 fps) gets the clips extraction stores of a
    test video, and the mean of their logits."""
    from scipy.special import softmax

    model_copy = tmp_path / "model"
    shutil.copytree(model_dir, model_copy)
    sampling = json.loads((model_copy / "sampling.json").read_text())
    assert sampling["train_fps"] == 25.0
    (model_copy / "sampling.json").write_text(json.dumps({**sampling, "eval_clips_per_video": count}))
    model, classes = load_model(model_copy)
    spec = ClipSpec(n_frames=4, frame_step=2, height=32, width=32, eval_clips_per_video=count)
    path = real_clips["mpeg4_320x240_25fps_164f.avi"]
    [answer] = predict_videos(model_copy, [path], top_k=4)
    test_clips, outcome = extract_video(path, "test", spec)  # as extraction stores them
    assert len(set(outcome["starts"])) == count
    expected = softmax(model.predict_on_batch(test_clips).astype(np.float64).mean(axis=0))
    got = {t["class"]: t["probability"] for t in answer["top"]}
    assert got == pytest.approx({c: expected[i] for i, c in enumerate(classes)}, abs=1e-5)


def test_a_faster_video_is_sampled_over_the_seconds_the_training_clips_covered(tmp_path):
    """Trained on 25 fps videos every 10th frame (0.4 s apart), a 50 fps video is sampled every
    20th frame: each sampled frame shows the time it would in a 25 fps copy."""
    sampling = {"frame_shape": [6, 64, 64, 3], "frame_step": 10, "clip_seconds": 0.0, "train_fps": 25.0,
                "eval_clips_per_video": 1}
    times = {fps: clip_numbers(eval_clips(time_video(tmp_path / f"{fps}.avi", 8, fps), sampling)[0])[0]
             for fps in (25, 50)}
    assert list(np.diff(times[50])) == [40] * 5  # centiseconds: 0.4 s apart
    assert all(abs(a - b) <= 4 for a, b in zip(times[25], times[50], strict=True))


class Client:
    """An HTTP client of a server on a loopback port."""

    def __init__(self, port: int):
        self.port = port

    def wait_ready(self, alive, route: str = "/v2/health/ready", timeout: float = 120) -> bool:
        """Polls ``route`` until it answers 200, while ``alive()``; whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            if self.get(route) == 200:
                return True
            time.sleep(0.3)
        return False

    def post(self, path: str, body: dict | bytes, headers: dict | None = None) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         headers=headers or {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def announce(self, path: str, length: int) -> tuple[int, dict]:
        """Sends only the headers of a request of ``length`` bytes, and reads the answer."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        answer = response.status, json.loads(response.read())
        connection.close()
        return answer

    def stream(self, path: str, length: int) -> tuple[int, int, dict]:
        """Sends a chunked body of up to ``length`` bytes and never its last chunk, stopping
        where the server stops reading; how many bytes went, and the answer."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.putrequest("POST", path)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk, sent = b" " * (1 << 16), 0
        try:
            while sent < length:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # the server answered and closed the connection
            pass
        response = connection.getresponse()
        answer = sent, response.status, json.loads(response.read())
        connection.close()
        return answer

    def get(self, path: str) -> int | None:
        """The status of a GET, or None where nothing answers."""
        import urllib.error
        import urllib.request

        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None


class Server(Client):
    """``videoclf serve`` in a subprocess, its log in a file."""

    def __init__(self, args: list[str], env: dict | None = None, port: int | None = None):
        import os
        import tempfile

        super().__init__(port or free_port())
        command = [sys.executable, "-m", "pipelines.cli", "serve", *args]
        if "AIP_HTTP_PORT" not in (env or {}):
            command += ["--port", str(self.port)]
        self.log_file = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed with the server)
        self.process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=self.log_file,
                                        stderr=subprocess.STDOUT, text=True)
        if not self.wait_ready(lambda: self.process.poll() is None):
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.log}")

    @property
    def log(self) -> str:
        if self.log_file.closed:
            return self.text
        self.log_file.seek(0)
        return self.log_file.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.text = self.log
        self.log_file.close()


def b64(path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def assert_same_top(got: list[dict], wanted: list[dict]) -> None:
    """The same classes in the same order, the same probabilities but for float rounding (the
    server runs a request's videos in one batch)."""
    assert [t["class"] for t in got] == [t["class"] for t in wanted]
    assert [t["probability"] for t in got] == pytest.approx([t["probability"] for t in wanted], abs=1e-5)


def binary_v2(name: str, array: np.ndarray | list[bytes], **extra) -> tuple[bytes, dict]:
    """A v2 request in the binary tensor extension, encoded by KServe's own client types."""
    from kserve.protocol.infer_type import InferInput, InferRequest

    array = np.array(array, dtype=object) if isinstance(array, list) else array
    tensor = InferInput(name, list(array.shape), "BYTES" if array.dtype == object else "UINT8")
    tensor.set_data_from_numpy(array, binary_data=True)
    body, json_length = InferRequest(model_name="video-classifier", infer_inputs=[tensor], **extra).to_rest()
    return body, {"Content-Type": "application/octet-stream",
                  "Inference-Header-Content-Length": str(json_length)}


def expected_top(model_dir, clips: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The model's own top ``k`` classes of each clip, through Keras and SciPy's softmax."""
    from scipy.special import softmax

    model, classes = load_model(model_dir)
    probabilities = softmax(model.predict_on_batch(clips).astype(np.float64), axis=1)
    return [[(classes[i], p[i]) for i in np.argsort(-p)[:k]] for p in probabilities]


V1 = "/v1/models/video-classifier:predict"
V2 = "/v2/models/video-classifier/infer"


@pytest.fixture(scope="module")
def server(model_dir):
    """One server for the module's tests, that takes requests up to 8 MB."""
    server = Server(["--model", str(model_dir), "--top-k", "4", "--max-request-mb", "8"])
    yield server
    server.stop()


def test_the_server_answers_what_predict_answers(server, model_dir, real_clips):
    videos = [real_clips[n] for n in ("mpeg4_320x240_25fps_164f.avi", "h264_340x256_56fps_560f.mp4",
                                      "vp9_340x256_28fps_280f.webm")]
    expected = predict_videos(model_dir, videos, top_k=4)
    assert server.get("/v2/health/live") == server.get("/v2/health/ready") == 200
    status, answer = server.post(V1, {"instances": [{"video": {"b64": b64(v)}} for v in videos]})
    assert status == 200 and len(answer["predictions"]) == 3
    for got, wanted in zip(answer["predictions"], expected, strict=True):
        assert_same_top(got["top"], wanted["top"])
    # The Open Inference Protocol: one video a row, base64 in JSON, the file's bytes in binary
    for body, headers in [({"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1],
                                        "data": [b64(videos[0])]}]}, None),
                          binary_v2("video", [videos[0].read_bytes()])]:
        status, answer = server.post(V2, body, headers)
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert status == 200 and outputs["classes"]["shape"] == [1, 4]
        assert outputs["classes"]["data"] == [t["class"] for t in expected[0]["top"]]
        expected_probabilities = [t["probability"] for t in expected[0]["top"]]
        assert outputs["probabilities"]["data"] == pytest.approx(expected_probabilities, abs=1e-5)
    # Clips already sampled, as the model's own output on them
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    status, answer = server.post(V1, {"instances": [{"clips": clips.tolist()}], "parameters": {"top_k": 1}})
    model, classes = load_model(model_dir)
    logits = model.predict_on_batch(clips).astype(np.float64).mean(axis=0)
    assert status == 200 and answer["predictions"][0]["top"][0]["class"] == classes[int(logits.argmax())]
    # v2 clips, one a row, as JSON numbers and as raw bytes (the binary tensor extension)
    each = expected_top(model_dir, clips, 3)
    for body, headers in [({"inputs": [{"name": "clips", "datatype": "UINT8", "shape": list(clips.shape),
                                        "data": clips.ravel().tolist()}], "parameters": {"top_k": 3}}, None),
                          binary_v2("clips", clips, parameters={"top_k": 3})]:
        status, answer = server.post(V2, body, headers)
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert status == 200 and outputs["classes"]["shape"] == [2, 3]
        assert outputs["classes"]["data"] == [c for row in each for c, _ in row]
        wanted = [p for row in each for _, p in row]
        assert outputs["probabilities"]["data"] == pytest.approx(wanted, abs=1e-5)
    assert "answered 3 instance(s)" in server.log


def malformed_requests(real_clips, tmp_path) -> list[tuple[str, bytes | dict, dict | None, int, str]]:
    """Each kind of bad request: route, body, headers, the status and the words of its answer."""
    avi = real_clips["mpeg4_320x240_25fps_164f.avi"].read_bytes()
    text = tmp_path / "notes.avi"
    text.write_text("not a video")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi[:len(avi) // 2])
    clip = np.zeros((1, 4, 32, 32, 3), np.uint8)
    v2_clip = {"name": "clips", "datatype": "UINT8", "shape": [1, 4, 32, 32, 3],
               "data": clip.ravel().tolist()}
    binary, headers = binary_v2("clips", clip)
    binary_videos, video_headers = binary_v2("video", [avi])
    return [
        (V1, b'{"instances": [', None, 400, "the request is not JSON"),
        (V1, b"", None, 400, "the request is not JSON"),
        (V1, [1, 2], None, 400, "the request is not {\"instances\": [...]}"),
        (V1, {"instances": "x"}, None, 400, "the request is not {\"instances\": [...]}"),
        (V1, {"instances": [5]}, None, 400, "instance 0: an instance is"),
        (V1, {"instances": [{"video": 5}]}, None, 400,
         "instance 0: the video is a number, not a base64 string"),
        (V1, {"instances": [{"video": {"b64": ["x"]}}]}, None, 400, "the video is a list, not a base64"),
        (V1, {"instances": [{"video": {"b64": "not base64!"}}]}, None, 400,
         "instance 0: the video is not base64"),
        (V1, {"instances": [{"clips": clip.tolist()}, {"video": {"b64": b64(text)}}]}, None, 400,
         "instance 1: the video: OpenCV cannot open this file as a video"),
        (V1, {"instances": [{"video": {"b64": b64(cut)}}]}, None, 400,
         "instance 0: the video: truncated: 77 of the 164 frames its header declares decode"),
        (V1, {"instances": [{"clips": [[[1, 2], [3]]]}]}, None, 400,
         "instance 0: the clips are not a regular array"),
        (V1, {"instances": [{"clips": {"b64": base64.b64encode(bytes(100)).decode()}}]}, None, 400,
         "instance 0: 100 bytes of clips, not a whole number of clips of 4 x 32 x 32 x 3 = 12288 bytes"),
        (V1, {"instances": [{"clips": "x"}]}, None, 400, "instance 0: the clips are a string, not a list"),
        (V1, {"instances": [{"clips": [[1, 2, 3]]}]}, None, 400,
         "instance 0: clips of shape [1, 3], but the model takes [clips, 4, 32, 32, 3]"),
        (V1, {"instances": [{"clips": (clip.astype(int) + 300).tolist()}]}, None, 400,
         "must be uint8, 0 to 255"),
        (V1, {"instances": [{"clips": (clip + 0.5).tolist()}]}, None, 400,
         "must be whole numbers from 0 to 255"),
        (V1, {"instances": [{"picture": "x"}]}, None, 400, "an instance is"),
        *[(V1, {"instances": [{"clips": clip.tolist()}], "parameters": {"top_k": k}}, None, 400,
           f"top_k is {json.dumps(k)}: it is a whole number from 1 to 4") for k in (0, 5, "3", True, 2.5)],
        (V1, {"instances": [{"clips": clip.tolist()}], "parameters": [1]}, None, 400,
         "\"parameters\" is a list"),
        (V1, {"instances": [{"clips": clip.tolist()}], "parameters": {"topk": 2}}, None, 400,
         "unknown parameter 'topk'"),
        (V1, {"instances": [{"clips": clip.tolist()}], "extra": 1}, None, 400, "unknown field 'extra'"),
        ("/v1/models/nope:predict", {"instances": [{"clips": clip.tolist()}]}, None, 404, "nope"),
        (V2, {"inputs": {}}, None, 400, "the request is not {\"inputs\": [...]}"),
        (V2, {"inputs": [{**v2_clip, "name": "image"}]}, None, 400, "unknown input \"image\""),
        (V2, {"inputs": [v2_clip, v2_clip]}, None, 400, "the request has 2 inputs"),
        (V2, {"inputs": [{**v2_clip, "datatype": "FP32"}]}, None, 400,
         "datatype \"FP32\", but clips is UINT8"),
        (V2, {"inputs": [{**v2_clip, "shape": "x"}]}, None, 400, "shape \"x\" is not a list of sizes"),
        (V2, {"inputs": [{**v2_clip, "data": [1] * 10}]}, None, 400,
         "holds 12288 values, but \"data\" has 10"),
        (V2, {"inputs": [{**v2_clip, "shape": [1, 4, 16, 64, 3]}]}, None, 400,
         "clips of shape [1, 4, 16, 64, 3], but the model takes [clips, 4, 32, 32, 3]"),
        (V2, {"inputs": [v2_clip], "outputs": [{"name": "logits"}]}, None, 400, "the outputs are classes, "),
        (V2, {"inputs": [v2_clip], "id": 7}, None, 400, "\"id\" is a number"),
        (V2, {"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, None, 400,
         "video 0: the video is not base64"),
        (V2, binary, {**headers, "Inference-Header-Content-Length": "999999"}, 400,
         "Inference-Header-Content-Length is '999999'"),
        (V2, binary, {**headers, "Inference-Header-Content-Length": "x"}, 400,
         "Inference-Header-Content-Length is 'x'"),
        (V2, binary[:-1], headers, 400, "binary_data_size is 12288, but 12287 bytes follow"),
        (V2, binary_videos[:-10], video_headers, 400, "binary_data_size is"),
        ("/v2/models/nope/infer", {"inputs": [v2_clip]}, None, 404, "nope"),
    ]


def test_every_malformed_request_is_answered_4xx_naming_the_problem_and_the_server_goes_on(
        server, real_clips, tmp_path):
    valid = {"instances": [{"video": {"b64": b64(real_clips["h264_340x256_28fps_280f.mp4"])}}]}
    status, before = server.post(V1, valid)
    assert status == 200
    for path, body, headers, status, words in malformed_requests(real_clips, tmp_path):
        got, answer = server.post(path, body, headers)
        assert (got, words) == (status, words) and words in answer["error"], (path, str(body)[:200], answer)
    status, answer = server.announce(V1, 9 << 20)
    assert status == 413 and "more than the 8388608 this server takes" in answer["error"]
    # A chunked body, with no length to refuse it by, is refused once it passes the limit: its
    # last chunk never comes, so a server that read it whole would never answer.
    sent, status, answer = server.stream(V1, 64 << 20)
    assert status == 413 and "passed the 8388608 bytes this server takes" in answer["error"]
    assert sent < 32 << 20
    assert server.post(V1, valid) == (200, before)
    assert "rejected a request: instance 1: the video" in server.log


def test_concurrent_requests_each_get_their_own_answer(server, model_dir):
    """Clients at once, each with its own clips and top_k, on both protocols."""
    clips = np.random.default_rng(1).integers(0, 256, (6, 4, 32, 32, 3), dtype=np.uint8)
    each = expected_top(model_dir, clips, 4)

    def ask(n: int) -> list[tuple[str, float]]:
        k = 1 + n % 4
        if n % 2:
            status, answer = server.post(V1, {"instances": [{"clips": clips[n].tolist()}],
                                              "parameters": {"top_k": k}})
            return status, [(t["class"], t["probability"]) for t in answer["predictions"][0]["top"]]
        status, answer = server.post(V2, *binary_v2("clips", clips[n:n + 1], parameters={"top_k": k}))
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        return status, list(zip(outputs["classes"], outputs["probabilities"], strict=True))

    with ThreadPoolExecutor(len(clips)) as pool:
        answers = list(pool.map(ask, range(len(clips))))
    for n, (status, got) in enumerate(answers):
        wanted = each[n][:1 + n % 4]
        assert status == 200 and [c for c, _ in got] == [c for c, _ in wanted]
        assert [p for _, p in got] == pytest.approx([p for _, p in wanted], abs=1e-5)


class Gate:
    """A function whose first call waits until the test releases it (or ``patience`` seconds
    pass, so that a server that blocked on it still ends), so a test can act while it is held."""

    def __init__(self, function, patience: float = 20):
        self.function, self.patience = function, patience
        self.entered, self.released = threading.Event(), threading.Event()
        self.calls: list[tuple] = []
        self.held_until_released: bool | None = None

    def __call__(self, *args):
        self.calls.append(args)
        if len(self.calls) == 1:
            self.entered.set()
            self.held_until_released = self.released.wait(self.patience)
        return self.function(*args)


@pytest.fixture(scope="module")
def in_process(model_dir):
    """The server's application in this process, with Vertex AI's routes, for httpx to call."""
    import os

    from kserve import ModelServer
    from kserve.protocol.rest.server import RESTServer

    from components.serve_model.server import VideoClassifier, add_routes, app

    model = VideoClassifier("video-classifier", str(model_dir), top_k=4)
    model.load()
    server = ModelServer(enable_grpc=False)
    server.register_model(model)
    routes = {"AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health"}
    os.environ.update(routes)
    try:
        add_routes(app, model, 8 << 20)
    finally:
        for name in routes:
            del os.environ[name]
    rest = RESTServer("kserve.model_server:app", server.dataplane, server.model_repository_extension, 0)
    rest.create_application()  # KServe's routes, after the server's own, as ModelServer.start adds them
    yield model, app
    model.stop()


def run(app, scenario):
    """``scenario(client)`` with an httpx client of ``app``, on an event loop of its own."""
    import httpx

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://server", timeout=120) as client:
            return await scenario(client)

    return asyncio.run(main())


@pytest.mark.parametrize("held", ["decoding", "model"])
def test_probes_are_answered_while_requests_decode_and_run(in_process, real_clips, monkeypatch, held):
    """While a video's decoding, or the model, is held, every probe route answers: neither runs
    on the event loop. (Were either on it, the probes would wait for the gate to give up.)"""
    model, app = in_process
    target = (model.predictor, "file_clips") if held == "decoding" else (model.batcher, "run")
    gate = Gate(getattr(*target))
    monkeypatch.setattr(*target, gate)
    video = {"instances": [{"video": {"b64": b64(real_clips["mpeg4_320x240_25fps_164f.avi"])}}]}

    async def scenario(client):
        answers = [asyncio.create_task(client.post(path, json=video)) for path in (V1, "/predict")]
        assert await asyncio.to_thread(gate.entered.wait, 60)
        probes = [(await client.get(path)).status_code
                  for path in ("/v2/health/ready", "/v2/health/live", f"/v1/models/{model.name}", "/health")]
        gate.released.set()
        return probes, [(await answer).status_code for answer in answers]

    probes, statuses = run(app, scenario)
    assert gate.held_until_released
    assert probes == [200] * 4 and statuses == [200, 200]


def test_requests_that_arrive_together_share_a_model_batch_and_keep_their_own_top_k(in_process, model_dir,
                                                                                    monkeypatch):
    model, app = in_process
    gate = Gate(model.batcher.run)
    monkeypatch.setattr(model.batcher, "run", gate)
    clips = np.random.default_rng(2).integers(0, 256, (4, 1, 4, 32, 32, 3), dtype=np.uint8)

    def v1(n: int) -> tuple:
        body = {"instances": [{"clips": clips[n].tolist()}], "parameters": {"top_k": n + 1}}
        return V1, json.dumps(body), None

    v2_json = {"inputs": [{"name": "clips", "datatype": "UINT8", "shape": [1, 4, 32, 32, 3],
                           "data": clips[3].ravel().tolist()}], "parameters": {"top_k": 4}}
    requests = [v1(0), (V2, *binary_v2("clips", clips[1], parameters={"top_k": 2})), v1(2),
                (V2, json.dumps(v2_json), None)]

    async def scenario(client):
        def send(path, body, headers):
            return asyncio.create_task(client.post(path, content=body, headers=headers))

        first = send(*requests[0])
        assert await asyncio.to_thread(gate.entered.wait, 60)
        rest = [send(*request) for request in requests[1:]]
        for _ in range(6000):  # until the other three wait for the model
            if len(model.batcher.waiting) == 3:
                break
            await asyncio.sleep(0.01)
        gate.released.set()
        return [(await answer).json() for answer in [first, *rest]]

    answers = run(app, scenario)
    assert [len(videos) for videos, in gate.calls] == [1, 3]
    tops = [[(t["class"], t["probability"]) for t in answers[0]["predictions"][0]["top"]],
            list(zip(*[o["data"] for o in answers[1]["outputs"]], strict=True)),
            [(t["class"], t["probability"]) for t in answers[2]["predictions"][0]["top"]],
            list(zip(*[o["data"] for o in answers[3]["outputs"]], strict=True))]
    each = expected_top(model_dir, clips[:, 0], 4)
    for n, got in enumerate(tops):
        wanted = each[n][:n + 1]
        assert [c for c, _ in got] == [c for c, _ in wanted]
        assert [p for _, p in got] == pytest.approx([p for _, p in wanted], abs=1e-5)


def test_a_batch_that_fails_is_run_again_a_video_at_a_time_so_only_the_bad_one_fails():
    from components.serve_model.batcher import Batcher

    calls = []

    def run(videos):
        calls.append([len(v) for v in videos])
        if any((v == 255).all() for v in videos):
            raise ValueError("the model cannot take this")
        return [float(v.sum()) for v in videos]

    async def scenario(max_clips, *videos):
        batcher = Batcher(run, max_clips)
        try:
            answers = asyncio.gather(*(batcher([v]) for v in videos), return_exceptions=True)
            return await asyncio.wait_for(answers, timeout=60)
        finally:
            batcher.close()

    good, bad, other = asyncio.run(scenario(8, np.ones((1, 2)), np.full((2, 2), 255), np.full((1, 2), 3)))
    assert good == [2.0] and other == [6.0] and str(bad) == "the model cannot take this"
    assert calls == [[1, 2, 1], [1], [2], [1]]
    calls.clear()
    asyncio.run(scenario(2, np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2))))
    assert calls == [[1, 1], [1]]  # no batch over max_clips


def test_the_server_runs_as_a_vertex_ai_custom_container_and_finishes_its_requests_on_sigterm(
        model_dir, real_clips, s3_server, monkeypatch):
    """Vertex AI sets the port, the routes and the model's folder (here in moto's S3 server). On
    SIGTERM the server takes no new connection, answers the request it is reading, and exits 0."""
    import http.client
    import signal

    import fsspec

    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    fs = fsspec.filesystem("s3")
    fs.mkdir("models")
    fs.put(str(model_dir), "models/ucf10", recursive=True)
    port = free_port()
    env = {"AIP_HTTP_PORT": str(port), "AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health",
           "AIP_STORAGE_URI": "s3://models/ucf10"}
    server = Server([], env, port)
    try:
        assert server.get("/health") == 200
        video = real_clips["mpeg4_320x240_25fps_164f.avi"]
        [expected] = predict_videos(model_dir, [video])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = json.dumps({"instances": [{"video": {"b64": b64(video)}}]}).encode()
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert_same_top(json.loads(response.read())["predictions"][0]["top"], expected["top"])
        # The next request on the same connection is half sent when SIGTERM comes
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body[:len(body) // 2])
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while server.get("/health") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.get("/health") is None  # no new connection is taken
        connection.send(body[len(body) // 2:])
        response = connection.getresponse()
        assert response.status == 200
        assert_same_top(json.loads(response.read())["predictions"][0]["top"], expected["top"])
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()
