"""The TFRecord format of extracted clips: written by extract_frames, read by training and evaluation.

Each record holds one clip of one video: ``clip``, its uint8 RGB frames of shape
``frame_shape = (n_frames, height, width, 3)``, raw; ``label``; and ``video``, its path in the
downloaded dataset. Val and test videos have one centred clip each. Training videos have
``clips_per_train_video`` clips at random starts, stored in as many parallel shards: the k-th
shard of a group holds the k-th clip of each of its videos, so an epoch that draws one of them
reads a third of the bytes that storing every clip together would make it read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

FEATURES = {
    "clip": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def encode(clip: np.ndarray, label: int, video: str) -> bytes:
    """Serialises one clip as a ``tf.train.Example``."""
    feature = {
        "clip": tf.train.Feature(bytes_list=tf.train.BytesList(value=[clip.tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "video": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shard(path: Path, records: Iterable[bytes]) -> None:
    """Writes one shard through a temporary name, so a shard on disk is always whole."""
    tmp = path.with_name(path.name + ".partial")
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            writer.write(record)
    tmp.replace(path)


def parse(record: tf.Tensor, frame_shape: list[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one record: its uint8 clip of ``frame_shape`` and its int32 label."""
    example = tf.io.parse_single_example(record, FEATURES)
    clip = tf.reshape(tf.io.decode_raw(example["clip"], tf.uint8), frame_shape)
    return clip, tf.cast(example["label"], tf.int32)


def read_records(shards: list[str], frame_shape: list[int]) -> tf.data.Dataset:
    """Yields ``(clip, label)`` for every record of the shards, in order."""
    return (tf.data.TFRecordDataset(shards)
            .map(lambda record: parse(record, frame_shape), num_parallel_calls=tf.data.AUTOTUNE))
