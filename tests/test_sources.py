"""Your own videos: every kind of source (UCF101's zip, folder trees, annotation lists and CSVs,
local, in a bucket or in a zip over HTTP), the choice of classes, and the splits, including
UCF101's official ones."""

import csv
import shutil
import zipfile
from pathlib import Path

import pytest

from components.download_subset.config import SubsetSpec
from components.download_subset.download import download_subset_to
from components.download_subset.sources import SourceError
from components.extract_frames.config import ClipSpec
from components.extract_frames.extract import extract_dataset
from pipelines.range_server import serve_directory

# Two classes of real recordings, in several containers and frame rates.
CLASSES = {"Archery": ["h264_340x256_28fps_280f.mp4", "h264_340x256_28fps_280f.mkv",
                       "h264_340x256_28fps_280f.mov", "vp9_340x256_28fps_280f.webm",
                       "h264_340x256_56fps_560f.mp4"],
           "Other": ["mpeg4_320x240_25fps_164f.avi", "h264_340x256_30fps_32f.mp4",
                     "mpeg4_320x240_25fps_164f.avi", "h264_340x256_30fps_32f.mp4"]}
TINY_CLIPS = {"n_frames": 4, "frame_step": 5, "height": 32, "width": 32}


def class_tree(root: Path, real_clips: dict, splits: bool = False) -> Path:
    """``root/<class>/<video>`` (or ``root/<split>/<class>/<video>``) of real clips, with a
    README beside them that is no video."""
    for class_name, names in CLASSES.items():
        for n, name in enumerate(names):
            split = ("train", "train", "val", "test", "train")[n] if splits else None
            folder = root / split / class_name if split else root / class_name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real_clips[name], folder / f"{class_name.lower()}{n}{Path(name).suffix.upper()}")
    (root / "README.txt").write_text("my videos")
    return root


def download(source: str, out: Path, **overrides) -> dict:
    spec = {"num_classes": 0, "train_per_class": 2, "val_per_class": 1, "test_per_class": 1, "seed": 0,
            **overrides}
    return download_subset_to(SubsetSpec(source_url=source, **spec), out)


def download_and_extract(tmp_path: Path, source: str, **overrides) -> dict:
    """The download and extraction stages, in-process, on a source at a tiny size: the download
    manifest, once every video chosen was decoded into clips."""
    manifest = download(source, tmp_path / "videos-out", **overrides)
    frames = extract_dataset(tmp_path / "videos-out", tmp_path / "frames", ClipSpec(**TINY_CLIPS))
    assert {v["status"] for v in frames["videos"]} == {"ok"}, frames["videos"]
    assert frames["classes"] == manifest["classes"]
    return manifest


# Each kind of source, downloaded and decoded -------------------------------------------------------------


def test_a_folder_per_class_of_real_videos_in_several_containers(real_clips, tmp_path):
    manifest = download_and_extract(tmp_path, str(class_tree(tmp_path / "videos", real_clips)))
    assert manifest["classes"] == ["Archery", "Other"] and manifest["layout"] == "class-folders"
    assert manifest["ignored"] == {"count": 1, "examples": ["README.txt"]}
    assert manifest["split_by"] == "group" and manifest["counts"] == {"train": 4, "val": 2, "test": 2}
    suffixes = {Path(f["path"]).suffix for f in manifest["files"]}
    assert {".MP4", ".MKV", ".MOV", ".WEBM", ".AVI"} & suffixes == suffixes and len(suffixes) >= 3


def test_split_folders_in_a_bucket_keep_their_splits(real_clips, tmp_path, bucket):
    import fsspec

    local = class_tree(tmp_path / "local", real_clips, splits=True)
    fsspec.filesystem(bucket.split("://")[0]).put(str(local), f"{bucket}/videos", recursive=True)
    manifest = download_and_extract(tmp_path, f"{bucket}/videos", train_per_class=0, val_per_class=0,
                                    test_per_class=0)
    assert manifest["layout"] == "split-folders" and manifest["split_by"] == "source"
    for entry in manifest["files"]:  # each video stays in the split its folder gives it
        assert f"/{entry['split']}/" in entry["source"]
    assert manifest["counts"] == {"train": 5, "val": 2, "test": 2}


def test_the_official_ucf101_layout_in_a_zip_over_http(real_clips, tmp_path):
    archive = tmp_path / "zip" / "UCF101.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for class_name, names in CLASSES.items():
            for n, name in enumerate(names):
                member = f"UCF-101/{class_name}/v_{class_name}_g{n + 1:02d}_c01{Path(name).suffix}"
                zf.write(real_clips[name], member)
    with serve_directory(archive.parent) as base_url:
        manifest = download_and_extract(tmp_path, f"{base_url}/UCF101.zip")
    assert manifest["layout"] == "class-folders" and manifest["classes"] == ["Archery", "Other"]
    assert {f["group"] for f in manifest["files"]} <= {"1", "2", "3", "4", "5"}


def test_an_annotation_list_with_index_labels_and_a_class_name_file(real_clips, tmp_path):
    tree = class_tree(tmp_path / "data" / "videos", real_clips)
    names = sorted(CLASSES)
    (tmp_path / "data" / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    lines = [f"videos/{p.relative_to(tree).as_posix()} {names.index(p.parent.name) + 1}"
             for p in sorted(tree.rglob("*")) if p.parent != tree]
    (tmp_path / "data" / "train.txt").write_text("\n".join(lines) + "\n")
    manifest = download_and_extract(tmp_path, str(tmp_path / "data" / "train.txt"),
                                    class_names=str(tmp_path / "data" / "classInd.txt"))
    assert manifest["layout"] == "list" and manifest["classes"] == names


def test_a_csv_with_splits_and_groups(real_clips, tmp_path):
    tree = class_tree(tmp_path / "data", real_clips)
    rows = []
    for class_name in CLASSES:
        for n, path in enumerate(sorted((tree / class_name).iterdir())):
            rows.append({"path": path.relative_to(tree).as_posix(), "label": class_name,
                         "split": ("train", "train", "val", "test", "train")[n], "group": f"actor{n}"})
    with open(tree / "annotations.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "label", "split", "group"])
        writer.writeheader()
        writer.writerows(rows)
    manifest = download_and_extract(tmp_path, str(tree / "annotations.csv"), train_per_class=0,
                                    classes="Archery,Other")
    assert manifest["layout"] == "csv" and manifest["split_by"] == "source"
    sources = {(r["path"], r["split"], r["group"]) for r in rows}
    assert {(f["source"].split("/data/")[1], f["split"], f["group"]) for f in manifest["files"]} <= sources


# Listing -------------------------------------------------------------------------------------


def test_bad_input_is_named(real_clips, tmp_path):
    tree = class_tree(tmp_path / "videos", real_clips)
    (tree / "Empty").mkdir()
    (tree / "Empty" / "notes.txt").write_text("no video here")
    manifest = download(str(tree), tmp_path / "out")
    assert manifest["empty"] == ["Empty"] and manifest["classes"] == ["Archery", "Other"]
    with pytest.raises(SourceError, match="Empty: no video in .*empty: Empty"):
        download(str(tree), tmp_path / "out", classes="Empty,Other")
    with pytest.raises(SourceError, match="Walking is not among the 2 classes of .*: Archery, Other"):
        download(str(tree), tmp_path / "out", classes="Archery,Walking")
    (tree / "Archery" / "deeper").mkdir()
    shutil.copyfile(real_clips["h264_340x256_30fps_32f.mp4"], tree / "Archery" / "deeper" / "x.mp4")
    mixed = r"mixes layouts: .*\.\w+ is 1 folder\(s\) below .*; Archery/deeper/x.mp4 is 2"
    with pytest.raises(SourceError, match=mixed):
        download(str(tree), tmp_path / "out")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(SourceError, match="holds no video .*1 other files: a.jpg"):
        download(str(tmp_path / "nothing"), tmp_path / "out")


def test_bad_annotation_lists_are_named(real_clips, tmp_path):
    class_tree(tmp_path / "videos", real_clips)
    cases = {
        "missing.txt": ("videos/Archery/archery0.MP4 Archery\nvideos/Archery/gone.mp4 Archery\n",
                        r"names 1 videos that are not in .*: videos/Archery/gone.mp4"),
        "indices.txt": ("videos/Archery/archery0.MP4 0\n",
                        "labels of .*indices.txt are indices: give the class names"),
        "outside.txt": ("../elsewhere/x.mp4 Archery\n",
                        r"line 1: ../elsewhere/x.mp4 is not inside the list's folder"),
        "nolabel.txt": ("videos/Archery/archery0.MP4\n", "line 1 of .*nolabel.txt has no label"),
        "twice.txt": ("videos/Other/other0.AVI Other\nvideos/Other/other0.AVI Archery\n",
                      "names .*other0.AVI twice, as Other and Archery"),
        "columns.csv": ("file,class\nvideos/Other/other0.AVI,Other\n",
                        "has the columns file, class: it needs"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SourceError, match=message):
            download(str(tmp_path / name), tmp_path / "out")
    (tmp_path / "names.txt").write_text("Archery\nOther\nJuggling\n")
    (tmp_path / "unknown.txt").write_text("videos/Other/other0.AVI 7\n")
    with pytest.raises(SourceError, match="labels with no name in .*names.txt: line 1: 7"):
        download(str(tmp_path / "unknown.txt"), tmp_path / "out", class_names=str(tmp_path / "names.txt"))
    # A label of the class-name file that no video has is named in the manifest.
    tree = tmp_path / "videos"
    lines = [f"{p.relative_to(tmp_path).as_posix()} {['Archery', 'Other'].index(p.parent.name)}\n"
             for p in sorted(tree.glob("*/*.*"))]
    (tmp_path / "labels.txt").write_text("".join(lines))
    manifest = download(str(tmp_path / "labels.txt"), tmp_path / "out",
                        class_names=str(tmp_path / "names.txt"))
    assert manifest["empty"] == ["Juggling"] and manifest["classes"] == ["Archery", "Other"]


def test_videos_of_one_class_with_one_file_name_are_all_kept(real_clips, tmp_path):
    for folder in "abcd":
        (tmp_path / folder).mkdir()
        shutil.copyfile(real_clips["h264_340x256_30fps_32f.mp4"], tmp_path / folder / "clip.mp4")
    (tmp_path / "list.txt").write_text("".join(f"{folder}/clip.mp4 Walk\n" for folder in "abcd"))
    manifest = download(str(tmp_path / "list.txt"), tmp_path / "out", split_by="file")
    paths = [f["path"] for f in manifest["files"]]
    assert len(set(paths)) == 4 and all((tmp_path / "out" / p).is_file() for p in paths)
    [renamed] = manifest["renamed"]  # the two training videos met on one name
    assert renamed["path"].startswith("train/Walk/clip-") and renamed["path"] in paths


# Splits --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ucf101_zip(tmp_path_factory) -> Path:
    """A zip in the tutorial's layout: 3 classes x 25 groups x 4 clips (the bytes are no video:
    splitting reads names only)."""
    path = tmp_path_factory.mktemp("ucf") / "UCF101.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for class_name in ("Apply", "Bowl", "Climb"):
            for group in range(1, 26):
                for clip in range(1, 5):
                    name = f"UCF101/v_{class_name}_g{group:02d}_c{clip:02d}.avi"
                    zf.writestr(name, f"{class_name} {group} {clip}")
    return path


@pytest.mark.parametrize(("split_by", "test_groups"), [("ucf101-1", range(1, 8)), ("ucf101-2", range(8, 15)),
                                                        ("ucf101-3", range(15, 22))])
def test_ucf101s_official_splits(ucf101_zip, tmp_path, split_by, test_groups):
    manifest = download(str(ucf101_zip), tmp_path, split_by=split_by, train_per_class=0, val_per_class=8,
                        test_per_class=0)
    groups = {split: {(f["class"], int(f["group"])) for f in manifest["files"] if f["split"] == split}
              for split in ("train", "val", "test")}
    assert {g for _, g in groups["test"]} == set(test_groups)  # the clips of the test groups, no other
    assert not {g for _, g in groups["train"] | groups["val"]} & set(test_groups)
    assert not groups["train"] & groups["val"] and len(groups["val"]) == 3 * 2  # 8 clips: two whole groups
    assert manifest["counts"] == {"train": 3 * (18 * 4 - 8), "val": 3 * 8, "test": 3 * 7 * 4}


def test_counts_fractions_and_all(ucf101_zip, tmp_path):
    manifest = download(str(ucf101_zip), tmp_path, train_per_class=0, val_per_class=0.2, test_per_class=0.2)
    # 100 clips a class: 20 and 20 in whole groups of 4, the other 60 to training
    assert manifest["counts"] == {"train": 3 * 60, "val": 3 * 20, "test": 3 * 20}
    by_group = {}
    for f in manifest["files"]:
        by_group.setdefault((f["class"], f["group"]), set()).add(f["split"])
    assert all(len(splits) == 1 for splits in by_group.values())


def test_a_class_too_small_is_named_with_its_count(ucf101_zip, tmp_path):
    with pytest.raises(SourceError, match="class Apply has 100 videos, fewer than the 120"):
        download(str(ucf101_zip), tmp_path, train_per_class=100, val_per_class=10, test_per_class=10)
    with pytest.raises(SourceError, match="split_by=source, but the source gives no splits"):
        download(str(ucf101_zip), tmp_path, split_by="source")


def test_classes_by_name_or_the_first_n(ucf101_zip, tmp_path):
    assert download(str(ucf101_zip), tmp_path / "a", classes="Climb,Apply")["classes"] == ["Apply", "Climb"]
    assert download(str(ucf101_zip), tmp_path / "b", num_classes=2)["classes"] == ["Apply", "Bowl"]
    assert download(str(ucf101_zip), tmp_path / "c", num_classes=0)["classes"] == ["Apply", "Bowl", "Climb"]
