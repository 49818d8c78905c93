"""The KFP component of the extract frames stage: a thin typed wrapper."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def extract_frames(
    videos: Input[Dataset],
    n_frames: int,
    frame_step: int,
    height: int,
    width: int,
    clips_per_train_video: int,
    seed: int,
    frames: Output[Dataset],
):
    """Decodes each video into RGB clips resized with padding, as TFRecord shards per split."""
    from pathlib import Path

    from components.common import setup_logging
    from components.extract_frames.extract import extract_dataset

    setup_logging()
    manifest = extract_dataset(Path(videos.path), Path(frames.path), n_frames, frame_step,
                               height, width, clips_per_train_video, seed)
    frames.metadata.update({"classes": manifest["classes"], "counts": manifest["counts"],
                            "frame_shape": manifest["frame_shape"], "frame_step": frame_step,
                            "clips_per_train_video": clips_per_train_video, "source": videos.uri})
