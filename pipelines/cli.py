"""The ``videoclf`` command line: compile the pipeline, run it locally or the offline demo,
submit it to Kubeflow or Vertex AI, show a run's lineage, and predict the action of videos
with a trained model."""

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

from components.common import setup_logging
from pipelines.local_runner import RUNNERS
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


def add_runner_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runner", choices=RUNNERS, default="subprocess",
                        help="run each component in a subprocess of this Python, or in its image "
                             "through the Docker API of DOCKER_HOST (default: subprocess)")


def submit(args: argparse.Namespace) -> dict:
    """Submits a run as the ``submit`` flags say; returns its id, URL and final state if waited for."""
    from pipelines.submit import submit_kubeflow, submit_vertex

    params = pipeline_args(args)
    if args.host:
        return submit_kubeflow(args.host, params, args.experiment, args.run_name, not args.no_cache,
                               args.namespace, args.wait, args.timeout)
    return submit_vertex(params, args.project, args.region, args.pipeline_root, args.run_name,
                         not args.no_cache, args.service_account, args.wait)


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
    add_runner_flag(run)
    add_pipeline_flags(run, use_defaults=True)

    demo = commands.add_parser("demo", help="run the pipeline offline on a synthetic dataset")
    demo.add_argument("--output", type=Path, default=Path("videoclf-demo"),
                      help="the local pipeline root (default: videoclf-demo)")
    add_runner_flag(demo)
    add_pipeline_flags(demo, use_defaults=False)

    submit = commands.add_parser("submit", help="submit a run to Kubeflow Pipelines or Vertex AI")
    target = submit.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="the Kubeflow Pipelines API, e.g. http://localhost:8080")
    target.add_argument("--vertex", action="store_true", help="submit to Vertex AI Pipelines")
    submit.add_argument("--experiment", help="Kubeflow: the experiment to file the run under")
    submit.add_argument("--namespace", help="Kubeflow: the user namespace (multi-user clusters)")
    submit.add_argument("--project", help="Vertex AI: the Google Cloud project")
    submit.add_argument("--region", help="Vertex AI: the region, e.g. us-central1")
    submit.add_argument("--pipeline-root", help="Vertex AI: the gs:// folder for the run's artifacts")
    submit.add_argument("--service-account", help="Vertex AI: the service account the run uses")
    submit.add_argument("--run-name", help="the run's name (default: the pipeline's name and time)")
    submit.add_argument("--no-cache", action="store_true", help="run every task, reusing no result")
    submit.add_argument("--wait", action="store_true", help="wait for the run and report its state")
    submit.add_argument("--timeout", type=float, help="Kubeflow: seconds to wait at most")
    add_pipeline_flags(submit, use_defaults=False)

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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "submit" and args.vertex:
        missing = [flag for flag in ("project", "region", "pipeline_root") if not getattr(args, flag)]
        if missing:
            parser.error("--vertex needs " + ", ".join(f"--{f.replace('_', '-')}" for f in missing))
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
        if args.command == "submit":
            summary = submit(args)
        elif args.command == "run":
            from pipelines.local_runner import run_local

            summary = run_local(pipeline_args(args), args.output, args.runner)
        else:
            from pipelines.demo import run_demo

            summary = run_demo(args.output, args.runner, **pipeline_args(args))
    except RuntimeError as e:  # a task failed (its log above says why), or a submission
        sys.exit(f"videoclf {args.command}: {e}")
    print_summary(summary)


if __name__ == "__main__":
    main()
