"""What each training recipe learns from a few videos: test accuracy against CPU minutes, every
recipe trained in this one process on the same motion sets.

The motion sets are those of ``pipelines.motion_sets``: classes that differ only in how an
object moves (single frames are drawn from the same distribution in every class), across
contrast, object size, colour, plain and textured backgrounds, distractors, drifts, turns and
growth. Each has 20 training videos per class, 4 for validation and 30 for the test, split by
group (a group shares the object's look and the background), downloaded and extracted as the
pipeline does, 8 frames of 64 x 64. Each recipe trains with the stage's defaults but random
flips (a mirrored drift is another class) and stops at ``--cpu-minutes``; one clip of each test
video is scored after every epoch, and the kept model (the stage's own choice) at the end as
evaluation scores it (each video's evenly spaced clips), with its test clips as stored, reversed
and shuffled in time. CPU time is this process's, all threads counted,
the test scoring left out. ``--strips DIR`` writes each set's frame strip, to judge whether a
person can tell its classes apart.

    python benchmarks/recipes.py                              # every recipe on every set
    python benchmarks/recipes.py --sets coloured rotation --recipes videoclf --strips strips/
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from components.download_subset.config import SubsetSpec
from components.download_subset.download import download_subset_to
from components.evaluate_model.evaluate import FRAME_ORDERS, frame_order_scores, predict_split
from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset
from components.train_model.config import RECIPES, TrainConfig
from components.train_model.inputs import batches
from components.train_model.train import train
from pipelines.demo_data import make_demo_zip
from pipelines.motion_sets import MOTION_SETS, frame_strip

GOAL = 0.9  # the test accuracy to reach


class TestEveryEpoch(keras.callbacks.Callback):
    """Scores one clip of each test video after each epoch, with the training CPU time spent so
    far (the scoring's own left out), and stops training once ``cpu_minutes`` are spent."""

    def __init__(self, frames_dir: Path, cpu_minutes: float):
        super().__init__()
        self.frames_dir, self.budget, self.rows = frames_dir, cpu_minutes, []
        self.start, self.scoring = time.process_time(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        before = time.process_time()
        cpu_minutes = (before - self.start - self.scoring) / 60
        right = [(self.model.predict_on_batch(clips).argmax(axis=1) == labels.numpy())
                 for clips, labels in batches(self.frames_dir, "test", 32)]  # one clip of each video
        self.rows.append({"epoch": epoch + 1, "cpu_minutes": cpu_minutes, "test_videos": sum(map(len, right)),
                          "test_accuracy": float(np.concatenate(right).mean()),
                          "loss": logs["loss"], "accuracy": logs["accuracy"], "val_loss": logs["val_loss"],
                          "val_accuracy": logs["val_accuracy"]})
        self.scoring += time.process_time() - before
        if cpu_minutes >= self.budget:
            self.model.stop_training = True


def motion_set(folder: Path, name: str, per_class: tuple[int, int, int], seed: int) -> Path:
    """The set's clips downloaded and extracted as the pipeline does, ``per_class`` the
    training, validation and test videos of each class."""
    classes, (train_per_class, val_per_class, test_per_class) = len(MOTION_SETS[name].classes), per_class
    groups = 2 * sum(per_class) // 4 + 1  # 4 clips a group
    archive = make_demo_zip(folder / "motion.zip", groups=groups, clips_per_group=4, frames_per_clip=30,
                            seed=seed, motion_set=name)
    download_subset_to(SubsetSpec(source_url=str(archive), num_classes=classes,
                                  train_per_class=train_per_class, val_per_class=val_per_class,
                                  test_per_class=test_per_class, seed=seed), folder / "videos")
    extract_dataset(folder / "videos", folder / "frames",
                    ClipSpec(n_frames=8, frame_step=2, height=64, width=64, seed=seed))
    return folder / "frames"


def run(frames: Path, model_dir: Path, recipe: str, epochs: int, cpu_minutes: float, seed: int) -> dict:
    """Trains one recipe; its test accuracy by epoch, and the kept model's, with its frames
    as stored, reversed and shuffled."""
    tester = TestEveryEpoch(frames, cpu_minutes)
    start = time.perf_counter()
    config = TrainConfig(recipe=recipe, seed=seed, random_flip=False,  # a mirrored drift is another class
                         **({"epochs": epochs} if epochs else {}))
    result = train(frames, model_dir, config, callbacks=[tester])
    wall = time.perf_counter() - start
    logits, labels, _, _, reordered = predict_split(model_dir, frames, frame_orders=FRAME_ORDERS)
    order = frame_order_scores(logits, labels, reordered)
    reached = next((row for row in tester.rows if row["test_accuracy"] >= GOAL), None)
    return {"recipe": recipe, "epochs": tester.rows, "wall_seconds": wall,
            "cpu_minutes": tester.rows[-1]["cpu_minutes"], "kept_epoch": result.metrics["kept_epoch"],
            "epochs_run": result.metrics["epochs_run"],
            "kept_test_accuracy": float((logits.argmax(axis=1) == labels).mean()), "frame_order": order,
            "first_at_goal": reached and {"epoch": reached["epoch"], "cpu_minutes": reached["cpu_minutes"]}}


def table_row(row: dict) -> str:
    """One row of the Markdown table of docs/training.md."""
    by_epoch = {r["epoch"]: r["test_accuracy"] for r in row["epochs"]}
    marks = " / ".join(f"{by_epoch[e]:.2f}" if e in by_epoch else "-" for e in (5, 10, 20, 30))
    reached = row["first_at_goal"]
    order = row["frame_order"]
    return (f"| {row['set']} | {row['recipe']} | {marks} | {row['kept_test_accuracy']:.2f} (epoch "
            f"{row['kept_epoch']} of {row['epochs_run']}) | "
            + (f"epoch {reached['epoch']}, {reached['cpu_minutes']:.1f} | " if reached else "never | ")
            + f"{row['cpu_minutes']:.1f} | {order['reversed']['agreement']:.2f} / "
              f"{order['shuffled']['agreement']:.2f} |")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(MOTION_SETS), choices=list(MOTION_SETS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=0, help="0: the stage's default")
    parser.add_argument("--cpu-minutes", type=float, default=10.0, help="stop each training after this much")
    parser.add_argument("--train-per-class", type=int, default=20)
    parser.add_argument("--val-per-class", type=int, default=4)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strips", type=Path, help="write each set's frame strip here as <set>.jpg")
    args = parser.parse_args()

    machine = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()}
    results = []
    with tempfile.TemporaryDirectory(prefix="videoclf-bench-") as tmp:
        for name in args.sets:
            if args.strips:
                args.strips.mkdir(parents=True, exist_ok=True)
                (args.strips / f"{name}.jpg").write_bytes(frame_strip(name, seed=args.seed, fmt="jpg"))
            frames = motion_set(Path(tmp) / name, name,
                                (args.train_per_class, args.val_per_class, args.test_per_class), args.seed)
            for recipe in args.recipes:
                row = {"set": name, **run(frames, Path(tmp) / name / recipe, recipe, args.epochs,
                                          args.cpu_minutes, args.seed)}
                results.append(row)
                print(table_row(row), flush=True)
    machine["load_after"] = os.getloadavg()
    print(json.dumps({"args": {**vars(args), "strips": args.strips and str(args.strips)}, "machine": machine,
                      "keras": keras.__version__, "goal": GOAL, "results": results}))


if __name__ == "__main__":
    main()
