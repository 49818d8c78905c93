"""The benchmark scripts run, at a tiny size, and report what they promise."""

import contextlib
import io
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, **env: str) -> dict:
    """The JSON report that ``script`` prints last, run with ``args``: in this process (the
    script's main(), so TensorFlow is imported once and the extractor's worker processes do not
    import the script again), or, given an ``env`` (another Keras backend), in a process of its own."""
    if env:
        result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                                text=True, timeout=600, env={**os.environ, **env})
        assert result.returncode == 0, result.stderr[-3000:]
        stdout = result.stdout
    else:
        printed = io.StringIO()
        with (mock.patch.object(sys, "path", [str(BENCHMARKS), *sys.path]),
              mock.patch.object(sys, "argv", [script, *args]), contextlib.redirect_stdout(printed)):
            runpy.run_path(str(BENCHMARKS / script), run_name=f"benchmark_{Path(script).stem}")["main"]()
        stdout = printed.getvalue()
    return json.loads(stdout.strip().splitlines()[-1])


def test_the_extraction_benchmark_extracts_the_same_clips_both_ways(real_clips):
    clip = real_clips["mpeg4_320x240_25fps_164f.avi"]
    report = run_benchmark("extract_frames.py", "--videos-per-class", "3", "--size", "32",
                           "--clip", str(clip))
    baseline, ours = report["baseline"], report["ours"]
    assert report["args"]["clip"] == str(clip) and baseline["videos"] == ours["videos"] == 12
    assert baseline["clip_shapes"] == ours["clip_shapes"] == [[10, 32, 32, 3]]


def test_the_input_pipeline_benchmark_delivers_the_same_clips_both_ways():
    report = run_benchmark("input_pipeline.py", "--videos-per-class", "4", "--frames", "4", "--size", "32",
                           "--epochs", "1")
    baseline, ours = report["baseline"], report["ours"]
    assert baseline["clips_per_pass"] == ours["clips_per_pass"] == 8  # 4 classes x (4 - 2) training videos
    assert baseline["clip_shape"] == ours["clip_shape"] == [4, 32, 32, 3]


@pytest.mark.slow
def test_the_epoch_benchmark_trains_on_the_same_clips_both_ways():
    report = run_benchmark("train_epoch.py", "--videos-per-class", "4", "--frames", "4", "--size", "32",
                           "--epochs", "2", "--repeats", "1")
    baseline, ours = report["baseline"], report["ours"]
    assert baseline["clips_per_epoch"] == ours["clips_per_epoch"] == 8
    assert baseline["clip_shape"] == ours["clip_shape"] == [4, 32, 32, 3]


def test_the_step_benchmark_runs_both_forms_of_the_same_network():
    report = run_benchmark("train_step.py", "--frames", "4", "--size", "32", "--steps", "2", "--repeats", "1")
    assert report["logits_shape"] == [8, 4] and report["max_logit_difference"] < 1e-4


@pytest.mark.slow
def test_the_recipe_benchmark_scores_every_recipe_on_the_same_test_videos():
    report = run_benchmark("recipes.py", "--sets", "easy", "--epochs", "1", "--train-per-class", "4",
                           "--val-per-class", "2", "--test-per-class", "3")
    rows = report["results"]
    assert [(r["set"], r["recipe"]) for r in rows] == [("easy", "tutorial"), ("easy", "videoclf")]
    for row in rows:
        assert [e["epoch"] for e in row["epochs"]] == [1]
        assert all(e["test_videos"] == 12 and e["cpu_minutes"] > 0 for e in row["epochs"])
        assert set(row["frame_order"]) >= {"reversed", "shuffled", "ignores_motion"}


@pytest.mark.slow
def test_gpu_train_step_runs_under_the_jax_backend_on_a_cpu():
    report = run_benchmark("gpu_train_step.py", "--frames", "4", "--size", "32", "--batches", "2",
                           "--precisions", "mixed_bfloat16", "--steps", "2", "--repeats", "1",
                           KERAS_BACKEND="jax")
    assert report["backend"] == "jax" and report["devices"] == ["cpu:0"]
    [bf16] = report["results"]
    assert bf16["clips_timed"] == 2 * 2
    assert (bf16["compute_dtype"], bf16["logits_dtype"]) == ("bfloat16", "float32")  # float32 logits
    assert math.isfinite(bf16["final_loss"])


def test_a_long_video_benchmark_reads_the_same_clips_both_ways():
    report = run_benchmark("long_video.py", "--minutes", "1.1", "--repeats", "1")
    assert report["frames"] == 1650
    for container in (".mp4", ".mkv"):
        for split, clips in (("test", 1), ("train", 3)):
            row = report["results"][container][split]
            assert row["same_clips"] and row["clips_shape"] == [clips, 10, 224, 224, 3]


@pytest.mark.slow
def test_the_serving_benchmark_times_both_sides_on_the_same_answers(real_clips):
    clip = real_clips["mpeg4_320x240_25fps_164f.avi"]
    report = run_benchmark("serve.py", "--requests", "2", "--size", "32", "--seconds", "1",
                           "--clients", "1", "2", "--clip", str(clip))
    assert report["clip_shape"] == [1, 10, 32, 32, 3]
    kinds = ["video_v1", "video_v2", "clip_v1", "clip_v1_b64", "clip_v2", "clip_v2_binary"]
    assert report["same_top_class"] == dict.fromkeys(kinds, True)
    for kind in kinds:
        row = report["cost"][kind]
        assert row["server"]["count"] == row["in_process"]["count"] == 2
    assert [(row["routes"], row["clients"]) for row in report["load"]] == [("kserve", 1), ("kserve", 2),
                                                                            ("vertex", 2)]
    for row in report["load"]:
        assert row["failures"] == [] and row["requests"]["count"] > 0 and row["probes"]["count"] > 0
        assert row["requests"]["p99_ms"] >= row["requests"]["p95_ms"] >= row["requests"]["p50_ms"]
        assert row["rss_mb_before"] > 0 and row["rss_mb_after"] > 0
    batched = report["throughput"]
    assert batched["clients"] == 2 and set(batched["batch_sizes"]) <= {"1", "2"}
    assert batched["server_clips_per_second"] > 0 and batched["in_process_clips_per_second"] > 0


@pytest.mark.slow
def test_the_warm_start_benchmark_starts_from_the_source_body_and_freezes_it():
    report = run_benchmark("warm_start.py", "--source-per-class", "2", "--source-epochs", "1",
                           "--target-per-class", "2", "--val-per-class", "1", "--test-per-class", "2",
                           "--epochs", "2", "--freeze-epochs", "1", "--seeds", "3", "--ways", "warm_frozen")
    (row,) = report["results"]
    assert set(row) == {"seed", "source_as_is_test_accuracy", "warm_frozen"} and row["seed"] == 3
    assert report["test_videos"] == 8 and set(report["test_accuracy"]) == {"warm_frozen"}
    frozen = row["warm_frozen"]
    for accuracy in (report["source"]["test_accuracy"], row["source_as_is_test_accuracy"],
                     frozen["test_accuracy"]):
        assert 0 <= accuracy <= 1
    assert frozen["epochs_run"] == 2
    # the source's body at step 0 and through the frozen epoch, batch normalisation's statistics
    # included; trained once thawed
    assert frozen["body_distance_at_start"] == 0
    assert frozen["body_distance_after_epoch"][0] == 0 < frozen["body_distance_after_epoch"][1]


def test_the_batch_prediction_benchmark_gives_both_sides_the_same_answers(real_clips, tmp_path, monkeypatch):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("mpeg4_320x240_25fps_164f.avi", "h264_340x256_30fps_32f.mp4"):
        (folder / name).symlink_to(real_clips[name])
    monkeypatch.chdir(tmp_path)  # the folder named relative to here, as a user names it
    report = run_benchmark("batch_predict.py", "--clips", "clips", "--copies", "2", "--repeats", "1",
                           "--frames", "4", "--size", "32", "--batch-size", "2", "--workers", "1")
    assert report["videos"] == 4 and report["same_top_classes"] is True
    (row,) = report["repeats"]
    assert row["one_at_a_time_per_second"] > 0 and row["batch_per_second"] > 0
    assert row["ratio"] == pytest.approx(row["batch_per_second"] / row["one_at_a_time_per_second"])
