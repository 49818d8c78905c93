"""What batch prediction gains: videos per second of ``videoclf predict``'s batch path (videos
decoded by a process per core, the model scoring batches of clips) beside a one-at-a-time loop
(each video decoded, then scored alone, as predict did before), on the same videos, in one run,
taking turns; with the machine's load before and after each turn, and the CPU seconds each side
spent a video (this process's and its decoding processes') and the cores each side kept busy
(CPU seconds over wall-clock seconds): on a machine shared with other work, the wall-clock ratio
shows no more than the cores that were free.

The videos are the real clips of a folder (``--clips``), each ``--copies`` times under other
names. The network is the tutorial's (10 classes, 10 x 224 x 224 by default), untrained: the
cost does not depend on the weights. Both sides are warmed up on their batch shapes first.

    python benchmarks/batch_predict.py --clips ../shared/real-clips
    python benchmarks/batch_predict.py --clips ../shared/real-clips --size 64 --frames 8
"""

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from components.extract_frames.extract import cores
from components.serve_model import batch
from components.serve_model.config import BATCH_SIZE
from components.serve_model.predict import Predictor


def cpu_name() -> str:
    """The CPU's model name, and whether it has AVX-512 and AMX."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    pairs = (line.partition(":") for line in info.splitlines())
    fields = {key.strip(): value.strip() for key, _, value in pairs}
    name, flags = fields.get("model name", platform.processor()), fields.get("flags", "").split()
    return f"{name} ({', '.join(f for f in ('avx512f', 'amx_tile') if f in flags) or 'no AVX-512'})"


def one_at_a_time(predictor: Predictor, videos: list[str]) -> list[str]:
    """Each video decoded, then scored alone: its top class."""
    tops = []
    for video in videos:
        clips, _ = predictor.video_clips(Path(video))
        tops.append(predictor.top(predictor.probabilities([clips])[0], 1)[0]["class"])
    return tops


def batched(predictor: Predictor, videos: list[str], batch_size: int, workers: int) -> list[str]:
    """The batch path's answers: their top classes."""
    return [a["top"][0]["class"] for a in batch.answers(predictor, videos, 1, 0.0, batch_size, workers)]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's decoding processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function, *args) -> tuple[float, float, list]:
    """Wall-clock and CPU seconds of a call, and its result."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args)
    return time.perf_counter() - start, cpu_seconds() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, required=True, help="a folder of real video clips")
    parser.add_argument("--copies", type=int, default=10, help="times each clip is predicted")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default: one per core)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from serve import model_folder  # here: the decoding processes import this module, and not TensorFlow

    clips = batch.list_videos([args.clips])
    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        videos = []
        for copy in range(args.copies):
            for clip in clips:
                videos.append(str(Path(tmp) / f"{copy}-{Path(clip).name}"))
                os.symlink(Path(clip).resolve(), videos[-1])
        predictor = Predictor(model_folder(Path(tmp) / "model", args.frames, args.size))
        shape = (args.frames, args.size, args.size, 3)
        for count in (1, args.batch_size):  # each side's batch shape, traced before the clock runs
            predictor.probabilities([np.zeros((count, *shape), np.uint8)])
        rows, same = [], True
        for _ in range(args.repeats):
            load = os.getloadavg()[0]
            alone, alone_cpu, alone_tops = timed(one_at_a_time, predictor, videos)
            together, batch_cpu, batch_tops = timed(batched, predictor, videos, args.batch_size, args.workers)
            same &= alone_tops == batch_tops
            row = {"one_at_a_time_per_second": len(videos) / alone, "ratio": alone / together,
                   "batch_per_second": len(videos) / together, "load": [load, os.getloadavg()[0]],
                   "cpu_seconds_a_video": {"one_at_a_time": alone_cpu / len(videos),
                                           "batch": batch_cpu / len(videos)},
                   "cores_used": {"one_at_a_time": alone_cpu / alone, "batch": batch_cpu / together}}
            rows.append(row)
            print(f"one at a time {row['one_at_a_time_per_second']:6.2f} videos/s "
                  f"({alone_cpu / len(videos):.3f} CPU s a video, {alone_cpu / alone:.2f} cores), batch "
                  f"{row['batch_per_second']:6.2f} videos/s ({batch_cpu / len(videos):.3f} CPU s a video, "
                  f"{batch_cpu / together:.2f} cores): {row['ratio']:4.2f}x (load {load:.1f} -> "
                  f"{row['load'][1]:.1f})", flush=True)
    ratios = [row["ratio"] for row in rows]
    print(json.dumps({"args": {**vars(args), "clips": str(args.clips)}, "cpu": cpu_name(), "cores": cores(),
                      "videos": len(videos), "same_top_classes": same,
                      "ratio_range": [min(ratios), max(ratios)], "repeats": rows}))


if __name__ == "__main__":
    main()
