"""The KFP component of the download subset stage: a thin typed wrapper."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import latest


@dsl.component(base_image=latest("data"), install_kfp_package=False)
def download_subset(
    source_url: str,
    classes: str,
    num_classes: int,
    class_names: str,
    train_per_class: float,
    val_per_class: float,
    test_per_class: float,
    split_by: str,
    group_pattern: str,
    seed: int,
    dataset: Output[Dataset],
):
    """Downloads the chosen classes' videos of a zip, folder or annotation list, split into
    train, val and test."""
    import dataclasses
    from pathlib import Path

    from components.common import lineage, setup_logging
    from components.download_subset.config import SubsetSpec
    from components.download_subset.download import download_subset_to

    setup_logging()
    spec = SubsetSpec(source_url=source_url, classes=classes, num_classes=num_classes,
                      class_names=class_names, train_per_class=train_per_class, val_per_class=val_per_class,
                      test_per_class=test_per_class, split_by=split_by, group_pattern=group_pattern,
                      seed=seed)
    manifest = download_subset_to(spec, Path(dataset.path))
    parameters = dataclasses.asdict(spec)
    dataset.metadata.update({"classes": manifest["classes"], "counts": manifest["counts"],
                             "layout": manifest["layout"], "split_by": manifest["split_by"],
                             "refused": len(manifest["refused"]), "ignored": manifest["ignored"]["count"],
                             **lineage("download_subset", parameters, {}, Path(dataset.path))})
