"""Training throughput of the (2+1)D ResNet on one accelerator: float32 against mixed precision.

Runs under any Keras 3 backend (``KERAS_BACKEND``); on a GPU machine without TensorFlow, use
``KERAS_BACKEND=jax``. The clips are synthetic uint8 arrays, so this measures the model's
training steps (and the host-to-device copy of each batch), not the input pipeline. For each
batch size it prints clips/s under every precision and each one's ratio to float32.

    KERAS_BACKEND=jax python benchmarks/gpu_train_step.py            # 10 x 224 x 224, batch 8 and 32
    KERAS_BACKEND=jax python benchmarks/gpu_train_step.py --frames 4 --size 32 --batches 2 --steps 2
"""

import argparse
import json
import time

import keras
import numpy as np

from components.train_model.model import build_model

NUM_CLASSES = 10


def measure(precision: str, batch: int, frames: int, size: int, steps: int, repeats: int) -> dict:
    """Compiles and warms up one epoch of ``steps`` batches, then times ``repeats`` more."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    model = build_model(NUM_CLASSES, frames, size, size)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (batch * steps, frames, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, batch * steps)
    start = time.perf_counter()
    model.fit(clips, labels, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    first_epoch = time.perf_counter() - start
    start = time.perf_counter()
    history = model.fit(clips, labels, batch_size=batch, epochs=repeats, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    return {"precision": precision, "batch": batch, "clips_per_second": len(clips) * repeats / seconds,
            "clips_timed": len(clips) * repeats, "compute_dtype": model.layers[2].compute_dtype,
            "logits_dtype": str(model.output.dtype), "first_epoch_seconds": first_epoch,
            "final_loss": history.history["loss"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--precisions", nargs="+",
                        default=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs")
    args = parser.parse_args()

    devices = keras.distribution.list_devices()
    print(f"backend {keras.backend.backend()}, devices {devices}, clips "
          f"{args.frames}x{args.size}x{args.size}, {args.steps} steps x {args.repeats} epochs", flush=True)
    results = []
    for batch in args.batches:
        for precision in args.precisions:
            result = measure(precision, batch, args.frames, args.size, args.steps, args.repeats)
            fp32 = next((r["clips_per_second"] for r in results
                         if r["batch"] == batch and r["precision"] == "float32"), None)
            result["ratio_to_float32"] = result["clips_per_second"] / fp32 if fp32 else None
            results.append(result)
            ratio = f"{result['ratio_to_float32']:.2f}x float32" if fp32 else ""
            print(f"batch {batch:3d}  {precision:15s} {result['clips_per_second']:8.1f} clips/s  "
                  f"{ratio:16s} (first epoch, compile included: {result['first_epoch_seconds']:.1f} s)",
                  flush=True)
    print(json.dumps({"backend": keras.backend.backend(), "devices": devices, "args": vars(args),
                      "results": results}))


if __name__ == "__main__":
    main()
