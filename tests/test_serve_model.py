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
from components.train_model.train import load_model
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
    answers = predict_videos(model_dir, [damaged, *others])
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
