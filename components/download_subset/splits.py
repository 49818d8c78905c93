"""Which classes, and which of their videos go to training, validation and test.

Classes: the first ``num_classes`` by name (0: all of them), or those named in ``classes``.

Splits (``split_by``):

- ``source``: as the source gives them (split folders, a split column); a validation split the
  source lacks is carved out of its training split, by group;
- ``ucf101-1``, ``ucf101-2``, ``ucf101-3``: UCF101's official splits: the test groups are g01-g07,
  g08-g14 and g15-g21, the training groups the others; validation is carved out of the training
  groups, so that test results compare with published ones;
- ``group``: at random, each group (UCF101's ``gXX``: one actor and scene) in one split only, so
  no actor and scene seen in training comes back in the test; a video without a group is a
  group of its own;
- ``file``: at random, video by video, as the tutorial does (which lets a group's clips into
  training and test both, and flatters accuracy);
- ``auto`` (the default): ``source`` where the source gives splits, else ``group``.

Each split takes, per class, a count of videos (``30``), a fraction of the class's videos
(``0.7``), or all that are left (``0``). A class too small for what is asked is an error that
names it and its count.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

from components.common import SPLITS
from components.download_subset.sources import SourceError, VideoFile, by_class

SPLIT_BY = ("auto", "source", "group", "file", "ucf101-1", "ucf101-2", "ucf101-3")
UCF101_TEST_GROUPS = {"ucf101-1": range(1, 8), "ucf101-2": range(8, 15), "ucf101-3": range(15, 22)}


def choose_classes(available: list[str], classes: list[str], num_classes: int, source: str) -> list[str]:
    """The classes asked for, by name, or the first ``num_classes`` (0: all), sorted by name."""
    available = sorted(available)
    if classes:
        unknown = [c for c in classes if c not in available]
        if unknown:
            more = f" and {len(available) - 20} more" if len(available) > 20 else ""
            shown = ", ".join(available[:20]) + more
            raise SourceError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among the "
                              f"{len(available)} classes of {source}: {shown}")
        return sorted(set(classes))
    if num_classes < 0:
        raise SourceError(f"num_classes must be 0 (all classes) or more, got {num_classes}")
    if num_classes > len(available):
        raise SourceError(f"num_classes={num_classes} asked, but {source} has only {len(available)} classes")
    return available[:num_classes] if num_classes else available


def wanted(count: float, total: int, split: str) -> int | None:
    """How many of ``total`` videos a split takes: a count, a fraction, or None for all left."""
    if count < 0:
        raise SourceError(f"{split}_per_class must be a count, a fraction below 1, or 0 for all; got {count}")
    if count == 0:
        return None
    if count < 1:
        return max(1, math.floor(count * total + 0.5))
    if count != int(count):
        raise SourceError(f"{split}_per_class must be a whole count or a fraction below 1, got {count}")
    return int(count)


def grouped(videos: list[VideoFile], by_file: bool) -> list[list[VideoFile]]:
    """The videos in groups, in a fixed order; each video its own group ``by_file`` or without one."""
    groups: dict[str, list[VideoFile]] = defaultdict(list)
    for video in sorted(videos, key=lambda v: v.path):
        groups[video.path if by_file or video.group is None else f"group {video.group}"].append(video)
    return [groups[key] for key in sorted(groups)]


def take(groups: list[list[VideoFile]], n: int | None, rng: random.Random, what: str
         ) -> tuple[list[VideoFile], list[list[VideoFile]]]:
    """``n`` videos (None: all) from whole groups drawn at random, and the groups left; the
    other videos of the last group drawn are left out, so no group is in two splits."""
    if n is None:
        return sorted((v for g in groups for v in g), key=lambda v: v.path), []
    order = list(groups)
    rng.shuffle(order)
    pool: list[VideoFile] = []
    while len(pool) < n and order:
        pool += order.pop()
    if len(pool) < n:
        raise SourceError(f"{what}: too few whole groups left for {n} videos with no group in two splits "
                          "(ask for fewer, or split_by=file)")
    return sorted(rng.sample(pool, n), key=lambda v: v.path), order


def split_class(videos: list[VideoFile], counts: dict[str, float], split_by: str, rng: random.Random,
                name: str) -> dict[str, list[VideoFile]]:
    """One class's videos by split."""
    if split_by in UCF101_TEST_GROUPS:
        pools = ucf101_pools(videos, split_by, name)
    elif split_by == "source":
        pools = {split: [v for v in videos if v.split == split] for split in SPLITS}
    else:
        pools = {}
    chosen = {}
    if pools:
        if not pools["val"]:  # carve validation out of training, by group
            n = wanted(counts["val"], len(pools["train"]), "val")
            if n is None:
                raise SourceError(f"the source gives class {name} no validation videos: give val_per_class "
                                  "as a count or a fraction of its training videos to carve them out")
            chosen["val"], left = take(grouped(pools["train"], False), n, rng,
                                       f"class {name} ({len(pools['train'])} training videos), validation")
            pools["train"] = [v for g in left for v in g]
        for split in SPLITS:
            if split in chosen:
                continue
            n = wanted(counts[split], len(pools[split]), split)
            chosen[split], _ = take(grouped(pools[split], True), n, rng,
                                    f"class {name} ({len(pools[split])} {split} videos), {split}")
        return chosen
    groups = grouped(videos, split_by == "file")
    sizes = {split: wanted(counts[split], len(videos), split) for split in SPLITS}
    rest = [split for split, n in sizes.items() if n is None]
    if len(rest) > 1:
        raise SourceError(f"{' and '.join(rest)}_per_class are both 0 (all): only one split can take "
                          "the rest")
    needed = sum(n for n in sizes.values() if n)
    if needed > len(videos):
        raise SourceError(f"class {name} has {len(videos)} videos, fewer than the {needed} that "
                          f"{'/'.join(SPLITS)} = {'/'.join(str(sizes[s] or 'rest') for s in SPLITS)} need")
    what = f"class {name} ({len(videos)} videos in {len(groups)} groups)"
    for split in [s for s in SPLITS if s not in rest] + rest:
        chosen[split], groups = take(groups, sizes[split], rng, f"{what}, {split}")
    return {split: chosen[split] for split in SPLITS}


def ucf101_pools(videos: list[VideoFile], split_by: str, name: str) -> dict[str, list[VideoFile]]:
    """UCF101's official test and training groups of one class; validation is carved later."""
    test_groups = UCF101_TEST_GROUPS[split_by]
    pools: dict[str, list[VideoFile]] = {"train": [], "val": [], "test": []}
    for video in videos:
        if video.group is None or not video.group.isdigit():
            raise SourceError(f"split_by={split_by} needs UCF101's groups g01-g25 in the file names: "
                              f"{video.path} has none")
        pools["test" if int(video.group) in test_groups else "train"].append(video)
    if not pools["test"]:
        raise SourceError(f"class {name} has no video in the test groups of {split_by} "
                          f"(g{test_groups[0]:02d}-g{test_groups[-1]:02d})")
    return pools


def choose_splits(videos: list[VideoFile], classes: list[str], counts: dict[str, float], split_by: str,
                  seed: int) -> tuple[dict[str, list[VideoFile]], str]:
    """The chosen classes' videos by split, and the split rule used (``auto`` resolved)."""
    if split_by not in SPLIT_BY:
        raise SourceError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    given = any(v.split for v in videos)
    if split_by == "auto":
        split_by = "source" if given else "group"
    if split_by == "source" and not given:
        raise SourceError("split_by=source, but the source gives no splits (no split folders or column)")
    rng = random.Random(seed)
    chosen: dict[str, list[VideoFile]] = {split: [] for split in SPLITS}
    classes_videos = by_class(videos)
    for name in classes:
        for split, picked in split_class(classes_videos.get(name, []), counts, split_by, rng, name).items():
            chosen[split] += picked
    return chosen, split_by
