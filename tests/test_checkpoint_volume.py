"""The checkpoint volume check of the training step (components/train_model/volume.py): a folder
the images' user (uid 1000) cannot write, as a new block volume's root-owned 0755 root is, stops
training before epoch 1 with its owner, mode and what to do; a writable one is made and left as
it was."""

import os
import tempfile
from pathlib import Path

import pytest

from components.train_model.volume import CheckpointVolumeError, check_writable

IMAGE_UID = 1000  # the images' user (images/Dockerfile)


def check_as_image_user(folder) -> str:
    """The check's error message ("" when it passes), run by uid 1000 as in the training pod: in a
    forked child where the tests run as root (root may write anywhere), else in this process."""
    if os.getuid() != 0:
        try:
            check_writable(folder)
        except CheckpointVolumeError as e:
            return str(e)
        return ""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the images' user, check, report, and leave without cleanup
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(IMAGE_UID)
            os.setuid(IMAGE_UID)
            check_writable(folder)
            message = ""
        except CheckpointVolumeError as e:
            message = str(e)
        except BaseException as e:  # noqa: BLE001 (reported to the parent)
            message = f"unexpected {e!r}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.fixture
def reachable(tmp_path):
    """A folder every user can reach (pytest's own temporary folders are their owner's alone)."""
    with tempfile.TemporaryDirectory(prefix="videoclf-volume-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def test_a_writable_folder_is_made_and_left_clean(tmp_path):
    folder = tmp_path / "volume" / "run-1"
    check_writable(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_root_owned_volume_root_stops_training_with_what_to_do(reachable):
    """A folder of another user's with mode 0755 (root's, as a new PersistentVolume's root is)."""
    volume = reachable / "volume"
    volume.mkdir(mode=0o755)
    if os.getuid() != 0:
        volume.chmod(0o555)  # not the user's to write, as near as a non-root user can make it
    message = check_as_image_user(volume / "run-1")
    owner = volume.stat()
    assert f"the checkpoint folder {volume / 'run-1'} cannot be written by this pod" in message, message
    assert f"{volume} belongs to uid {owner.st_uid}, gid {owner.st_gid}, mode {owner.st_mode & 0o7777:04o}" \
        in message
    assert "COMPILED_PIPELINE_SPEC_PATCH" in message and "gs:// or s3://" in message
    assert not (volume / "run-1").exists()
    volume.chmod(0o755)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a folder to another user")
def test_a_folder_made_writable_once_is_accepted(reachable):
    volume = reachable / "volume"
    volume.mkdir(mode=0o755)
    os.chown(volume, IMAGE_UID, IMAGE_UID)
    assert check_as_image_user(volume / "run-1") == ""
    assert (volume / "run-1").is_dir()
