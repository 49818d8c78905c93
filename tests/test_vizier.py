"""A sweep as a Vertex AI Vizier study: the tuning job compiled, a trial run as Vertex AI runs it,
the trial kept, and the runs that refuse the engine."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from google.cloud.aiplatform_v1.types import HyperparameterTuningJob, study
from google_cloud_pipeline_components.container.v1.gcp_launcher.utils.json_util import recursive_remove_empty
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from components import images
from components.train_model import trial, vizier
from components.train_model.component import select_vizier_trial, vizier_trial_spec
from components.train_model.model_folder import (
    HISTORY_FILE,
    MODEL_FILE,
    SELECTION_FILE,
    TRIAL_FILE,
    TRIALS_FILE,
)
from pipelines import cli
from pipelines.targets import Target, TargetError
from pipelines.video_classification import compile_pipeline

REGISTRY = "europe-docker.pkg.dev/my-project/videoclf"
IMAGES = {name: f"{REGISTRY}/{name}:0123456789ab" for name in images.NAMES}
SWEEP = ("learning_rate=0,1e-4,3e-4", "base_filters=8,16", "random_flip=true,false")
STUDY = Target("vertex", sweep=SWEEP, sweep_engine="vizier", sweep_trials=5, sweep_parallelism=2)
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}")


def compiled(tmp_path: Path, target: Target) -> dict:
    return next(yaml.safe_load_all(compile_pipeline(tmp_path / "vertex.yaml", target, IMAGES).read_text()))


def argument(value) -> str:
    """A parameter as the backend puts it into a command line: JSON for a list or dict, with a
    whole number written without a fraction (as protojson writes a Value), text as it is."""
    def whole(v):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [whole(x) for x in v]
        return {k: whole(x) for k, x in v.items()} if isinstance(v, dict) else v

    value = whole(value)
    return value if isinstance(value, str) else json.dumps(value)


def tuning_job(spec: dict, outputs: dict) -> HyperparameterTuningJob:
    """The job GCPC's launcher creates from the compiled tuning task: its ``--payload`` Concat
    filled with the task's inputs (``outputs`` for those of other tasks, else constants, else the
    component's defaults), then read as the launcher reads it (job_remote_runner.create_job:
    json.loads, recursive_remove_empty, and the API's HyperparameterTuningJob message)."""
    task = spec["root"]["dag"]["tasks"]["hyperparameter-tuning-job"]
    definitions = spec["components"]["comp-hyperparameter-tuning-job"]["inputDefinitions"]["parameters"]
    values = {name: d["defaultValue"] for name, d in definitions.items() if "defaultValue" in d}
    for name, given in task["inputs"]["parameters"].items():
        values[name] = given["runtimeValue"]["constant"] if "runtimeValue" in given \
            else outputs[given["taskOutputParameter"]["outputParameterKey"]]
    args = spec["deploymentSpec"]["executors"]["exec-hyperparameter-tuning-job"]["container"]["args"]
    parts = json.loads(args[args.index("--payload") + 1])["Concat"]
    payload = "".join(PLACEHOLDER.sub(lambda m: argument(values[m.group(1)]), part) for part in parts)
    return HyperparameterTuningJob(recursive_remove_empty(json.loads(payload, strict=False)))


def spec_inputs(spec: dict, name: str) -> dict:
    """A task's parameter inputs as its function takes them: constants, and the run's defaults
    for pipeline parameters (a whole number read back from YAML as an int)."""
    defaults = {p: d.get("defaultValue") for p, d in spec["root"]["inputDefinitions"]["parameters"].items()}
    types = spec["components"][f"comp-{name}"]["inputDefinitions"]["parameters"]
    values = {}
    for parameter, given in spec["root"]["dag"]["tasks"][name]["inputs"]["parameters"].items():
        value = given["runtimeValue"]["constant"] if "runtimeValue" in given \
            else defaults[given["componentInputParameter"]]
        values[parameter] = int(value) if types[parameter]["parameterType"] == "NUMBER_INTEGER" else value
    return values


def test_a_vizier_sweep_compiles_to_a_tuning_job_whose_kept_trial_alone_is_evaluated(tmp_path):
    spec = compiled(tmp_path, STUDY)
    tasks = spec["root"]["dag"]["tasks"]
    assert {"vizier-trial-spec", "hyperparameter-tuning-job", "select-vizier-trial"} <= set(tasks)
    assert not {"train-model", "select-trial"} & set(tasks)  # neither the grid's loop nor its step

    # The worker pool: what vizier_trial_spec makes of its compiled inputs and the run's defaults.
    frames = Dataset(uri="gs://bucket/root/extract-frames/frames")
    folder = Artifact(uri="gs://bucket/root/vizier-trial-spec/trials_folder")
    worker_pool_specs, base = vizier_trial_spec.python_func(
        frames=frames, trials_folder=folder, **spec_inputs(spec, "vizier-trial-spec"))
    job = tuning_job(spec, {"worker_pool_specs": worker_pool_specs, "base_output_directory": base})

    [metric] = job.study_spec.metrics
    assert (metric.metric_id, metric.goal) == ("kept_val_loss", study.StudySpec.MetricSpec.GoalType.MINIMIZE)
    parameters = {p.parameter_id: p for p in job.study_spec.parameters}
    assert list(parameters) == ["learning_rate", "base_filters", "random_flip"]
    assert list(parameters["learning_rate"].discrete_value_spec.values) == [0.0, 1e-4, 3e-4]
    assert list(parameters["base_filters"].discrete_value_spec.values) == [8.0, 16.0]
    assert list(parameters["random_flip"].categorical_value_spec.values) == ["true", "false"]
    assert (job.max_trial_count, job.parallel_trial_count) == (5, 2)
    assert job.trial_job_spec.base_output_directory.output_uri_prefix == folder.uri

    [pool] = job.trial_job_spec.worker_pool_specs
    assert pool.container_spec.image_uri == IMAGES["trainer"]
    assert list(pool.container_spec.command) == vizier.TRIAL_COMMAND
    assert pool.machine_spec.machine_type == "n1-standard-4"
    assert pool.machine_spec.accelerator_type.name == "NVIDIA_TESLA_T4"  # the run's, by default
    assert pool.machine_spec.accelerator_count == 1 and pool.replica_count == 1
    args = list(pool.container_spec.args)
    assert args[args.index("--frames") + 1] == frames.uri
    assert "--epochs=50" in args  # the run's, not swept
    assert not any(a.startswith(("--learning_rate", "--base_filters", "--random_flip")) for a in args)
    # The run's project, region and service account, not GCPC's defaults (us-central1).
    given = tasks["hyperparameter-tuning-job"]["inputs"]["parameters"]
    assert given["location"]["runtimeValue"]["constant"] == "{{$.pipeline_google_cloud_location}}"
    assert given["service_account"]["runtimeValue"]["constant"] == "{{$.pipeline_service_account}}"

    # The kept trial's model is what evaluation reads; its step waits for the job.
    select = tasks["select-vizier-trial"]["inputs"]
    assert select["parameters"]["tuning_job"]["taskOutputParameter"] == {
        "outputParameterKey": "gcp_resources", "producerTask": "hyperparameter-tuning-job"}
    assert select["artifacts"]["trials_folder"]["taskOutputArtifact"]["producerTask"] == "vizier-trial-spec"
    assert tasks["evaluate-model"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "select-vizier-trial"}
    for name in ("vizier-trial-spec", "select-vizier-trial"):
        assert spec["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["image"] == IMAGES["trainer"]


def test_a_trial_runs_as_vertex_ai_runs_it_and_reports_the_kept_validation_loss(frames_dir, tmp_path,
                                                                               monkeypatch):
    import hypertune

    settings = dict(epochs=2, batch_size=4, recipe="videoclf", learning_rate=0.0, seed=0, random_flip=True,
                    base_filters=16, blocks_per_stage=1, precision="auto", patience=10, freeze_epochs=0)
    folder = Artifact(uri=str(tmp_path / "trials"))
    [pool], base = vizier_trial_spec.python_func(
        frames=Dataset(uri=str(frames_dir)), **settings, checkpoint_dir="",
        swept=["learning_rate", "base_filters"], trainer_image=IMAGES["trainer"],
        machine_type="n1-standard-4", accelerator_type="NVIDIA_TESLA_T4", accelerator_count="0", study={},
        trials_folder=folder)
    assert "accelerator_type" not in pool["machine_spec"]  # no GPU asked for
    container = pool["container_spec"]
    assert container["command"] == ["python", "-m", trial.__name__]
    # What Vertex AI sets for trial 3, and the values it appends (a discrete one as a number).
    metrics_file = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("AIP_MODEL_DIR", f"{base}/3/model/")
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "3")
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metrics_file))
    trial.main([*container["args"], "--learning_rate=0.0", "--base_filters=16.0"])

    model_dir = tmp_path / "trials" / "3" / "model"
    selection = json.loads((model_dir / SELECTION_FILE).read_text())
    val_loss = json.loads((model_dir / HISTORY_FILE).read_text())["val_loss"]
    reports = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    # After each epoch, the kept validation loss so far; after the last, the one selection.json keeps.
    assert [float(r["kept_val_loss"]) for r in reports] == [min(val_loss[:1]), min(val_loss[:2])]
    assert float(reports[-1]["kept_val_loss"]) == selection["val_loss"]
    # The file as cloudml-hypertune writes it for the same reports.
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "library" / "output.metrics"))
    library = hypertune.HyperTune()
    for r in reports:
        library.report_hyperparameter_tuning_metric(hyperparameter_metric_tag="kept_val_loss",
                                                    metric_value=float(r["kept_val_loss"]),
                                                    global_step=int(r["global_step"]))
    expected = [json.loads(line) for line in Path(library.metric_path).read_text().splitlines()]
    assert [{**r, "timestamp": 0} for r in reports] == [{**e, "timestamp": 0} for e in expected]
    record = json.loads((model_dir / TRIAL_FILE).read_text())
    assert record["trial"] == "3" and record["settings"]["base_filters"] == 16
    checkpoints = tmp_path / "trials" / "checkpoints" / "learning_rate=0.0,base_filters=16"
    assert (checkpoints / "state.json").is_file()  # named by the trial's values

    # Another trial that did worse, and one that failed: the step keeps trial 3, as the grid would.
    worse = tmp_path / "trials" / "10" / "model"
    shutil.copytree(model_dir, worse)
    (worse / SELECTION_FILE).write_text(json.dumps({**selection, "val_loss": selection["val_loss"] + 1}))
    (worse / TRIAL_FILE).write_text(json.dumps({**record, "trial": "10",
                                                "settings": {**record["settings"], "base_filters": 8}}))
    (tmp_path / "trials" / "4" / "model").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    outputs = dict(model=Model(uri=str(out / "model")), trials=Markdown(uri=str(out / "trials.md")),
                   sweep_metrics=Metrics(uri=str(out / "sweep")),
                   training_metrics=Metrics(uri=str(out / "metrics")),
                   learning_curves=HTML(uri=str(out / "curves.html")))
    job = "projects/p/locations/europe-west4/hyperparameterTuningJobs/7"
    gcp_resources = json.dumps({"resources": [{"resourceType": "HyperparameterTuningJob", "resourceUri":
                                               f"https://europe-west4-aiplatform.googleapis.com/v1/{job}"}]})
    select_vizier_trial.python_func(frames=Dataset(uri=str(frames_dir), metadata={"classes": ["a"]}),
                                    trials_folder=folder, tuning_job=gcp_resources,
                                    swept=["learning_rate", "base_filters"], **outputs)
    model = outputs["model"]
    assert (out / "model" / MODEL_FILE).is_file()
    kept = json.loads((out / "model" / TRIALS_FILE).read_text())
    assert [t["name"] for t in kept["trials"]] == ["trial-3", "trial-10"] and kept["kept"] == 0
    assert [t["settings"]["base_filters"] for t in kept["trials"]] == [16, 8]
    assert model.metadata["trial"] == "trial-3" and model.metadata["parameters"]["tuning_job"].endswith(job)
    assert model.metadata["inputs"]["trials"] == [f"{folder.uri}/3/model", f"{folder.uri}/10/model"]
    assert outputs["training_metrics"].metadata["kept_val_loss"] == float(reports[-1]["kept_val_loss"])
    assert "| trial-3 | 16 | 0.0 |" in (out / "trials.md").read_text()


@pytest.mark.parametrize(("target", "message"), [
    (Target("kubeflow", sweep=SWEEP, sweep_engine="vizier", sweep_trials=5), "runs only on Vertex AI"),
    (Target("vertex", sweep=SWEEP, sweep_engine="vizier"), "needs --sweep-trials N"),
    (Target("vertex", sweep=SWEEP, sweep_engine="vizier", sweep_trials=13), "the grid's 12 points"),
    (Target("vertex", sweep_engine="vizier", sweep_trials=1), "values of --sweep NAME=V1,V2"),
    (Target("vertex", sweep=SWEEP, sweep_trials=5), "--sweep-trials is for --sweep-engine vizier"),
])
def test_a_study_that_vertex_ai_could_not_run_is_refused(target, message):
    with pytest.raises(TargetError, match=re.escape(message)):
        target.check()


@pytest.mark.parametrize("command", [["run"], ["demo"], ["compile", "--target", "kubeflow"]])
def test_local_runs_and_kubeflow_refuse_the_vizier_engine(command, tmp_path, capsys):
    with pytest.raises(SystemExit, match="vizier runs only on Vertex AI"):
        cli.main([*command, "--output", str(tmp_path / "out"), "--sweep", "learning_rate=0,1e-4",
                  "--sweep-engine", "vizier", "--sweep-trials", "2"])
    assert not (tmp_path / "out").exists()
