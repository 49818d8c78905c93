import json
import re
from pathlib import Path

import numpy as np
import pytest

from components.common import MANIFEST
from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset, extract_video, gather_parts
from components.extract_frames.records import encode, write_shard
from components.extract_frames.video import Video, VideoError, clip_frames, resize_with_pad, spaced_starts
from components.train_model.inputs import parse, read_records
from tests.conftest import TINY
from tests.index_videos import FOURCC, clip_numbers


def read_clips(path, starts, n_frames, step, height, width):
    with Video(path) as video:
        return video.read_clips([clip_frames(s, n_frames, step) for s in starts], height, width), video


def test_resize_with_pad_matches_tensorflow(real_clips):
    import cv2
    import tensorflow as tf

    capture = cv2.VideoCapture(str(real_clips["mpeg4_320x240_25fps_164f.avi"]))
    ok, frame = capture.read()
    capture.release()
    assert ok
    ours = resize_with_pad(frame, 224, 224).astype(np.float32)
    theirs = tf.image.resize_with_pad(frame.astype(np.float32), 224, 224).numpy()
    assert ours.shape == theirs.shape == (224, 224, 3)
    # 320x240 -> 224x168: 28 rows of black above and below
    assert (ours[:27] == 0).all() and (ours[-27:] == 0).all()
    assert np.abs(ours - theirs).mean() < 1.0


@pytest.mark.parametrize("name", ["mpeg4_320x240_25fps_164f.avi", "h264_340x256_28fps_280f.mp4",
                                  "h264_340x256_30fps_32f.mp4", "h264_340x256_28fps_280f.mkv",
                                  "h264_340x256_28fps_280f.mov", "vp9_340x256_28fps_280f.webm"])
def test_real_clips_give_the_frames_a_plain_sequential_read_gives(real_clips, name):
    """The centred clip of the tutorial's sampling against an independent reference: every
    frame read in order with cv2's read(), the wanted ones picked by number."""
    import cv2

    capture = cv2.VideoCapture(str(real_clips[name]))
    reference = []
    while (frame := capture.read())[0]:
        reference.append(frame[1])
    total = int(name.split("_")[-1].split("f.")[0])
    assert len(reference) == total
    clips, record = extract_video(real_clips[name], "test", ClipSpec(height=112, width=112))
    start = max(0, total - 136) // 2
    assert record["starts"] == [start] and record["frames"] == total and record["fps"] > 0
    for t, frame in enumerate(clips[0]):
        if start + 15 * t < total:
            expected = cv2.cvtColor(resize_with_pad(reference[start + 15 * t], 112, 112), cv2.COLOR_BGR2RGB)
            assert np.array_equal(frame, expected), f"frame {t} of the clip is not frame {start + 15 * t}"
        else:  # 32 frames: the clip runs past the end, and the frames after it are black
            assert (frame == 0).all() and record["padded"]


@pytest.fixture(scope="module")
def index_videos(tmp_path_factory) -> dict[str, Path]:
    """300-frame videos whose frame i shows i, in each container, and a 2,000-frame one."""
    from tests.index_videos import index_video

    folder = tmp_path_factory.mktemp("index")
    videos = {suffix: index_video(folder / f"v_Index_g01_c01{suffix}", 300) for suffix in FOURCC}
    videos["long"] = index_video(folder / "long.mp4", 2000)
    return videos


@pytest.mark.parametrize("suffix", list(FOURCC))
def test_the_tutorials_centred_clip_holds_the_exact_frames(index_videos, suffix):
    clips, record = extract_video(index_videos[suffix], "test", ClipSpec(height=64, width=64))
    # 300 frames, clips of 10 frames every 15th span 136: the centred one starts at (300 - 136) // 2
    assert clip_numbers(clips) == [[82 + 15 * k for k in range(10)]]
    assert record["frames"] == 300


def test_random_training_clips_hold_the_frames_of_their_starts(index_videos):
    spec = ClipSpec(height=64, width=64, clips_per_train_video=5, seed=7)
    clips, record = extract_video(index_videos[".avi"], "train", spec)
    assert clip_numbers(clips) == [[start + 15 * k for k in range(10)] for start in record["starts"]]
    assert all(0 <= start <= 300 - 136 for start in record["starts"]) and len(set(record["starts"])) > 1
    again, _ = extract_video(index_videos[".avi"], "train", spec)
    other, _ = extract_video(index_videos[".avi"], "train", ClipSpec(height=64, width=64,
                                                                      clips_per_train_video=5, seed=8))
    assert clip_numbers(again) == clip_numbers(clips) != clip_numbers(other)  # seeded


def test_evenly_spaced_clips_are_centred_on_equal_stretches(index_videos):
    clips, record = extract_video(index_videos[".mp4"], "test", ClipSpec(height=64, width=64,
                                                                          eval_clips_per_video=4))
    # 164 possible starts (0..164) in 4 stretches of 41: centres at 20.5, 61.5, 102.5 and 143.5
    assert record["starts"] == [20, 61, 102, 143]
    assert clip_numbers(clips) == [[start + 15 * k for k in range(10)] for start in (20, 61, 102, 143)]


def test_a_long_video_is_read_by_seeking_to_its_clips(index_videos, monkeypatch):
    from components.extract_frames import video as video_module

    grabbed = []
    original = video_module.Video._read_in_one_pass
    monkeypatch.setattr(video_module.Video, "_read_in_one_pass",
                        lambda self, *args: grabbed.append(self.path) or original(self, *args))
    clips, record = extract_video(index_videos["long"], "test", ClipSpec(height=64, width=64))
    assert clip_numbers(clips) == [[932 + 15 * k for k in range(10)]]  # (2000 - 136) // 2
    assert grabbed == [], "a 2,000-frame video was decoded to its end"


def test_clips_by_seconds_cover_the_same_time_at_any_frame_rate(tmp_path):
    from tests.index_videos import time_video

    spec = ClipSpec(n_frames=10, clip_seconds=3.6, height=64, width=64)  # a frame every 0.4 s
    times = {}
    for fps in (25, 50):
        clips, record = extract_video(time_video(tmp_path / f"t{fps}.avi", 8, fps), "test", spec)
        assert record["fps"] == fps and record["step"] == 0.4 * fps
        times[fps] = clip_numbers(clips)[0]
    assert list(np.diff(times[25])) == [40] * 9  # centiseconds
    assert all(abs(a - b) <= 4 for a, b in zip(times[25], times[50], strict=True))  # within a frame


def test_the_same_real_scene_at_two_frame_rates_gives_the_same_clips_by_seconds(real_clips):
    fast, slow = real_clips["h264_340x256_56fps_560f.mp4"], real_clips["h264_340x256_28fps_280f.mp4"]
    by_time = ClipSpec(n_frames=8, clip_seconds=7.0, height=64, width=64)
    by_frames = ClipSpec(n_frames=8, frame_step=20, height=64, width=64)

    def difference(spec):
        (a, _), (b, _) = (extract_video(path, "test", spec) for path in (slow, fast))
        return np.abs(a.astype(float) - b).mean()

    # 20 frames are 0.7 s at 28 fps, but 0.36 s at 56 fps
    assert difference(by_time) < 3 < 3 * 3 < difference(by_frames)


def test_unreadable_video_is_named(tmp_path):
    fake = tmp_path / "v_Fake_g01_c01.avi"
    fake.write_text("not a video")
    with pytest.raises(VideoError, match="v_Fake_g01_c01.avi: OpenCV cannot open"):
        read_clips(fake, [0], 4, 2, 32, 32)


def test_a_truncated_video_is_caught(real_clips, tmp_path):
    whole = real_clips["mpeg4_320x240_25fps_164f.avi"].read_bytes()
    cut = tmp_path / "v_Cut_g01_c01.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoError, match=r"v_Cut_g01_c01.avi: truncated: \d+ of the 164 frames"):
        read_clips(cut, [0], 4, 2, 32, 32)


def test_dataset_manifest_and_records(frames_dir, videos_dir):
    manifest = json.loads((frames_dir / MANIFEST).read_text())
    assert manifest["counts"] == {"train": 16, "val": 8, "test": 12}
    assert manifest["frame_shape"] == [4, 32, 32, 3]
    assert all(v["status"] == "ok" and len(v["starts"]) == (2 if v["split"] == "train" else 1)
               for v in manifest["videos"])
    assert [len(group) for group in manifest["shards"]["train"]] == [2]  # one shard per clip
    assert [len(group) for group in manifest["shards"]["test"]] == [1]
    shards = [str(frames_dir / group[0]) for group in manifest["shards"]["test"]]
    labels = [int(label) for _, label in read_records(shards, manifest["frame_shape"])]
    classes = manifest["classes"]
    expected = [classes.index(v["class"]) for v in manifest["videos"] if v["split"] == "test"]
    assert labels == expected


@pytest.fixture
def videos_with_bad_ones(videos_dir, real_clips, tmp_path) -> tuple[Path, dict[str, str]]:
    """The test videos, four of them replaced: empty, text, truncated, and cut to its header."""
    import shutil

    copy = tmp_path / "videos"
    shutil.copytree(videos_dir, copy)
    files = [f["path"] for f in json.loads((copy / MANIFEST).read_text())["files"]]
    real = real_clips["mpeg4_320x240_25fps_164f.avi"].read_bytes()
    bad = {files[1]: (b"", "cannot open"), files[5]: (b"just some text", "cannot open"),
           files[20]: (real[: len(real) // 2], "truncated: .* of the 164 frames"),
           files[30]: (real[:6000], "")}
    for path, (data, _) in bad.items():
        (copy / path).write_bytes(data)
    return copy, {path: reason for path, (_, reason) in bad.items()}


def test_bad_videos_are_reported_and_left_out(videos_with_bad_ones, tmp_path):
    videos, bad = videos_with_bad_ones
    spec = ClipSpec(**TINY, clips_per_train_video=2, seed=0)
    manifest = extract_dataset(videos, tmp_path, spec, max_failed_fraction=0.15)
    failed = {v["video"]: v["error"] for v in manifest["videos"] if v["status"] == "failed"}
    assert set(failed) == set(bad) and manifest["failed"] == 4
    for path, reason in bad.items():
        assert re.search(f"{path}: .*{reason}", failed[path])
    assert sum(manifest["counts"].values()) == 32
    for split, count in manifest["counts"].items():
        shards = [str(tmp_path / group[0]) for group in manifest["shards"][split]]
        assert sum(1 for _ in read_records(shards, manifest["frame_shape"])) == count


def test_too_many_bad_videos_fail_the_stage_naming_them(videos_with_bad_ones, tmp_path):
    videos, bad = videos_with_bad_ones
    spec = ClipSpec(**TINY, clips_per_train_video=2, seed=0)
    with pytest.raises(VideoError, match="4 of 36 videos could not be decoded, more than "
                                         "max_failed_fraction=0.1 allows") as error:
        extract_dataset(videos, tmp_path / "frames", spec, max_failed_fraction=0.1)
    assert all(path in str(error.value) for path in bad)
    assert not (tmp_path / "frames" / MANIFEST).exists()


def test_parts_gathered_are_the_whole(videos_dir, tmp_path, monkeypatch):
    from components.extract_frames import extract

    monkeypatch.setattr(extract, "VIDEOS_PER_SHARD", 5)  # 4 train, 2 val, 3 test groups
    spec = ClipSpec(**TINY, clips_per_train_video=2, seed=0)
    whole = extract_dataset(videos_dir, tmp_path / "whole", spec)
    for part in range(3):
        extract_dataset(videos_dir, tmp_path / f"part{part}", spec, part=part, num_parts=3, workers=1)
    gathered = gather_parts([tmp_path / f"part{p}" for p in (2, 0, 1)], tmp_path / "gathered", 0.0)
    assert gathered == {**whole, "part": [0, 1]}
    names = [n for groups in whole["shards"].values() for group in groups for n in group]
    assert len(names) == 4 * 2 + (2 + 3) * 4  # 4 clips of each val and test video: 8 val videos (auto)
    for name in names:
        assert (tmp_path / "gathered" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    with pytest.raises(ValueError, match=r"the parts given are \[0, 2\], not all 3"):
        gather_parts([tmp_path / "part0", tmp_path / "part2"], tmp_path / "bad", 0.0)


def test_records_are_written_as_tensorflow_writes_them(tmp_path):
    """The writer needs no TensorFlow, yet its files are TensorFlow's own, byte for byte."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8) for _ in range(3)]
    records = [encode(clip, label, f"c{label}/v_{label}.avi") for label, clip in enumerate(clips)]
    write_shard(tmp_path / "ours.tfrecord", records)
    with tf.io.TFRecordWriter(str(tmp_path / "theirs.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "theirs.tfrecord").read_bytes()
    for label, (clip, record) in enumerate(zip(clips, records, strict=True)):
        example = tf.train.Example.FromString(record).features.feature
        assert example["label"].int64_list.value == [label]
        assert example["video"].bytes_list.value == [f"c{label}/v_{label}.avi".encode()]
        assert example["clip"].bytes_list.value == [clip.tobytes()]
    read = list(read_records([str(tmp_path / "ours.tfrecord")], [4, 8, 8, 3]))
    assert [int(label) for _, label in read] == [0, 1, 2]
    assert all(np.array_equal(a.numpy(), b) for (a, _), b in zip(read, clips, strict=True))


def test_jpeg_frames_are_a_tenth_of_the_bytes_and_close(real_clips):
    import tensorflow as tf

    clip = read_clips(real_clips["mpeg4_320x240_25fps_164f.avi"], [14], 10, 15, 224, 224)[0][0]
    raw, jpeg = (encode(clip, 0, "v", encoding) for encoding in ("raw", "jpeg"))
    decoded = parse(tf.constant(jpeg), [10, 224, 224, 3], "jpeg")[0].numpy()
    mse = np.mean((decoded.astype(np.float64) - clip) ** 2)
    psnr = 10 * np.log10(255**2 / mse)
    print(f"raw {len(raw)} B, jpeg {len(jpeg)} B ({len(jpeg) / len(raw):.3f}), PSNR {psnr:.1f} dB")
    assert len(jpeg) < 0.1 * len(raw) and psnr > 35


@pytest.mark.parametrize(("change", "message"), [
    ({"frame_step": 0}, "frame_step must be at least 1"),
    ({"frame_encoding": "png"}, "frame_encoding must be one of raw, jpeg"),
    ({"part": 2, "num_parts": 2}, r"part must be in \[0, 2\)"),
    ({"max_failed_fraction": 1.5}, r"max_failed_fraction must be in \[0, 1\]"),
])
def test_parameters_are_checked(videos_dir, tmp_path, change, message):
    spec_fields = {**TINY, "clips_per_train_video": 2, "seed": 0, "frame_encoding": "raw"}
    spec = ClipSpec(**{k: change.get(k, v) for k, v in spec_fields.items()})
    options = {k: v for k, v in change.items() if k not in spec_fields}
    with pytest.raises(ValueError, match=message):
        extract_dataset(videos_dir, tmp_path, spec, **options)


def test_evenly_spaced_starts_include_the_centred_one():
    assert spaced_starts(164, 10, 15, 1) == [14]  # (164 - 136) // 2
    assert spaced_starts(164, 10, 15, 3) == [4, 14, 23]
    assert spaced_starts(164, 10, 15, 2) == [7, 21]  # 29 starts: centres of 0-14 and 14.5-28
    assert spaced_starts(32, 10, 15, 3) == [0, 0, 0]  # shorter than one clip


def test_too_little_disk_for_the_clips_fails_before_decoding(videos_dir, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100_000, 100_000))
    spec = ClipSpec(**TINY, clips_per_train_video=2, eval_clips_per_video=1, seed=0)  # 52 clips of 12 KiB
    with pytest.raises(OSError, match=r"the extracted clips need 0.6 MB but .* has 0.1 MB free"):
        extract_dataset(videos_dir, tmp_path / "frames", spec)
    assert not (tmp_path / "frames" / MANIFEST).exists()


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "400000 100000\n"}, 4),  # cgroup v2: a 4-CPU pod
    ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two processes
    ({"cpu.max": "max 100000\n"}, None),  # no quota: the cores it may run on
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
])
def test_extraction_uses_the_cores_of_the_containers_cpu_quota(tmp_path, monkeypatch, files, expected):
    import os

    from components.extract_frames.extract import cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))  # a 64-core node
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cores(tmp_path) == (expected or 64)


def test_finished_clips_waiting_in_memory_stay_bounded():
    """A slow first video must not let every later one pile up finished in memory."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from components.extract_frames.extract import bounded_map

    held, most, lock = set(), 0, threading.Lock()

    def work(job):
        nonlocal most
        time.sleep(0.5 if job == 0 else 0.001)
        with lock:
            held.add(job)
            most = max(most, len(held))
        return job

    with ThreadPoolExecutor(4) as pool:
        for job in bounded_map(pool, work, range(200), window=8):
            with lock:
                held.discard(job)
    assert most <= 8


def test_training_shards_mix_every_class_at_ucf101_scale(tmp_path, monkeypatch):
    """101 classes of 30 training videos, written in shards as extraction plans them, read back
    by training's input pipeline with its shuffle buffer at UCF101's size (about 700 clips of
    10 x 224 x 224): the first batches draw from most classes, not from a handful."""
    from components.extract_frames.extract import shard_groups
    from components.train_model import inputs

    frame_shape, clip = [2, 4, 4, 3], np.zeros((2, 4, 4, 3), np.uint8)
    monkeypatch.setattr(inputs, "SHUFFLE_BUFFER_BYTES", (1 << 30) // (10 * 224 * 224 * 3) * clip.size)
    classes = [f"Class{c:03d}" for c in range(101)]
    entries = [(i, {"class": c, "path": f"train/{c}/v_{n}.avi"})
               for i, (c, n) in enumerate((c, n) for c in classes for n in range(30))]
    groups = shard_groups(entries, "train", seed=42)
    names = []
    (tmp_path / "train").mkdir()
    for g, group in enumerate(groups):
        name = f"train/train-{g:05d}-clip0.tfrecord"
        write_shard(tmp_path / name, [encode(clip, classes.index(e["class"]), e["path"]) for _, e in group])
        names.append([name])
    (tmp_path / MANIFEST).write_text(json.dumps({
        "frame_shape": frame_shape, "frame_encoding": "raw", "shards": {"train": names},
        "counts": {"train": len(entries)}}))
    dataset = inputs.batches(tmp_path, "train", batch_size=8, training=True, seed=0)
    first = [int(label) for _, labels in dataset.take(10) for label in labels]
    print(f"classes in the first 10 batches of 8: {len(set(first))} of 101")
    assert len(set(first)) >= 50
