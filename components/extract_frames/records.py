"""The TFRecord format of extracted clips, its one definition: written by extract_frames, read
by training and evaluation (``components.train_model.inputs`` builds its parser from the
feature names and kinds here).

Each record is a ``tf.train.Example`` holding one clip of one video: its uint8 RGB frames of
shape ``frame_shape = (n_frames, height, width, 3)``, either raw in ``clip`` or as one JPEG per
frame in ``frames`` (the manifest's ``frame_encoding``); ``label``; and ``video``, its path in the
downloaded dataset. Val and test videos have their evenly spaced clips. Training videos have
``clips_per_train_video`` clips at random starts, stored in as many parallel shards: the k-th
shard of a group holds the k-th clip of each of its videos, so an epoch that draws one of them
reads a third of the bytes that storing every clip together would make it read.

Writing needs no TensorFlow, so the data image stays small: the Example messages are built from
their descriptor in a pool of their own, and each record is framed as TFRecord files are
(length, masked CRC-32C of the length, data, masked CRC-32C of the data). This module imports
neither OpenCV nor google-crc32c until it writes, so the trainer's image reads the schema too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

JPEG_QUALITY = 90

# The features of a record: name -> (kind, what it holds).
CLIP = "clip"  # bytes: the raw uint8 clip, frame_shape in C order (frame_encoding "raw")
FRAMES = "frames"  # bytes, one per frame: a JPEG each (frame_encoding "jpeg")
LABEL = "label"  # int64: the class's index in the manifest's classes
VIDEO = "video"  # bytes: the video's path in the downloaded dataset

# tensorflow/core/example/{example,feature}.proto, the parts used here, in a package of our own so
# that they never clash with TensorFlow's messages in a process that loads both.
EXAMPLE_PROTO = """
name: "videoclf/example.proto" package: "videoclf" syntax: "proto3"
message_type { name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES } }
message_type { name: "Int64List"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 options { packed: true } } }
message_type { name: "Feature"
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".videoclf.BytesList" oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".videoclf.Int64List" oneof_index: 0 }
  oneof_decl { name: "kind" } }
message_type { name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".videoclf.Features.FeatureEntry" }
  nested_type { name: "FeatureEntry" options { map_entry: true }
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".videoclf.Feature" } } }
message_type { name: "Example"
  field { name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".videoclf.Features" } }
"""
_pool = descriptor_pool.DescriptorPool()
_pool.Add(text_format.Parse(EXAMPLE_PROTO, descriptor_pb2.FileDescriptorProto()))
Example = message_factory.GetMessageClass(_pool.FindMessageTypeByName("videoclf.Example"))


def encode(clip: np.ndarray, label: int, video: str, frame_encoding: str = "raw") -> bytes:
    """Serialises one clip as a ``tf.train.Example``."""
    example = Example()
    feature = example.features.feature
    if frame_encoding == "jpeg":
        import cv2

        feature[FRAMES].bytes_list.value.extend(
            cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for frame in clip)
    else:
        feature[CLIP].bytes_list.value.append(clip.tobytes())
    feature[LABEL].int64_list.value.append(label)
    feature[VIDEO].bytes_list.value.append(video.encode())
    return example.SerializeToString()


def masked_crc32c(data: bytes) -> bytes:
    """The checksum that frames a TFRecord: CRC-32C, rotated and offset as TensorFlow masks it."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def write_shard(path: Path, records: Iterable[bytes]) -> None:
    """Writes one TFRecord file through a temporary name, so a shard on disk is always whole."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as out:
        for record in records:
            length = struct.pack("<Q", len(record))
            out.write(length + masked_crc32c(length))
            out.write(record)
            out.write(masked_crc32c(record))
    tmp.replace(path)
