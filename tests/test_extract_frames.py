import json
import re
from pathlib import Path

import numpy as np
import pytest

from components.common import MANIFEST
from components.extract_frames.extract import ClipSpec, extract_dataset, gather_parts
from components.extract_frames.records import encode, write_shard
from components.extract_frames.video import Video, VideoError, resize_with_pad, spaced_starts
from components.train_model.inputs import parse, read_records
from tests.conftest import TINY


def read_clips(path, starts, n_frames, frame_step, height, width):
    with Video(path) as video:
        return video.read_clips(starts, n_frames, frame_step, height, width), video


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
                                  "h264_340x256_30fps_32f.mp4"])
def test_real_clips_decode_deterministically(real_clips, name):
    path = real_clips[name]
    with Video(path) as video:
        total = video.frame_count
    [start] = spaced_starts(total, 10, 15, 1)
    clips, video = read_clips(path, [start], 10, 15, 224, 224)
    again, _ = read_clips(path, [start], 10, 15, 224, 224)
    assert clips.shape == (1, 10, 224, 224, 3) and clips.dtype == np.uint8
    assert np.array_equal(clips, again)
    assert video.decoded == total == int(name.split("_")[-1][:-5])  # read to the end
    assert clips[0, 0].mean() > 10, "the first frame is black"
    if total >= 136:
        assert clips[0, -1].mean() > 10
    else:  # 32 frames: the clip runs past the end, and the frames after it are black
        assert start == 0 and (clips[0, (total - 1) // 15 + 1:] == 0).all()


def test_one_pass_gives_the_same_frames_as_separate_reads(real_clips):
    path = real_clips["h264_340x256_28fps_280f.mp4"]
    both, _ = read_clips(path, [0, 100], 5, 10, 64, 64)
    first, _ = read_clips(path, [0], 5, 10, 64, 64)
    second, _ = read_clips(path, [100], 5, 10, 64, 64)
    assert np.array_equal(both, np.concatenate([first, second]))
    assert not np.array_equal(first, second)


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


def test_val_and_test_sampling_is_deterministic(frames_dir, videos_dir, tmp_path):
    extract_dataset(videos_dir, tmp_path, ClipSpec(**TINY, clips_per_train_video=2, seed=0))
    manifest = json.loads((frames_dir / MANIFEST).read_text())
    for split in ("val", "test"):
        ours = [str(frames_dir / group[0]) for group in manifest["shards"][split]]
        theirs = [str(tmp_path / group[0]) for group in manifest["shards"][split]]
        for (a, _), (b, _) in zip(read_records(ours, manifest["frame_shape"]),
                                  read_records(theirs, manifest["frame_shape"]), strict=True):
            assert np.array_equal(a.numpy(), b.numpy())


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
    assert len(names) == 4 * 2 + 2 + 3
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
    assert spaced_starts(32, 10, 15, 3) == [0, 0, 0]  # shorter than one clip


def test_too_little_disk_for_the_clips_fails_before_decoding(videos_dir, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100_000, 100_000))
    spec = ClipSpec(**TINY, clips_per_train_video=2, seed=0)  # 52 clips of 4 x 32 x 32 x 3 = 12 KiB
    with pytest.raises(OSError, match=r"the extracted clips need 0.6 MB but .* has 0.1 MB free"):
        extract_dataset(videos_dir, tmp_path / "frames", spec)
    assert not (tmp_path / "frames" / MANIFEST).exists()
