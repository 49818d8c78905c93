"""The KFP component of the train model stage: a thin typed wrapper."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

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
):
    """Trains the (2+1)D ResNet, resuming from checkpoint_dir, and plots its learning curves.

    With a mounted checkpoint volume and no checkpoint_dir, checkpoints go to a folder of the run
    (run_id) on that volume, where a retried pod finds them; a folder on the volume is checked
    writable before anything else.
    """
    import dataclasses
    from pathlib import Path

    from components.common import setup_logging
    from components.train_model.volume import check_writable

    setup_logging()
    if checkpoint_volume and not checkpoint_dir:
        checkpoint_dir = f"{checkpoint_volume}/{run_id}"
    if checkpoint_volume and checkpoint_dir.startswith(f"{checkpoint_volume}/"):
        check_writable(Path(checkpoint_dir))  # before TensorFlow is even imported

    from components.common import lineage
    from components.reports import img_tag, learning_curves_png, page
    from components.train_model.config import TrainConfig
    from components.train_model.model_folder import MODEL_FILE
    from components.train_model.train import train
    config = TrainConfig(epochs=epochs, batch_size=batch_size, recipe=recipe, learning_rate=learning_rate,
                         seed=seed, random_flip=random_flip, base_filters=base_filters,
                         blocks_per_stage=blocks_per_stage, precision=precision, patience=patience)
    result = train(Path(frames.path), Path(model.path), config, checkpoint_dir,
                   tensorboard_dir=Path(tensorboard.path))
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    parameters = {**dataclasses.asdict(config), "checkpoint_dir": checkpoint_dir}
    inputs = {"frames": frames.uri}
    data = {"classes": frames.metadata.get("classes"), "counts": frames.metadata.get("counts")}
    model.metadata.update({"framework": "keras", "file": MODEL_FILE, **data, "precision": result.precision,
                           "replicas": result.replicas, "kept_epoch": result.metrics["kept_epoch"],
                           **lineage("train_model", parameters, inputs, Path(model.path) / MODEL_FILE)})
    Path(learning_curves.path).write_text(
        page("Learning curves", img_tag(learning_curves_png(result.history), "learning curves")))
    learning_curves.metadata.update(
        {**data, **lineage("train_model", parameters, inputs, Path(learning_curves.path))})
    tensorboard.metadata.update({"log_dir": tensorboard.uri, **data,
                                 **lineage("train_model", parameters, inputs, Path(tensorboard.path))})
