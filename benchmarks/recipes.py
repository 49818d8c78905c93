"""What each training recipe learns from little data: test accuracy against epochs and CPU
minutes, every recipe trained in this one process on the same motion sets.

The motion sets are the demo's four drifting-square classes (single frames identical in
distribution across classes, so only motion tells them apart) at each difficulty level of
``pipelines.demo_data.LEVELS``: 20 training videos per class, 4 for validation and 30 for the
test, split by group, as 8 frames of 64 x 64. Each recipe trains for ``--epochs`` and is scored
on the test videos after every epoch; the kept model (the stage's own model selection) is
scored at the end. CPU time is this process's, all threads counted. The seed version of this
project trained with the ``tutorial`` recipe and kept the epoch of the best validation accuracy,
stopping 10 epochs after it; its row is read off the tutorial recipe's run (the same epochs), as
that rule would have chosen.

    python benchmarks/recipes.py                              # every recipe, every level
    python benchmarks/recipes.py --levels easy --recipes tutorial videoclf --epochs 20
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from components.download_subset.config import SubsetSpec
from components.download_subset.download import download_subset_to
from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset
from components.train_model.config import RECIPES, TrainConfig
from components.train_model.inputs import split_logits
from components.train_model.model_folder import load_model
from components.train_model.train import train
from pipelines.demo_data import LEVELS, make_demo_zip


class TestEveryEpoch(keras.callbacks.Callback):
    """Scores the test videos after each epoch, with the CPU time spent so far."""

    def __init__(self, frames_dir: Path, start_cpu: float):
        super().__init__()
        self.frames_dir, self.start_cpu, self.rows = frames_dir, start_cpu, []

    def on_epoch_end(self, epoch, logs=None):
        cpu = time.process_time() - self.start_cpu  # before the test is scored: not training's
        logits, labels = split_logits(self.model, self.frames_dir, "test", 8)
        self.rows.append({"epoch": epoch + 1, "cpu_minutes": cpu / 60, "test_videos": len(labels),
                          "test_accuracy": float((logits.argmax(axis=1) == labels).mean()),
                          "val_accuracy": logs["val_accuracy"]})


def seed_selection(epochs: list[dict], patience: int = 10) -> tuple[int, float]:
    """The epoch the seed version kept (the first of the best validation accuracy, stopping
    ``patience`` epochs after it) and its test accuracy."""
    best_epoch, best = 0, -1.0
    for row in epochs:
        if row["val_accuracy"] > best:
            best_epoch, best = row["epoch"], row["val_accuracy"]
        if row["epoch"] - best_epoch >= patience:
            break
    return best_epoch, epochs[best_epoch - 1]["test_accuracy"]


def motion_set(folder: Path, level: str, train_per_class: int, seed: int) -> Path:
    """The level's clips downloaded and extracted as the pipeline does."""
    archive = make_demo_zip(folder / "motion.zip", groups=30, clips_per_group=4, frames_per_clip=30,
                            seed=seed, level=level)
    download_subset_to(SubsetSpec(source_url=str(archive), num_classes=4, train_per_class=train_per_class,
                                  val_per_class=4, test_per_class=30, seed=seed), folder / "videos")
    extract_dataset(folder / "videos", folder / "frames",
                    ClipSpec(n_frames=8, frame_step=2, height=64, width=64, seed=seed))
    return folder / "frames"


def run(frames: Path, model_dir: Path, recipe: str, epochs: int, seed: int) -> dict:
    """Trains one recipe; its test accuracy by epoch, and the kept model's."""
    tester = TestEveryEpoch(frames, time.process_time())
    start = time.perf_counter()
    config = TrainConfig(epochs=epochs, recipe=recipe, seed=seed, random_flip=False)  # classes mirror
    result = train(frames, model_dir, config, callbacks=[tester])
    wall = time.perf_counter() - start
    model, _ = load_model(model_dir)
    logits, labels = split_logits(model, frames, "test", 8)
    return {"recipe": recipe, "epochs": tester.rows, "wall_seconds": wall,
            "kept_epoch": result.metrics["kept_epoch"], "epochs_run": result.metrics["epochs_run"],
            "kept_test_accuracy": float((logits.argmax(axis=1) == labels).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        for level in args.levels:
            frames = motion_set(Path(tmp) / level, level, args.train_per_class, args.seed)
            for recipe in args.recipes:
                row = {"level": level, **run(frames, Path(tmp) / level / recipe, recipe, args.epochs,
                                             args.seed)}
                if recipe == "tutorial":
                    row["seed_kept_epoch"], row["seed_kept_test_accuracy"] = seed_selection(row["epochs"])
                    print(f"{level:6s} seed      kept epoch {row['seed_kept_epoch']} by validation accuracy: "
                          f"{row['seed_kept_test_accuracy']:.2f}", flush=True)
                results.append(row)
                by_epoch = {r["epoch"]: r for r in row["epochs"]}
                marks = ", ".join(f"epoch {e}: {by_epoch[e]['test_accuracy']:.2f}"
                                  for e in (5, 10, 20, 30, 50) if e in by_epoch)
                print(f"{level:6s} {recipe:9s} test accuracy {marks}; kept epoch {row['kept_epoch']} of "
                      f"{row['epochs_run']}: {row['kept_test_accuracy']:.2f} after "
                      f"{row['epochs'][-1]['cpu_minutes']:.1f} CPU min", flush=True)
    print(json.dumps({"args": vars(args), "results": results,
                      "test_clips": 4 * 30, "chance": 0.25, "keras": keras.__version__,
                      "cpu_minutes_total": float(np.sum([r["epochs"][-1]["cpu_minutes"] for r in results]))}))


if __name__ == "__main__":
    main()
