"""What a warm start is worth on little data: a model trained on one motion set starts training
on a second set with a few training videos a class, against the same budget from scratch.

The motion sets are those of ``benchmarks/recipes.py`` (the demo's four drifting-square classes
at a level of ``pipelines.demo_data.LEVELS``, 8 frames of 64 x 64, 30 test videos a class). The
source model trains on ``--source-level`` with ``--source-per-class`` videos a class; then, for
each seed, a target set of ``--target-level`` is drawn with ``--target-per-class`` training
videos a class (other clips than the source's), and three runs train on it for ``--epochs``
each: from scratch, warm-started from the source model, and warm-started with its body frozen
for ``--freeze-epochs``. Each kept model (the stage's own choice, on validation) is scored on the
target's 120 test videos; all runs are in this one process.

    python benchmarks/warm_start.py
    python benchmarks/warm_start.py --target-level hard --seeds 0 1 2 3
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from recipes import motion_set

from components.train_model.config import TrainConfig
from components.train_model.inputs import split_logits
from components.train_model.model_folder import load_model
from components.train_model.train import train
from pipelines.demo_data import LEVELS


def test_accuracy(model_dir: Path, frames: Path) -> float:
    model, _ = load_model(model_dir)
    logits, labels = split_logits(model, frames, "test", 8)
    return float((logits.argmax(axis=1) == labels).mean())


def run(frames: Path, model_dir: Path, config: TrainConfig, init_model: str = "") -> dict:
    """Trains one way; the kept model's epoch and test accuracy, and the CPU minutes it took."""
    start = time.process_time()
    result = train(frames, model_dir, config, init_model=init_model)
    return {"kept_epoch": int(result.metrics["kept_epoch"]), "epochs_run": int(result.metrics["epochs_run"]),
            "kept_val_accuracy": result.metrics["kept_val_accuracy"],
            "cpu_minutes": (time.process_time() - start) / 60,
            "test_accuracy": test_accuracy(model_dir, frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-level", default="easy", choices=list(LEVELS))
    parser.add_argument("--source-per-class", type=int, default=20)
    parser.add_argument("--source-epochs", type=int, default=30)
    parser.add_argument("--target-level", default="medium", choices=list(LEVELS))
    parser.add_argument("--target-per-class", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20, help="the budget of each run on the target set")
    parser.add_argument("--freeze-epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        source_frames = motion_set(Path(tmp) / "source", args.source_level, args.source_per_class, seed=100)
        source_model = Path(tmp) / "source-model"
        source = run(source_frames, source_model, TrainConfig(epochs=args.source_epochs, seed=100,
                                                              random_flip=False))
        print(f"source  {args.source_level}, {args.source_per_class} videos a class, {args.source_epochs} "
              f"epochs: test accuracy {source['test_accuracy']:.2f}", flush=True)
        rows = []
        for seed in args.seeds:
            frames = motion_set(Path(tmp) / f"target-{seed}", args.target_level, args.target_per_class, seed)
            config = TrainConfig(epochs=args.epochs, seed=seed, random_flip=False)  # the classes mirror
            row = {"seed": seed,
                   "scratch": run(frames, Path(tmp) / f"scratch-{seed}", config),
                   "warm": run(frames, Path(tmp) / f"warm-{seed}", config, str(source_model)),
                   "warm_frozen": run(frames, Path(tmp) / f"frozen-{seed}",
                                      TrainConfig(**{**config.__dict__, "freeze_epochs": args.freeze_epochs}),
                                      str(source_model))}
            rows.append(row)
            print(f"target  {args.target_level}, {args.target_per_class} videos a class, seed {seed}: test "
                  f"accuracy from scratch {row['scratch']['test_accuracy']:.2f}, warm "
                  f"{row['warm']['test_accuracy']:.2f}, warm with {args.freeze_epochs} frozen epochs "
                  f"{row['warm_frozen']['test_accuracy']:.2f}", flush=True)
    way = ("scratch", "warm", "warm_frozen")
    summary = {name: [float(np.min([r[name]["test_accuracy"] for r in rows])),
                      float(np.max([r[name]["test_accuracy"] for r in rows]))] for name in way}
    print(json.dumps({"args": vars(args), "source": source, "results": rows, "test_accuracy_range": summary,
                      "test_clips": 4 * 30, "chance": 0.25, "keras": keras.__version__}))


if __name__ == "__main__":
    main()
