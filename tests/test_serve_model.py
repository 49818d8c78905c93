"""Predictions on new videos with a trained model folder."""

import json
import shutil
import subprocess
import sys

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
        import time

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
    """``videoclf serve`` in a subprocess."""

    def __init__(self, args: list[str], env: dict | None = None, port: int | None = None):
        import os

        super().__init__(port or free_port())
        command = [sys.executable, "-m", "pipelines.cli", "serve", *args]
        if "AIP_HTTP_PORT" not in (env or {}):
            command += ["--port", str(self.port)]
        self.process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        if not self.wait_ready(lambda: self.process.poll() is None):
            self.stop()
            raise AssertionError(f"the server did not start:\n{self.log}")

    def stop(self) -> None:
        self.process.terminate()
        self.log = self.process.communicate(timeout=60)[0]


def b64(path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def assert_same_top(got: list[dict], wanted: list[dict]) -> None:
    """The same classes in the same order, the same probabilities but for float rounding (the
    server runs a request's videos in one batch)."""
    assert [t["class"] for t in got] == [t["class"] for t in wanted]
    assert [t["probability"] for t in got] == pytest.approx([t["probability"] for t in wanted], abs=1e-5)


V1 = "/v1/models/video-classifier:predict"
V2 = "/v2/models/video-classifier/infer"


def test_the_server_answers_what_predict_answers_and_rejects_bad_input(model_dir, real_clips, tmp_path):
    videos = [real_clips[n] for n in ("mpeg4_320x240_25fps_164f.avi", "h264_340x256_56fps_560f.mp4",
                                      "vp9_340x256_28fps_280f.webm")]
    expected = predict_videos(model_dir, videos, top_k=4)
    server = Server(["--model", str(model_dir), "--top-k", "4", "--max-request-mb", "8"])
    try:
        assert server.get("/v2/health/live") == server.get("/v2/health/ready") == 200
        status, answer = server.post(V1, {"instances": [{"video": {"b64": b64(v)}} for v in videos]})
        assert status == 200 and len(answer["predictions"]) == 3
        for got, wanted in zip(answer["predictions"], expected, strict=True):
            assert_same_top(got["top"], wanted["top"])
        # The Open Inference Protocol: one video a row
        status, answer = server.post(V2, {"inputs": [{"name": "video", "datatype": "BYTES", "shape": [1],
                                                      "data": [b64(videos[0])]}]})
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert status == 200 and outputs["classes"]["shape"] == [1, 4]
        assert outputs["classes"]["data"] == [t["class"] for t in expected[0]["top"]]
        expected_top = [t["probability"] for t in expected[0]["top"]]
        assert outputs["probabilities"]["data"] == pytest.approx(expected_top, abs=1e-5)
        # Clips already sampled, as the model's own output on them
        model, classes = load_model(model_dir)
        clips = np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
        status, answer = server.post(V1, {"instances": [{"clips": clips.tolist()}],
                                          "parameters": {"top_k": 1}})
        logits = model.predict_on_batch(clips).astype(np.float64).mean(axis=0)
        assert status == 200 and answer["predictions"][0]["top"][0]["class"] == classes[int(logits.argmax())]
        # v2 clips, one a row, as raw bytes (the binary tensor extension, encoded by KServe's client)
        from kserve.protocol.infer_type import InferInput, InferRequest

        tensor = InferInput("clips", list(clips.shape), "UINT8")
        tensor.set_data_from_numpy(clips, binary_data=True)
        body, json_length = InferRequest(model_name="video-classifier", infer_inputs=[tensor]).to_rest()
        status, answer = server.post(V2, body, {"Content-Type": "application/octet-stream",
                                                "Inference-Header-Content-Length": str(json_length)})
        outputs = {o["name"]: o for o in answer["outputs"]}
        each = model.predict_on_batch(clips).argmax(axis=1)
        assert status == 200 and outputs["classes"]["data"][::4] == [classes[i] for i in each]
        # Bad input is answered 4xx, naming the problem, and the server goes on
        text = tmp_path / "notes.avi"
        text.write_text("not a video")
        status, answer = server.post(V1, {"instances": [{"video": {"b64": b64(videos[0])}},
                                                        {"video": {"b64": b64(text)}}]})
        assert status == 400
        assert answer["error"] == "instance 1: the video: OpenCV cannot open this file as a video"
        status, answer = server.post(V1, {"instances": [{"clips": [[1, 2, 3]]}]})
        assert status == 400
        assert "clips of shape [1, 3], but the model takes [clips, 4, 32, 32, 3]" in answer["error"]
        status, answer = server.post(V1, {"instances": [{"picture": "x"}]})
        assert status == 400 and "an instance is" in answer["error"]
        status, answer = server.announce(V1, 9 << 20)
        assert status == 413 and "more than the 8388608 this server takes" in answer["error"]
        status, answer = server.post(V1, {"instances": [{"video": {"b64": b64(videos[0])}}]})
        assert status == 200
        assert_same_top(answer["predictions"][0]["top"], expected[0]["top"])
    finally:
        server.stop()
    assert "rejected a request: instance 1: the video" in server.log
    assert "answered 3 instance(s)" in server.log


def test_the_server_runs_as_a_vertex_ai_custom_container(model_dir, real_clips, s3_server, monkeypatch):
    """Vertex AI sets the port, the routes and the model's folder (here in moto's S3 server)."""
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
        status, answer = server.post("/predict", {"instances": [{"video": {"b64": b64(video)}}]})
        [expected] = predict_videos(model_dir, [video])
        assert status == 200
        assert_same_top(answer["predictions"][0]["top"], expected["top"])
    finally:
        server.stop()


ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices"


def test_the_inference_service_reads_a_kubeflow_artifact_with_the_pipelines_s3_credentials():
    """The manifest a cluster gets for a model in Kubeflow's MinIO: the serving image runs
    ``videoclf serve`` on the artifact's s3:// form, with the Secret's keys as AWS credentials."""
    from components.serve_model.deploy import SERVING_PORT, inference_service, storage_uri

    service = inference_service("ucf10", "team-a", "registry.example/videoclf/serving:0123456789ab",
                                storage_uri("minio://mlpipeline/v2/artifacts/run-1/train-model/model"),
                                "http://minio-service.kubeflow:9000", "mlpipeline-minio-artifact")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert service["metadata"] == {"name": "ucf10", "namespace": "team-a", "labels": {}}
    predictor = service["spec"]["predictor"]
    [container] = predictor["containers"]
    assert container["image"] == "registry.example/videoclf/serving:0123456789ab"
    args = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
    assert args == {"--model": "s3://mlpipeline/v2/artifacts/run-1/train-model/model", "--name": "ucf10",
                    "--port": str(SERVING_PORT)}
    env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env == {"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000",
                   "AWS_ACCESS_KEY_ID": {"name": "mlpipeline-minio-artifact", "key": "accesskey"},
                   "AWS_SECRET_ACCESS_KEY": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": SERVING_PORT}
    assert predictor["batcher"] == {"maxBatchSize": 8, "maxLatency": 100}
    assert storage_uri("gs://bucket/model") == "gs://bucket/model"


def test_a_deploy_creates_the_inference_service_then_patches_it(kube_api):
    from components.serve_model.deploy import apply, inference_service

    first = inference_service("ucf10", "team-a", "serving:1", "s3://models/run-1")
    assert apply(first) == "created"
    assert [(r["method"], r["path"]) for r in kube_api.requests] == [("GET", f"{ISVC}/ucf10"), ("POST", ISVC)]
    assert kube_api.requests[1]["body"] == first
    second = inference_service("ucf10", "team-a", "serving:2", "s3://models/run-2")
    assert apply(second) == "updated"
    patch = kube_api.requests[-1]
    assert (patch["method"], patch["path"], patch["content_type"]) == (
        "PATCH", f"{ISVC}/ucf10", "application/merge-patch+json")
    [container] = kube_api.objects[f"{ISVC}/ucf10"]["spec"]["predictor"]["containers"]
    assert container["image"] == "serving:2" and "s3://models/run-2" in container["args"]
    kube_api.forbid = True
    with pytest.raises(PermissionError, match="may not get, create or patch inferenceservices in the "
                                              "namespace team-a"):
        apply(second)
