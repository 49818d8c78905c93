import json
import zipfile
import zlib
from http import HTTPStatus
from pathlib import Path

import pytest

from components.common import MANIFEST
from components.download_subset.config import SubsetSpec
from components.download_subset.download import FETCH_THREADS, RETRIES, SourceError, download_subset_to
from components.storage import Folder
from pipelines.range_server import RangeRequestHandler, serve_directory


def download(source, out, threads=FETCH_THREADS, retries=RETRIES, **overrides):
    spec = {"num_classes": 4, "train_per_class": 4, "val_per_class": 2, "test_per_class": 3, "seed": 0,
            **overrides}
    return download_subset_to(SubsetSpec(source_url=source, **spec), out, threads, retries)


def test_layout_manifest_and_crc(videos_dir, demo_zip):
    manifest = json.loads((videos_dir / MANIFEST).read_text())
    assert manifest["classes"] == ["DriftDown", "DriftLeft", "DriftRight", "DriftUp"]
    assert manifest["counts"] == {"train": 16, "val": 8, "test": 12}
    with zipfile.ZipFile(demo_zip) as zf:
        crcs = {info.filename.rsplit("/", 1)[-1]: info.CRC for info in zf.infolist()}
    for entry in manifest["files"]:
        path = videos_dir / entry["path"]
        split, class_name, name = entry["path"].split("/")
        assert (split, class_name) == (entry["split"], entry["class"])
        assert name.startswith(f"v_{class_name}_g")
        assert path.stat().st_size == entry["size"]
        assert zlib.crc32(path.read_bytes()) == entry["crc32"] == crcs[name]
    names = [e["path"].rsplit("/", 1)[-1] for e in manifest["files"]]
    assert len(set(names)) == len(names), "a clip landed in two splits"
    splits_of_group = {}
    for entry in manifest["files"]:
        splits_of_group.setdefault((entry["class"], entry["group"]), set()).add(entry["split"])
    assert manifest["split_by"] == "group" and all(len(s) == 1 for s in splits_of_group.values())


def test_the_tutorials_per_file_split_is_an_option(demo_url, tmp_path):
    manifest = download(demo_url, tmp_path, split_by="file", seed=3)
    assert manifest["split_by"] == "file" and manifest["counts"] == {"train": 16, "val": 8, "test": 12}
    splits_of_group = {}
    for entry in manifest["files"]:
        splits_of_group.setdefault((entry["class"], entry["group"]), set()).add(entry["split"])
    assert any(len(s) > 1 for s in splits_of_group.values()), "no group was split: not per file"


def test_same_seed_same_split_other_seed_other_split(videos_dir, demo_url, tmp_path):
    again = download(demo_url, tmp_path / "a")
    other = download(demo_url, tmp_path / "b", seed=1)
    first = json.loads((videos_dir / MANIFEST).read_text())
    assert again["files"] == first["files"]
    assert other["files"] != first["files"]


def test_local_zip_gives_the_same_subset(demo_zip, demo_url, tmp_path):
    assert download(str(demo_zip), tmp_path / "a")["files"] == download(demo_url, tmp_path / "b")["files"]


def test_rerun_keeps_intact_files_and_replaces_damaged_ones(demo_url, tmp_path):
    manifest = download(demo_url, tmp_path)
    kept, damaged = (tmp_path / f["path"] for f in manifest["files"][:2])
    kept_mtime = kept.stat().st_mtime_ns
    damaged.write_bytes(b"half a video")
    download(demo_url, tmp_path)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert zlib.crc32(damaged.read_bytes()) == manifest["files"][1]["crc32"]


def test_only_the_needed_members_are_read(demo_zip, tmp_path):
    ranges, sent = [], []

    class Counting(RangeRequestHandler):
        def copyfile(self, source, outputfile):
            ranges.append(self.headers.get("Range"))
            start = source.tell()
            super().copyfile(source, outputfile)
            sent.append(source.tell() - start)

    with serve_directory(demo_zip.parent, Counting) as base_url:
        manifest = download(f"{base_url}/{demo_zip.name}", tmp_path, num_classes=1,
                            train_per_class=1, val_per_class=1, test_per_class=1, threads=1)
    assert None not in ranges, "a request fetched the whole zip"
    clip_bytes = sum(f["size"] for f in manifest["files"])
    # Each handle on the zip (the listing's, and one per fetching thread) reads its last 64 KiB.
    assert clip_bytes <= sum(sent) < clip_bytes + 2 * 64 * 1024 + 4096 < demo_zip.stat().st_size


@pytest.mark.parametrize(("overrides", "message"), [
    ({"num_classes": 5}, "num_classes=5 asked, but .* has only 4 classes"),
    ({"train_per_class": 8}, "class DriftDown has 12 videos, fewer than the 13 that train/val/test = 8/2/3"),
    ({"train_per_class": 7}, r"class DriftDown \(12 videos in 4 groups\), test: too few whole groups left "
                             r"for 3 videos .*split_by=file"),
    ({"split_by": "actor"}, "split_by must be one of auto, source, group, file, ucf101-1"),
    ({"val_per_class": -1}, "val_per_class must be a count, a fraction below 1, or 0 for all"),
    ({"val_per_class": 0, "test_per_class": 0}, "val and test_per_class are both 0"),
    ({"train_per_class": 2.5}, "train_per_class must be a whole count or a fraction below 1"),
])
def test_impossible_requests_are_refused(demo_url, tmp_path, overrides, message):
    with pytest.raises(SourceError, match=message):
        download(demo_url, tmp_path, **overrides)
    assert not (tmp_path / MANIFEST).exists()


def test_unreachable_url_names_the_source(tmp_path):
    url = "http://127.0.0.1:9/UCF101.zip"
    with pytest.raises(SourceError, match="cannot read the source http://127.0.0.1:9/UCF101.zip"):
        download(url, tmp_path, retries=1)
    assert not (tmp_path / MANIFEST).exists()


def test_a_zip_of_loose_videos_without_ucf101_names(tmp_path):
    bad = tmp_path / "photos.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("photos/cat.jpg", b"jpeg")
        zf.writestr("videos/clip01.avi", b"avi")
    with serve_directory(tmp_path) as base_url, pytest.raises(
            SourceError, match="videos/clip01.avi is not in a class folder and not named like UCF101's"):
        download(f"{base_url}/photos.zip", tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(SourceError, match="cannot read the source .*not.zip"):
        download(str(tmp_path / "not.zip"), tmp_path / "out", retries=1)


class Flaky(RangeRequestHandler):
    """Answers each byte range first with 503, then cut off halfway, then whole."""

    seen: dict[str, int] = {}
    faults: list[str] = []

    def send_head(self):
        key = self.headers.get("Range")
        self.cut = False
        if key is not None:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] == 1:
                self.faults.append("503")
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
                return None
            self.cut = self.seen[key] == 2
        return super().send_head()

    def copyfile(self, source, outputfile):
        if not self.cut or self._remaining is None:
            return super().copyfile(source, outputfile)
        self.faults.append("cut")
        outputfile.write(source.read(self._remaining // 2))
        self.close_connection = True


def test_faults_are_retried_until_the_subset_is_whole_and_verified(demo_zip, tmp_path, monkeypatch):
    from components.download_subset import download as stage

    monkeypatch.setattr(stage, "BACKOFF_SECONDS", 0.01)
    with serve_directory(demo_zip.parent, Flaky) as base_url:
        manifest = download(f"{base_url}/{demo_zip.name}", tmp_path, threads=4)
    assert len(manifest["files"]) == 36
    # Members inside the 64 KiB that a handle reads first need no request of their own; every
    # other member's read failed twice (503, then cut off) before it came whole.
    assert Flaky.faults.count("503") >= 24 and Flaky.faults.count("cut") >= 24
    for entry in manifest["files"]:
        assert zlib.crc32((tmp_path / entry["path"]).read_bytes()) == entry["crc32"]


def test_unsafe_names_are_refused_and_bad_videos_reported(demo_zip, real_clips, tmp_path):
    from components.extract_frames.config import ClipSpec
    from components.extract_frames.extract import extract_dataset

    real = real_clips["mpeg4_320x240_25fps_164f.avi"].read_bytes()
    hostile = tmp_path / "zip" / "UCF101.zip"
    hostile.parent.mkdir()
    replaced = {"UCF101/v_DriftDown_g01_c01.avi": b"",
                "UCF101/v_DriftDown_g01_c02.avi": b"not a video, only text",
                "UCF101/v_DriftDown_g01_c03.avi": real[: len(real) // 2]}
    with zipfile.ZipFile(demo_zip) as source, zipfile.ZipFile(hostile, "w") as zf:
        for info in source.infolist():
            zf.writestr(info.filename, replaced.get(info.filename, source.read(info)))
        zf.writestr("../v_DriftDown_g09_c01.avi", real)
        zf.writestr("/tmp/v_DriftDown_g09_c02.avi", real)
        zf.writestr("UCF101/README.txt", b"not a video")
    out = tmp_path / "work" / "videos"
    with serve_directory(hostile.parent) as base_url:
        manifest = download(f"{base_url}/UCF101.zip", out, train_per_class=6, val_per_class=3,
                            test_per_class=3)  # every clip of the zip
    assert manifest["ignored"] == {"count": 1, "examples": ["UCF101/README.txt"]}
    assert manifest["refused"] == [
        {"member": "../v_DriftDown_g09_c01.avi", "reason": "a '..' component"},
        {"member": "/tmp/v_DriftDown_g09_c02.avi", "reason": "an absolute path"}]
    written = {p for p in (tmp_path / "work").rglob("*") if p.is_file()}
    assert all(out in p.parents for p in written) and len(written) == 48 + 1  # the clips, the manifest
    assert not list(tmp_path.glob("v_*")) and not Path("/tmp/v_DriftDown_g09_c02.avi").exists()
    assert all(f["group"] != "9" for f in manifest["files"])

    frames = extract_dataset(out, tmp_path / "work" / "frames",
                             ClipSpec(n_frames=4, frame_step=2, height=32, width=32, clips_per_train_video=1),
                             max_failed_fraction=0.1)
    failed = {v["video"].rsplit("/", 1)[-1]: v["error"] for v in frames["videos"] if v["status"] == "failed"}
    assert set(failed) == {name.rsplit("/", 1)[-1] for name in replaced}
    assert "cannot open" in failed["v_DriftDown_g01_c01.avi"]
    assert "cannot open" in failed["v_DriftDown_g01_c02.avi"]
    assert "truncated" in failed["v_DriftDown_g01_c03.avi"]


def test_bucket_source_and_destination(demo_zip, bucket, monkeypatch):
    """A zip in a bucket (gs:// in the Cloud Storage emulator, s3:// in moto's S3 server) to a
    prefix of that bucket, through fsspec."""
    import fsspec

    fs = fsspec.filesystem(bucket.split("://")[0])
    fs.put_file(str(demo_zip), f"{bucket}/datasets/UCF101.zip")
    destination = f"{bucket}/videos"
    manifest = download(f"{bucket}/datasets/UCF101.zip", destination)
    for entry in manifest["files"]:
        assert zlib.crc32(fs.cat_file(f"{destination}/{entry['path']}")) == entry["crc32"]
    assert json.loads(fs.cat_file(f"{destination}/manifest.json")) == manifest
    # A re-run finds every file whole and writes none of them again, only the manifest.
    written = []
    monkeypatch.setattr(Folder, "write_bytes", lambda self, name, data: written.append(name))
    download(f"{bucket}/datasets/UCF101.zip", destination)
    assert written == ["manifest.json"]
