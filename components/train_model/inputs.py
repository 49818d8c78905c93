"""The tf.data input pipeline: batches of uint8 clips from the extracted TFRecord shards.

Training reads the shard groups in a shuffled order, several at once. For each group and
epoch it draws one of the group's shards, so each video gives one of its stored clips (each a
random temporal window of the video) and only that clip's bytes are read. If ``flip`` is set,
each clip is mirrored left to right with probability 1/2, and a random resized crop, the same
for all its frames, may be taken. The clips are then shuffled within a buffer of bounded size.
Validation and test batches hold a chosen one of each video's evenly spaced clips (by default
the middle one), in the manifest's order, the same at every pass; ``split_logits`` averages the
model's logits over all of them. Clips stay uint8 until the
model's first layer, so the host sends the accelerator a quarter of the bytes of float32.
``parse`` reads the records that ``components.extract_frames.records`` writes.
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from components.common import read_manifest
from components.extract_frames.records import CLIP, FRAMES, LABEL

SHUFFLE_BUFFER_BYTES = 1 << 30  # the most memory the shuffle buffer of training clips takes
PARALLEL_SHARDS = 8  # training shards read at once


def parse(record: tf.Tensor, frame_shape: list[int],
          frame_encoding: str = "raw") -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes one record: its uint8 clip of ``frame_shape`` and its int32 label."""
    label = tf.io.FixedLenFeature([], tf.int64)
    if frame_encoding == "jpeg":
        example = tf.io.parse_single_example(
            record, {FRAMES: tf.io.FixedLenFeature([frame_shape[0]], tf.string), LABEL: label})
        clip = tf.map_fn(lambda frame: tf.io.decode_jpeg(frame, channels=3), example[FRAMES],
                         fn_output_signature=tf.uint8)
    else:
        example = tf.io.parse_single_example(
            record, {CLIP: tf.io.FixedLenFeature([], tf.string), LABEL: label})
        clip = tf.io.decode_raw(example[CLIP], tf.uint8)
    return tf.reshape(clip, frame_shape), tf.cast(example[LABEL], tf.int32)


def read_records(shards: list[str], frame_shape: list[int], frame_encoding: str = "raw") -> tf.data.Dataset:
    """Yields ``(clip, label)`` for every record of the shards, in order."""
    return (tf.data.TFRecordDataset(shards)
            .map(lambda record: parse(record, frame_shape, frame_encoding),
                 num_parallel_calls=tf.data.AUTOTUNE))


def shuffle_buffer_size(manifest: dict) -> int:
    """How many training clips fit in the shuffle buffer, at least 1 and at most all of them."""
    clip_bytes = math.prod(manifest["frame_shape"])
    return max(1, min(manifest["counts"]["train"], SHUFFLE_BUFFER_BYTES // clip_bytes))


def random_resized_crop(clip: tf.Tensor, min_area: float, seed: tf.Tensor) -> tf.Tensor:
    """One random crop of at least ``min_area`` of the frame, aspect ratio within 3:4 to 4:3,
    taken at the same place in every frame (so that it moves no pixel between frames) and
    resized back to the frame's size."""
    frames, height, width = (tf.shape(clip)[i] for i in range(3))
    area, log_ratio, left, top = tf.unstack(tf.random.stateless_uniform([4], seed))
    area = min_area + (1 - min_area) * area
    ratio = tf.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * log_ratio)
    crop_height, crop_width = tf.minimum(1.0, tf.sqrt(area / ratio)), tf.minimum(1.0, tf.sqrt(area * ratio))
    y0, x0 = top * (1 - crop_height), left * (1 - crop_width)
    boxes = tf.tile([[y0, x0, y0 + crop_height, x0 + crop_width]], [frames, 1])
    cropped = tf.image.crop_and_resize(tf.cast(clip, tf.float32), boxes, tf.range(frames), [height, width])
    return tf.cast(tf.round(cropped), tf.uint8)


def batches(frames_dir: Path, split: str, batch_size: int, training: bool = False, seed: int = 0,
            flip: bool = False, slot: int | None = None, crop_scale: float = 1.0,
            one_hot: int = 0) -> tf.data.Dataset:
    """Batches of ``(uint8 clips (batch, n_frames, height, width, 3), int32 labels)``, the labels
    one-hot vectors of ``one_hot`` classes if that is given.

    With the same seed, training yields the same batches in the same order, and a different
    order and draw at each epoch; ``flip`` mirrors half the clips, and ``crop_scale`` below 1
    crops each at random (``random_resized_crop``). Otherwise the batches hold each video's clip
    number ``slot``, by default its middle one.
    """
    manifest = read_manifest(frames_dir)
    frame_shape, encoding = manifest["frame_shape"], manifest["frame_encoding"]
    groups = [[str(Path(frames_dir) / shard) for shard in group] for group in manifest["shards"][split]]
    if not training:
        dataset = read_records([group[len(group) // 2 if slot is None else slot] for group in groups],
                               frame_shape, encoding)
    else:
        def draw(seed_offset: int) -> tf.data.Dataset:  # a seeded stream, new at each epoch
            return tf.data.Dataset.random(seed=seed + seed_offset, rerandomize_each_iteration=True)

        shards = (tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(groups), draw(0))
                  .shuffle(len(groups), seed=seed)
                  .map(lambda group, n: group[n % len(groups[0])]))

        def augment(record, n):
            clip, label = parse(record, frame_shape, encoding)
            if flip:
                clip = tf.cond(n % 2 == 1, lambda: tf.reverse(clip, axis=[2]), lambda: clip)
            if crop_scale < 1:
                clip = random_resized_crop(clip, crop_scale, tf.stack([n, n // 2]))
            return clip, label

        records = shards.interleave(tf.data.TFRecordDataset, cycle_length=PARALLEL_SHARDS,
                                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = (tf.data.Dataset.zip(records, draw(1))
                   .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
                   .shuffle(shuffle_buffer_size(manifest), seed=seed))
    if one_hot:
        dataset = dataset.map(lambda clip, label: (clip, tf.one_hot(label, one_hot)))
    return (dataset.apply(tf.data.experimental.assert_cardinality(manifest["counts"][split]))
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def split_logits(model, frames_dir: Path, split: str, batch_size: int,
                 reorder: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits for every video of a split, in the manifest's order: the mean of those
    of the video's evenly spaced clips; and the videos' labels. Validation during training and
    evaluation after it both score videos so. ``reorder``, if given, changes each batch of clips
    (their frames' order, say) before the model sees it."""
    slots = read_manifest(frames_dir)["eval_clips_per_video"]
    logits, labels = [], None
    for slot in range(slots):
        clips = [(model.predict_on_batch(reorder(x.numpy()) if reorder else x), y.numpy())
                 for x, y in batches(frames_dir, split, batch_size, slot=slot)]
        logits.append(np.concatenate([c for c, _ in clips]).astype(np.float64))
        labels = np.concatenate([y for _, y in clips])
    return np.mean(logits, axis=0), labels
