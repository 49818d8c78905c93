"""The KFP component of the download subset stage: a thin typed wrapper."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import image


@dsl.component(base_image=image("data"), install_kfp_package=False)
def download_subset(
    source_url: str,
    num_classes: int,
    train_per_class: int,
    val_per_class: int,
    test_per_class: int,
    seed: int,
    split_by: str,
    dataset: Output[Dataset],
):
    """Downloads a class subset of a UCF101-layout zip, split into train, val and test."""
    from pathlib import Path

    from components.common import lineage, setup_logging
    from components.download_subset.download import download_subset_to

    setup_logging()
    manifest = download_subset_to(source_url, Path(dataset.path), num_classes, train_per_class,
                                  val_per_class, test_per_class, seed, split_by)
    parameters = {"source_url": source_url, "num_classes": num_classes, "train_per_class": train_per_class,
                  "val_per_class": val_per_class, "test_per_class": test_per_class, "seed": seed,
                  "split_by": split_by}
    dataset.metadata.update({"classes": manifest["classes"], "counts": manifest["counts"],
                             "refused": len(manifest["refused"]),
                             **lineage("download_subset", parameters, {}, Path(dataset.path))})
