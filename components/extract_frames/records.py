"""The TFRecord format of extracted clips: written by extract_frames, read by training and evaluation.

Each record holds one clip of one video: its uint8 RGB frames of shape
``frame_shape = (n_frames, height, width, 3)``, either raw in ``clip`` or as one JPEG per frame
in ``frames`` (the manifest's ``frame_encoding``); ``label``; and ``video``, its path in the
downloaded dataset. Val and test videos have one centred clip each. Training videos have
``clips_per_train_video`` clips at random starts, stored in as many parallel shards: the k-th
shard of a group holds the k-th clip of each of its videos, so an epoch that draws one of them
reads a third of the bytes that storing every clip together would make it read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

JPEG_QUALITY = 90


def bytes_feature(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def encode(clip: np.ndarray, label: int, video: str, frame_encoding: str = "raw") -> bytes:
    """Serialises one clip as a ``tf.train.Example``."""
    if frame_encoding == "jpeg":
        frames = [cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for frame in clip]
        pixels = {"frames": bytes_feature(frames)}
    else:
        pixels = {"clip": bytes_feature([clip.tobytes()])}
    feature = {
        **pixels,
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "video": bytes_feature([video.encode()]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: Path, records: Iterable[bytes]) -> None:
    """Writes one shard through a temporary name, so a shard on disk is always whole."""
    tmp = path.with_name(path.name + ".partial")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            writer.write(record)
    tmp.replace(path)


def parse(record: tf.Tensor, frame_shape: list[int],
          frame_encoding: str = "raw") -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one record: its uint8 clip of ``frame_shape`` and its int32 label."""
    label = tf.io.FixedLenFeature([], tf.int64)
    if frame_encoding == "jpeg":
        example = tf.io.parse_single_example(
            record, {"frames": tf.io.FixedLenFeature([frame_shape[0]], tf.string), "label": label})
        clip = tf.map_fn(lambda frame: tf.io.decode_jpeg(frame, channels=3), example["frames"],
                         fn_output_signature=tf.uint8)
    else:
        example = tf.io.parse_single_example(
            record, {"clip": tf.io.FixedLenFeature([], tf.string), "label": label})
        clip = tf.io.decode_raw(example["clip"], tf.uint8)
    return tf.reshape(clip, frame_shape), tf.cast(example["label"], tf.int32)


def read_records(shards: list[str], frame_shape: list[int], frame_encoding: str = "raw") -> tf.data.Dataset:
    """Yields ``(clip, label)`` for every record of the shards, in order."""
    return (tf.data.TFRecordDataset(shards)
            .map(lambda record: parse(record, frame_shape, frame_encoding),
                 num_parallel_calls=tf.data.AUTOTUNE))
