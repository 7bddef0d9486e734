"""CIFAR-FS: the published class split, and loading from a small archive in CIFAR-100's real format."""
from __future__ import annotations

import hashlib

import pytest
import torch

from fixtures_data import (
    CIFAR100_FINE_LABELS,
    cifar_pixel,
    files_under,
    write_cifar100_archive,
    write_tar_gz,
)
from metabook_learn.data import cifar_fs
from metabook_learn.data.cifar_fs import CIFAR_FS_SPLITS, cifar_fs_classes, load_cifar_fs
from metabook_learn.data.storage import DataError, UpstreamFile

pytestmark = pytest.mark.usefixtures("no_data_environment")


def test_split_lists_are_64_16_20_disjoint_and_cover_cifar100():
    train, val, test = (set(CIFAR_FS_SPLITS[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (64, 16, 20)
    assert sum(len(names) for names in CIFAR_FS_SPLITS.values()) == 100  # no duplicates inside a list
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(CIFAR100_FINE_LABELS) and len(CIFAR100_FINE_LABELS) == 100
    assert {"whale", "woman", "worm"} <= test and {"otter", "tractor"} <= val


def test_unknown_split():
    with pytest.raises(DataError, match="unknown CIFAR-FS split 'valid'; choose one of train, val, test"):
        cifar_fs_classes("valid")


@pytest.fixture
def fixture_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    write_cifar100_archive(mirror / "cifar-100" / "cifar-100-python.tar.gz", train_per_class=3, test_per_class=1)
    return mirror


def test_loads_every_split_from_the_archive(tmp_path, fixture_mirror):
    before = files_under(fixture_mirror)
    cache = tmp_path / "cache"
    for split, count in (("train", 64), ("val", 16), ("test", 20)):
        data = load_cifar_fs(split, cache=cache, mirror=fixture_mirror, allow_download=False)
        assert data.num_classes == count and data.class_names == list(CIFAR_FS_SPLITS[split])
        assert data.images.shape == (count * 4, 3, 32, 32) and data.images.dtype == torch.uint8
        assert set(data.sizes.tolist()) == {4}  # 3 training + 1 test image per class in the fixture
        label = CIFAR100_FINE_LABELS.index(data.class_names[1])
        block = data.images[int(data.starts[1]): int(data.starts[1]) + 4]
        assert [int(image[0, 0, 0]) for image in block] == [cifar_pixel(label, i) for i in range(4)]
    assert files_under(fixture_mirror) == before
    assert sorted(p.name for p in (cache / "cifar-100").glob("*.pt")) == [
        "cifar-fs-test-v1.pt", "cifar-fs-train-v1.pt", "cifar-fs-val-v1.pt"]


def test_checksum_mismatch_of_a_download(tmp_path, monkeypatch):
    served = write_cifar100_archive(tmp_path / "server" / "cifar-100-python.tar.gz", 1, 1)
    wrong = hashlib.md5(b"something else").hexdigest()
    monkeypatch.setattr(cifar_fs, "CIFAR100_ARCHIVE", UpstreamFile(
        "cifar-100", "cifar-100-python.tar.gz", served.as_uri(), wrong))
    with pytest.raises(DataError, match=f"checksum mismatch.*expected MD5 {wrong}"):
        load_cifar_fs("train", cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.tar.gz")) and not list((tmp_path / "cache").rglob("*.pt"))


def test_a_download_with_the_right_checksum_is_used(tmp_path, monkeypatch):
    served = write_cifar100_archive(tmp_path / "server" / "cifar-100-python.tar.gz", 1, 1)
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar_fs, "CIFAR100_ARCHIVE", UpstreamFile(
        "cifar-100", "cifar-100-python.tar.gz", served.as_uri(), md5))
    assert load_cifar_fs("val", cache=tmp_path / "cache").num_classes == 16


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    write_tar_gz(mirror / "cifar-100" / "cifar-100-python.tar.gz", {"../../outside": b"x"})
    with pytest.raises(DataError, match="refusing to unpack.*'..' component"):
        load_cifar_fs("test", cache=tmp_path / "cache", mirror=mirror)
    assert not (tmp_path / "outside").exists()


def test_an_archive_that_is_not_cifar100_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    import pickle

    write_tar_gz(mirror / "cifar-100" / "cifar-100-python.tar.gz", {
        "cifar-100-python/meta": pickle.dumps({b"fine_label_names": [b"cat", b"dog"]}, protocol=2)})
    with pytest.raises(DataError, match="does not list the 100 CIFAR-100 classes"):
        load_cifar_fs("train", cache=tmp_path / "cache", mirror=mirror)


def test_truncated_archive_is_a_clear_error(tmp_path):
    mirror = tmp_path / "mirror"
    archive = write_cifar100_archive(mirror / "cifar-100" / "cifar-100-python.tar.gz", 1, 1)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar_fs("train", cache=tmp_path / "cache", mirror=mirror)
