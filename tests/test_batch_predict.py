"""Batch prediction: sources listed, every video answered as one-at-a-time prediction answers it,
an output that a run killed midway resumes, labels over time, and the batch pipeline's shards,
report and compiled YAML."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.serve_model import batch, segments
from components.serve_model.predict import eval_clips, predict_videos
from components.train_model.model_folder import load_model
from pipelines.batch_prediction import COMPILED_YAML, compile_pipeline
from pipelines.targets import Target
from tests.conftest import REAL_CLIPS
from tests.index_videos import clip_numbers, time_video
from tests.test_serve_model import assert_same_top


def one_at_a_time(model_dir: Path, videos: list[Path], top_k: int) -> list[dict]:
    """Each video's classes as the model gives them for its test clips alone, with SciPy's
    softmax of their mean logits: the reference batch prediction is checked against."""
    from scipy.special import softmax

    model, classes = load_model(model_dir)
    sampling = json.loads((Path(model_dir) / "sampling.json").read_text())
    expected = []
    for path in videos:
        logits = model.predict_on_batch(eval_clips(path, sampling)[0]).astype(np.float64)
        probabilities = softmax(logits.mean(axis=0))
        expected.append({classes[i]: probabilities[i] for i in np.argsort(-probabilities)[:top_k]})
    return expected


def assert_answers(answer: dict, expected: dict) -> None:
    got = {t["class"]: t["probability"] for t in answer["top"]}
    assert list(got) == list(expected) and got == pytest.approx(expected, abs=1e-5)


def test_every_video_is_answered_as_one_at_a_time_prediction_answers_it(model_dir, real_clips, tmp_path):
    """Two clips a video, batches of four clips (two videos each, the last one filled up with
    black clips), two decoding processes; bad files in between keep their place."""
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    sampling = json.loads((model / "sampling.json").read_text())
    (model / "sampling.json").write_text(json.dumps({**sampling, "eval_clips_per_video": 2}))
    text, missing = tmp_path / "notes.avi", tmp_path / "missing.mp4"
    text.write_text("not a video")
    clips = list(real_clips.values())
    sources = [clips[0], text, *clips[1:], missing]
    answers = predict_videos(model, sources, top_k=3, batch_size=4, workers=2)
    assert [a["video"] for a in answers] == [str(s) for s in sources]
    assert answers[1] == {"video": str(text), "error": f"{text}: OpenCV cannot open this file as a video"}
    assert answers[-1] == {"video": str(missing), "error": f"{missing}: no such file"}
    for answer, expected in zip(answers[:1] + answers[2:-1], one_at_a_time(model, clips, 3), strict=True):
        assert_answers(answer, expected)


def test_sources_are_folders_lists_zips_and_files_without_labels(tmp_path):
    for name in ("videos/a/x.mp4", "videos/a/.hidden.mp4", "videos/a/notes.txt", "videos/b/c/y.AVI"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("videos/a/x.mp4\n# a comment\n\nvideos/b/c/y.AVI Archery\n"
                                       "/data/z.mkv\ngs://bucket/v.webm\n")
    (tmp_path / "list.csv").write_text("label,path,split\nA,videos/a/x.mp4,train\nB,more/w.mov,test\n")
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as zf:
        for name in ("UCF/v1.avi", "UCF/readme.md", "UCF/sub/v2.mp4"):
            zf.writestr(name, b"")
    root = str(tmp_path)
    listed = batch.list_videos([f"{root}/videos", f"{root}/list.txt", f"{root}/list.csv",
                                f"{root}/archive.zip", f"{root}/missing.mp4"])
    assert listed == [f"{root}/videos/a/x.mp4", f"{root}/videos/b/c/y.AVI", "/data/z.mkv", "gs://bucket/v.webm",
                      f"{root}/more/w.mov", f"zip://UCF/sub/v2.mp4::{root}/archive.zip",
                      f"zip://UCF/v1.avi::{root}/archive.zip", f"{root}/missing.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(batch.SourceError, match="empty holds no video"):
        batch.list_videos([f"{root}/empty"])


def test_videos_in_a_bucket_and_in_zips_are_answered_as_local_ones(bucket, model_dir, real_clips, tmp_path):
    """A folder, a list and a zip in gs:// (the Cloud Storage emulator) or s3:// (moto's S3
    server), read by the decoding processes."""
    import fsspec

    fs = fsspec.filesystem(bucket.split("://")[0])
    local = [real_clips["mpeg4_320x240_25fps_164f.avi"], real_clips["h264_340x256_30fps_32f.mp4"]]
    for path in local:
        fs.put_file(str(path), f"{bucket}/clips/{path.name}")
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as zf:
        for path in local:
            zf.write(path, f"clips/{path.name}")
    fs.put_file(str(tmp_path / "clips.zip"), f"{bucket}/clips.zip")
    fs.pipe_file(f"{bucket}/some.txt", f"clips/{local[1].name}\nclips/gone.mp4\n".encode())
    answers = predict_videos(model_dir, [f"{bucket}/clips", f"{bucket}/some.txt", f"{bucket}/clips.zip"],
                             top_k=4, workers=2)
    expected = {p.name: a for p, a in zip(local, predict_videos(model_dir, local, top_k=4, workers=1),
                                           strict=True)}
    names = [f"{bucket}/clips/{local[1].name}", f"{bucket}/clips/{local[0].name}", f"{bucket}/clips/gone.mp4",
             f"zip://clips/{local[1].name}::{bucket}/clips.zip", f"zip://clips/{local[0].name}::{bucket}/clips.zip"]
    assert [a["video"] for a in answers] == names
    assert answers[2]["error"].startswith(f"{bucket}/clips/gone.mp4: cannot be read: FileNotFoundError")
    for answer in answers[:2] + answers[3:]:
        [name] = [name for name in expected if f"clips/{name}" in answer["video"]]
        assert_same_top(answer["top"], expected[name]["top"])


def test_a_run_again_skips_what_was_written_cuts_a_half_line_and_retries_failures_if_asked(
        model_dir, real_clips, tmp_path):
    clips = list(real_clips.values())[:5]
    broken = tmp_path / "broken.avi"
    broken.write_text("not yet a video")
    out = tmp_path / "predictions.jsonl"
    sources = [clips[0], broken, *clips[1:]]
    first = batch.predict(model_dir, sources[:3], out, top_k=2, batch_size=2, workers=1)
    assert (first["predicted"], first["skipped"], first["answered"], first["failed"]) == (3, 0, 2, 1)
    written = out.read_bytes()
    with open(out, "ab") as f:  # what a kill during the next write leaves
        f.write(f'{{"video": "{sources[3]}", "top": [{{"cla'.encode())
    summary = batch.predict(model_dir, sources, out, top_k=2, batch_size=2, workers=1)
    assert (summary["predicted"], summary["skipped"], summary["answered"], summary["failed"]) == (3, 3, 5, 1)
    assert out.read_bytes().startswith(written)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["video"] for line in lines] == [str(s) for s in sources]
    assert [sorted(line) for line in lines] == [["top", "video"], ["error", "video"]] + [["top", "video"]] * 4
    with pytest.raises(ValueError, match=r"other settings \(top_k 2 -> 3\)"):
        batch.predict(model_dir, sources, out, top_k=3, workers=1)
    shutil.copyfile(clips[0], broken)  # mended: asked to, a run tries it again
    again = batch.predict(model_dir, sources, out, top_k=2, retry_failed=True, workers=1)
    assert (again["predicted"], again["answered"], again["failed"]) == (1, 6, 0)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["video"] for line in lines] == [str(s) for s in [clips[0], *clips[1:], broken]]
    assert_same_top(lines[-1]["top"], lines[0]["top"])


@pytest.mark.slow
def test_predict_killed_midway_then_run_again_answers_every_video_once(model_dir, real_clips, tmp_path):
    """``videoclf predict --output`` and its decoding processes killed (SIGKILL, as a node that
    goes away) once it has written some lines; the same command again writes the rest."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for copy in range(2):
        for path in real_clips.values():
            (folder / f"{copy}-{path.name}").symlink_to(path)
    videos = sorted(str(p) for p in folder.iterdir())
    out = tmp_path / "predictions.jsonl"
    command = [sys.executable, "-m", "pipelines.cli", "predict", "--model", str(model_dir),
               "--output", str(out), "--batch-size", "2", "--workers", "2", str(folder)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline and (
            not out.is_file() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    before = out.read_bytes()[:out.read_bytes().rfind(b"\n") + 1]
    written = before.count(b"\n")
    assert 3 <= written < len(videos), f"the kill came after {written} of {len(videos)} lines"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.splitlines()[-1])
    assert (summary["skipped"], summary["predicted"]) == (written, len(videos) - written)
    assert summary["answered"] == len(videos) and summary["failed"] == 0
    assert out.read_bytes().startswith(before)
    assert sorted(json.loads(line)["video"] for line in out.read_text().splitlines()) == videos


def test_windows_slide_by_the_stride_and_the_last_one_ends_at_the_video_end():
    assert segments.window_starts(100, 19, 12.5) == [0, 12, 25, 38, 50, 62, 75, 81]
    assert segments.window_starts(69, 19, 25) == [0, 25, 50]  # the last stride ends at the end
    assert segments.window_starts(10, 19, 12.5) == [0]  # shorter than one window
    line = segments.Timeline(frame_count=100, fps=25, n_frames=4, step=6, starts=(0, 25, 50, 81))
    assert line.centres() == pytest.approx([0.38, 1.38, 2.38, 3.62])  # (start + 19 / 2) / 25
    bounds = np.array([(0, 0.88), (0.88, 1.88), (1.88, 3.0), (3.0, 4.0)])
    assert np.array(line.bounds()) == pytest.approx(bounds)


def test_neighbours_with_the_same_top_class_merge_and_others_do_not():
    line = segments.Timeline(frame_count=125, fps=25, n_frames=4, step=6, starts=(0, 25, 50, 75, 100, 106))
    probabilities = np.array([[.9, .1], [.6, .4], [.2, .8], [.3, .7], [.7, .3], [.5, .5]])

    def top(p):
        return sorted(({"class": c, "probability": float(p[i])} for c, i in (("A", 0), ("B", 1))),
                      key=lambda t: -t["probability"])

    merged = segments.merge(line, probabilities, top)
    # centres 0.38, 1.38, 2.38, 3.38, 4.38, 4.62 s; boundaries midway: 1.88 and 3.88 s
    assert [(s["start"], s["end"], s["top"][0]["class"]) for s in merged] == [
        (0, 1.88, "A"), (1.88, 3.88, "B"), (3.88, 5.0, "A")]
    assert merged[0]["top"][0]["probability"] == pytest.approx(0.75)  # the mean of 0.9 and 0.6
    assert merged[2]["top"][1]["probability"] == pytest.approx(0.4)  # a tie (the last window) goes to A


def test_windows_read_in_chunks_hold_the_frames_of_their_times(tmp_path, monkeypatch):
    """A 50 fps video whose frames show their time; a model trained every 10th frame of 25 fps
    videos: windows every 0.5 s, each of 4 frames 0.4 s apart, read 3 windows a chunk."""
    from components.extract_frames.config import ClipSpec

    path = time_video(tmp_path / "time.mp4", 6, 50)
    spec = ClipSpec(n_frames=4, frame_step=10, clip_seconds=1.2, height=64, width=64)
    line = segments.timeline(300, 50.0, spec, 0.5)
    monkeypatch.setattr(segments, "CHUNK_BYTES", 3 * 4 * 64 * 64 * 3)
    chunks = line.chunks(4 * 64 * 64 * 3)
    assert [len(c) for c in chunks] == [3, 3, 3, 2]
    clips = np.concatenate([segments.read_windows(path, line, starts, 64, 64) for starts in chunks])
    starts = [0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 478]  # centiseconds; the last ends at 6 s
    assert clip_numbers(clips) == [[s + 40 * k for k in range(4)] for s in starts]


def nearest_centroid_model(folder: Path, clips: dict[str, np.ndarray], frames: int, size: int) -> Path:
    """A model folder whose model, fitted here, gives each clip the class whose clips' mean
    colour is nearest its own (a logit ``2 m·x - |m|^2`` per class mean ``m``)."""
    import keras

    from components.common import write_json

    means = {name: c.reshape(len(c), -1, 3).mean(axis=1).mean(axis=0) / 255 for name, c in clips.items()}
    inputs = keras.Input((frames, size, size, 3), dtype="uint8")
    pooled = keras.layers.GlobalAveragePooling3D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(clips))
    model = keras.Model(inputs, dense(pooled))
    centroids = np.stack(list(means.values()))
    scale = 200.0  # sharp probabilities
    dense.set_weights([scale * 2 * centroids.T, -scale * (centroids ** 2).sum(axis=1)])
    folder.mkdir()
    model.save(folder / "model.keras")
    write_json(folder / "classes.json", list(clips))
    write_json(folder / "sampling.json", {"frame_shape": [frames, size, size, 3], "frame_step": 6,
                                          "clip_seconds": 0.0, "train_fps": 25.0, "eval_clips_per_video": 1})
    return folder


STRIDE = 0.5


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> tuple[Path, list[dict], list[float]]:
    """A video of a real street clip, a real archery clip and the street clip again, joined end
    to end at 25 fps; a model that tells the two apart; the segments of it and of the street
    clip alone. Also the model folder and the true joins in seconds."""
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_video

    if not REAL_CLIPS.is_dir():
        pytest.skip(f"no real clips in {REAL_CLIPS}")
    tmp = tmp_path_factory.mktemp("joined")

    def frames_of(path: Path) -> list[np.ndarray]:
        capture, frames = cv2.VideoCapture(str(path)), []
        while (read := capture.read())[0]:
            frames.append(cv2.resize(read[1], (320, 240)))
        return frames

    def write(path: Path, frames: list[np.ndarray]) -> Path:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), 25, (320, 240))
        for frame in frames:
            writer.write(frame)
        writer.release()
        return path

    street = frames_of(REAL_CLIPS / "mpeg4_320x240_25fps_164f.avi")
    archery = frames_of(REAL_CLIPS / "h264_340x256_28fps_280f.mp4")
    parts = {"Street": write(tmp / "street.avi", street), "Archery": write(tmp / "archery.avi", archery)}
    video = write(tmp / "joined.avi", street + archery + street)
    spec = ClipSpec(n_frames=4, frame_step=6, height=32, width=32, clips_per_train_video=16, seed=0)
    model = nearest_centroid_model(tmp / "model", {name: extract_video(path, "train", spec)[0]
                                                   for name, path in parts.items()}, 4, 32)
    with pytest.MonkeyPatch.context() as patch:  # chunks of 7 windows: the joined video's 49 in 7 chunks
        patch.setattr(segments, "CHUNK_BYTES", 7 * 4 * 32 * 32 * 3)
        answers = predict_videos(model, [video, parts["Street"]], top_k=2, segments=STRIDE, batch_size=8)
    joins = [len(street) / 25, (len(street) + len(archery)) / 25]
    return model, answers, joins


def test_segments_of_a_joined_video_change_class_within_a_stride_of_each_join(joined):
    _, (whole, street), joins = joined
    assert whole["duration"] == pytest.approx(24.32)
    spans = [(s["start"], s["end"]) for s in whole["segments"]]
    assert [s["top"][0]["class"] for s in whole["segments"]] == ["Street", "Archery", "Street"]
    assert spans[0][0] == 0 and spans[-1][1] == whole["duration"]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # in time order, no gap
    for (_, end), join in zip(spans, joins, strict=False):
        assert abs(end - join) <= STRIDE, (end, join)
    assert all(s["top"][0]["probability"] > 0.5 for s in whole["segments"])
    assert [s["top"][0]["class"] for s in street["segments"]] == ["Street"]
    assert street["segments"][0]["end"] == street["duration"] == 6.56


def test_the_batch_report_opens_in_a_browser_with_a_timeline_per_video(joined, headless_chromium, tmp_path):
    from components.serve_model.batch_report import report_html, summary_markdown

    model, answers, _ = joined
    lines = [*answers, {"video": "/videos/broken.avi", "error": "/videos/broken.avi: no such file"}]
    summary = batch.summarize(lines)
    street, archery = summary["classes"]["Street"], summary["classes"]["Archery"]
    assert list(summary["classes"]) == ["Street", "Archery"]  # by the videos they top
    assert (street["segments"], street["videos"], archery["segments"], archery["videos"]) == (3, 2, 1, 1)
    assert archery["seconds"] == pytest.approx(17.76 - 6.56, abs=2 * STRIDE)
    assert street["seconds"] + archery["seconds"] == pytest.approx(24.32 + 6.56)
    assert "| 3 | 2 | 1 |" in summary_markdown(summary)
    report = tmp_path / "report.html"
    report.write_text(report_html(summary, lines, json.loads((model / "classes.json").read_text())))
    dom = subprocess.run([*headless_chromium, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert "<pre" not in dom, "the browser showed the report as text"
    assert dom.count('class="timeline"') == 2 and dom.count('class="segment"') == 4
    assert "/videos/broken.avi: no such file" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*headless_chromium, "--window-size=900,700", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = cv2.imread(str(shot))
    assert pixels.shape[:2] == (700, 900)
    hsv = cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV)
    assert (hsv[..., 1] > 100).mean() > 0.01  # the coloured bars are drawn


def shard_folder(root: Path, shard: int, shards: int, videos: list[str]) -> Path:
    folder = root / f"shard-{shard}"
    folder.mkdir()
    lines = [json.dumps({"video": video, "top": []}) + "\n" for video in videos]
    (folder / batch.PREDICTIONS_FILE).write_text("".join(lines))
    (folder / batch.SHARD_FILE).write_text(json.dumps({"shard": shard, "shards": shards, "videos": videos,
                                                       "model_classes": ["A"]}))
    return folder


def test_shards_are_gathered_in_the_listing_order_whatever_order_they_come_in(tmp_path):
    listing = [[f"v{i}" for i in range(j, j + 2)] for j in (0, 2, 4)]
    parts = [shard_folder(tmp_path, k, 3, videos) for k, videos in enumerate(listing)]
    lines, classes = batch.gather_shards(parts[::-1], tmp_path / "all.jsonl")
    assert [line["video"] for line in lines] == [f"v{i}" for i in range(6)] and classes == ["A"]
    assert (tmp_path / "all.jsonl").read_text().splitlines() == [json.dumps(line) for line in lines]
    with pytest.raises(ValueError, match=r"the shards given are \[0, 2\], not all 3"):
        batch.gather_shards([parts[0], parts[2]], tmp_path / "all.jsonl")
    (parts[1] / batch.PREDICTIONS_FILE).write_text(json.dumps({"video": "v2", "top": []}) + "\n")
    with pytest.raises(ValueError, match="shard 1 .* does not hold one line for each of its 2 videos"):
        batch.gather_shards(parts, tmp_path / "all.jsonl")


def test_a_shard_answers_its_slice_of_the_listing_by_the_names_listed(model_dir, real_clips, tmp_path):
    """A zip's members, named as the listing names them (not listed again)."""
    clips = list(real_clips.values())[:3]
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as zf:
        for path in clips:
            zf.write(path, f"clips/{path.name}")
    assert batch.write_listing([str(tmp_path / "clips.zip")], tmp_path / "listing.json", 2) == [0, 1]
    listed = json.loads((tmp_path / "listing.json").read_text())["videos"]
    shard = tmp_path / "shard"
    record = batch.predict_shard(tmp_path / "listing.json", 1, model_dir, shard, top_k=2, workers=1)
    assert (record["shard"], record["shards"], record["videos"], record["answered"]) == (1, 2, listed[2:], 1)
    [line] = [json.loads(line) for line in (shard / batch.PREDICTIONS_FILE).read_text().splitlines()]
    [path] = [p for p in clips if listed[2] == f"zip://clips/{p.name}::{tmp_path / 'clips.zip'}"]
    assert line["video"] == listed[2]
    assert_same_top(line["top"], predict_videos(model_dir, [path], top_k=2, workers=1)[0]["top"])


@pytest.mark.slow
def test_the_batch_pipeline_labels_real_clips_in_kfp_local(model_dir, real_clips, tmp_path):
    """``videoclf batch`` on the real clips, 4 a shard: two pods' worth, gathered in order."""
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "batch", "--output", str(tmp_path),
                             "--source-url", str(REAL_CLIPS), "--model-uri", str(model_dir),
                             "--videos-per-shard", "4", "--segments", "2", "--top-k", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    count = len(real_clips)
    assert (summary["videos"], summary["answered"], summary["failed"]) == (count, count, 0)
    lines = [json.loads(line) for line in Path(summary["predictions"]).read_text().splitlines()]
    expected = predict_videos(model_dir, [REAL_CLIPS], top_k=2, segments=2)
    assert [line["video"] for line in lines] == [a["video"] for a in expected]
    for line, answer in zip(lines, expected, strict=True):
        assert [(s["start"], s["end"]) for s in line["segments"]] == [(s["start"], s["end"]) for s in
                                                                       answer["segments"]]
        for got, wanted in zip(line["segments"], answer["segments"], strict=True):
            assert_same_top(got["top"], wanted["top"])
    shards = sorted(Path(summary["run_dir"]).glob("for-loop-*/batch-predict/predictions"))
    assert len(shards) == 2
    assert f"| {len(real_clips)} | {len(real_clips)} | 0 |" in Path(summary["summary"]).read_text()
    assert Path(summary["report"]).read_text().count('class="timeline"') == len(real_clips)


def test_committed_yaml_is_up_to_date(tmp_path):
    fresh = compile_pipeline(tmp_path / "batch.yaml")
    assert fresh.read_text() == COMPILED_YAML.read_text(), (
        "pipelines/batch_prediction.yaml is stale: run `make compile`")
    subprocess.run([sys.executable, "-m", "pipelines.cli", "batch", "--compile", str(tmp_path / "cli.yaml")],
                   check=True, capture_output=True)
    assert (tmp_path / "cli.yaml").read_text() == COMPILED_YAML.read_text()


def compiled(tmp_path: Path, target: Target) -> list[dict]:
    import yaml

    names = {name: f"registry.example/videoclf/{name}:0123456789ab"
             for name in ("data", "trainer", "evaluator", "serving")}
    return list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", target, names).read_text()))


def test_kubeflow_fans_the_shards_out_and_gathers_them(tmp_path):
    spec, platform = compiled(tmp_path, Target(s3_secret="mlpipeline-minio-artifact",
                                               s3_endpoint="http://minio-service.kubeflow:9000"))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {name for name, p in params.items() if "defaultValue" not in p} == {"source_url", "model_uri"}
    tasks = spec["root"]["dag"]["tasks"]
    [loop] = [t for t in tasks.values() if t["taskInfo"]["name"] == "shards"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--list-videos-Output"
    importer = spec["deploymentSpec"]["executors"]["exec-importer"]["importer"]
    assert importer["artifactUri"] == {"runtimeParameter": "uri"}
    assert importer["typeSchema"]["schemaTitle"] == "system.Model"
    loop_dag = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert loop_dag["batch-predict"]["retryPolicy"]["maxRetryCount"] == 2
    parts = spec["components"]["comp-gather-predictions"]["inputDefinitions"]["artifacts"]["parts"]
    assert parts["isArtifactList"]
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-batch-predict"]["container"]["image"] == \
        "registry.example/videoclf/serving:0123456789ab"
    resources = executors["exec-batch-predict"]["container"]["resources"]
    assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("3", "8Gi")
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(secrets) == ["exec-batch-predict", "exec-gather-predictions", "exec-list-videos"]
    outputs = spec["root"]["outputDefinitions"]["artifacts"]
    assert {k: v["artifactType"]["schemaTitle"] for k, v in outputs.items()} == {
        "predictions": "system.Dataset", "summary": "system.Markdown", "report": "system.HTML"}


def test_vertex_gets_the_pipeline_spec_alone(tmp_path):
    [spec] = compiled(tmp_path, Target("vertex"))
    assert "platforms" not in spec and "exec-batch-predict" in spec["deploymentSpec"]["executors"]


def test_the_batch_page_documents_every_parameter_with_its_default():
    import inspect

    from pipelines.batch_prediction import build_pipeline

    page = (Path(__file__).resolve().parents[1] / "docs" / "batch-prediction.md").read_text()
    table = page[page.index("| flag | default | meaning |"):].split("\n\n")[0].splitlines()[2:]
    documented = {}
    for row in table:
        flag, default, _ = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        documented[flag.strip("`").removeprefix("--").replace("-", "_")] = json.loads(default.strip("`")) \
            if default != "required" else inspect.Parameter.empty
    parameters = inspect.signature(build_pipeline().pipeline_func).parameters
    assert documented == {name: p.default for name, p in parameters.items()}


def test_the_benchmark_answers_the_same_videos_both_ways(real_clips):
    from tests.test_benchmarks import run_benchmark

    report = run_benchmark("batch_predict.py", "--copies", "1", "--size", "32", "--frames", "4",
                           "--repeats", "1", "--clips", str(REAL_CLIPS))
    assert report["videos"] == len(real_clips) and report["same_top_classes"]
    [row] = report["repeats"]
    for side in ("one_at_a_time", "batch"):
        assert row["cpu_seconds_a_video"][side] > 0 and row["cores_used"][side] > 0
