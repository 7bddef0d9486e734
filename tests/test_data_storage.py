"""Fetching, checking, unpacking and caching: every failure is one clear error and leaves nothing behind."""
from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
from pathlib import Path

import pytest
import torch

from fixtures_data import files_under, write_tar_gz, write_zip
from metabook_learn.cli import UserError
from metabook_learn.data.storage import (
    DataError,
    atomic_output,
    UpstreamFile,
    cache_dir,
    cached_tensors,
    check_archive,
    extract_archive,
    fetch,
    load_tensors,
    mirror_dir,
    save_tensors,
)

pytestmark = pytest.mark.usefixtures("no_data_environment")


def leftovers(folder: Path) -> list[str]:
    """Temporary names the atomic writers use; none may survive a failure."""
    return [str(p) for p in folder.rglob("*partial*")] if folder.exists() else []


def zip_bytes(entries: dict[str, bytes], tmp_path: Path) -> bytes:
    return write_zip(tmp_path / "scratch" / "a.zip", entries).read_bytes()


def test_data_folders_follow_arguments_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "metabook"
    monkeypatch.setenv("METABOOK_DATA", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert mirror_dir() is None
    monkeypatch.setenv("METABOOK_MIRROR", str(tmp_path / "m"))
    assert mirror_dir() == tmp_path / "m"
    assert mirror_dir(tmp_path / "n") == tmp_path / "n"


def test_data_error_is_a_user_error():
    # The command line prints UserErrors as one line, without a traceback.
    assert issubclass(DataError, UserError)


def test_fetch_reads_the_mirror_in_place_and_never_writes_there(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    write_zip(mirror / "toy" / "toy.zip", {"toy/a.txt": b"hello"})
    before = files_under(mirror)
    path = fetch(UpstreamFile("toy", "toy.zip", url=None, md5="0" * 32), cache, mirror)
    assert path == mirror / "toy" / "toy.zip"  # mirrors are not held to the upstream MD5
    extract_archive(path, cache / "toy" / "toy")
    assert files_under(mirror) == before
    assert (cache / "toy" / "toy" / "toy" / "a.txt").read_bytes() == b"hello"


def test_fetch_prefers_a_copy_in_the_cache(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    write_zip(mirror / "toy" / "toy.zip", {"a": b"mirror"})
    write_zip(cache / "downloads" / "toy" / "toy.zip", {"a": b"cache"})
    assert fetch(UpstreamFile("toy", "toy.zip"), cache, mirror) == cache / "downloads" / "toy" / "toy.zip"


def test_download_checks_the_checksum_and_stores_the_file(tmp_path):
    served = write_zip(tmp_path / "server" / "toy.zip", {"a": b"payload"})
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    path = fetch(UpstreamFile("toy", "toy.zip", served.as_uri(), md5), cache, mirror=None)
    assert path == cache / "downloads" / "toy" / "toy.zip"
    assert path.read_bytes() == served.read_bytes()
    assert leftovers(cache) == []


def test_checksum_mismatch_is_refused_and_nothing_is_kept(tmp_path):
    served = write_zip(tmp_path / "server" / "toy.zip", {"a": b"tampered"})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch.*expected MD5 " + "0" * 32):
        fetch(UpstreamFile("toy", "toy.zip", served.as_uri(), "0" * 32), cache, mirror=None)
    assert list((cache / "downloads" / "toy").iterdir()) == []


def test_missing_file_offline_says_what_where_and_how(tmp_path):
    cache, mirror = tmp_path / "cache", tmp_path / "mirror"
    mirror.mkdir()
    upstream = UpstreamFile("toy", "toy.zip", "https://example.invalid/toy.zip", "0" * 32)
    with pytest.raises(DataError) as error:
        fetch(upstream, cache, mirror, allow_download=False)
    message = str(error.value)
    assert "'toy.zip' not found" in message
    assert str(cache / "downloads" / "toy" / "toy.zip") in message and str(mirror / "toy" / "toy.zip") in message
    assert "METABOOK_MIRROR" in message and "<mirror>/toy/toy.zip" in message
    assert "\n" not in message


def test_failed_download_says_what_where_and_how(tmp_path):
    cache = tmp_path / "cache"
    gone = (tmp_path / "nowhere" / "toy.zip").as_uri()
    with pytest.raises(DataError, match=r"downloading file://.*failed.*to provide it, put it at"):
        fetch(UpstreamFile("toy", "toy.zip", gone, "0" * 32), cache, mirror=None)
    assert leftovers(cache) == []


def test_file_without_official_download_says_so(tmp_path):
    with pytest.raises(DataError, match="no official download"):
        fetch(UpstreamFile("toy", "toy.pkl"), tmp_path / "cache", mirror=None)


def test_truncated_zip_in_the_mirror_is_a_clear_error(tmp_path):
    mirror = tmp_path / "mirror"
    good = zip_bytes({f"f{i}": bytes(range(256)) * 40 for i in range(5)}, tmp_path)
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "toy.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        fetch(UpstreamFile("toy", "toy.zip"), tmp_path / "cache", mirror)


def test_corrupt_zip_member_is_a_clear_error(tmp_path):
    data = bytearray(zip_bytes({"member.bin": b"A" * 1000}, tmp_path))
    data[data.index(b"A" * 100) + 10] ^= 0xFF  # flip stored bytes: the CRC no longer matches
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupt.*CRC"):
        check_archive(tmp_path / "bad.zip")


def test_truncated_and_corrupt_gzip_are_clear_errors(tmp_path):
    packed = gzip.compress(bytes(range(256)) * 200)
    (tmp_path / "short.gz").write_bytes(packed[:-20])
    with pytest.raises(DataError, match="truncated or corrupt"):
        check_archive(tmp_path / "short.gz")
    flipped = bytearray(packed)
    flipped[-6] ^= 0xFF  # inside the CRC-32 trailer
    (tmp_path / "flipped.gz").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="truncated or corrupt"):
        check_archive(tmp_path / "flipped.gz")


def test_truncated_tar_gz_is_a_clear_error(tmp_path):
    archive = write_tar_gz(tmp_path / "a.tar.gz", {"d/x": bytes(range(256)) * 100})
    archive.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated or corrupt"):
        check_archive(archive)


@pytest.mark.parametrize("name", ["../evil.txt", "inside/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"])
def test_zip_entries_escaping_the_target_are_refused(tmp_path, name):
    archive = write_zip(tmp_path / "bad.zip", {"fine.txt": b"ok", name: b"evil"})
    target = tmp_path / "out" / "bad"
    with pytest.raises(DataError, match="refusing to unpack.*(absolute path|'..' component)"):
        extract_archive(archive, target)
    assert not target.exists() and leftovers(tmp_path / "out") == []
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("link", ["../../etc/passwd", "/etc/passwd"])
def test_zip_links_leading_outside_are_refused(tmp_path, link):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("d/fine.txt", b"ok")
        info = zipfile.ZipInfo("d/link")
        info.external_attr = (0o120777 << 16)  # a symbolic link, as `zip --symlinks` stores it
        zipped.writestr(info, link)
    with pytest.raises(DataError, match="is a link to"):
        extract_archive(archive, tmp_path / "out" / "bad")
    assert leftovers(tmp_path / "out") == [] and not (tmp_path / "out" / "bad").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt"])
def test_tar_entries_escaping_the_target_are_refused(tmp_path, name):
    archive = write_tar_gz(tmp_path / "bad.tar.gz", {"fine.txt": b"ok", name: b"evil"})
    target = tmp_path / "out" / "bad"
    with pytest.raises(DataError, match="refusing to unpack"):
        extract_archive(archive, target)
    assert not target.exists() and leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("link", ["../../etc/passwd", "/etc/passwd"])
def test_tar_links_leading_outside_are_refused(tmp_path, link):
    archive = write_tar_gz(tmp_path / "bad.tar.gz", {"d/fine.txt": b"ok"}, symlinks={"d/link": link})
    with pytest.raises(DataError, match="is a link to"):
        extract_archive(archive, tmp_path / "out" / "bad")
    assert leftovers(tmp_path / "out") == []


def test_tar_links_inside_the_target_are_kept(tmp_path):
    archive = write_tar_gz(tmp_path / "ok.tar.gz", {"d/fine.txt": b"ok"}, symlinks={"d/link": "fine.txt"})
    target = extract_archive(archive, tmp_path / "out" / "ok")
    assert (target / "d" / "link").read_bytes() == b"ok"


def test_extraction_is_all_or_nothing(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "a.zip", {f"d/f{i}": b"x" * 10 for i in range(5)})
    target = tmp_path / "out" / "a"
    calls = {"n": 0}
    real_open = zipfile.ZipFile.open

    def failing_open(self, *args, **kwargs):  # the disk "fills up" after three members
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", failing_open)
    with pytest.raises(OSError):
        extract_archive(archive, target)
    assert not target.exists() and leftovers(tmp_path / "out") == []
    monkeypatch.setattr(zipfile.ZipFile, "open", real_open)
    assert sorted(p.name for p in (extract_archive(archive, target) / "d").iterdir()) == [f"f{i}" for i in range(5)]


def test_tensor_cache_round_trip_and_rebuild_of_a_damaged_file(tmp_path):
    path = tmp_path / "c" / "x-v1.pt"
    built = []

    def build():
        built.append(1)
        return {"images": torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3), "class_names": ["a"]}

    first = cached_tensors(path, build)
    second = cached_tensors(path, build)
    assert len(built) == 1 and torch.equal(first["images"], second["images"]) and second["class_names"] == ["a"]
    path.write_bytes(b"not a torch file")
    assert load_tensors(path) is None
    cached_tensors(path, build)
    assert len(built) == 2 and leftovers(tmp_path) == []


def test_a_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(obj, f):
        Path(f).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_tensors({"x": torch.zeros(1)}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_gives_ordinary_permissions(tmp_path):
    """mkstemp makes private files; what atomic_output leaves behind is readable like any new file."""
    umask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "result.json") as temporary:
            temporary.write_text("{}")
        with atomic_output(tmp_path / "folder", directory=True) as temporary:
            (temporary / "x").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
