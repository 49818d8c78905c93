"""Training clips/s delivered as batches, with no model: the project's tf.data pipeline over the
extracted TFRecords against the tutorial's from_generator pipeline that decodes every video
with OpenCV at every epoch. Both run in this one process, on the same videos, one after the other.

    python benchmarks/input_pipeline.py                      # 10 frames every 15th, 224 x 224
    python benchmarks/input_pipeline.py --videos-per-class 4 --size 32 --epochs 1
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from baseline import make_videos, tutorial_dataset

from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset
from components.train_model.inputs import batches


def clips_per_second(dataset, epochs: int) -> dict:
    """Iterates ``epochs`` passes over a batched dataset, after one untimed pass: the clips a
    second, the clips a pass and their shape."""
    for _ in dataset:
        pass
    start, clips, shape = time.perf_counter(), 0, None
    for _ in range(epochs):
        for batch, _ in dataset:
            clips, shape = clips + int(batch.shape[0]), list(batch.shape[1:])
    return {"clips_per_second": clips / (time.perf_counter() - start), "clips_per_pass": clips // epochs,
            "clip_shape": shape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=25)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--frame-step", type=int, default=15)
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes of ours")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        videos = make_videos(Path(tmp) / "videos", args.videos_per_class)
        spec = ClipSpec(n_frames=args.frames, frame_step=args.frame_step, height=args.size, width=args.size)
        extract_dataset(videos, Path(tmp) / "frames", spec)
        ours = clips_per_second(batches(Path(tmp) / "frames", "train", args.batch_size, training=True,
                                        flip=True), args.epochs)
        baseline = clips_per_second(tutorial_dataset(videos / "train", args.frames, args.size,
                                                     args.frame_step, args.batch_size), 1)
    print(f"train clips of {args.frames}x{args.size}x{args.size}, batch {args.batch_size}")
    ratio = ours["clips_per_second"] / baseline["clips_per_second"]
    print(f"tutorial (from_generator, cv2 at every epoch): {baseline['clips_per_second']:9.1f} clips/s")
    print(f"videoclf (tf.data over TFRecords):             {ours['clips_per_second']:9.1f} clips/s")
    print(f"ratio: {ratio:.1f}x")
    print(json.dumps({"args": vars(args), "baseline": baseline, "ours": ours, "ratio": ratio}))


if __name__ == "__main__":
    main()
