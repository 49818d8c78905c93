"""The KFP components of the train model stage, thin typed wrappers: ``train_model``, and
``select_trial``, which keeps the trial of a sweep with the lowest kept validation loss; for a
sweep run as a Vertex AI Vizier study, ``vizier_trial_spec`` (what its trials run, and where) and
``select_vizier_trial`` (which keeps one the same way)."""

from typing import List, NamedTuple, Optional  # noqa: UP035 (KFP reads typing's forms in component signatures)

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import latest


@dsl.component(base_image=latest("trainer"), install_kfp_package=False)
def train_model(
    frames: Input[Dataset],
    epochs: int,
    batch_size: int,
    recipe: str,
    learning_rate: float,
    seed: int,
    random_flip: bool,
    base_filters: int,
    blocks_per_stage: int,
    precision: str,
    patience: int,
    checkpoint_dir: str,
    checkpoint_volume: str,
    model: Output[Model],
    metrics: Output[Metrics],
    learning_curves: Output[HTML],
    tensorboard: Output[Artifact],
    run_id: str = "",
    freeze_epochs: int = 0,
    trial: str = "",
    init_model: Optional[Input[Model]] = None,  # noqa: UP045
):
    """Trains the (2+1)D ResNet, resuming from checkpoint_dir, and plots its learning curves;
    from init_model's weights where given (freezing its body for freeze_epochs).

    With a mounted checkpoint volume and no checkpoint_dir, checkpoints go to a folder of the run
    (run_id) on that volume, where a retried pod finds them; a folder on the volume is checked
    writable before anything else. A sweep's trial checkpoints to a folder of its own in them.
    """
    import dataclasses
    import os
    from pathlib import Path

    from components.common import setup_logging
    from components.train_model.volume import check_writable

    setup_logging()
    if checkpoint_volume and not checkpoint_dir:
        checkpoint_dir = f"{checkpoint_volume}/{run_id}"
    if checkpoint_dir and trial:
        checkpoint_dir = f"{checkpoint_dir}/{trial}"
    if checkpoint_volume and checkpoint_dir.startswith(f"{checkpoint_volume}/"):
        check_writable(Path(checkpoint_dir))  # before TensorFlow is even imported

    from components.common import lineage
    from components.reports import img_tag, learning_curves_png, page
    from components.train_model.config import TrainConfig
    from components.train_model.model_folder import MODEL_FILE
    from components.train_model.sweep import typed
    from components.train_model.train import train
    config = TrainConfig(**typed(dict(
        epochs=epochs, batch_size=batch_size, recipe=recipe, learning_rate=learning_rate, seed=seed,
        random_flip=random_flip, base_filters=base_filters, blocks_per_stage=blocks_per_stage,
        precision=precision, patience=patience, freeze_epochs=freeze_epochs)))
    # The platform's local copy where there is one (Kubeflow's launcher, Vertex AI's /gcs/), else the URI.
    init = "" if init_model is None else init_model.path if os.path.isdir(init_model.path) else init_model.uri
    result = train(Path(frames.path), Path(model.path), config, checkpoint_dir,
                   tensorboard_dir=Path(tensorboard.path), init_model=init)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    parameters = {**dataclasses.asdict(config), "checkpoint_dir": checkpoint_dir}
    inputs = {"frames": frames.uri, **({"init_model": init_model.uri} if init_model else {})}
    data = {"classes": frames.metadata.get("classes"), "counts": frames.metadata.get("counts")}
    model.metadata.update({"framework": "keras", "file": MODEL_FILE, **data, "precision": result.precision,
                           "replicas": result.replicas, "kept_epoch": result.metrics["kept_epoch"],
                           **({"trial": trial} if trial else {}),
                           **lineage("train_model", parameters, inputs, Path(model.path) / MODEL_FILE)})
    Path(learning_curves.path).write_text(
        page("Learning curves", img_tag(learning_curves_png(result.history), "learning curves")))
    learning_curves.metadata.update(
        {**data, **lineage("train_model", parameters, inputs, Path(learning_curves.path))})
    tensorboard.metadata.update({"log_dir": tensorboard.uri, **data,
                                 **lineage("train_model", parameters, inputs, Path(tensorboard.path))})


@dsl.component(base_image=latest("trainer"), install_kfp_package=False)
def select_trial(
    models: Input[List[Model]],  # noqa: UP006
    metrics: Input[List[Metrics]],  # noqa: UP006
    swept: list,
    model: Output[Model],
    trials: Output[Markdown],
    sweep_metrics: Output[Metrics],
    training_metrics: Output[Metrics],
    learning_curves: Output[HTML],
):
    """Keeps the trial of the lowest kept validation loss: its model folder, with every trial's
    settings and scores beside it (trials.json, the Markdown table, the sweep's metrics), and its
    training metrics and learning curves."""
    from pathlib import Path

    from components.common import setup_logging
    from components.train_model import sweep

    setup_logging()
    found = [sweep.read_trial(Path(m.path), m.metadata["trial"],
                              sweep.typed({name: m.metadata["parameters"][name] for name in swept}), m.uri)
             for m in models]
    chosen = sweep.choose(found)
    kept = models[chosen]
    if metrics[chosen].metadata.get("kept_val_loss") != found[chosen].loss:
        raise ValueError(f"the collected metrics are not in the order of the models: {metrics[chosen].uri} "
                         f"does not hold the scores of {kept.uri}")
    parameters = {"monitor": sweep.MONITOR, "swept": swept, "kept": found[chosen].name}
    sweep.write_kept(found, chosen, Path(kept.path), dict(
        model=model, trials=trials, sweep_metrics=sweep_metrics, training_metrics=training_metrics,
        learning_curves=learning_curves), metrics[chosen].metadata,
        ("select_trial", parameters, {"trials": [m.uri for m in models]}),
        {**{k: v for k, v in kept.metadata.items() if k not in ("sha256", "inputs")},
         "trial_parameters": kept.metadata.get("parameters")})


@dsl.component(base_image=latest("trainer"), install_kfp_package=False)
def vizier_trial_spec(
    frames: Input[Dataset],
    epochs: int,
    batch_size: int,
    recipe: str,
    learning_rate: float,
    seed: int,
    random_flip: bool,
    base_filters: int,
    blocks_per_stage: int,
    precision: str,
    patience: int,
    freeze_epochs: int,
    checkpoint_dir: str,
    swept: list,
    trainer_image: str,
    machine_type: str,
    accelerator_type: str,
    accelerator_count: str,
    study: dict,
    trials_folder: Output[Artifact],
    init_model: Optional[Input[Model]] = None,  # noqa: UP045
) -> NamedTuple("TrialSpec", [("worker_pool_specs", list), ("base_output_directory", str)]):  # noqa: UP014
    """The worker pool spec of a Vizier study's trials (the trainer image running the trial
    command on these frames with the settings not swept, on a machine of ``machine_type`` with the
    GPUs), and the folder the tuning job writes its trials to: this task's ``trials_folder``,
    whose URI follows everything that defines the job, ``study`` included (not read, but part of
    the cache key: Vertex AI numbers each job's trials from 1, so another study needs another
    folder)."""
    import logging

    from components.common import setup_logging
    from components.train_model import vizier

    setup_logging()
    settings = dict(epochs=epochs, batch_size=batch_size, recipe=recipe, learning_rate=learning_rate,
                    seed=seed, random_flip=random_flip, base_filters=base_filters,
                    blocks_per_stage=blocks_per_stage, precision=precision, patience=patience,
                    freeze_epochs=freeze_epochs)
    checkpoint_root = checkpoint_dir or f"{trials_folder.uri}/checkpoints"
    args = vizier.trial_args(frames.uri, settings, swept, checkpoint_root,
                             init_model.uri if init_model else "")
    specs = vizier.worker_pool_specs(trainer_image, machine_type, accelerator_type, int(accelerator_count),
                                     args)
    logging.getLogger("videoclf").info("the trials of %s run %s", study, specs)
    trials_folder.metadata.update({"frames": frames.uri, "swept": swept, "checkpoint_root": checkpoint_root})
    return specs, trials_folder.uri


@dsl.component(base_image=latest("trainer"), install_kfp_package=False)
def select_vizier_trial(
    frames: Input[Dataset],
    trials_folder: Input[Artifact],
    tuning_job: str,
    swept: list,
    model: Output[Model],
    trials: Output[Markdown],
    sweep_metrics: Output[Metrics],
    training_metrics: Output[Metrics],
    learning_curves: Output[HTML],
):
    """Keeps the trial of a Vizier study (``tuning_job``: GCPC's gcp_resources of its job) with the
    lowest kept validation loss, by the rule and with the outputs of ``select_trial``, from the
    model folders its trials wrote to ``trials_folder`` (``<trial id>/model``)."""
    from pathlib import Path

    from components.common import setup_logging
    from components.train_model import sweep, vizier
    from components.train_model.model_folder import MODEL_FILE

    setup_logging()
    found = vizier.read_trials(Path(trials_folder.path), trials_folder.uri, swept)
    chosen = sweep.choose([trial for trial, _, _ in found])
    kept, record, kept_dir = found[chosen]
    job = vizier.tuning_job(tuning_job)
    parameters = {"monitor": sweep.MONITOR, "swept": swept, "kept": kept.name, "tuning_job": job}
    data = {"classes": frames.metadata.get("classes"), "counts": frames.metadata.get("counts")}
    sweep.write_kept(
        [trial for trial, _, _ in found], chosen, kept_dir, dict(
            model=model, trials=trials, sweep_metrics=sweep_metrics, training_metrics=training_metrics,
            learning_curves=learning_curves), record["metrics"],
        ("select_vizier_trial", parameters,
         {"frames": frames.uri, "trials": [trial.model for trial, _, _ in found]}),
        {"framework": "keras", "file": MODEL_FILE, **data, "precision": record["precision"],
         "replicas": record["replicas"], "kept_epoch": record["metrics"]["kept_epoch"], "trial": kept.name,
         "trial_parameters": record["settings"]})
