"""Shared fixtures and file builders for the data tests (``tests/test_data_*.py``).

``tests/conftest.py`` registers this module as a plugin, so its fixtures
(``real_mirror``, ``real_cache``, ``no_data_environment``) are available to every
test module without importing them; the helper functions are imported as usual.

Real data come from the read-only mirror of upstream archives at
``../shared/data`` relative to the repository (``METABOOK_TEST_MIRROR``
overrides it). Everything the loaders write goes to a temporary cache that
lives for the whole test session, so the full Omniglot is decoded once.

The builders write small files in the real on-disk formats (CIFAR-100's
pickled batches in a tar.gz, mini-ImageNet's pickle caches and CSV + JPEG
layout), for the data sets that are too large to mirror.
"""
from __future__ import annotations

import csv
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"

# The 100 fine labels of CIFAR-100, in label order (alphabetical), as its meta file lists them.
CIFAR100_FINE_LABELS = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


def real_mirror_path() -> Path:
    return Path(os.environ.get("METABOOK_TEST_MIRROR", SHARED_MIRROR))


def skip_without(reason: str) -> None:
    """Skip a test that needs missing real data; in CI (``METABOOK_CI=1``, as tests/conftest.py) fail instead."""
    if os.environ.get("METABOOK_CI") == "1":
        pytest.fail(f"{reason} (CI requires it: METABOOK_CI=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_mirror() -> Path:
    """The shared mirror of upstream archives; tests that need it are skipped where it is absent."""
    mirror = real_mirror_path()
    if not (mirror / "omniglot" / "images_background.zip").is_file():
        skip_without(f"no data mirror at {mirror} (set METABOOK_TEST_MIRROR)")
    return mirror


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """One cache folder per test session (per ``pytest-xdist`` worker).

    Every test module that asks for it shares it, so the real data are decoded once.
    """
    path = tmp_path_factory.getbasetemp() / "metabook-real-data-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def no_data_environment(monkeypatch):
    """Tests pass folders explicitly; the developer's own METABOOK_DATA / METABOOK_MIRROR must not leak in.

    Not autouse: the notebooks' nbval tests run in the same pytest process and
    their kernels must keep the environment. The data test modules ask for it
    with ``pytestmark = pytest.mark.usefixtures("no_data_environment")``.
    """
    monkeypatch.delenv("METABOOK_DATA", raising=False)
    monkeypatch.delenv("METABOOK_MIRROR", raising=False)


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file under ``folder``: a snapshot to compare."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


# ---------------------------------------------------------------- archive builders


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def write_tar_gz(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


def cifar_pixel(label: int, index: int) -> int:
    """The pixel value of fixture image ``index`` of class ``label``, so tests can tell images apart."""
    return (7 * label + index) % 256


def write_cifar100_archive(path: Path, train_per_class: int = 3, test_per_class: int = 1) -> Path:
    """A small ``cifar-100-python.tar.gz`` in the real format: pickled dicts with bytes keys.

    Image ``i`` (counting the class's training images first) of class ``c``
    is filled with ``cifar_pixel(c, i)``.
    """
    def batch(per_class: int, offset: int) -> bytes:
        labels = [c for c in range(100) for _ in range(per_class)]
        index = [offset + i for _ in range(100) for i in range(per_class)]
        data = np.stack([np.full(3072, cifar_pixel(c, i), dtype=np.uint8) for c, i in zip(labels, index)])
        content = {b"batch_label": b"fixture", b"fine_labels": labels, b"coarse_labels": [0] * len(labels),
                   b"filenames": [b"x.png"] * len(labels), b"data": data}
        return pickle.dumps(content, protocol=2)

    meta = pickle.dumps({b"fine_label_names": [name.encode() for name in CIFAR100_FINE_LABELS],
                         b"coarse_label_names": [b"coarse"] * 20}, protocol=2)
    return write_tar_gz(path, {
        "cifar-100-python/meta": meta,
        "cifar-100-python/train": batch(train_per_class, 0),
        "cifar-100-python/test": batch(test_per_class, train_per_class),
    })


def wnid(k: int) -> str:
    return f"n{k:08d}"


def write_mini_imagenet_pickle(folder: Path, split: str, num_classes: int, per_class: int = 2,
                               protocol: int = 4) -> Path:
    """``mini-imagenet-cache-<split>.pkl``: images of class ``k`` (wnid ``n0000000k``) filled with ``k``.

    ``class_dict`` lists each class's indices interleaved across classes, as
    the real files do not promise contiguous blocks.
    """
    data = np.zeros((num_classes * per_class, 84, 84, 3), dtype=np.uint8)
    class_dict = {}
    for k in range(num_classes):
        indices = [i * num_classes + k for i in range(per_class)]
        data[indices] = k
        class_dict[wnid(k)] = indices
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mini-imagenet-cache-{split}.pkl"
    path.write_bytes(pickle.dumps({"image_data": data, "class_dict": class_dict}, protocol=protocol))
    return path


def write_mini_imagenet_csv(folder: Path, split: str, num_classes: int, per_class: int = 2,
                            size: tuple[int, int] = (100, 90)) -> Path:
    """``<split>.csv`` plus ``images/*.jpg`` in Ravi and Larochelle's naming; class ``k`` is grey level ``10 k``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["filename", "label"])
        for k in range(num_classes):
            for i in range(per_class):
                filename = f"{wnid(100 + k)}{i + 1:08d}.jpg"
                Image.new("RGB", size, (10 * k, 10 * k, 10 * k)).save(folder / "images" / filename)
                writer.writerow([filename, wnid(100 + k)])
    return path
