"""Plants each bug the tests must catch, one at a time, runs the tests that guard against it, and
reports which failed: a bug no test catches is a hole in the suite.

    .venv/bin/python -m tests.planted_bugs [NAME...]     # all, or those named

Each bug is a one-line change to the source, undone after its tests ran (run it on a clean
checkout: it refuses a file with uncommitted changes). It prints a line per bug and, last, a JSON
summary.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    file: str
    old: str  # found exactly once in file
    new: str
    tests: tuple[str, ...]  # pytest node ids or files


TRAIN = "tests/test_train_model.py"
SOURCES = "tests/test_sources.py"
BUGS = [
    Bug("frame index off by one", "components/extract_frames/video.py",
        "return [start + round(k * step) for k in range(n_frames)]",
        "return [start + 1 + round(k * step) for k in range(n_frames)]",
        ("tests/test_extract_frames.py",)),
    Bug("a resume that resets the optimizer", "components/train_model/checkpoints.py",
        "            return keras.models.load_model(Path(tmp) / MODEL_FILE)",
        "            model = keras.models.load_model(Path(tmp) / MODEL_FILE)\n"
        "            [v.assign(keras.ops.zeros_like(v)) for v in model.optimizer.variables]\n"
        "            return model",
        (f"{TRAIN}::test_a_resumed_run_starts_from_the_weights_and_optimizer_state_it_saved",)),
    Bug("precision and recall swapped", "components/evaluate_model/evaluate.py",
        "precision, recall, f1, support = precision_recall_fscore_support(",
        "recall, precision, f1, support = precision_recall_fscore_support(",
        ("tests/test_evaluate_model.py",)),
    Bug("the deploy gate turned around", "pipelines/video_classification.py",
        '["test_accuracy"] >= min_accuracy', '["test_accuracy"] < min_accuracy',
        ("tests/test_pipeline.py::test_end_to_end_local_run",
         "tests/test_pipeline.py::test_a_run_reads_its_source_and_keeps_its_checkpoints_in_a_bucket")),
    Bug("UCF101 names: the group taken for the class", "components/download_subset/sources.py",
        'VideoFile(path, match["cls"], None,', 'VideoFile(path, match["group"], None,',
        (SOURCES, "tests/test_download_subset.py")),
    Bug("class folders: the file name taken for the class", "components/download_subset/sources.py",
        "found.append(VideoFile(path, below[-2], split,",
        "found.append(VideoFile(path, below[-2] if depth == 3 else below[-1], split,",
        (SOURCES, "tests/test_download_subset.py")),
    Bug("split folders: the split folder ignored", "components/download_subset/sources.py",
        'split = split_name(below[0], f"{source}: {name}") if depth == 3 else None',
        "split = None",
        (SOURCES, "tests/test_download_subset.py")),
    Bug("annotation lists: class indices off by one", "components/download_subset/sources.py",
        "class_name = names.get(int(label)) if", "class_name = names.get(int(label) - 1) if",
        (SOURCES, "tests/test_download_subset.py")),
    Bug("CSV lists: the split column ignored", "components/download_subset/sources.py",
        'if row.get("split") else None', 'if row.get("Split") else None',
        (SOURCES, "tests/test_download_subset.py")),
    Bug("bucket folders: the listing's prefix cut a character short", "components/download_subset/sources.py",
        'prefix = path.rstrip("/") + "/"', 'prefix = path.rstrip("/")',
        (SOURCES, "tests/test_download_subset.py")),
    Bug("a Vizier study that maximises the validation loss", "pipelines/video_classification.py",
        'serialize_metrics({vizier.METRIC: "minimize"})', 'serialize_metrics({vizier.METRIC: "maximize"})',
        ("tests/test_vizier.py::test_a_vizier_sweep_compiles_to_a_tuning_job_whose_kept_trial_alone_is_evaluated",)),
    Bug("a Vizier trial that reports the last epoch's validation loss", "components/train_model/trial.py",
        "self.metric.report(logs[vizier.METRIC], epoch + 1)",
        'self.metric.report(logs["val_loss"], epoch + 1)',
        ("tests/test_vizier.py::test_a_trial_runs_as_vertex_ai_runs_it_and_reports_the_kept_validation_loss",)),
]


def planted(bug: Bug) -> dict:
    """Plants ``bug``, runs its tests, restores the file; which tests failed and how long it took."""
    path = ROOT / bug.file
    if subprocess.run(["git", "diff", "--quiet", "--", bug.file], cwd=ROOT).returncode:
        sys.exit(f"{bug.file} has uncommitted changes: plant bugs on a clean checkout")
    source = path.read_text()
    if source.count(bug.old) != 1:
        sys.exit(f"{bug.name}: {bug.old!r} is not found exactly once in {bug.file}")
    started = time.monotonic()
    try:
        path.write_text(source.replace(bug.old, bug.new))
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-x", "-p", "no:cacheprovider",
                              "--durations=0", "--no-header", *bug.tests], cwd=ROOT, capture_output=True,
                             text=True)
    finally:
        path.write_text(source)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", run.stdout, re.MULTILINE)))
    return {"bug": bug.name, "caught": bool(failed), "failed": failed, "exit": run.returncode,
            "seconds": round(time.monotonic() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bugs to plant (default: all)")
    args = parser.parse_args()
    bugs = [b for b in BUGS if not args.names or b.name in args.names]
    results = []
    for bug in bugs:
        result = planted(bug)
        results.append(result)
        print(f"{'caught' if result['caught'] else 'MISSED'}  {bug.name} ({result['seconds']} s): "
              + (", ".join(t.split("::")[-1] for t in result["failed"]) or "no test failed"), flush=True)
    print(json.dumps({"caught": sum(r["caught"] for r in results), "planted": len(results),
                      "results": results}))
    if not all(r["caught"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
