"""What the download stage takes, with the tutorial's defaults: the one place they are written
(the pipeline's parameters and docs/parameters.md follow them)."""

from __future__ import annotations

import dataclasses

from components.common import SEED, SPLITS

UCF101_URL = "https://storage.googleapis.com/thumos14_files/UCF101_videos.zip"
UCF101_GROUP_PATTERN = r"_g(\d+)_"  # a video's group in its file name: UCF101's gXX


@dataclasses.dataclass(frozen=True)
class SubsetSpec:
    """Which videos of which source go to which split."""

    source_url: str = UCF101_URL  # a zip, a folder, or an annotation list (sources.py)
    classes: str = ""  # class names by comma; empty: the first num_classes by name
    num_classes: int = 10  # 0: all of them
    class_names: str = ""  # the class-name file of an annotation list whose labels are indices
    train_per_class: float = 30.0  # videos per class: a count, a fraction below 1, or 0 for all left
    val_per_class: float = 10.0
    test_per_class: float = 10.0
    split_by: str = "auto"  # auto, source, group, file, ucf101-1, ucf101-2, ucf101-3 (splits.py)
    group_pattern: str = UCF101_GROUP_PATTERN  # a video's group in its file name
    seed: int = SEED  # which videos of a class go to which split

    @property
    def counts(self) -> dict[str, float]:
        """Videos per class in each split, by split name."""
        return dict(zip(SPLITS, (self.train_per_class, self.val_per_class, self.test_per_class), strict=True))

    @property
    def named_classes(self) -> list[str]:
        """The classes named in ``classes``."""
        return [c.strip() for c in self.classes.split(",") if c.strip()]
