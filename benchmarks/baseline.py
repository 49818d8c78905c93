"""What the benchmarks compare against: the tutorial's input pipeline and its network's Conv3D
layers, and videos like UCF101's.

``frames_from_video_file`` and ``FrameGenerator`` follow the TensorFlow tutorial "Video
classification with a 3D convolutional neural network": every video is decoded again with
OpenCV at every epoch, every frame is read and converted, each kept frame is padded and resized
with ``tf.image.resize_with_pad``, and ``tf.data.Dataset.from_generator`` batches the results.
"""

import contextlib
import random
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

# TensorFlow is imported where it is used: the extractor's worker processes import this module
# again when they start, and need none of it.

CLASSES = 4
UCF101_FRAME_SIZE = (320, 240)  # width, height
UCF101_FRAMES = 175  # about 7 s at 25 fps, UCF101's mean clip length


def format_frames(frame: np.ndarray, output_size: tuple[int, int]):
    import tensorflow as tf

    frame = tf.image.convert_image_dtype(frame, tf.float32)
    return tf.image.resize_with_pad(frame, *output_size)


def frames_from_video_file(video_path: Path, n_frames: int, output_size: tuple[int, int],
                           frame_step: int) -> np.ndarray:
    """The tutorial's decoder: ``n_frames`` frames every ``frame_step``, from a random start."""
    result = []
    src = cv2.VideoCapture(str(video_path))
    video_length = src.get(cv2.CAP_PROP_FRAME_COUNT)
    need_length = 1 + (n_frames - 1) * frame_step
    start = 0 if need_length > video_length else random.randint(0, int(video_length - need_length))
    src.set(cv2.CAP_PROP_POS_FRAMES, start)
    ret, frame = src.read()
    result.append(format_frames(frame, output_size))
    for _ in range(n_frames - 1):
        for _ in range(frame_step):
            ret, frame = src.read()
        result.append(format_frames(frame, output_size) if ret else np.zeros_like(result[0]))
    src.release()
    return np.array(result)[..., [2, 1, 0]]


class FrameGenerator:
    """The tutorial's generator of ``(frames, label)`` over ``<split dir>/<class>/*.avi``."""

    def __init__(self, path: Path, n_frames: int, output_size: tuple[int, int], frame_step: int,
                 training: bool = False):
        self.path, self.n_frames, self.training = Path(path), n_frames, training
        self.output_size, self.frame_step = output_size, frame_step
        self.class_names = sorted(p.name for p in self.path.iterdir() if p.is_dir())
        self.class_ids_for_name = {name: idx for idx, name in enumerate(self.class_names)}

    def __call__(self):
        pairs = [(p, p.parent.name) for p in self.path.glob("*/*.avi")]
        if self.training:
            random.shuffle(pairs)
        for path, name in pairs:
            frames = frames_from_video_file(path, self.n_frames, self.output_size, self.frame_step)
            yield frames, self.class_ids_for_name[name]


@contextlib.contextmanager
def tutorial_convolutions() -> Iterator[None]:
    """Within it, models built run each (2+1)D convolution as the tutorial does, as its two Conv3D
    layers, where the project runs the same weights as 2D convolutions."""
    from components.train_model.model import Conv2Plus1D

    own = Conv2Plus1D.call
    Conv2Plus1D.call = lambda self, x: self.seq(x)
    try:
        yield
    finally:
        Conv2Plus1D.call = own


def tutorial_dataset(split_dir: Path, n_frames: int, size: int, frame_step: int, batch_size: int):
    """The tutorial's training dataset: float32 frames in [0, 1], decoded at every epoch."""
    import tensorflow as tf

    signature = (tf.TensorSpec(shape=(None, None, None, 3), dtype=tf.float32),
                 tf.TensorSpec(shape=(), dtype=tf.int16))
    generator = FrameGenerator(split_dir, n_frames, (size, size), frame_step, training=True)
    return tf.data.Dataset.from_generator(generator, output_signature=signature).batch(batch_size)


def make_videos(output_dir: Path, videos_per_class: int, clip: Path | None = None, seed: int = 0) -> Path:
    """Downloads, with the project's download stage, a UCF101-layout subset of 4 classes into
    ``output_dir/<split>/<class>/*.avi``: synthetic videos of UCF101's size (320 x 240 XVID,
    175 frames), or copies of a real ``clip``."""
    from components.download_subset.config import SubsetSpec
    from components.download_subset.download import download_subset_to
    from pipelines.demo_data import make_demo_zip

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "UCF101.zip"
        if clip is None:
            make_demo_zip(archive, groups=videos_per_class, clips_per_group=1,
                          frames_per_clip=UCF101_FRAMES, seed=seed, frame_size=UCF101_FRAME_SIZE)
        else:
            with zipfile.ZipFile(archive, "w") as zf:
                for c in range(CLASSES):
                    for g in range(1, videos_per_class + 1):
                        zf.write(clip, f"UCF101/v_Class{c}_g{g:02d}_c01.avi")
        download_subset_to(SubsetSpec(source_url=str(archive), num_classes=CLASSES,
                                      train_per_class=videos_per_class - 2, val_per_class=1,
                                      test_per_class=1, seed=seed), output_dir)
    return Path(output_dir)
