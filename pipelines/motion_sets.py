"""Synthetic motion sets: videos whose classes differ only in how an object moves.

A set (``MotionSet``) fixes how the scene looks (the object's shape, size and colour, its
contrast with the background, a plain or textured background, distracting objects) and which
motions are its classes (``MOTIONS``: drifting in a direction, turning either way, growing or
shrinking). Each motion is drawn from the same distribution as its opposite played backwards
(a clip that shrinks is a growing clip reversed), and positions, angles and phases are random,
so any single frame is drawn from the same distribution in every class: only motion over time
tells them apart. Clips of one group share the object's look and the background, as UCF101
clips of one group share an actor and a scene, so a model that learns a group's look rather
than its motion fails on the test groups.

Frames are drawn at four times their size and averaged down, so that sub-pixel motion moves
edges smoothly. ``frame_strip`` shows clips of each class as training sees them, so a person
can judge whether the classes can be told apart.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

FRAME_SIZE = (80, 60)  # width, height: UCF101's 4:3 aspect ratio; sizes and speeds are at this width
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Motion:
    """How the object moves: drifting by (dx, dy) times its speed, turning clockwise (1) or
    anticlockwise (-1), or growing (1) or shrinking (-1)."""

    dx: int = 0
    dy: int = 0
    turn: int = 0
    grow: int = 0


MOTIONS = {
    "DriftLeft": Motion(dx=-1), "DriftRight": Motion(dx=1), "DriftUp": Motion(dy=-1),
    "DriftDown": Motion(dy=1), "TurnClockwise": Motion(turn=1), "TurnAnticlockwise": Motion(turn=-1),
    "Grow": Motion(grow=1), "Shrink": Motion(grow=-1),
}
DRIFTS = ("DriftLeft", "DriftRight", "DriftUp", "DriftDown")


@dataclasses.dataclass(frozen=True)
class MotionSet:
    """How a set's scenes look and which motions are its classes. Sizes and speeds are in pixels
    at 80 pixels wide (they scale with the frame); ranges are drawn per group, speeds per clip."""

    description: str
    classes: tuple[str, ...] = DRIFTS  # names in MOTIONS
    shape: str = "square"  # square, disc, or bar (four times as long as wide)
    size: tuple[float, float] = (8, 15)  # the object's side, diameter or length
    contrast: tuple[int, int] = (170, 255)  # how far the object's colour is from the background's
    background: tuple[int, int] = (0, 0)  # the background's brightness, plain or the texture's mean
    colour: bool = False  # random colours for the object and the background; else greys
    darker: bool = False  # the object may be darker than the background; else brighter
    texture: float = 0.0  # the standard deviation of a static, blurred random texture; 0: plain
    distractors: int = 0  # smaller objects at half the contrast, each with a random motion of the set
    speed: tuple[float, float] = (1.5, 3.0)  # drifts: pixels a frame
    turn_speed: tuple[float, float] = (4.0, 8.0)  # turns: degrees a frame
    growth_speed: tuple[float, float] = (3.0, 6.0)  # growth: per cent a frame


MOTION_SETS = {
    "easy": MotionSet("a bright grey square on black (the demo's)"),
    "medium": MotionSet("a smaller, dimmer, slower square on black", size=(5, 10), contrast=(120, 200),
                        speed=(1.0, 2.0)),
    "hard": MotionSet("the medium square on a faint texture, with a dimmer square drifting its own way",
                      size=(5, 10), contrast=(60, 140), background=(60, 60), texture=4, distractors=1,
                      speed=(1.0, 2.0)),
    "coloured": MotionSet("a square of any colour on a plain background of any colour", size=(5, 10),
                          contrast=(40, 120), background=(30, 225), colour=True, darker=True,
                          speed=(1.0, 2.0)),
    "low-contrast": MotionSet("a grey square on a grey background, 15 to 30 levels apart", size=(6, 12),
                              contrast=(15, 30), background=(60, 190), darker=True, speed=(1.0, 2.0)),
    "small": MotionSet("a square of 2 to 4 pixels (at 80 wide) on a grey background", size=(2, 4),
                       contrast=(80, 160), background=(0, 90), speed=(1.0, 2.0)),
    "large": MotionSet("a square a third to a half of the frame's height", size=(20, 30), contrast=(60, 140),
                       background=(30, 220), darker=True, speed=(1.0, 2.0)),
    "textured": MotionSet("a coloured square on a strong coloured texture", size=(6, 12), contrast=(60, 120),
                          background=(60, 190), colour=True, darker=True, texture=25, speed=(1.0, 2.0)),
    "faint": MotionSet("a square 4 to 8 levels from a textured background: hard to see in a still frame",
                       size=(6, 12), contrast=(4, 8), background=(60, 190), darker=True, texture=10,
                       speed=(1.0, 2.0)),
    "rotation": MotionSet("a coloured bar turning either way about its centre",
                          classes=("TurnClockwise", "TurnAnticlockwise"), shape="bar", size=(16, 28),
                          contrast=(60, 150), background=(30, 225), colour=True, darker=True),
    "growth": MotionSet("a coloured disc growing or shrinking", classes=("Grow", "Shrink"), shape="disc",
                        size=(4, 28), contrast=(60, 150), background=(30, 225), colour=True, darker=True),
    "mixed": MotionSet("a coloured bar drifting left or right, turning either way, growing or shrinking",
                       classes=("DriftLeft", "DriftRight", "TurnClockwise", "TurnAnticlockwise", "Grow",
                                "Shrink"), shape="bar", size=(12, 28), contrast=(60, 150),
                       background=(30, 225), colour=True, darker=True, speed=(1.0, 2.0)),
}


@dataclasses.dataclass(frozen=True)
class Look:
    """What the clips of one group share: the object's size and colour, and the background."""

    size: float  # at this frame size
    colour: np.ndarray  # RGB, float
    background: np.ndarray  # (height, width, 3) float


def draw_look(motion_set: MotionSet, rng: np.random.Generator,
              frame_size: tuple[int, int] = FRAME_SIZE) -> Look:
    """A group's look, drawn from the set's ranges."""
    width, height = frame_size
    scale = width / FRAME_SIZE[0]
    base = rng.uniform(*motion_set.background)
    background = np.full((height, width, 3), base)
    if motion_set.colour:  # a colour around that brightness, each channel up to 80 levels off it
        background += rng.uniform(-80, 80, 3)
    if motion_set.texture:
        noise = cv2.GaussianBlur(rng.normal(size=(height, width, 3 if motion_set.colour else 1)), (5, 5), 0)
        background = background + motion_set.texture * (noise / noise.std()).reshape(height, width, -1)
    background = np.clip(background, 0, 255).astype(np.float32)
    mean, contrast = background.mean(axis=(0, 1)), rng.uniform(*motion_set.contrast)
    if motion_set.colour:  # any direction in RGB, its largest channel difference the contrast
        way = np.abs(rng.normal(size=3))
        way /= way.max()
        sign = rng.choice([-1, 1], 3) if motion_set.darker else np.ones(3)
    else:
        way, sign = np.ones(3), np.full(3, rng.choice([-1, 1]) if motion_set.darker else 1)
    if motion_set.darker:  # a channel that would clip turns to the side with more room
        room, other = np.where(sign > 0, 255 - mean, mean), np.where(sign > 0, mean, 255 - mean)
        flip = (room < contrast * way) & (other > room)
        sign = np.where(flip.any() if not motion_set.colour else flip, -sign, sign)
    way = way * sign
    colour = np.clip(mean + contrast * way, 0, 255)
    return Look(size=rng.uniform(*motion_set.size) * scale, colour=colour, background=background)


def shape_polygon(shape: str, size: float, angle: float) -> np.ndarray:
    """The corners of a square or bar of ``size`` centred on the origin, turned by ``angle``
    degrees clockwise on screen; a disc is a polygon of many corners."""
    if shape == "disc":
        corners = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
        return np.array(corners) * size / 2
    half_w, half_h = (size / 2, size / 2) if shape == "square" else (size / 2, size / 8)
    corners = np.array([(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)])
    turn = math.radians(angle)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return corners @ rotation.T


def coverage(polygons: list[np.ndarray], frame_size: tuple[int, int]) -> np.ndarray:
    """How much of each pixel the polygons cover, 0 to 1, drawn at SUPERSAMPLE times the size;
    each polygon is drawn again a frame's width and height away, so that objects wrap around."""
    width, height = frame_size
    covered = np.zeros((height, width), np.float32)
    for polygon in polygons:
        for shift in [(sx * width, sy * height) for sx in (-1, 0, 1) for sy in (-1, 0, 1)]:
            corners = polygon + shift
            (x0, y0), (x1, y1) = (np.floor(corners.min(axis=0)).astype(int),
                                  np.ceil(corners.max(axis=0)).astype(int))
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                continue
            patch = np.zeros(((y1 - y0) * SUPERSAMPLE, (x1 - x0) * SUPERSAMPLE), np.uint8)
            cv2.fillPoly(patch, [np.round((corners - (x0, y0)) * SUPERSAMPLE).astype(np.int32)], 255)
            patch = cv2.resize(patch, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA) / 255
            top, left = max(y0, 0), max(x0, 0)
            region = covered[top:min(y1, height), left:min(x1, width)]
            inside = patch[top - y0:top - y0 + region.shape[0], left - x0:left - x0 + region.shape[1]]
            np.maximum(region, inside, out=region)
    return covered[..., None]


def trajectory(motion: Motion, motion_set: MotionSet, look: Look, rng: np.random.Generator,
               n_frames: int, frame_size: tuple[int, int]) -> list[np.ndarray]:
    """The object's polygon in each frame. Shrinking and turning anticlockwise are growing and
    turning clockwise played backwards, so opposite classes share every single frame's law."""
    if motion.grow < 0 or motion.turn < 0:
        forward = dataclasses.replace(motion, grow=abs(motion.grow), turn=abs(motion.turn))
        return trajectory(forward, motion_set, look, rng, n_frames, frame_size)[::-1]
    width, height = frame_size
    scale = width / FRAME_SIZE[0]
    speed = rng.uniform(*(motion_set.growth_speed if motion.grow else
                          motion_set.turn_speed if motion.turn else motion_set.speed))
    x, y, angle = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0, 180)
    sizes = np.full(n_frames, look.size)
    if motion.grow:  # from the set's smallest size, growing by speed % a frame, at a random phase
        smallest, largest = (s * scale for s in motion_set.size)
        steps = math.log(largest / smallest) / math.log(1 + speed / 100)
        start = rng.uniform(0, max(0.0, steps - n_frames + 1))
        sizes = smallest * (1 + speed / 100) ** (start + np.arange(n_frames))
    polygons = []
    for t in range(n_frames):
        centre = np.array([x + motion.dx * speed * t * scale, y + motion.dy * speed * t * scale])
        polygons.append(shape_polygon(motion_set.shape, sizes[t], angle + motion.turn * speed * t) + centre)
    return polygons


def render_clip(motion_set: MotionSet, class_name: str, look: Look, rng: np.random.Generator, n_frames: int,
                frame_size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """``n_frames`` BGR uint8 frames of the class's motion in the group's look, among the set's
    distractors (drawn under the object)."""
    objects = []
    for _ in range(motion_set.distractors):
        other = motion_set.classes[rng.integers(len(motion_set.classes))]
        small = dataclasses.replace(look, size=look.size * 2 / 3,
                                    colour=(look.colour + look.background.mean(axis=(0, 1))) / 2)
        objects.append((small, trajectory(MOTIONS[other], motion_set, small, rng, n_frames, frame_size)))
    objects.append((look, trajectory(MOTIONS[class_name], motion_set, look, rng, n_frames, frame_size)))
    frames = []
    for t in range(n_frames):
        frame = look.background.copy()
        for who, polygons in objects:
            frame += coverage([polygons[t]], frame_size) * (who.colour.astype(np.float32) - frame)
        frames.append(np.rint(frame[..., ::-1], out=frame[..., ::-1]).astype(np.uint8))
    return np.stack(frames)


def frame_strip(name: str, n_frames: int = 8, frame_step: int = 2, size: int = 64, seed: int = 0,
                fmt: str = "png") -> bytes:
    """Two clips of each class of the set (of two groups), as extraction stores them: ``n_frames``
    frames ``frame_step`` apart, resized with padding to ``size`` x ``size``; a picture in
    ``fmt`` (png, jpg or svg)."""
    import matplotlib.pyplot as plt

    from components.extract_frames.video import resize_with_pad
    from components.reports import render_figure

    motion_set, rng = MOTION_SETS[name], np.random.default_rng(seed)
    rows = [(class_name, render_clip(motion_set, class_name, draw_look(motion_set, rng), rng,
                                     1 + (n_frames - 1) * frame_step)[::frame_step])
            for class_name in motion_set.classes for _ in range(2)]
    fig, axes = plt.subplots(len(rows), n_frames, figsize=(n_frames * 0.7, len(rows) * 0.75), squeeze=False)
    for (class_name, clip), row in zip(rows, axes, strict=True):
        for frame, ax in zip(clip, row, strict=True):
            ax.imshow(cv2.cvtColor(resize_with_pad(frame, size, size), cv2.COLOR_BGR2RGB))
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(class_name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{name}: {motion_set.description}", fontsize=9)
    return render_figure(fig, fmt)
