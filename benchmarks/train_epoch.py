"""Wall time of one training epoch, same model, fed by the project's input pipeline against the
tutorial's (from_generator, every video decoded with OpenCV at every epoch). Both run in this
one process, on the same videos, at a size that trains on a CPU: 4 classes, 8 frames of 64 x 64.

    python benchmarks/train_epoch.py
    python benchmarks/train_epoch.py --videos-per-class 4 --size 32 --frames 4
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf
from baseline import make_videos, tutorial_dataset

from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset
from components.train_model.inputs import batches
from components.train_model.model import build_model


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def second_epoch_seconds(train_data, frames: int, size: int) -> float:
    """Trains a fresh tutorial network for two epochs; the second's wall time (no compiling)."""
    keras.utils.set_random_seed(0)
    model = build_model(4, frames, size, size)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = EpochTimer()
    model.fit(train_data, epochs=2, callbacks=[timer], shuffle=False, verbose=0)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=25)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--frame-step", type=int, default=15)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        videos = make_videos(Path(tmp) / "videos", args.videos_per_class)
        spec = ClipSpec(n_frames=args.frames, frame_step=args.frame_step, height=args.size, width=args.size)
        extract_dataset(videos, Path(tmp) / "frames", spec)
        ours = second_epoch_seconds(
            batches(Path(tmp) / "frames", "train", args.batch_size, training=True, flip=True),
            args.frames, args.size)
        # The tutorial feeds float32 frames in [0, 1]; the network takes uint8 and scales them.
        tutorial = tutorial_dataset(videos / "train", args.frames, args.size, args.frame_step,
                                    args.batch_size)
        baseline = second_epoch_seconds(
            tutorial.map(lambda clips, labels: (tf.cast(tf.round(clips * 255), tf.uint8), labels)),
            args.frames, args.size)
    print(f"one epoch of {4 * (args.videos_per_class - 2)} train clips of "
          f"{args.frames}x{args.size}x{args.size}, batch {args.batch_size}")
    print(f"tutorial (from_generator, cv2 at every epoch): {baseline:7.2f} s")
    print(f"videoclf (tf.data over TFRecords):             {ours:7.2f} s")
    print(f"ratio: {baseline / ours:.1f}x faster")
    print(json.dumps({"args": vars(args), "baseline_seconds": baseline, "seconds": ours,
                      "speedup": baseline / ours}))


if __name__ == "__main__":
    main()
