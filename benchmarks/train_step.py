"""One training step of the (2+1)D ResNet on this CPU: its (1 x k x k) and (k x 1 x 1)
convolutions run as 2D convolutions on reshaped tensors (the project's ``Conv2Plus1D``) against
the same weights run as the tutorial's Conv3D layers, in one process, on the same batch. Also
checks that both give the same logits.

    python benchmarks/train_step.py                              # 4 classes, 8 x 64 x 64, batch 8
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/train_step.py      # oneDNN's AVX2 kernels only
"""

import argparse
import contextlib
import json
import os
import time

import keras
import numpy as np
from baseline import tutorial_convolutions

from components.train_model.model import build_model


def step_milliseconds(model: keras.Model, clips: np.ndarray, labels: np.ndarray, steps: int,
                      repeats: int) -> float:
    """The median over ``repeats`` of the mean time of ``steps`` training steps, after one."""
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(clips, labels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(clips, labels)
        times.append((time.perf_counter() - start) / steps * 1000)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (args.batch_size, args.frames, args.size, args.size, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, args.batch_size)
    results, logits = {}, {}
    for name in ("conv3d", "conv2d"):
        with tutorial_convolutions() if name == "conv3d" else contextlib.nullcontext():
            keras.utils.set_random_seed(0)
            model = build_model(4, args.frames, args.size, args.size)
            logits[name] = np.asarray(model(clips))
            results[name] = step_milliseconds(model, clips, labels, args.steps, args.repeats)
        print(f"{name}: {results[name]:7.1f} ms a step", flush=True)
    difference = float(np.abs(logits["conv3d"] - logits["conv2d"]).max())
    print(f"Conv2D form: {results['conv3d'] / results['conv2d']:.2f}x the Conv3D form's speed; "
          f"largest logit difference {difference:.2e}")
    print(json.dumps({"args": vars(args), "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
                      "conv3d_ms": results["conv3d"], "conv2d_ms": results["conv2d"],
                      "speedup": results["conv3d"] / results["conv2d"], "max_logit_difference": difference,
                      "logits_shape": list(logits["conv2d"].shape)}))


if __name__ == "__main__":
    main()
