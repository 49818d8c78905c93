"""The KFP components of the extract frames stage: thin typed wrappers.

``extract_frames`` extracts one part of the videos (all of them by default); with several
parts, one pod each (a ``dsl.ParallelFor``), ``gather_frames`` merges them into one dataset.
"""

from typing import List  # noqa: UP035 (KFP reads typing.List in component signatures)

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import latest


@dsl.component(base_image=latest("data"), install_kfp_package=False)
def extract_frames(
    videos: Input[Dataset],
    part: int,
    num_parts: int,
    n_frames: int,
    frame_step: int,
    clip_seconds: float,
    height: int,
    width: int,
    clips_per_train_video: int,
    eval_clips_per_video: int,
    frame_encoding: str,
    max_failed_fraction: float,
    seed: int,
    frames: Output[Dataset],
):
    """Decodes one part of the videos into RGB clips resized with padding, as TFRecord shards."""
    import dataclasses
    from pathlib import Path

    from components.common import lineage, setup_logging
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset

    setup_logging()
    spec = ClipSpec(n_frames=n_frames, frame_step=frame_step, clip_seconds=clip_seconds, height=height,
                    width=width, clips_per_train_video=clips_per_train_video,
                    eval_clips_per_video=eval_clips_per_video, frame_encoding=frame_encoding, seed=seed)
    manifest = extract_dataset(Path(videos.path), Path(frames.path), spec, max_failed_fraction,
                               part, num_parts)
    parameters = {**dataclasses.asdict(spec), "part": part, "num_parts": num_parts,
                  "max_failed_fraction": max_failed_fraction}
    frames.metadata.update({"classes": manifest["classes"], "counts": manifest["counts"],
                            "failed": manifest["failed"],
                            **lineage("extract_frames", parameters, {"videos": videos.uri},
                                      Path(frames.path))})


@dsl.component(base_image=latest("data"), install_kfp_package=False)
def gather_frames(
    parts: Input[List[Dataset]],  # noqa: UP006
    max_failed_fraction: float,
    frames: Output[Dataset],
):
    """Merges the extracted parts into one dataset of clips."""
    from pathlib import Path

    from components.common import lineage, setup_logging
    from components.extract_frames.extract import gather_parts

    setup_logging()
    manifest = gather_parts([Path(p.path) for p in parts], Path(frames.path), max_failed_fraction)
    frames.metadata.update({
        "classes": manifest["classes"], "counts": manifest["counts"], "failed": manifest["failed"],
        "frame_shape": manifest["frame_shape"], "frame_step": manifest["frame_step"],
        "frame_encoding": manifest["frame_encoding"],
        "clips_per_train_video": manifest["clips_per_train_video"],
        "eval_clips_per_video": manifest["eval_clips_per_video"],
        **lineage("gather_frames", {"max_failed_fraction": max_failed_fraction},
                  {"parts": [p.uri for p in parts]}, Path(frames.path))})
