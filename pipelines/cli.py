"""The ``videoclf`` command line: compile the pipeline, run it locally or the offline demo,
show a run's lineage, and predict the action of videos with a trained model."""

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

from components.common import setup_logging
from pipelines.video_classification import COMPILED_YAML, video_classification_pipeline

PIPELINE_PARAMS = inspect.signature(video_classification_pipeline.pipeline_func).parameters


def flag_value(annotation: type):
    """Parses a flag's text as the parameter's type: JSON for dict and list, true/false for bool."""
    def parse(text: str):
        if annotation is bool:
            if text.lower() not in ("true", "false"):
                raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
            return text.lower() == "true"
        if annotation in (dict, list):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise argparse.ArgumentTypeError(f"expected a JSON {annotation.__name__}: {e}") from e
            if not isinstance(value, annotation):
                raise argparse.ArgumentTypeError(f"expected a JSON {annotation.__name__}, got {text!r}")
            return value
        return annotation(text)

    parse.__name__ = annotation.__name__  # argparse names the type in its errors
    return parse


def add_pipeline_flags(parser: argparse.ArgumentParser, use_defaults: bool) -> None:
    """One flag per pipeline parameter, named after it in kebab case."""
    group = parser.add_argument_group("pipeline parameters")
    for name, param in PIPELINE_PARAMS.items():
        default = param.default if use_defaults else None
        shown = json.dumps(default) if isinstance(default, dict | list | bool) else default
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=flag_value(param.annotation),
                           default=default, metavar=param.annotation.__name__.upper(),
                           help=f"(default: {shown if use_defaults else 'the demo value'})")


def pipeline_args(args: argparse.Namespace) -> dict:
    """The pipeline parameters given on the command line (those left unset are dropped)."""
    return {name: getattr(args, name) for name in PIPELINE_PARAMS
            if getattr(args, name) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoclf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    compile_cmd = commands.add_parser("compile", help="write the pipeline's YAML")
    compile_cmd.add_argument("--output", type=Path, default=COMPILED_YAML,
                             help=f"where to write it (default: {COMPILED_YAML})")

    run = commands.add_parser("run", help="run the whole pipeline locally (kfp.local)")
    run.add_argument("--output", type=Path, default=Path("videoclf-runs"),
                     help="the local pipeline root (default: videoclf-runs)")
    add_pipeline_flags(run, use_defaults=True)

    demo = commands.add_parser("demo", help="run the pipeline offline on a synthetic dataset")
    demo.add_argument("--output", type=Path, default=Path("videoclf-demo"),
                      help="the local pipeline root (default: videoclf-demo)")
    add_pipeline_flags(demo, use_defaults=False)

    predict = commands.add_parser("predict", help="the top classes of each video, as JSON lines")
    predict.add_argument("--model", type=Path, required=True,
                         help="a trained model folder (or the model.keras in it)")
    predict.add_argument("--top-k", type=int, default=5, help="classes per video (default: 5)")
    predict.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")

    lineage = commands.add_parser("lineage", help="print a local run's artifact graph and draw it")
    lineage.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                         help="a run folder, e.g. videoclf-runs/video-action-classification-<time>")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.command == "compile":
        from pipelines.video_classification import compile_pipeline

        logging.getLogger("videoclf").info("wrote %s", compile_pipeline(args.output))
        return
    if args.command == "lineage":
        from pipelines.lineage import lineage_of_run

        text, picture = lineage_of_run(args.run_dir)
        print(text)
        logging.getLogger("videoclf").info("drew %s", picture)
        return
    if args.command == "predict":
        from components.evaluate_model.predict import predict_videos

        answers = predict_videos(args.model, args.videos, args.top_k)
        for answer in answers:
            print(json.dumps(answer), flush=True)
        failed = sum("error" in a for a in answers)
        if failed:
            sys.exit(f"videoclf predict: {failed} of {len(answers)} videos could not be read")
        return
    from pipelines.local_runner import print_summary

    try:
        if args.command == "run":
            from pipelines.local_runner import run_local

            summary = run_local(pipeline_args(args), args.output)
        else:
            from pipelines.demo import run_demo

            summary = run_demo(args.output, **pipeline_args(args))
    except RuntimeError as e:  # a task failed: its own log above says why
        sys.exit(f"videoclf {args.command}: {e}")
    print_summary(summary)


if __name__ == "__main__":
    main()
