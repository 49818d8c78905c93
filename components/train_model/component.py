"""The KFP component of the train model stage: a thin typed wrapper."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_model(
    frames: Input[Dataset],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    learning_curves: Output[HTML],
):
    """Trains the tutorial's (2+1)D ResNet and plots its learning curves."""
    from pathlib import Path

    from components.common import setup_logging
    from components.reports import img_tag, learning_curves_png, page
    from components.train_model.train import final_metrics, train

    setup_logging()
    history = train(Path(frames.path), Path(model.path), epochs, batch_size, learning_rate, seed)
    for name, value in final_metrics(history).items():
        metrics.log_metric(name, value)
    model.metadata.update({"framework": "keras", "classes": frames.metadata.get("classes"),
                           "epochs": epochs, "batch_size": batch_size,
                           "learning_rate": learning_rate, "seed": seed, "source": frames.uri})
    Path(learning_curves.path).write_text(
        page("Learning curves", img_tag(learning_curves_png(history), "learning curves")))
