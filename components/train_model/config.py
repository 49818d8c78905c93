"""The settings of a training run, with the tutorial's defaults: the one place they are written
(the pipeline's parameters and the README's table follow them). Importable without TensorFlow."""

from __future__ import annotations

import dataclasses

from components.common import SEED, require_at_least_one

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
RESUMABLE_CHANGES = ("epochs", "patience")  # the settings a resumed run may change


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of a training run; the tutorial's by default."""

    epochs: int = 50
    batch_size: int = 8  # per replica: with N GPUs a step takes N times as many clips
    learning_rate: float = 1e-4
    seed: int = SEED
    random_flip: bool = True  # mirror training clips at random; wrong where classes are mirror images
    base_filters: int = 16  # the network's width
    blocks_per_stage: int = 1  # its depth
    precision: str = "auto"  # one of PRECISIONS; auto: mixed_float16 on a GPU, else float32
    patience: int = 10  # epochs without a better validation score before stopping; 0: never

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        require_at_least_one({"epochs": self.epochs, "batch_size": self.batch_size,
                              "base_filters": self.base_filters,
                              "blocks_per_stage": self.blocks_per_stage})
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 (never stop early) or more, got {self.patience}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
