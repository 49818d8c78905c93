"""Wall time of one training epoch of the same network: the project's (its input pipeline, and
its (2+1)D convolutions run as 2D ones) against the tutorial's (from_generator, every video
decoded with OpenCV at every epoch, and the convolutions as Conv3D layers). Both run in this one
process, on the same videos, at a size that trains on a CPU: 4 classes, 8 frames of 64 x 64.

    python benchmarks/train_epoch.py
    python benchmarks/train_epoch.py --videos-per-class 4 --size 32 --frames 4
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf
from baseline import make_videos, tutorial_convolutions, tutorial_dataset

from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset
from components.train_model.inputs import batches
from components.train_model.model import build_model


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def counted(dataset: tf.data.Dataset) -> tuple[tf.data.Dataset, tf.Variable, tf.Variable]:
    """The dataset, and variables that count the clips it gives and keep the last clip shape."""
    clips, shape = tf.Variable(0, dtype=tf.int64), tf.Variable(tf.zeros(4, tf.int64))

    def count(batch, labels):
        clips.assign_add(tf.cast(tf.shape(batch)[0], tf.int64))
        shape.assign(tf.cast(tf.shape(batch)[1:], tf.int64))
        return batch, labels

    return dataset.map(count), clips, shape


def epoch_seconds(train_data: tf.data.Dataset, frames: int, size: int, epochs: int) -> dict:
    """Trains a fresh network for ``epochs``; the median wall time of the epochs after the first
    (which compiles), and the clips each epoch saw and their shape."""
    keras.utils.set_random_seed(0)
    model = build_model(4, frames, size, size)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = EpochTimer()
    data, clips, shape = counted(train_data)
    model.fit(data, epochs=epochs, callbacks=[timer], shuffle=False, verbose=0)
    return {"seconds": statistics.median(timer.seconds[1:]), "clips_per_epoch": int(clips.numpy()) / epochs,
            "clip_shape": [int(d) for d in shape.numpy()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=25)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--frame-step", type=int, default=15)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="epochs trained; the first is not timed")
    parser.add_argument("--repeats", type=int, default=2, help="trainings of each side, in turns")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        videos = make_videos(Path(tmp) / "videos", args.videos_per_class)
        spec = ClipSpec(n_frames=args.frames, frame_step=args.frame_step, height=args.size, width=args.size)
        extract_dataset(videos, Path(tmp) / "frames", spec)
        # The tutorial feeds float32 frames in [0, 1]; the network takes uint8 and scales them.
        tutorial = tutorial_dataset(videos / "train", args.frames, args.size, args.frame_step,
                                    args.batch_size).map(
            lambda clips, labels: (tf.cast(tf.round(clips * 255), tf.uint8), labels))
        runs = {"ours": [], "baseline": []}
        for _ in range(args.repeats):  # taken in turns, so that the machine's moods hit both alike
            runs["ours"].append(epoch_seconds(
                batches(Path(tmp) / "frames", "train", args.batch_size, training=True, flip=True),
                args.frames, args.size, args.epochs))
            with tutorial_convolutions():
                runs["baseline"].append(epoch_seconds(tutorial, args.frames, args.size, args.epochs))
    ours, baseline = ({**runs[side][0], "seconds": statistics.median(r["seconds"] for r in runs[side])}
                      for side in ("ours", "baseline"))
    print(f"an epoch of {ours['clips_per_epoch']:.0f} train clips of {args.frames}x{args.size}x{args.size}, "
          f"batch {args.batch_size}, the median of {args.repeats} x {args.epochs - 1} epochs")
    print(f"tutorial (from_generator, cv2 at every epoch, Conv3D): {baseline['seconds']:7.2f} s")
    print(f"videoclf (tf.data over TFRecords, Conv2D):             {ours['seconds']:7.2f} s")
    print(f"ratio: {baseline['seconds'] / ours['seconds']:.1f}x faster")
    print(json.dumps({"args": vars(args), "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
                      "baseline": baseline, "ours": ours, "speedup": baseline["seconds"] / ours["seconds"]}))


if __name__ == "__main__":
    main()
