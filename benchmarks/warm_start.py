"""What a warm start is worth on little data: a model trained on one motion set starts training
on a second set with a few training videos a class, against the same budget from scratch.

The motion sets are those of ``benchmarks/recipes.py`` (``pipelines.motion_sets``, 8 frames of
64 x 64). The source model trains on ``--source-set`` with ``--source-per-class`` videos a class;
then, for each seed, a target set of ``--target-set`` is drawn with ``--target-per-class``
training videos a class (other looks than the source's), and three runs (``--ways``) train on
it for ``--epochs`` each: from scratch, warm-started from the source model, and warm-started
with its body frozen for ``--freeze-epochs``. Each kept model (the stage's own choice, on
validation) is scored on the target's test videos as evaluation scores them, and so is the
source model as it is where its classes are the target's (what a warm start begins from; with
other classes its head is new). Each run also reports how far its body (every layer but the
head, batch normalisation's statistics included) is from the source model's at step 0 and after
each epoch. Every run is in this one process.

    python benchmarks/warm_start.py
    python benchmarks/warm_start.py --target-set hard --seeds 0 1 2 3
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from recipes import cpu_name, motion_set

from components.common import read_manifest
from components.train_model.config import TrainConfig
from components.train_model.inputs import split_logits
from components.train_model.model_folder import load_model
from components.train_model.train import train
from components.train_model.warm_start import body_layers
from pipelines.motion_sets import MOTION_SETS

WAYS = ("scratch", "warm", "warm_frozen")  # from scratch, warm-started, warm-started with a frozen body


class BodyDistance(keras.callbacks.Callback):
    """The largest absolute difference between the body's weights and the source model's, at
    step 0 and after each epoch."""

    def __init__(self, source: list[np.ndarray]):
        super().__init__()
        self.source, self.at_start, self.after_epoch = source, None, []

    def distance(self) -> float:
        ours = [w for layer in body_layers(self.model) for w in layer.get_weights()]
        if [w.shape for w in ours] != [w.shape for w in self.source]:
            return float("inf")
        return float(max(np.abs(a - b).max() for a, b in zip(ours, self.source, strict=True)))

    def on_train_begin(self, logs=None):
        self.at_start = self.distance()

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch.append(self.distance())


def test_accuracy(model_dir: Path, frames: Path) -> float | None:
    """The model's accuracy on the test videos; None where its classes are not theirs."""
    model, classes = load_model(model_dir)
    if classes != read_manifest(frames)["classes"]:
        return None
    logits, labels = split_logits(model, frames, "test", 8)
    return float((logits.argmax(axis=1) == labels).mean())


def run(frames: Path, model_dir: Path, config: TrainConfig, init_model: str = "",
        source_body: list[np.ndarray] | None = None) -> dict:
    """Trains one way; the kept model's epoch and test accuracy, the CPU minutes the training
    took, and, given ``source_body``, the body's distance from it."""
    watch = [BodyDistance(source_body)] if source_body is not None else []
    start = time.process_time()
    result = train(frames, model_dir, config, callbacks=watch, init_model=init_model)
    cpu_minutes = (time.process_time() - start) / 60
    distances = {"body_distance_at_start": watch[0].at_start,
                 "body_distance_after_epoch": watch[0].after_epoch} if watch else {}
    return {"kept_epoch": int(result.metrics["kept_epoch"]), "epochs_run": int(result.metrics["epochs_run"]),
            "kept_val_accuracy": result.metrics["kept_val_accuracy"], "cpu_minutes": cpu_minutes,
            **distances, "test_accuracy": test_accuracy(model_dir, frames)}


def cpu_minutes_so_far() -> float:
    """This process's CPU time and its finished children's (extraction's workers), all threads."""
    times = os.times()
    return (times.user + times.system + times.children_user + times.children_system) / 60


def spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-set", default="easy", choices=list(MOTION_SETS))
    parser.add_argument("--source-per-class", type=int, default=20)
    parser.add_argument("--source-epochs", type=int, default=30)
    parser.add_argument("--target-set", default="medium", choices=list(MOTION_SETS))
    parser.add_argument("--target-per-class", type=int, default=5)
    parser.add_argument("--val-per-class", type=int, default=4)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20, help="the budget of each run on the target set")
    parser.add_argument("--freeze-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS,
                        help="the runs on each target set")
    args = parser.parse_args()
    if args.source_set == args.target_set:
        parser.error(f"--source-set and --target-set are both {args.source_set}: a warm start is "
                     "measured on a set other than the one the source model learnt")

    machine = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}
    split = (args.val_per_class, args.test_per_class)
    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        source_frames = motion_set(Path(tmp) / "source", args.source_set, (args.source_per_class, *split),
                                   seed=100)
        source_model = Path(tmp) / "source-model"
        # a mirrored drift is another class: no random flips
        source = run(source_frames, source_model, TrainConfig(epochs=args.source_epochs, seed=100,
                                                              random_flip=False))
        source_body = [w for layer in body_layers(load_model(source_model)[0]) for w in layer.get_weights()]
        print(f"source  {args.source_set}, {args.source_per_class} videos a class, {args.source_epochs} "
              f"epochs: test accuracy {source['test_accuracy']:.2f}", flush=True)
        rows = []
        for seed in args.seeds:
            frames = motion_set(Path(tmp) / f"target-{seed}", args.target_set,
                                (args.target_per_class, *split), seed)
            config = TrainConfig(epochs=args.epochs, seed=seed, random_flip=False)
            frozen = TrainConfig(**{**config.__dict__, "freeze_epochs": args.freeze_epochs})
            ways = {"scratch": (config, ""), "warm": (config, str(source_model)),
                    "warm_frozen": (frozen, str(source_model))}
            row = {"seed": seed, "source_as_is_test_accuracy": test_accuracy(source_model, frames),
                   **{way: run(frames, Path(tmp) / f"{way}-{seed}", *ways[way], source_body)
                      for way in args.ways}}
            rows.append(row)
            as_is = row["source_as_is_test_accuracy"]
            print(f"target  {args.target_set}, {args.target_per_class} videos a class, seed {seed}: test "
                  "accuracy of the source model as it is "
                  + (f"{as_is:.2f}, " if as_is is not None else "- (other classes), ")
                  + ", ".join(f"{way} {row[way]['test_accuracy']:.2f}" for way in args.ways), flush=True)
    machine["load_after"] = os.getloadavg()
    summary = {way: spread([r[way]["test_accuracy"] for r in rows]) for way in args.ways}
    print(json.dumps({"args": vars(args), "machine": machine, "keras": keras.__version__,
                      "cpu_minutes": cpu_minutes_so_far(),
                      "test_videos": len(MOTION_SETS[args.target_set].classes) * args.test_per_class,
                      "chance": 1 / len(MOTION_SETS[args.target_set].classes),
                      "source": source, "results": rows, "test_accuracy": summary}))


if __name__ == "__main__":
    main()
