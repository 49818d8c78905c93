"""The TFRecord format of extracted clips: written by extract_frames, read by training and evaluation.

Each record holds one video: ``clips``, its uint8 RGB frames of shape
``(num_clips, n_frames, height, width, 3)``, raw; ``label``; and ``video``, its path in the
downloaded dataset. Training videos store several clips with random starts, val and test
videos one centred clip.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf


def encode(clips: np.ndarray, label: int, video: str) -> bytes:
    """Serialises one video's clips as a ``tf.train.Example``."""
    feature = {
        "clips": tf.train.Feature(bytes_list=tf.train.BytesList(value=[clips.tobytes()])),
        "num_clips": tf.train.Feature(int64_list=tf.train.Int64List(value=[clips.shape[0]])),
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


def clip_dataset(shards: list[str], n_frames: int, height: int, width: int,
                 training: bool, seed: int) -> tf.data.Dataset:
    """Yields ``(clip, label)`` pairs: uint8 ``(n_frames, height, width, 3)`` clips.

    In training, each pass over the data draws one of a video's stored clips at random,
    so the temporal start changes from epoch to epoch. Otherwise the first (centred) clip is
    taken and the order is fixed. With the same seed, the same clips come in the same order.
    """
    spec = {
        "clips": tf.io.FixedLenFeature([], tf.string),
        "num_clips": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record, draw):
        example = tf.io.parse_single_example(record, spec)
        clips = tf.reshape(tf.io.decode_raw(example["clips"], tf.uint8),
                           (-1, n_frames, height, width, 3))
        index = draw % example["num_clips"] if training else 0
        return clips[index], tf.cast(example["label"], tf.int32)

    dataset = tf.data.TFRecordDataset(shards)
    if training:
        dataset = dataset.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
    # One random draw per record, from a seeded stream that changes every epoch.
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(dataset, draws).map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def to_model_input(clip):
    """Scales uint8 frames to float32 in [0, 1], as the tutorial feeds its model."""
    return tf.cast(clip, tf.float32) / 255.0
