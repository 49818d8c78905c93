import json
import zipfile
import zlib

import pytest

from components.common import MANIFEST
from components.download_subset.download import SourceError, download_subset_to
from pipelines.range_server import serve_directory


def download(source, out, **overrides):
    params = {"num_classes": 4, "train_per_class": 4, "val_per_class": 2, "test_per_class": 3,
              "seed": 0, **overrides}
    return download_subset_to(source, out, **params)


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
    from pipelines.range_server import RangeRequestHandler

    ranges, sent = [], []

    class Counting(RangeRequestHandler):
        def copyfile(self, source, outputfile):
            ranges.append(self.headers.get("Range"))
            start = source.tell()
            super().copyfile(source, outputfile)
            sent.append(source.tell() - start)

    with serve_directory(demo_zip.parent, Counting) as base_url:
        manifest = download(f"{base_url}/{demo_zip.name}", tmp_path, num_classes=1,
                            train_per_class=1, val_per_class=1, test_per_class=1)
    assert None not in ranges, "a request fetched the whole zip"
    clip_bytes = sum(f["size"] for f in manifest["files"])
    assert clip_bytes <= sum(sent) < clip_bytes + 128 * 1024 < demo_zip.stat().st_size


@pytest.mark.parametrize(("overrides", "message"), [
    ({"num_classes": 5}, "num_classes=5 asked, but .* has only 4 classes"),
    ({"train_per_class": 8}, "class DriftDown has 9 clips .* fewer than the 13"),
    ({"val_per_class": 0}, "val_per_class must be at least 1"),
])
def test_impossible_requests_are_refused(demo_url, tmp_path, overrides, message):
    with pytest.raises(SourceError, match=message):
        download(demo_url, tmp_path, **overrides)
    assert not (tmp_path / MANIFEST).exists()


def test_unreachable_url_names_the_source(tmp_path):
    url = "http://127.0.0.1:9/UCF101.zip"
    with pytest.raises(SourceError, match="cannot read a zip at http://127.0.0.1:9/UCF101.zip"):
        download(url, tmp_path)
    assert not (tmp_path / MANIFEST).exists()


def test_zip_without_ucf101_layout(tmp_path):
    bad = tmp_path / "photos.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("photos/cat.jpg", b"jpeg")
        zf.writestr("videos/clip01.avi", b"avi")
    with serve_directory(tmp_path) as base_url, \
            pytest.raises(SourceError, match="not in UCF101's layout.*photos/cat.jpg"):
        download(f"{base_url}/photos.zip", tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "not.zip").write_text("hello")
    with pytest.raises(SourceError, match="cannot read a zip at .*not.zip"):
        download(str(tmp_path / "not.zip"), tmp_path / "out")
