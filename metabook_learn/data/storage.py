"""Where data sets live on disk, and how they get there safely.

Two folders matter:

* the **cache** (``METABOOK_DATA``, default ``$XDG_CACHE_HOME/metabook`` or
  ``~/.cache/metabook``): writable; holds downloads, unpacked archives and
  preprocessed tensors;
* the optional **mirror** (``METABOOK_MIRROR``): a read-only folder of upstream
  archives laid out as ``<mirror>/<data set>/<upstream file name>``, for
  example ``<mirror>/omniglot/images_background.zip``. It is searched before
  any download and never written to.

Every write goes to a temporary name beside its target and is renamed into
place only once complete, so a crash, a full disk or a bad checksum never
leaves a half-written file that a later run would trust. Downloads, unpacking
and preprocessing also take a lock (:func:`metabook_learn.files.exclusive`), so two processes that
prepare the same data set at once do the work once: the second waits and then
finds the result. A folder that is read-only, or a full disk, is one
:class:`CannotWrite` error that says so.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import torch

from metabook_learn.errors import UserError
from metabook_learn.files import (  # noqa: F401 (CannotWrite, atomic_output, file_lock, lock_holder: re-exported)
    CannotWrite, atomic_output, exclusive, file_lock, lock_holder, remove_leftovers)

__all__ = [
    "DataError",
    "CannotWrite",
    "file_lock",
    "lock_holder",
    "remove_leftovers",
    "UpstreamFile",
    "cache_dir",
    "mirror_dir",
    "fetch",
    "download",
    "check_archive",
    "extract_archive",
    "atomic_output",
    "open_image",
    "save_tensors",
    "load_tensors",
    "cached_tensors",
]

CACHE_ENV = "METABOOK_DATA"
MIRROR_ENV = "METABOOK_MIRROR"


class DataError(UserError):
    """A data set is missing, corrupt or malformed; the message says what to do."""


@dataclass(frozen=True)
class UpstreamFile:
    """One file as its authors distribute it.

    ``dataset`` names the subfolder used in the mirror and in the cache;
    ``md5`` is the checksum of the official download (``None`` where there is
    no official copy, as for mini-ImageNet).
    """

    dataset: str
    filename: str
    url: str | None = None
    md5: str | None = None


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The writable data folder: ``cache``, else ``$METABOOK_DATA``, else the user's cache folder."""
    if cache is not None:
        return Path(cache).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "metabook"


def mirror_dir(mirror: str | os.PathLike | None = None) -> Path | None:
    """The read-only folder of upstream archives: ``mirror``, else ``$METABOOK_MIRROR``, else none."""
    if mirror is not None:
        return Path(mirror).expanduser()
    if os.environ.get(MIRROR_ENV):
        return Path(os.environ[MIRROR_ENV]).expanduser()
    return None


# ---------------------------------------------------------------- atomic writes


def _how_to_provide(file: UpstreamFile, cache_copy: Path) -> str:
    return (
        f"to provide it, put it at {cache_copy}, or in a mirror folder as "
        f"<mirror>/{file.dataset}/{file.filename} and set {MIRROR_ENV} (or pass --mirror)"
    )


def fetch(
    file: UpstreamFile,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> Path:
    """Path to a usable local copy of ``file``, looking in the cache, then the mirror, then upstream.

    * A copy in ``<cache>/downloads/<data set>/`` (an earlier download, or a
      file the user put there) is used as it is.
    * A mirror copy is read in place. It is not compared with the upstream
      MD5 (mirrors may re-encode an archive without changing its content) but
      it is checked structurally, so a truncated copy fails here, clearly.
    * Otherwise the file is downloaded (when ``allow_download`` and a URL is
      known), checked against the upstream MD5, and stored in the cache.
    """
    cache_copy = cache_dir(cache) / "downloads" / file.dataset / file.filename
    if cache_copy.is_file():
        check_archive(cache_copy)
        return cache_copy
    looked = [str(cache_copy)]
    root = mirror_dir(mirror)
    if root is not None:
        mirror_copy = root / file.dataset / file.filename
        if mirror_copy.is_file():
            check_archive(mirror_copy)
            return mirror_copy
        looked.append(str(mirror_copy))
    else:
        looked.append(f"no mirror (set {MIRROR_ENV} or pass --mirror)")
    where = f"{file.dataset} file {file.filename!r} not found (looked in: {'; '.join(looked)})"
    if not allow_download or file.url is None:
        reason = "it has no official download" if file.url is None else "downloading was not allowed"
        raise DataError(f"{where}; {reason}; {_how_to_provide(file, cache_copy)}")
    try:
        with exclusive(cache_copy):
            if not cache_copy.is_file():  # else another process downloaded it while this one waited
                download(file.url, cache_copy, file.md5)
    except CannotWrite:
        raise
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"{where}; downloading {file.url} failed ({_one_line(error)}); {_how_to_provide(file, cache_copy)}"
        ) from None
    check_archive(cache_copy)
    return cache_copy


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def download(url: str, destination: Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``destination`` through a temporary file; check ``md5`` before the rename.

    A checksum mismatch raises ``DataError`` and leaves nothing behind.
    ``file://`` URLs work too, which is how the tests simulate a server.
    """
    with atomic_output(destination) as temporary:
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=60) as response, open(temporary, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DataError(
                f"checksum mismatch for {url}: expected MD5 {md5}, got {digest.hexdigest()}; "
                "the download is corrupt or the file changed upstream; nothing was kept, try again later "
                f"or put a good copy at {destination}"
            )
    return destination


# ---------------------------------------------------------------- archives


def _archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".gz"):
        return "gz"
    return None


def check_archive(path: Path) -> None:
    """Raise ``DataError`` if the zip, gzip or tar archive at ``path`` is truncated or corrupt.

    Reads the whole archive: zip members are checked against their CRCs,
    gzip streams against their trailer CRC and length. Other files pass.
    """
    kind = _archive_kind(path)
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                bad_member = archive.testzip()
            if bad_member is not None:
                raise zipfile.BadZipFile(f"member {bad_member!r} fails its CRC check")
        elif kind in ("gz", "tar.gz"):
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass
        if kind in ("tar", "tar.gz"):
            with tarfile.open(path) as archive:
                archive.getmembers()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"{path} is truncated or corrupt ({_one_line(error)}); replace it with a fresh copy "
            "(if it is in the cache, delete it and run `python -m metabook_learn data prepare NAME` again)"
        ) from None


def _member_path(root: Path, name: str, archive: Path) -> Path:
    """Where archive member ``name`` goes under ``root``; refuses names that would leave ``root``."""
    unsafe = None
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
        unsafe = "an absolute path"
    elif ".." in posix.parts:
        unsafe = "a '..' component"
    if unsafe:
        raise DataError(
            f"refusing to unpack {archive}: its entry {name!r} has {unsafe} and would land outside "
            f"the target folder; the archive is damaged or malicious, get a fresh copy"
        )
    return root.joinpath(*[part for part in posix.parts if part not in ("", ".")])


def _check_link(root: Path, member_path: Path, link: str, archive: Path, name: str) -> None:
    """Refuse a link whose target resolves outside ``root`` (absolute, or climbing out with '..')."""
    target = PurePosixPath(link.replace("\\", "/"))
    inside = not target.is_absolute()
    if inside:
        depth = len(member_path.relative_to(root).parts) - 1
        for part in target.parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                inside = False
                break
    if not inside:
        raise DataError(
            f"refusing to unpack {archive}: its entry {name!r} is a link to {link!r}, outside the target "
            "folder; the archive is damaged or malicious, get a fresh copy"
        )


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        destinations = [_member_path(root, member.filename, archive) for member in members]
        for member, destination in zip(members, destinations):
            if stat.S_ISLNK(member.external_attr >> 16):
                _check_link(root, destination, zipped.read(member).decode(), archive, member.filename)
        for member, destination in zip(members, destinations):
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            # Links are written as small files holding their target, as zipfile itself does.
            with zipped.open(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive) as tarred:
        members = tarred.getmembers()
        for member in members:
            destination = _member_path(root, member.name, archive)
            if member.issym():
                _check_link(root, destination, member.linkname, archive, member.name)
            elif member.islnk():
                # Hard-link targets are named from the archive root.
                _check_link(root, root / "_", member.linkname, archive, member.name)
            elif not (member.isfile() or member.isdir()):
                raise DataError(
                    f"refusing to unpack {archive}: its entry {member.name!r} is a device or pipe, "
                    "which no data set contains; get a fresh copy"
                )
        if hasattr(tarfile, "data_filter"):
            # Defence in depth: the standard library's own checks (Python >= 3.11.4).
            tarred.extractall(root, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; every member was checked above
            tarred.extractall(root, members=members)


def extract_archive(archive: Path, target: Path) -> Path:
    """Unpack the zip or tar archive ``archive`` into the folder ``target``, all or nothing.

    The archive is unpacked into a temporary folder beside ``target`` and
    renamed once complete; if ``target`` exists it is trusted and returned.
    Entries with absolute paths, ``..`` components or links leading outside
    ``target`` are refused before anything is written.
    """
    if target.is_dir():
        return target
    kind = _archive_kind(archive)
    if kind not in ("zip", "tar", "tar.gz"):
        raise DataError(f"cannot unpack {archive}: not a .zip, .tar or .tar.gz archive")
    try:
        with exclusive(target):
            if target.is_dir():  # another process unpacked it while this one waited
                return target
            with atomic_output(target, directory=True) as temporary:
                (_extract_zip if kind == "zip" else _extract_tar)(archive, temporary)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as error:
        raise DataError(f"{archive} is truncated or corrupt ({_one_line(error)}); replace it") from None
    return target


# ---------------------------------------------------------------- images


@contextlib.contextmanager
def open_image(path: Path) -> Iterator:
    """``PIL.Image.open(path)`` for the block; a file that is not a readable image is one ``DataError``.

    PIL reads lazily, so a truncated image fails inside the block (at
    ``convert``), which is why the block is covered too.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            yield image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} is not a readable image ({_one_line(error)}); the data set holds a damaged or "
                        "foreign file: replace the archive or folder it came from") from None


# ---------------------------------------------------------------- tensor cache


def save_tensors(content: dict, path: Path) -> None:
    """``torch.save`` through a temporary file, so a reader never sees half a cache file."""
    with atomic_output(path) as temporary:
        torch.save(content, temporary)


def load_tensors(path: Path) -> dict | None:
    """The dictionary saved at ``path``, or ``None`` when it is missing or unreadable.

    ``weights_only=True``: a cache file can hold tensors, numbers, strings and
    containers, never code.
    """
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache is rebuilt, not fatal
        return None


def cached_tensors(path: Path, build: Callable[[], dict]) -> dict:
    """Load the preprocessed tensors at ``path``, or ``build()`` them and save them there first.

    ``path`` should name everything the content depends on (image size,
    resampling, a format version), so a change of any of them builds afresh.
    """
    content = load_tensors(path)
    if content is None:
        with exclusive(path):
            content = load_tensors(path)  # another process may have built it while this one waited
            if content is None:
                content = build()
                save_tensors(content, path)
    return content
