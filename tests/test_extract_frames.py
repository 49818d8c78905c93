import json

import numpy as np
import pytest

from components.common import MANIFEST
from components.extract_frames.extract import extract_dataset
from components.extract_frames.records import read_records
from components.extract_frames.video import (
    VideoError,
    centre_start,
    frame_count,
    read_clips,
    resize_with_pad,
)
from tests.conftest import TINY


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
    total = frame_count(path)
    start = centre_start(total, 10, 15)
    clips, read = read_clips(path, [start], 10, 15, 224, 224)
    again, _ = read_clips(path, [start], 10, 15, 224, 224)
    assert clips.shape == (1, 10, 224, 224, 3) and clips.dtype == np.uint8
    assert np.array_equal(clips, again)
    assert clips[0, 0].mean() > 10, "the first frame is black"
    if total >= 136:
        assert read == start + 136 and clips[0, -1].mean() > 10
    else:  # 32 frames: the clip runs past the end, and the frames after it are black
        assert start == 0 and read == total
        assert (clips[0, (total - 1) // 15 + 1:] == 0).all()


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
    with pytest.raises(VideoError, match="v_Fake_g01_c01.avi"):
        read_clips(fake, [0], 4, 2, 32, 32)


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
    extract_dataset(videos_dir, tmp_path, clips_per_train_video=2, seed=0, **TINY)
    manifest = json.loads((frames_dir / MANIFEST).read_text())
    for split in ("val", "test"):
        ours = [str(frames_dir / group[0]) for group in manifest["shards"][split]]
        theirs = [str(tmp_path / group[0]) for group in manifest["shards"][split]]
        for (a, _), (b, _) in zip(read_records(ours, manifest["frame_shape"]),
                                  read_records(theirs, manifest["frame_shape"]), strict=True):
            assert np.array_equal(a.numpy(), b.numpy())


def test_a_bad_video_fails_the_stage_naming_it(videos_dir, tmp_path):
    import shutil

    copy = tmp_path / "videos"
    shutil.copytree(videos_dir, copy)
    victim = json.loads((copy / MANIFEST).read_text())["files"][3]["path"]
    (copy / victim).write_bytes(b"garbage")
    with pytest.raises(VideoError, match=f"1 of 36 videos could not be decoded:\n.*{victim}"):
        extract_dataset(copy, tmp_path / "frames", clips_per_train_video=2, seed=0, **TINY)
    assert not (tmp_path / "frames" / MANIFEST).exists()


def test_parameters_are_checked(videos_dir, tmp_path):
    with pytest.raises(ValueError, match="frame_step must be at least 1"):
        extract_dataset(videos_dir, tmp_path, clips_per_train_video=2, seed=0,
                        **{**TINY, "frame_step": 0})
