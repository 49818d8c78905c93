"""The KFP components of the train model stage, thin typed wrappers: ``train_model``, and
``select_trial``, which keeps the trial of a sweep with the lowest kept validation loss."""

from typing import List, Optional  # noqa: UP035 (KFP reads typing's forms in component signatures)

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
    import shutil
    from pathlib import Path

    from components.common import lineage, setup_logging, write_json
    from components.reports import img_tag, learning_curves_png, page
    from components.train_model import sweep
    from components.train_model.model_folder import HISTORY_FILE, MODEL_FILE, TRIALS_FILE, read

    setup_logging()
    found = [sweep.read_trial(Path(m.path), m.metadata["trial"],
                              sweep.typed({name: m.metadata["parameters"][name] for name in swept}), m.uri)
             for m in models]
    chosen = sweep.choose(found)
    kept = models[chosen]
    if metrics[chosen].metadata.get("kept_val_loss") != found[chosen].loss:
        raise ValueError(f"the collected metrics are not in the order of the models: {metrics[chosen].uri} "
                         f"does not hold the scores of {kept.uri}")
    shutil.copytree(kept.path, model.path, dirs_exist_ok=True)
    write_json(Path(model.path) / TRIALS_FILE, sweep.record(found, chosen))
    Path(trials.path).write_text(sweep.table(found, chosen))
    for name, value in sweep.metrics(found, chosen).items():
        sweep_metrics.log_metric(name, value)
    for name, value in metrics[chosen].metadata.items():
        training_metrics.log_metric(name, value)
    Path(learning_curves.path).write_text(page(f"Learning curves of {found[chosen].name}", img_tag(
        learning_curves_png(read(model.path, HISTORY_FILE)), "learning curves")))
    parameters = {"monitor": sweep.MONITOR, "swept": swept, "kept": found[chosen].name}
    inputs = {"trials": [m.uri for m in models]}
    model.metadata.update({**{k: v for k, v in kept.metadata.items() if k not in ("sha256", "inputs")},
                           **lineage("select_trial", parameters, inputs, Path(model.path) / MODEL_FILE),
                           "trial_parameters": kept.metadata.get("parameters")})
    for artifact in (trials, learning_curves):
        artifact.metadata.update(lineage("select_trial", parameters, inputs, Path(artifact.path)))
