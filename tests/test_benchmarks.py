"""The benchmark scripts run, at a tiny size, and report what they promise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, **env: str) -> dict:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                            text=True, timeout=600, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("script", "ratio"), [
    ("extract_frames.py", "ratio"), ("input_pipeline.py", "ratio"), ("train_epoch.py", "speedup")])
def test_data_benchmarks_compare_with_the_tutorial(script, ratio):
    report = run_benchmark(script, "--videos-per-class", "4", "--frames", "4", "--size", "32")
    assert report[ratio] > 0 and report["args"]["size"] == 32


def test_extraction_benchmark_takes_a_real_clip(real_clips):
    clip = real_clips["mpeg4_320x240_25fps_164f.avi"]
    report = run_benchmark("extract_frames.py", "--videos-per-class", "3", "--size", "32",
                           "--clip", str(clip))
    assert report["args"]["clip"] == str(clip) and report["clips_per_second"] > 0


def test_gpu_train_step_runs_under_the_jax_backend_on_a_cpu():
    report = run_benchmark("gpu_train_step.py", "--frames", "4", "--size", "32", "--batches", "2",
                           "--precisions", "float32", "mixed_bfloat16", "--steps", "2", "--repeats", "1",
                           KERAS_BACKEND="jax")
    assert report["backend"] == "jax" and report["devices"] == ["cpu:0"]
    fp32, bf16 = report["results"]
    assert fp32["precision"] == "float32" and fp32["ratio_to_float32"] is None
    assert bf16["ratio_to_float32"] == pytest.approx(bf16["clips_per_second"] / fp32["clips_per_second"])


def test_a_long_video_benchmark_reads_the_same_clips_both_ways():
    report = run_benchmark("long_video.py", "--minutes", "1.1", "--repeats", "1")
    assert report["frames"] == 1650
    for container in (".mp4", ".mkv"):
        for split, clips in (("test", 1), ("train", 3)):
            row = report["results"][container][split]
            assert row["same_clips"] and row["clips_shape"] == [clips, 10, 224, 224, 3]
