"""Frame extraction clips/s: the project's extractor (a process per core, skipped frames grabbed
but not converted, resizing in OpenCV, TFRecords written) against the tutorial's way (every
frame read and converted with cv2, kept frames padded with tf.image.resize_with_pad, in one
process). Same videos and sampling, one clip per video, both in this one run.

    python benchmarks/extract_frames.py                      # 10 frames every 15th, 224 x 224
    python benchmarks/extract_frames.py --videos-per-class 4 --size 32
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from baseline import frames_from_video_file, make_videos

from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import cores, extract_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-per-class", type=int, default=50)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--frame-step", type=int, default=15)
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--workers", type=int, default=0, help="processes of ours; 0: one per core")
    parser.add_argument("--clip", type=Path, help="a real video to use copies of (default: synthetic "
                                                  "videos of UCF101's size)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        videos = make_videos(Path(tmp) / "videos", args.videos_per_class, args.clip)
        paths = sorted(videos.glob("*/*/*.avi"))
        frames_from_video_file(paths[0], args.frames, (args.size, args.size), args.frame_step)  # imports TF
        start = time.perf_counter()
        shapes = {frames_from_video_file(path, args.frames, (args.size, args.size), args.frame_step).shape
                  for path in paths}
        baseline = len(paths) / (time.perf_counter() - start)
        spec = ClipSpec(n_frames=args.frames, frame_step=args.frame_step, height=args.size, width=args.size,
                        clips_per_train_video=1, seed=0)
        start = time.perf_counter()
        manifest = extract_dataset(videos, Path(tmp) / "frames", spec, workers=args.workers)
        ours = len(paths) / (time.perf_counter() - start)
    workers = args.workers or cores()
    print(f"{len(paths)} videos ({args.clip or 'synthetic, 320x240'}), clips of "
          f"{args.frames}x{args.size}x{args.size} every {args.frame_step}th frame")
    print(f"tutorial (cv2 read + tf.image.resize_with_pad, 1 process): {baseline:7.1f} clips/s")
    print(f"videoclf ({workers} processes, TFRecords written):             {ours:7.1f} clips/s")
    print(f"ratio: {ours / baseline:.1f}x")
    print(json.dumps({"args": {**vars(args), "clip": str(args.clip)}, "workers": workers,
                      "baseline": {"clips_per_second": baseline, "videos": len(paths),
                                   "clip_shapes": [list(s) for s in shapes]},
                      "ours": {"clips_per_second": ours, "videos": sum(manifest["counts"].values()),
                               "clip_shapes": [manifest["frame_shape"]]},
                      "ratio": ours / baseline}))


if __name__ == "__main__":
    main()
