"""What one long video costs extraction: its clips reached by seeking, against decoding the whole
file (what a short video gets, and what extraction did for every video before), in one process,
on the same file. The video is 320 x 240 at 25 fps, in MP4 (whose header counts its frames) and
MKV (whose frames are counted by decoding): the frames of a real clip (``--clip``) over and over,
or a scrolling texture.

    python benchmarks/long_video.py --clip ../shared/real-clips/mpeg4_320x240_25fps_164f.avi
    python benchmarks/long_video.py --minutes 0.5
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from components.extract_frames import video as video_module
from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_video

FPS, SIZE = 25, (320, 240)


def source_frames(clip: Path | None) -> list[np.ndarray]:
    """The frames to loop: a real clip's, resized, or 100 frames of a scrolling texture."""
    if clip is None:
        texture = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0] * 2, 3), dtype=np.uint8)
        texture = cv2.GaussianBlur(texture, (5, 5), 0)
        return [texture[:, 3 * i:3 * i + SIZE[0]].copy() for i in range(100)]
    capture, frames = cv2.VideoCapture(str(clip)), []
    while (frame := capture.read())[0]:
        frames.append(cv2.resize(frame[1], SIZE))
    return frames


def write_video(path: Path, frames: int, loop: list[np.ndarray]) -> Path:
    fourcc = {".mp4": "mp4v", ".mkv": "XVID"}[path.suffix]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    for i in range(frames):
        writer.write(loop[i % len(loop)])
    writer.release()
    return path


def timed(path: Path, spec: ClipSpec, split: str, repeats: int) -> tuple[float, np.ndarray]:
    """The best of ``repeats`` timings of extracting the video's clips, and the clips."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        clips, _ = extract_video(path, split, spec)
        best = min(best, time.perf_counter() - start)
    return best, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clip", type=Path, help="a real clip whose frames the video repeats")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    frames = int(args.minutes * 60 * FPS)
    spec = ClipSpec(height=224, width=224, clips_per_train_video=3)  # the tutorial's clips
    results = {}
    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        for suffix in (".mp4", ".mkv"):
            path = write_video(Path(tmp) / f"long{suffix}", frames, source_frames(args.clip))
            row = {}
            for split in ("test", "train"):  # the centred clip; three random training clips
                seeking, clips = timed(path, spec, split, args.repeats)
                video_module.SEEK_ABOVE, default = frames + 1, video_module.SEEK_ABOVE
                try:
                    whole, same = timed(path, spec, split, args.repeats)
                finally:
                    video_module.SEEK_ABOVE = default
                row[split] = {"seeking_seconds": seeking, "whole_file_seconds": whole,
                              "ratio": whole / seeking, "clips_shape": list(clips.shape),
                              "same_clips": bool(np.array_equal(clips, same))}
                print(f"{suffix} {split:5s}: by seeking {seeking:6.2f} s, decoding the whole file "
                      f"{whole:6.2f} s, {whole / seeking:5.1f}x", flush=True)
            results[suffix] = row
    print(json.dumps({"args": {**vars(args), "clip": str(args.clip)}, "frames": frames, "results": results}))


if __name__ == "__main__":
    main()
