"""Atomic files: a result appears whole or not at all. Shared by the data cache and the checkpoints.

Every write goes to a temporary name beside its target and is renamed into
place only once complete, so a crash, a full disk or a bad checksum never
leaves a half-written file that a later run would trust.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_output"]


def _settle(temporary: Path, directory: bool) -> None:
    """Before the rename: the permissions a plainly created file or folder would have (mkstemp and
    mkdtemp make them private), and a file's bytes on disk, so a crash cannot leave it empty."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, (0o777 if directory else 0o666) & ~umask)
    if not directory:
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_output(destination: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; move it there only if the block succeeds.

    The temporary name starts with a dot and lives in the same folder, so the
    final ``os.replace`` is a rename on one file system: other processes see
    either nothing or the complete result. On any failure the temporary file
    or folder is deleted.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{destination.name}.partial-"
    if directory:
        temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=prefix))
    else:
        handle, name = tempfile.mkstemp(dir=destination.parent, prefix=prefix)
        os.close(handle)
        temporary = Path(name)
    try:
        yield temporary
        if directory and destination.exists():
            # Another process finished the same work first; keep its result.
            shutil.rmtree(temporary)
        else:
            _settle(temporary, directory)
            os.replace(temporary, destination)
    except BaseException:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
        raise
