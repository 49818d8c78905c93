"""The (2+1)D ResNet of the TensorFlow video classification tutorial (Tran et al. 2017).

Each 3D convolution is factored into a spatial (1 x k x k) and a temporal (k x 1 x 1)
convolution. Only Keras layers and einops are used (no ``tf.*``), so the model runs under any
Keras 3 backend. With the tutorial's defaults and 10 classes it has 443,322 parameters. It
takes uint8 frames and, as the tutorial's input did, scales them to [0, 1] in its first layer;
or, with ``inputs="motion"``, turns them into ``MotionFeatures``, which leave out what stands
still. Its last features are averaged over time and space, as the tutorial's are, or their
maximum is taken (``pooling="max"``). Neither option changes the number of parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import keras
from keras import layers, ops

PACKAGE = "videoclf"
INPUTS = ("frames", "motion")  # what the first convolution sees
POOLINGS = ("average", "max")  # how the last features are pooled over time and space


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2Plus1D(layers.Layer):
    """A spatial convolution followed by a temporal one.

    The weights are the tutorial's two Conv3D layers, a (1 x k x k) and a (k x 1 x 1) one (so
    models saved before load as they were), but they run as 2D convolutions: the spatial one
    over every frame (``(b t) h w c``), the temporal one over time for every pixel
    (``b t (h w) c``, a k x 1 kernel). That computes the same function, and CPUs' and GPUs'
    2D convolutions are much faster than their 3D ones.
    """

    def __init__(self, filters: int, kernel_size: Sequence[int], padding: str, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.padding = filters, tuple(kernel_size), padding
        t, h, w = self.kernel_size
        self.seq = keras.Sequential(
            [
                layers.Conv3D(filters, kernel_size=(1, h, w), padding=padding),
                layers.Conv3D(filters, kernel_size=(t, 1, 1), padding=padding),
            ]
        )

    def build(self, input_shape):
        self.seq.build(input_shape)

    def call(self, x):
        spatial, temporal = self.seq.layers
        frames = einops.parse_shape(x, "b t h w c")["t"]
        x = einops.rearrange(x, "b t h w c -> (b t) h w c")
        x = ops.conv(x, ops.cast(spatial.kernel[0], x.dtype), padding=self.padding)
        x = x + ops.cast(spatial.bias, x.dtype)
        height, width = x.shape[1], x.shape[2]
        x = einops.rearrange(x, "(b t) h w c -> b t (h w) c", t=frames)
        x = ops.conv(x, ops.cast(temporal.kernel[:, 0], x.dtype), padding=self.padding)
        x = x + ops.cast(temporal.bias, x.dtype)
        return einops.rearrange(x, "b t (h w) c -> b t h w c", h=height, w=width)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "padding": self.padding}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualMain(layers.Layer):
    """The main path of a residual block: two (2+1)D convolutions with layer norms."""

    def __init__(self, filters: int, kernel_size: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, tuple(kernel_size)
        self.seq = keras.Sequential(
            [
                Conv2Plus1D(filters, kernel_size, padding="same"),
                layers.LayerNormalization(),
                layers.ReLU(),
                Conv2Plus1D(filters, kernel_size, padding="same"),
                layers.LayerNormalization(),
            ]
        )

    def build(self, input_shape):
        self.seq.build(input_shape)

    def call(self, x):
        return self.seq(x)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Project(layers.Layer):
    """Projects the channels of the shortcut to the width of the main path."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.seq = keras.Sequential([layers.Dense(units), layers.LayerNormalization()])

    def build(self, input_shape):
        self.seq.build(input_shape)

    def call(self, x):
        return self.seq(x)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResizeVideo(layers.Layer):
    """Resizes every frame of a (batch, time, height, width, channels) video."""

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = height, width
        self.resizing_layer = layers.Resizing(height, width)

    def build(self, input_shape):
        self.resizing_layer.build(input_shape)

    def call(self, video):
        # b: batch, t: time, h: height, w: width, c: channels
        old_shape = einops.parse_shape(video, "b t h w c")
        images = einops.rearrange(video, "b t h w c -> (b t) h w c")
        images = self.resizing_layer(images)
        return einops.rearrange(images, "(b t) h w c -> b t h w c", t=old_shape["t"])

    def get_config(self) -> dict:
        return {**super().get_config(), "height": self.height, "width": self.width}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MotionFeatures(layers.Layer):
    """Which way the picture moves, from uint8 frames: for each pair of frames in a row, the
    brightness-constancy terms behind gradient optical flow (Horn and Schunck 1981) on the
    frames smoothed over 5 x 5 pixels: minus their change times the horizontal and the vertical
    gradient of their mean (motion to the right and down gives positive values), and the
    change's energy, each summed over the colour channels; then each clip scaled to a root mean
    square of 1.

    What stands still gives nothing, and the features do not change with the object's colour,
    with whether it is brighter or darker than what lies behind it (a channel inverted inverts
    both factors), nor with its contrast. A clip of ``t`` frames gives ``t - 1`` frames of 3
    features. Computed in float32 under any precision policy: products of small changes
    underflow in float16.
    """

    FLOOR = (1 / 255) ** 2  # the least a clip is divided by: one level of change against one of gradient

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)

    def call(self, video):
        frames = einops.parse_shape(video, "b t h w c")["t"]
        x = einops.rearrange(ops.cast(video, "float32") / 255, "b t h w c -> (b t) h w c")
        x = ops.average_pool(ops.average_pool(x, 3, 1, "same"), 3, 1, "same")  # smoothed over 5 x 5
        x = einops.rearrange(x, "(b t) h w c -> b t h w c", t=frames)
        change, mean = x[:, 1:] - x[:, :-1], (x[:, 1:] + x[:, :-1]) / 2
        edged = ops.pad(mean, [(0, 0), (0, 0), (1, 1), (1, 1), (0, 0)], mode="symmetric")  # edges repeated
        rightward = (edged[:, :, 1:-1, 2:] - edged[:, :, 1:-1, :-2]) / 2
        downward = (edged[:, :, 2:, 1:-1] - edged[:, :, :-2, 1:-1]) / 2
        features = ops.stack([-ops.sum(change * rightward, axis=-1), -ops.sum(change * downward, axis=-1),
                              ops.sum(change * change, axis=-1)], axis=-1)
        spread = ops.sqrt(ops.mean(ops.square(features), axis=(1, 2, 3, 4), keepdims=True))
        return features / ops.maximum(spread, self.FLOOR)


def add_residual_block(x, filters: int, kernel_size: Sequence[int]):
    """Adds a residual block, projecting the shortcut when the width changes."""
    out = ResidualMain(filters, kernel_size)(x)
    res = x
    if out.shape[-1] != x.shape[-1]:
        res = Project(out.shape[-1])(res)
    return layers.add([res, out])


def build_model(num_classes: int, n_frames: int, height: int, width: int,
                base_filters: int = 16, blocks_per_stage: int = 1, inputs: str = "frames",
                pooling: str = "average") -> keras.Model:
    """Builds the network for uint8 clips of ``n_frames x height x width x 3``.

    Four stages of ``blocks_per_stage`` residual blocks (the depth), with ``base_filters``
    filters (the width) doubling at each stage; each stage but the last halves the frame size.
    ``inputs`` is one of INPUTS, ``pooling`` one of POOLINGS. The defaults are the tutorial's.
    The logits are float32 under any precision policy.
    """
    if inputs not in INPUTS or pooling not in POOLINGS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)} and pooling one of "
                         f"{', '.join(POOLINGS)}, got {inputs!r} and {pooling!r}")
    if inputs == "motion" and n_frames < 2:
        raise ValueError(f"motion inputs need clips of 2 frames or more, got {n_frames}")
    clips = layers.Input(shape=(n_frames, height, width, 3), dtype="uint8")
    x = layers.Rescaling(1 / 255)(clips) if inputs == "frames" else MotionFeatures()(clips)
    x = Conv2Plus1D(filters=base_filters, kernel_size=(3, 7, 7), padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = ResizeVideo(height // 2, width // 2)(x)
    for stage in range(4):
        for _ in range(blocks_per_stage):
            x = add_residual_block(x, base_filters * 2**stage, (3, 3, 3))
        if stage < 3:
            x = ResizeVideo(height // 2 ** (stage + 2), width // 2 ** (stage + 2))(x)

    x = layers.GlobalAveragePooling3D()(x) if pooling == "average" else layers.GlobalMaxPooling3D()(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(num_classes, dtype="float32")(x)
    return keras.Model(clips, outputs, name="resnet_2plus1d")
