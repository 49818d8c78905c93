"""Sweeps: the grid of settings, the trial kept on validation, and how the pipeline compiles one."""

import json
import math
from pathlib import Path

import pytest
import yaml

from components import images
from components.train_model import sweep
from pipelines.targets import Target, TargetError
from pipelines.video_classification import compile_pipeline

REGISTRY = "europe-docker.pkg.dev/my-project/videoclf"


def trial(name: str, val_loss: float, val_accuracy: float, **settings) -> sweep.Trial:
    """A trial as a training run's selection.json records its kept epoch."""
    return sweep.Trial(name, settings, {"monitor": "val_loss", "epoch": 3, "val_loss": val_loss,
                                        "val_accuracy": val_accuracy}, 5, f"/runs/{name}/model")


def test_the_grid_is_every_combination_of_values_read_as_their_settings_types():
    grid = sweep.grid(sweep.parse(["learning_rate=1e-3,1e-4", "base_filters=8,16", "random_flip=false"]))
    assert grid == [
        {"trial": "trial-0", "learning_rate": 1e-3, "base_filters": 8, "random_flip": False},
        {"trial": "trial-1", "learning_rate": 1e-3, "base_filters": 16, "random_flip": False},
        {"trial": "trial-2", "learning_rate": 1e-4, "base_filters": 8, "random_flip": False},
        {"trial": "trial-3", "learning_rate": 1e-4, "base_filters": 16, "random_flip": False}]
    assert [type(v) for v in grid[0].values()] == [str, float, int, bool]


@pytest.mark.parametrize(("specs", "message"), [
    (["lr=1e-3"], "'lr' is no training setting"),
    (["base_filters=8,wide"], "'wide' is not a int"),
    (["recipe=videoclf,sgd"], "recipe=sgd"),
    (["epochs=3,3"], "repeats a value"),
    (["epochs=3", "epochs=4"], "given twice"),
    (["epochs="], "give values"),
])
def test_a_sweep_that_cannot_run_is_refused_naming_the_spec(specs, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.parse(specs)


def test_the_trial_kept_is_the_lowest_validation_loss_not_the_best_accuracy():
    """Trial 1's validation accuracy is the highest by luck, trial 2 diverged: trial 0 is kept."""
    trials = [trial("trial-0", 0.41, 0.80, learning_rate=1e-3),
              trial("trial-1", 0.97, 0.85, learning_rate=1e-2),
              trial("trial-2", math.nan, 0.25, learning_rate=0.1),
              trial("trial-3", 1.39, 0.25, learning_rate=1e-9)]
    assert sweep.choose(trials) == 0
    assert sweep.choose(trials[1:]) == 0  # trial-1 once trial-0 is gone: the NaN one never
    assert sweep.choose([trials[3], trial("twin", 1.39, 0.5)]) == 0  # the first of equals


def test_a_sweep_where_no_trial_has_a_finite_loss_keeps_nothing():
    with pytest.raises(sweep.SweepError, match="no trial has a finite validation loss"):
        sweep.choose([trial("trial-0", math.nan, 0.25), trial("trial-1", math.inf, 0.25)])


def test_the_table_and_metrics_list_every_trial_and_mark_the_kept_one():
    trials = [trial("trial-0", 1.3863, 0.25, learning_rate=1e-9),
              trial("trial-1", 0.5, 0.75, learning_rate=0.0)]
    chosen = sweep.choose(trials)
    text = sweep.table(trials, chosen)
    rows = [line for line in text.splitlines() if line.startswith("| trial-")]
    assert rows == ["| trial-0 | 1e-09 | 3 | 1.3863 | 0.2500 | 5 |  |",
                    "| trial-1 | 0.0 | 3 | 0.5000 | 0.7500 | 5 | yes |"]
    assert "kept: trial-1" in text
    assert sweep.metrics(trials, chosen) == {
        "trials": 2.0, "kept_trial": 1.0, "kept_val_loss": 0.5, "trial_0_val_loss": 1.3863,
        "trial_0_val_accuracy": 0.25, "trial_1_val_loss": 0.5, "trial_1_val_accuracy": 0.75}
    assert sweep.from_record(json.loads(json.dumps(sweep.record(trials, chosen)))) == (trials, chosen)


def compiled(tmp_path: Path, target: Target) -> dict:
    names = {name: f"{REGISTRY}/{name}:0123456789ab" for name in images.NAMES}
    path = compile_pipeline(tmp_path / f"{target.platform}.yaml", target, names)
    return next(yaml.safe_load_all(path.read_text()))


@pytest.mark.parametrize("platform", ["kubeflow", "vertex"])
def test_a_sweep_compiles_to_a_bounded_parallel_for_whose_kept_model_alone_is_evaluated(tmp_path, platform):
    spec = compiled(tmp_path, Target(platform, sweep=("learning_rate=0,1e-9", "base_filters=8,16"),
                                     sweep_parallelism=2))
    tasks = spec["root"]["dag"]["tasks"]
    [loop] = [t for t in tasks.values() if t["taskInfo"]["name"] == "sweep"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == sweep.grid(
        {"learning_rate": [0.0, 1e-9], "base_filters": [8, 16]})
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(body) == ["train-model"]
    train_inputs = body["train-model"]["inputs"]["parameters"]
    for name in ("learning_rate", "base_filters", "trial"):  # each a field of the loop's item
        assert train_inputs[name]["parameterExpressionSelector"] == f'parseJson(string_value)["{name}"]'
    assert "componentInputParameter" in train_inputs["epochs"]  # what is not swept is the run's
    # The selection step gathers every trial's model and metrics; evaluation reads its model only.
    select = tasks["select-trial"]["inputs"]["artifacts"]
    loop_name = next(name for name, task in tasks.items() if task is loop)
    assert {select[name]["taskOutputArtifact"]["producerTask"] for name in ("models", "metrics")} == \
        {loop_name}
    definitions = spec["components"]["comp-select-trial"]["inputDefinitions"]["artifacts"]
    assert definitions["models"]["isArtifactList"] and definitions["metrics"]["isArtifactList"]
    assert tasks["evaluate-model"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "select-trial"}
    assert "train-model" not in tasks
    # The trial's GPU reaches the loop: the placeholders of its accelerator name run parameters,
    # which the loop takes in and hands to the trial.
    resources = spec["deploymentSpec"]["executors"]["exec-train-model"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == \
        "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
    for name in ("accelerator_type", "accelerator_count"):
        channel = f"pipelinechannel--{name}"
        assert body["train-model"]["inputs"]["parameters"][channel] == {"componentInputParameter": channel}
        assert loop["inputs"]["parameters"][channel] == {"componentInputParameter": name}

def test_vertex_refuses_a_grid_larger_than_the_artifacts_it_collects_into_one_task():
    fifty = Target("vertex", sweep=(f"seed={','.join(map(str, range(25)))}", "base_filters=8,16"))
    fifty.check()
    too_many = Target("vertex", sweep=(f"seed={','.join(map(str, range(51)))}",))
    with pytest.raises(TargetError, match="51 trials.*at most 100 artifacts.*at most 50 trials"):
        too_many.check()
    Target("kubeflow", sweep=too_many.sweep).check()  # Kubeflow sets no such limit


def test_a_swept_setting_given_as_a_run_parameter_is_refused():
    with pytest.raises(TargetError, match="--learning-rate is swept"):
        Target(sweep=("learning_rate=1e-3,1e-4",)).check_params({"learning_rate": 1e-3})


def test_an_init_model_is_imported_as_an_input_of_every_trial(tmp_path):
    spec = compiled(tmp_path, Target("vertex", sweep=("learning_rate=0,1e-4",),
                                     init_model="gs://bucket/runs/1/model"))
    tasks = spec["root"]["dag"]["tasks"]
    assert spec["components"]["comp-importer"]["outputDefinitions"]["artifacts"]["artifact"][
        "artifactType"]["schemaTitle"] == "system.Model"
    assert tasks["importer"]["inputs"]["parameters"]["uri"]["runtimeValue"]["constant"] == \
        "gs://bucket/runs/1/model"
    [loop] = [t for t in tasks.values() if t["taskInfo"]["name"] == "sweep"]
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert body["train-model"]["inputs"]["artifacts"]["init_model"] == {
        "componentInputArtifact": "pipelinechannel--importer-artifact"}
    assert loop["inputs"]["artifacts"]["pipelinechannel--importer-artifact"]["taskOutputArtifact"][
        "producerTask"] == "importer"


def test_a_cluster_run_refuses_an_init_model_on_this_machines_disk():
    with pytest.raises(TargetError, match="not in a bucket the cluster reads"):
        Target("vertex", init_model="/home/me/runs/model").check_params({})
    with pytest.raises(TargetError, match="give a gs:// model folder"):
        Target("vertex", init_model="s3://bucket/model").check_params({})


def test_lineage_names_an_imported_init_model_as_an_input_of_training():
    from pipelines.lineage import describe, edges

    def artifact(name: str, uri: str, **inputs) -> dict:
        return {"name": name, "uri": uri, "metadata": {"inputs": inputs}}

    tasks = [{"task": "extract-frames", "artifacts": [artifact("frames", "/run/extract-frames/frames")]},
             {"task": "train-model", "artifacts": [artifact("model", "/run/train-model/model",
                                                            frames="/run/extract-frames/frames",
                                                            init_model="gs://bucket/runs/0/model")]}]
    text = describe(tasks, edges(tasks))
    assert text.splitlines()[2:4] == ["train-model", "  <- frames from extract-frames"]
    assert "  <- init_model imported from gs://bucket/runs/0/model" in text.splitlines()
    assert "imported" not in text.split("train-model")[0]  # frames came from the run itself
