"""The settings of a training run, with their defaults: the one place they are written (the
pipeline's parameters and docs/parameters.md follow them). Importable without TensorFlow.

A recipe is how the network is trained, and what it sees. ``tutorial`` is the tutorial's: the
frames scaled to [0, 1], features averaged over time and space, Adam at a constant 1e-4,
cross-entropy, no augmentation but flips. ``videoclf`` (the default) is for recognising actions
from little data, trained from scratch as the literature on video networks does it (e.g.
Feichtenhofer et al. 2019, "SlowFast Networks"; Tran et al. 2018; Loshchilov and Hutter 2019,
"Decoupled Weight Decay"): AdamW with a linear warm-up and a cosine decay of the learning rate,
label smoothing, and random resized crops that are the same for every frame of a clip, so the
crop moves no pixel between frames and motion is kept. Its network sees motion rather than
frames (``model.MotionFeatures``: what stands still, a scene's colours and an object's contrast
give nothing to learn by heart, as two-stream networks' optical flow does not; Simonyan and
Zisserman 2014) and keeps the strongest response to it anywhere in the clip (max pooling) rather
than its average over a frame that is mostly background. Both networks have the tutorial's
parameters. ``benchmarks/recipes.py`` measures both recipes.
"""

from __future__ import annotations

import dataclasses

from components.common import SEED, require_at_least_one

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
RESUMABLE_CHANGES = ("epochs", "patience")  # the settings a resumed run may change


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the network is trained."""

    learning_rate: float  # the peak
    warmup_epochs: int  # the learning rate rises linearly to its peak, then follows a cosine down
    decay: bool  # a cosine decay to a hundredth of the peak over the run; else constant
    weight_decay: float  # AdamW's, on the kernels (not on biases and normalisation); 0: Adam
    label_smoothing: float
    crop_scale: float  # random resized crops of this share of the frame's area or more; 1: none
    batch_norm_momentum: float  # how slowly the batch normalisation's statistics for inference move
    inputs: str  # what the network sees: "frames", or "motion" (model.MotionFeatures)
    pooling: str  # how its last features are pooled over time and space: "average" or "max"


RECIPES = {
    "tutorial": Recipe(learning_rate=1e-4, warmup_epochs=0, decay=False, weight_decay=0.0,
                       label_smoothing=0.0, crop_scale=1.0, batch_norm_momentum=0.99, inputs="frames",
                       pooling="average"),
    "videoclf": Recipe(learning_rate=1e-3, warmup_epochs=3, decay=True, weight_decay=0.05,
                       label_smoothing=0.1, crop_scale=0.5, batch_norm_momentum=0.9, inputs="motion",
                       pooling="max"),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run."""

    epochs: int = 50
    batch_size: int = 8  # per replica: with N GPUs a step takes N times as many clips
    recipe: str = "videoclf"  # one of RECIPES
    learning_rate: float = 0.0  # the peak learning rate; 0: the recipe's
    seed: int = SEED
    random_flip: bool = True  # mirror training clips at random; wrong where classes are mirror images
    base_filters: int = 16  # the network's width
    blocks_per_stage: int = 1  # its depth
    precision: str = "auto"  # one of PRECISIONS; auto: mixed_float16 on a GPU, else float32
    patience: int = 10  # epochs past the warm-up without a val loss below its lowest since it; 0: never
    freeze_epochs: int = 0  # with an init model: epochs its body is frozen, then trained at a lower rate

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        require_at_least_one({"epochs": self.epochs, "batch_size": self.batch_size,
                              "base_filters": self.base_filters,
                              "blocks_per_stage": self.blocks_per_stage})
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate must be positive, or 0 for the recipe's, "
                             f"got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 (never stop early) or more, got {self.patience}")
        if self.freeze_epochs < 0:
            raise ValueError(f"freeze_epochs must be 0 (nothing frozen) or more, got {self.freeze_epochs}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def settings(self) -> Recipe:
        """The recipe, with this run's learning rate."""
        recipe = RECIPES[self.recipe]
        return dataclasses.replace(recipe, learning_rate=self.learning_rate or recipe.learning_rate)
