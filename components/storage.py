"""A folder that is either local (a node's disk, a mounted PVC) or a ``gs://`` prefix.

Writes are atomic on both: a local file is written under a temporary name and renamed, and a
Cloud Storage object appears whole when its upload ends. ``gs://`` goes through
google-cloud-storage, which honours ``STORAGE_EMULATOR_HOST``.
"""

import shutil
import zlib
from pathlib import Path

from components.common import atomic_write_bytes

GCS_SCHEME = "gs://"


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/name`` -> ``("bucket", "some/name")``."""
    bucket, _, name = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, name


def gcs_bucket(name: str):
    """The google-cloud-storage bucket of that name."""
    from google.cloud import storage

    return storage.Client().bucket(name)


class Folder:
    """Named files under a local directory or a ``gs://bucket/prefix``."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        if self.uri.startswith(GCS_SCHEME):
            bucket, self._prefix = split_gcs_uri(self.uri)
            self._bucket = gcs_bucket(bucket)
        else:
            self._bucket, self._local = None, Path(self.uri)

    def _blob(self, name: str):
        return self._bucket.blob(f"{self._prefix}/{name}" if self._prefix else name)

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when there is no such file."""
        if self._bucket is None:
            path = self._local / name
            return path.read_text() if path.is_file() else None
        blob = self._blob(name)
        return blob.download_as_text() if blob.exists() else None

    def holds(self, name: str, size: int, crc32: int) -> bool:
        """Whether the file is there whole: its size and CRC-32 are these (a Cloud Storage
        object's CRC-32 is read from the metadata that ``write_bytes`` gives it)."""
        if self._bucket is None:
            path = self._local / name
            return (path.is_file() and path.stat().st_size == size
                    and zlib.crc32(path.read_bytes()) == crc32)
        blob = self._bucket.get_blob(self._blob(name).name)
        return blob is not None and blob.size == size and (blob.metadata or {}).get("crc32") == str(crc32)

    def write_bytes(self, name: str, data: bytes) -> None:
        if self._bucket is None:
            atomic_write_bytes(self._local / name, data)
        else:
            blob = self._blob(name)
            blob.metadata = {"crc32": str(zlib.crc32(data))}
            blob.upload_from_string(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def upload(self, local: Path, name: str) -> None:
        """Copies a local file into the folder under ``name``."""
        if self._bucket is None:
            atomic_write_bytes(self._local / name, Path(local).read_bytes())
        else:
            self._blob(name).upload_from_filename(str(local))

    def download(self, name: str, local: Path) -> None:
        """Copies the folder's file ``name`` to a local path."""
        if self._bucket is None:
            shutil.copyfile(self._local / name, local)
        else:
            self._blob(name).download_to_filename(str(local))

    def delete(self, name: str) -> None:
        """Removes the file if it is there."""
        if self._bucket is None:
            (self._local / name).unlink(missing_ok=True)
        elif (blob := self._blob(name)).exists():
            blob.delete()
