"""Files that appear whole or not at all, and locks between processes: shared by the data cache and the checkpoints.

Every write goes to a temporary name beside its target (``.NAME.partial-*``)
and is renamed into place only once complete (:func:`atomic_output`), so a
crash, a full disk or a bad checksum never leaves a half-written file that a
later run would trust. :func:`file_lock` and :func:`exclusive` let one
process at a time produce a file; :class:`CannotWrite` turns a read-only
folder or a full disk into one message that says what to do.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from metabook_learn.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None

__all__ = ["CannotWrite", "atomic_output", "exclusive", "file_lock", "lock_holder", "remove_leftovers"]


class CannotWrite(UserError, OSError):
    """A folder is read-only or its disk is full; an ``OSError`` whose message says which and what to do."""


_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


@contextlib.contextmanager
def _writing(destination: Path, errors: set[int] = _UNWRITABLE) -> Iterator[None]:
    """Turn "permission denied", "read-only file system" and "no space left" (``errors``) while writing
    ``destination`` into one :class:`CannotWrite` that says what to do; other errors pass unchanged."""
    try:
        yield
    except CannotWrite:
        raise
    except OSError as error:
        if error.errno not in errors:
            raise
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        what = ("the disk is full: free some space or choose a folder on another disk" if full else
                "the folder is not writable: fix its permissions or choose another")
        cannot = CannotWrite(f"cannot write {destination} ({os.strerror(error.errno)}); {what} (data: --cache DIR "
                             f"or $METABOOK_DATA; training: --checkpoint PATH)")
        cannot.errno = error.errno
        raise cannot from None


@contextlib.contextmanager
def file_lock(lock_path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on the file ``lock_path`` during the block; yield whether it is held.

    ``wait=True`` waits for another holder to finish; ``wait=False`` yields
    ``False`` at once when another process holds it. The lock is the
    operating system's (``flock``): it ends with its process, however that
    process ends, so a lock left by a killed run never blocks the next one.
    The file holds the holder's process id and host, and is removed on
    release. Where ``fcntl`` is missing (Windows) or the file system has no
    locks, the block runs unlocked; the atomic renames still keep every file
    whole.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    with _writing(lock_path):
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(handle)
                handle = None
                break
            except OSError as error:  # a file system without locks (some network mounts): go on unlocked
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                break
            try:
                current = os.stat(lock_path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(handle).st_ino:
                break
            os.close(handle)  # the holder removed the file while we waited: lock the one there now
        if handle is not None:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()} {socket.gethostname()}\n".encode())
    if handle is None:
        yield False
        return
    try:
        yield True
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(handle)


def lock_holder(lock_path: Path) -> str:
    """Who holds ``lock_path``, in words: "process 1234 on host", as its file says."""
    try:
        pid, _, host = lock_path.read_text().strip().partition(" ")
    except OSError:
        pid = host = ""
    return f"process {pid} on {host}" if pid else "another process"


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
    or folder is deleted. A read-only folder or a full disk raises
    :class:`CannotWrite`.
    """
    with _writing(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        prefix = _partial_prefix(destination)
        if directory:
            temporary = Path(tempfile.mkdtemp(dir=destination.parent, prefix=prefix))
        else:
            handle, name = tempfile.mkstemp(dir=destination.parent, prefix=prefix)
            os.close(handle)
            temporary = Path(name)
    try:
        # The block may also read files: only a full or read-only disk is surely about the writing.
        with _writing(destination, {errno.ENOSPC, errno.EDQUOT, errno.EROFS}):
            yield temporary
        with _writing(destination):
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


def _partial_prefix(destination: Path) -> str:
    return f".{destination.name}.partial-"


@contextlib.contextmanager
def exclusive(destination: Path) -> Iterator[None]:
    """Let one process at a time produce ``destination``; the others wait, then find it done.

    Inside the block no other process is writing ``destination``, so what a
    killed process left beside it (``.NAME.partial-*``) is deleted first:
    nothing half-written is ever trusted, nor kept.
    """
    with file_lock(destination.with_name(f".{destination.name}.lock")):
        remove_leftovers(destination)
        yield


def remove_leftovers(destination: Path) -> None:
    """Delete what a killed writer of ``destination`` left beside it (``.NAME.partial-*``).

    Call it only while holding a lock that every writer of ``destination`` takes.
    """
    for leftover in destination.parent.glob(_partial_prefix(destination) + "*"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


# ---------------------------------------------------------------- finding files
