"""The ``videoclf`` command line: compile the pipeline, run it locally or the offline demo,
submit it to Kubeflow or Vertex AI (after checking what the cluster can run: ``doctor``), show a
run's lineage, and predict the action of videos with a trained model, or serve it."""

import argparse
import functools
import inspect
import json
import logging
import sys
from pathlib import Path

from components.common import setup_logging
from components.images import ImageError
from components.serve_model import config as serving
from components.storage import is_remote
from pipelines.local_runner import RUNNERS
from pipelines.targets import (
    PLATFORMS,
    RESOURCES,
    SWEEP_ENGINES,
    SWEEP_PARALLELISM,
    VERTEX_TRIAL_MACHINE,
    Target,
    TargetError,
)

PIPELINE_COMMANDS = ("compile", "run", "demo", "submit", "doctor", "batch")  # those that build a pipeline


@functools.cache
def pipeline_params() -> dict[str, inspect.Parameter]:
    """The pipeline's parameters, read off its function (which imports KFP and the components)."""
    from pipelines.video_classification import build_pipeline

    return dict(inspect.signature(build_pipeline().pipeline_func).parameters)


@functools.cache
def batch_params() -> dict[str, inspect.Parameter]:
    """The batch prediction pipeline's parameters."""
    from pipelines.batch_prediction import build_pipeline

    return dict(inspect.signature(build_pipeline().pipeline_func).parameters)


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


def add_pipeline_flags(parser: argparse.ArgumentParser, use_defaults: bool,
                       params: dict[str, inspect.Parameter] | None = None) -> None:
    """One flag per pipeline parameter (of the main pipeline, or ``params``), named after it in
    kebab case; one without a default is required to run the pipeline."""
    group = parser.add_argument_group("pipeline parameters")
    for name, param in (params or pipeline_params()).items():
        required = param.default is inspect.Parameter.empty
        default = param.default if use_defaults and not required else None
        shown = json.dumps(default) if isinstance(default, dict | list | bool) else default
        told = "required" if required else f"default: {shown if use_defaults else 'the pipeline default'}"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=flag_value(param.annotation),
                           default=default, metavar=param.annotation.__name__.upper(), help=f"({told})")


def add_target_flags(parser: argparse.ArgumentParser, cluster: bool) -> None:
    """The settings fixed when the pipeline is compiled; for a cluster, also its images and volumes."""
    group = parser.add_argument_group("compiled settings")
    group.add_argument("--extract-parts", type=int, default=1,
                       help="extract frames in this many pods (a ParallelFor and a gather step above 1; "
                            "needs Kubeflow Pipelines 2.14 or newer) (default: 1)")
    group.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                       help="train a trial per combination of these values of a training setting (repeat "
                            "per setting) and keep the one of the lowest validation loss; needs Kubeflow "
                            "Pipelines 2.14 or newer")
    group.add_argument("--sweep-parallelism", type=int, default=SWEEP_PARALLELISM, metavar="N",
                       help="trials trained at once, 0 for all (default: %(default)s)")
    group.add_argument("--sweep-engine", choices=SWEEP_ENGINES, default="grid",
                       help="grid: a trial per combination; vizier (Vertex AI only): a Vizier study that "
                            "tries --sweep-trials of them, chosen as it learns (default: grid)")
    group.add_argument("--sweep-trials", type=int, default=0, metavar="N",
                       help="with --sweep-engine vizier: the study's trial budget, at most the grid's size")
    group.add_argument("--init-model", default="", metavar="URI",
                       help="start training from this model folder of an earlier run (local, gs://, s3://), "
                            "imported as an input artifact (default: random weights)")
    if not cluster:
        return
    group.add_argument("--registry", help="the registry the cluster pulls the images from "
                                          "(default: VIDEOCLF_REGISTRY)")
    group.add_argument("--checkpoint-pvc", default="", metavar="NAME",
                       help="Kubeflow: an existing PersistentVolumeClaim the training pod mounts; "
                            "checkpoints go to a folder of the run on it")
    group.add_argument("--s3-secret", default="", metavar="NAME",
                       help="Kubeflow: a Secret with keys accesskey and secretkey (as Kubeflow's MinIO "
                            "secret has) that every task gets as its AWS credentials for s3://")
    group.add_argument("--s3-endpoint", default="", metavar="URL",
                       help="every task's AWS_ENDPOINT_URL, for an S3-compatible store, e.g. Kubeflow "
                            "Pipelines' own (2.16 and newer): http://seaweedfs.kubeflow:9000")
    group.add_argument("--vertex-parent-model", default="", metavar="RESOURCE",
                       help="Vertex AI: with --deploy, upload the model as a new version of this model, "
                            "projects/P/locations/L/models/ID (default: a new model)")
    group.add_argument("--vertex-endpoint", default="", metavar="RESOURCE",
                       help="Vertex AI: with --deploy, serve on this endpoint, "
                            "projects/P/locations/L/endpoints/ID (default: the endpoint named "
                            "--deploy-name, created the first time)")
    group.add_argument("--trial-machine-type", default="", metavar="TYPE",
                       help=f"Vertex AI, with --sweep-engine vizier: each trial's machine, one that takes "
                            f"--accelerator-type (default: {VERTEX_TRIAL_MACHINE}, for a T4)")
    defaults = ", ".join(f"{stage}={cpu},{memory}" for stage, (cpu, memory) in RESOURCES.items())
    group.add_argument("--resources", type=stage_resources, action="append", default=[],
                       metavar="STAGE=CPU,MEMORY",
                       help=f"a stage's CPU and memory, requested and as its limit; repeat per stage "
                            f"(default: {defaults})")


def stage_resources(text: str) -> tuple[str, str, str]:
    """``train=3,10Gi`` -> ``("train", "3", "10Gi")``."""
    stage, _, sizes = text.partition("=")
    cpu, _, memory = sizes.partition(",")
    if not (stage and cpu and memory):
        raise argparse.ArgumentTypeError(f"expected STAGE=CPU,MEMORY, e.g. train=3,10Gi, got {text!r}")
    return stage, cpu, memory


def target_of(args: argparse.Namespace, platform: str) -> Target:
    cluster = {name: getattr(args, name, "") for name in ("checkpoint_pvc", "s3_secret", "s3_endpoint",
                                                          "vertex_parent_model", "vertex_endpoint")}
    init_model = args.init_model if not args.init_model or is_remote(args.init_model) \
        else str(Path(args.init_model).resolve())
    return Target(platform=platform, extract_parts=args.extract_parts,
                  resources=tuple(getattr(args, "resources", ())), sweep=tuple(args.sweep),
                  sweep_parallelism=args.sweep_parallelism, sweep_engine=args.sweep_engine,
                  sweep_trials=args.sweep_trials, trial_machine_type=getattr(args, "trial_machine_type", ""),
                  init_model=init_model, **cluster)


def add_runner_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runner", choices=RUNNERS, default="subprocess",
                        help="run each component in a subprocess of this Python, or in its image "
                             "through the Docker API of DOCKER_HOST (default: subprocess)")


def compile_command(args: argparse.Namespace) -> None:
    """Writes the committed reference YAML, or with ``--target`` one for a cluster."""
    from components.images import cluster_images
    from pipelines.video_classification import COMPILED_YAML, compile_pipeline

    if args.target is None:
        if args.registry:
            raise TargetError("--registry names the images of a pipeline for a cluster: add --target")
        path = compile_pipeline(args.output or COMPILED_YAML, target_of(args, "kubeflow"))
    else:
        target = target_of(args, args.target)
        target.check()
        target.check_params({})
        output = args.output or Path(f"video_classification-{args.target}.yaml")
        path = compile_pipeline(output, target, cluster_images(args.registry))
    logging.getLogger("videoclf").info("wrote %s", path)


def run_command(args: argparse.Namespace) -> None:
    from pipelines.local_runner import print_summary, run_local

    target = target_of(args, "kubeflow")  # kfp.local runs the Kubeflow form
    target.check()
    print_summary(run_local(pipeline_args(args), args.output, args.runner, target))


def demo_command(args: argparse.Namespace) -> None:
    from pipelines.demo import run_demo
    from pipelines.local_runner import print_summary

    target = target_of(args, "kubeflow")
    target.check()
    print_summary(run_demo(args.output, args.runner, target, **pipeline_args(args)))


def submit_command(args: argparse.Namespace) -> None:
    """Submits a run as the ``submit`` flags say; prints its id, URL and final state if waited for."""
    from components.images import cluster_images
    from pipelines.local_runner import print_summary

    params = pipeline_args(args)
    target = target_of(args, "vertex" if args.vertex else "kubeflow")
    target.check()
    image_names = cluster_images(args.registry)
    if args.host:
        from pipelines.kubeflow_runner import submit_kubeflow

        result = submit_kubeflow(args.host, params, target, image_names, args.experiment, args.run_name,
                                 not args.no_cache, args.namespace, args.wait, args.timeout,
                                 token=args.token, service_account=args.service_account,
                                 kube_checks=not args.no_kube_checks)
    else:
        from pipelines.vertex_runner import submit_vertex

        result = submit_vertex(params, target, image_names, args.project, args.region, args.pipeline_root,
                               args.run_name, not args.no_cache, args.service_account, args.wait)
    print_summary(result)


def doctor_command(args: argparse.Namespace) -> None:
    """Prints the RBAC the deploy step needs, or runs the preflight's checks and prints each."""
    from pipelines import preflight

    if args.rbac:
        import yaml

        namespace = args.namespace or preflight.STANDALONE[0]
        manifests = preflight.rbac_manifests(namespace, args.service_account or preflight.STANDALONE[1],
                                             getattr(args, "deploy_namespace", None) or namespace)
        print(yaml.safe_dump_all(manifests, sort_keys=False), end="")
        return
    if not args.host:
        raise TargetError("videoclf doctor needs --host URL (the Kubeflow Pipelines API), or --rbac")
    from pipelines.kubeflow_runner import check_cluster

    target = target_of(args, "kubeflow")
    target.check()
    params = pipeline_args(args)
    target.check_params(params)
    checks = check_cluster(args.host, params, target, args.namespace, args.token, args.service_account,
                           not args.no_kube_checks)
    print(preflight.summary(checks))
    if preflight.problems(checks):
        sys.exit(f"videoclf doctor: {len(preflight.problems(checks))} of {len(checks)} checks found "
                 "a problem")


def add_kubeflow_access_flags(parser: argparse.ArgumentParser) -> None:
    """How to reach a Kubeflow Pipelines API, and whom its runs run as."""
    parser.add_argument("--namespace",
                        help="Kubeflow: the user namespace of the run (multi-user clusters); for doctor "
                             "--rbac, that of the service account (default: kubeflow)")
    parser.add_argument("--token", help="Kubeflow: a bearer token for the API, e.g. $(kubectl create token "
                                        "default-editor -n NAMESPACE --audience pipelines.kubeflow.org) "
                                        "(default: the file KF_PIPELINES_SA_TOKEN_PATH names, if set)")
    parser.add_argument("--service-account",
                        help="the service account the run runs as, on Vertex AI and on Kubeflow, where "
                             "the checks and --rbac are for it too (default: pipeline-runner, or "
                             "default-editor on a multi-user cluster)")
    parser.add_argument("--no-kube-checks", action="store_true",
                        help="Kubeflow: skip the checks that read the cluster through the kubeconfig")


def predict_command(args: argparse.Namespace) -> None:
    """Answers the sources' videos: JSON lines on stdout, or into ``--output`` (resumable) with the
    summary on stdout; exits with 1 when a video could not be read."""
    from components.serve_model.batch import predict

    try:
        summary = predict(args.model, args.sources, args.output, top_k=args.top_k, segments=args.segments,
                          batch_size=args.batch_size, workers=args.workers, retry_failed=args.retry_failed,
                          report=args.report)
    except ValueError as e:  # a bad flag, or an output written with other settings
        sys.exit(f"videoclf predict: {e}")
    except KeyboardInterrupt:
        kept = f": {args.output} keeps the lines written; the same command goes on" if args.output else ""
        print(f"videoclf predict: interrupted{kept}", file=sys.stderr)
        sys.exit(130)
    if args.output:
        print(json.dumps({**summary, "output": str(args.output)}), flush=True)
    if summary["failed"]:
        sys.exit(f"videoclf predict: {summary['failed']} of {summary['videos']} videos could not be read")


def batch_command(args: argparse.Namespace) -> None:
    """Compiles the batch prediction pipeline, or runs it on this machine (``kfp.local``)."""
    from pipelines import batch_prediction

    params = {name: getattr(args, name) for name in batch_params() if getattr(args, name) is not None}
    if args.compile:
        from components.images import cluster_images

        if args.target is None and (args.registry or args.s3_secret or args.s3_endpoint):
            raise TargetError("--registry, --s3-secret and --s3-endpoint are for a cluster: add --target")
        target = Target(args.target or "kubeflow", s3_secret=args.s3_secret, s3_endpoint=args.s3_endpoint)
        target.check()
        names = cluster_images(args.registry) if args.target else None
        path = batch_prediction.compile_pipeline(args.compile, target, names)
        logging.getLogger("videoclf").info("wrote %s", path)
        return
    if args.target or args.registry or args.s3_secret or args.s3_endpoint:
        raise TargetError("--target, --registry, --s3-secret and --s3-endpoint are for --compile: a local "
                          "run reads local paths and the environment's credentials")
    missing = [f"--{name.replace('_', '-')}" for name, p in batch_params().items()
               if p.default is inspect.Parameter.empty and name not in params]
    if missing:
        raise TargetError(f"running the batch pipeline needs {' and '.join(missing)}")
    from pipelines.local_runner import print_summary, run_batch_local

    print_summary(run_batch_local(params, args.output, args.runner))


def serve_command(args: argparse.Namespace) -> None:
    from components.serve_model.server import serve

    serve(args.model, args.port, args.name, args.top_k, args.max_request_mb)


def lineage_command(args: argparse.Namespace) -> None:
    from pipelines.lineage import lineage_of_run

    text, picture = lineage_of_run(args.run_dir)
    print(text)
    logging.getLogger("videoclf").info("drew %s", picture)


def pipeline_args(args: argparse.Namespace) -> dict:
    """The pipeline parameters given on the command line (those left unset are dropped)."""
    return {name: getattr(args, name) for name in pipeline_params() if getattr(args, name) is not None}


def build_parser(pipeline_flags: bool = True) -> argparse.ArgumentParser:
    """The command line; ``pipeline_flags`` false leaves out the pipeline parameters' flags,
    whose reading imports the pipeline (commands that do not build it need none)."""
    parser = argparse.ArgumentParser(prog="videoclf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    compile_cmd = commands.add_parser(
        "compile", help="write the pipeline's YAML: the committed reference, or one for a cluster")
    compile_cmd.set_defaults(func=compile_command)
    compile_cmd.add_argument("--target", choices=PLATFORMS,
                             help="compile for this platform, naming the images in --registry "
                                  "(default: the reference YAML the repository keeps, for review)")
    compile_cmd.add_argument("--output", type=Path,
                             help="where to write it (default: the committed "
                                  "pipelines/video_classification.yaml, or "
                                  "video_classification-<target>.yaml with --target)")
    add_target_flags(compile_cmd, cluster=True)

    run = commands.add_parser("run", help="run the whole pipeline locally (kfp.local)")
    run.set_defaults(func=run_command)
    run.add_argument("--output", type=Path, default=Path("videoclf-runs"),
                     help="the local pipeline root (default: videoclf-runs)")
    add_runner_flag(run)
    add_target_flags(run, cluster=False)

    demo = commands.add_parser("demo", help="run the pipeline offline on a synthetic dataset")
    demo.set_defaults(func=demo_command)
    demo.add_argument("--output", type=Path, default=Path("videoclf-demo"),
                      help="the local pipeline root (default: videoclf-demo)")
    add_runner_flag(demo)
    add_target_flags(demo, cluster=False)

    submit_cmd = commands.add_parser("submit", help="submit a run to Kubeflow Pipelines or Vertex AI")
    submit_cmd.set_defaults(func=submit_command)
    target = submit_cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="the Kubeflow Pipelines API, e.g. http://localhost:8080")
    target.add_argument("--vertex", action="store_true", help="submit to Vertex AI Pipelines")
    submit_cmd.add_argument("--experiment", help="Kubeflow: the experiment to file the run under")
    add_kubeflow_access_flags(submit_cmd)
    submit_cmd.add_argument("--project", help="Vertex AI: the Google Cloud project")
    submit_cmd.add_argument("--region", help="Vertex AI: the region, e.g. us-central1")
    submit_cmd.add_argument("--pipeline-root", help="Vertex AI: the gs:// folder for the run's artifacts")
    submit_cmd.add_argument("--run-name", help="the run's name (default: the pipeline's name and time)")
    submit_cmd.add_argument("--no-cache", action="store_true", help="run every task, reusing no result")
    submit_cmd.add_argument("--wait", action="store_true", help="wait for the run and report its state")
    submit_cmd.add_argument("--timeout", type=float, help="Kubeflow: seconds to wait at most")
    add_target_flags(submit_cmd, cluster=True)

    doctor = commands.add_parser(
        "doctor", help="check what a Kubeflow cluster can run of this pipeline, or print the RBAC it needs")
    doctor.set_defaults(func=doctor_command)
    doctor.add_argument("--host", help="the Kubeflow Pipelines API, e.g. http://localhost:8080")
    doctor.add_argument("--rbac", action="store_true",
                        help="print the Role and RoleBinding the deploy step needs (kubectl apply -f -)")
    add_kubeflow_access_flags(doctor)
    add_target_flags(doctor, cluster=True)
    if pipeline_flags:
        add_pipeline_flags(run, use_defaults=True)
        add_pipeline_flags(demo, use_defaults=False)
        add_pipeline_flags(submit_cmd, use_defaults=False)
        add_pipeline_flags(doctor, use_defaults=False)

    predict = commands.add_parser("predict", help="the top classes of each video, or its labels over time, "
                                                  "as JSON lines")
    predict.set_defaults(func=predict_command)
    predict.add_argument("--model", required=True,
                         help="a trained model folder (or the model.keras in it): local, gs:// or s3://")
    predict.add_argument("--top-k", type=int, default=serving.TOP_K,
                         help="classes per video or segment (default: %(default)s)")
    predict.add_argument("--output", metavar="FILE.jsonl",
                         help="write the lines here as they come, resumably: a run again skips the videos "
                              "it holds; the summary goes to stdout (default: the lines to stdout)")
    predict.add_argument("--segments", type=float, default=0.0, metavar="SECONDS",
                         help="label each video over time: the model's clip slid every SECONDS, neighbours "
                              "with the same top class merged (default: one label per video)")
    predict.add_argument("--batch-size", type=int, default=serving.BATCH_SIZE,
                         help="clips the model scores at once (default: %(default)s)")
    predict.add_argument("--workers", type=int, default=0,
                         help="decoding processes (default: one per core; 1: in this process)")
    predict.add_argument("--retry-failed", action="store_true",
                         help="with --output, try again the videos it holds an error for")
    predict.add_argument("--report", type=Path, metavar="FILE.html",
                         help="also write a report page: counts per class, failures, a timeline per video")
    predict.add_argument("sources", nargs="+", metavar="SOURCE",
                         help="a video, a folder, a zip or a list of videos (.txt, .csv): local, gs:// or s3://")

    batch = commands.add_parser("batch", help="label a source with a model: the batch prediction pipeline, "
                                              "run locally (kfp.local) or compiled for a cluster")
    batch.set_defaults(func=batch_command)
    batch.add_argument("--output", type=Path, default=Path("videoclf-batch"),
                       help="the local pipeline root (default: videoclf-batch)")
    add_runner_flag(batch)
    batch.add_argument("--compile", type=Path, metavar="FILE",
                       help="write the pipeline's YAML instead of running it (the committed reference is "
                            "pipelines/batch_prediction.yaml)")
    batch.add_argument("--target", choices=PLATFORMS, help="with --compile: for this platform, naming the "
                                                           "images in --registry (default: the reference)")
    batch.add_argument("--registry", help="the registry the cluster pulls the images from "
                                          "(default: VIDEOCLF_REGISTRY)")
    batch.add_argument("--s3-secret", default="", metavar="NAME",
                       help="Kubeflow: a Secret with keys accesskey and secretkey that every task gets as "
                            "its AWS credentials for s3://")
    batch.add_argument("--s3-endpoint", default="", metavar="URL", help="every task's AWS_ENDPOINT_URL")

    serve = commands.add_parser("serve", help="serve a trained model over HTTP (KServe v1 and v2)")
    serve.set_defaults(func=serve_command)
    serve.add_argument("--model", help="a trained model folder: local, gs:// or s3:// "
                                       "(default: AIP_STORAGE_URI, as Vertex AI sets it)")
    serve.add_argument("--port", type=int, help=f"(default: AIP_HTTP_PORT, else {serving.SERVING_PORT})")
    serve.add_argument("--name", default=serving.MODEL_NAME,
                       help="the model's name in the routes (default: %(default)s)")
    serve.add_argument("--top-k", type=int, default=serving.TOP_K,
                       help="classes per answer (default: %(default)s)")
    serve.add_argument("--max-request-mb", type=int, default=serving.MAX_REQUEST_MB,
                       help="larger requests are refused with 413 (default: %(default)s)")

    if pipeline_flags:
        add_pipeline_flags(batch, use_defaults=True, params=batch_params())

    lineage = commands.add_parser("lineage", help="print a local run's artifact graph and draw it")
    lineage.set_defaults(func=lineage_command)
    lineage.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                         help="a run folder, e.g. videoclf-runs/video-action-classification-<time>")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(pipeline_flags=command in PIPELINE_COMMANDS)
    args = parser.parse_args(argv)
    if args.command == "submit" and args.vertex:
        missing = [flag for flag in ("project", "region", "pipeline_root") if not getattr(args, flag)]
        if missing:
            parser.error("--vertex needs " + ", ".join(f"--{f.replace('_', '-')}" for f in missing))
    setup_logging()
    try:
        args.func(args)
    except (RuntimeError, TargetError, ImageError) as e:  # a task failed (its log above says why),
        sys.exit(f"videoclf {args.command}: {e}")       # or the target refused a setting


if __name__ == "__main__":
    main()
