"""Files on a local disk (a node's, a mounted volume), in Cloud Storage (``gs://``) or in S3 and
S3-compatible stores such as MinIO (``s3://``), through fsspec (gcsfs, s3fs).

Credentials come from each library's own chain: Application Default Credentials for ``gs://``
(Workload Identity on GKE, the run's service account on Vertex AI), and the AWS variables for
``s3://`` (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, and ``AWS_ENDPOINT_URL`` for MinIO).
Writes are atomic: a local file is written under a temporary name and renamed, and an object
appears whole when its upload ends.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import IO

from components.common import atomic_write_bytes

REMOTE_SCHEMES = ("gs://", "s3://")
# A Kubernetes Secret's keys for S3 (those of Kubeflow's own MinIO secret, mlpipeline-minio-artifact),
# and the AWS variables a pod gets them as.
S3_SECRET_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
READ_BLOCK = 1 << 20  # bytes a remote file reads ahead: about one video of a zip


def is_remote(url: str) -> bool:
    """Whether ``url`` names an object store rather than a local path."""
    return str(url).startswith(REMOTE_SCHEMES)


def filesystem(url: str):
    """The fsspec file system of a ``gs://`` or ``s3://`` URL, and the path within it."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise ImportError(f"{url} needs {e.name or 'its fsspec back end'}: "
                          "pip install 'videoclf[data]' (gcsfs, s3fs)") from e


def open_input(url: str) -> IO[bytes]:
    """A seekable binary file to read, local or remote (read in blocks, as a zip is read)."""
    if not is_remote(url):
        return open(url, "rb")  # noqa: SIM115 (the caller closes it)
    fs, path = filesystem(url)
    return fs.open(path, "rb", block_size=READ_BLOCK, cache_type="readahead")


class Folder:
    """Named files under a local directory, a ``gs://bucket/prefix`` or an ``s3://bucket/prefix``."""

    def __init__(self, uri: str):
        self.uri = str(uri).rstrip("/")
        if is_remote(self.uri):
            self._fs, self._root = filesystem(self.uri)
        else:
            self._fs, self._root = None, self.uri

    def _path(self, name: str) -> str:
        return f"{self._root}/{name}"

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""
        if self._fs is None:
            path = Path(self._path(name))
            return path.read_bytes() if path.is_file() else None
        try:
            return self._fs.cat_file(self._path(name))
        except FileNotFoundError:
            return None

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when there is no such file."""
        data = self.read_bytes(name)
        return None if data is None else data.decode()

    def holds(self, name: str, size: int, crc32: int) -> bool:
        """Whether the file is there whole: its size and CRC-32 are these."""
        if self._fs is None:
            path = Path(self._path(name))
            present = path.is_file() and path.stat().st_size == size
        else:
            present = self._fs.exists(self._path(name)) and self._fs.size(self._path(name)) == size
        return present and zlib.crc32(self.read_bytes(name)) == crc32

    def write_bytes(self, name: str, data: bytes) -> None:
        if self._fs is None:
            atomic_write_bytes(Path(self._path(name)), data)
        else:
            self._fs.pipe_file(self._path(name), data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def upload(self, local: Path, name: str) -> None:
        """Copies a local file into the folder under ``name``."""
        if self._fs is None:
            atomic_write_bytes(Path(self._path(name)), Path(local).read_bytes())
        else:
            self._fs.put_file(str(local), self._path(name))

    def download(self, name: str, local: Path) -> None:
        """Copies the folder's file ``name`` to a local path."""
        if self._fs is None:
            atomic_write_bytes(Path(local), Path(self._path(name)).read_bytes())
        else:
            self._fs.get_file(self._path(name), str(local))

    def delete(self, name: str) -> None:
        """Removes the file if it is there."""
        if self._fs is None:
            Path(self._path(name)).unlink(missing_ok=True)
        elif self._fs.exists(self._path(name)):
            self._fs.rm_file(self._path(name))
