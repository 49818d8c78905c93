"""Which epoch is kept, when training stops early, and whether the kept score could be chance.

The kept model is the epoch of the lowest validation loss, the later one of equals: the loss
moves with every clip's confidence, where accuracy on a few dozen clips jumps by luck. Training
stops early after ``patience`` epochs past the warm-up without the loss falling by MIN_DELTA below
its lowest since the warm-up: a loss of the warm-up, while the learning rate still rises, is no
mark that training must beat.
The selection records how many validation videos and clips the choice rests on (each video's
evenly spaced clips, their logits averaged), and the chance of guessing the kept validation
accuracy or better on that many videos as the best of that many epochs. Pure Python, on the
training state's history.
"""

from __future__ import annotations

import math
import statistics

MIN_DELTA = 1e-3  # a fall of the validation loss smaller than this is no progress for early stopping
KEPT_VAL_LOSS = "kept_val_loss"  # the training metric of the kept epoch's validation loss
CHANCE_LEVEL = 0.05  # a kept accuracy this likely or more under guessing is within noise of chance


def should_stop(state: dict, patience: int, warmup_epochs: int) -> bool:
    """Whether ``patience`` epochs after the warm-up have passed without progress."""
    return bool(patience) and state["epoch"] - max(state["progress_epoch"], warmup_epochs) >= patience


def record_epoch(state: dict, logs: dict[str, float], patience: int, warmup_epochs: int) -> bool:
    """Adds an epoch's scores to the state: the kept epoch is that of the lowest validation loss,
    the later of equals; progress, for early stopping, is a fall of MIN_DELTA or more below the
    lowest loss since the warm-up (the first epoch after it is progress). Returns whether this
    epoch is now the kept one."""
    for key, value in logs.items():
        state["history"].setdefault(key, []).append(float(value))
    state["epoch"] += 1
    kept = logs["val_loss"] <= state["best_val_loss"]
    if kept:
        state["best_epoch"], state["best_val_loss"] = state["epoch"], float(logs["val_loss"])
    if state["epoch"] > warmup_epochs and logs["val_loss"] < state["progress_val_loss"] - MIN_DELTA:
        state["progress_epoch"], state["progress_val_loss"] = state["epoch"], float(logs["val_loss"])
    state["stopped_early"] = should_stop(state, patience, warmup_epochs)
    return kept


def chance(accuracy: float, videos: int, classes: int, epochs: int) -> dict:
    """How likely guessing scores ``accuracy`` or more on ``videos`` videos, at best of ``epochs``
    tries (Bonferroni), and whether that is within noise (CHANCE_LEVEL or more)."""
    rate, correct = 1 / classes, round(accuracy * videos)
    tail = sum(math.comb(videos, k) * rate**k * (1 - rate) ** (videos - k)
               for k in range(correct, videos + 1))
    p_value = min(1.0, tail * max(1, epochs))
    return {"chance_accuracy": rate, "p_value": p_value, "within_chance": p_value >= CHANCE_LEVEL}


def selection_of(state: dict, manifest: dict) -> dict:
    """Which epoch was kept, its validation scores, on how many videos and clips, and whether
    its accuracy could be chance."""
    epoch, history = state["best_epoch"], state["history"]
    accuracy, videos = history["val_accuracy"][epoch - 1], manifest["counts"]["val"]
    return {"monitor": "val_loss", "epoch": epoch, "val_loss": history["val_loss"][epoch - 1],
            "val_accuracy": accuracy, "val_videos": videos,
            "val_clips": videos * manifest["eval_clips_per_video"], "epochs_compared": state["epoch"],
            **chance(accuracy, videos, len(manifest["classes"]), state["epoch"])}


def training_metrics(state: dict, selection: dict, train_clips: int) -> dict[str, float]:
    """The kept model's validation scores and epoch, the epochs run, training throughput, and
    the last epoch's scores, named as such."""
    history = state["history"]
    return {"kept_epoch": selection["epoch"], KEPT_VAL_LOSS: selection["val_loss"],
            "kept_val_accuracy": selection["val_accuracy"],
            "kept_within_chance": int(selection["within_chance"]),
            "epochs_run": state["epoch"], "stopped_early": int(state["stopped_early"]),
            "train_clips_per_second": train_clips / statistics.median(state["epoch_seconds"]),
            **{f"last_epoch_{key}": history[key][-1]
               for key in ("loss", "accuracy", "val_loss", "val_accuracy")}}
