"""The checkpoint volume of a training pod (a PersistentVolumeClaim on Kubeflow), checked before
epoch 1: a folder the pod cannot write would fail at the first end-of-epoch save.

The images run as uid 1000, and a new block-storage volume's root belongs to root with mode 0755.
Kubernetes makes a volume writable to a pod through the pod's ``securityContext.fsGroup``, which a
pipeline cannot set: kfp-kubernetes' ``set_security_context`` takes ``run_as_user``,
``run_as_group`` and ``run_as_non_root`` only (kubernetes_platform/proto/
kubernetes_executor_config.proto, ``SecurityContext``, 2.17.0).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


class CheckpointVolumeError(PermissionError):
    """The checkpoint folder cannot be written; says who owns it and what to do."""


def check_writable(folder: Path) -> None:
    """Creates ``folder`` where need be and writes a file in it; raises CheckpointVolumeError,
    naming the owner and mode of the folder that refused and this process's user, when it cannot."""
    folder = Path(folder)
    probe = folder / f".write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if e.errno not in REFUSED:
            raise
        refused = next(path for path in (folder, *folder.parents) if path.exists())
        found = refused.stat()
        raise CheckpointVolumeError(
            f"the checkpoint folder {folder} cannot be written by this pod (uid {os.getuid()}, groups "
            f"{sorted(set(os.getgroups()) | {os.getgid()})}): {refused} belongs to uid {found.st_uid}, gid "
            f"{found.st_gid}, mode {found.st_mode & 0o7777:04o}"
            f"{' on a read-only volume' if e.errno == errno.EROFS else ''}. "
            "A pipeline cannot set its pods' fsGroup: have the Kubeflow Pipelines admin set one for every "
            "run (the API server's COMPILED_PIPELINE_SPEC_PATCH, see docs/kubeflow.md), make the folder "
            f"writable once (chown {os.getuid()} {refused}, from a pod running as root), or give a gs:// or "
            "s3:// --checkpoint-dir") from e
