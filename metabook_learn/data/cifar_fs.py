"""CIFAR-FS (Bertinetto, Henriques, Torr and Vedaldi, ICLR 2019): CIFAR-100 split by class for few-shot learning.

All 100 CIFAR-100 classes, each with its 600 32x32 colour images (the 500 of
CIFAR-100's training set and the 100 of its test set, in that order), split
into 64 classes for meta-training, 16 for validation and 20 for testing.

The split lists below are those of the R2D2 authors' repository
(``bertinetto/r2d2``, ``cifar-fs_splits/{train,val,test}.txt``, added in commit
9ed0090 and removed in 6adaabf), as reproduced by
Torchmeta's ``cifar-fs`` assets; two independent copies were compared and
agree. They are kept in alphabetical order here; ``cifar_fs_classes`` lists
them and the loader checks they are disjoint and cover the archive's 100
classes.

The data come from the CIFAR-100 "python version" archive
(``cifar-100-python.tar.gz``, https://www.cs.toronto.edu/~kriz/), whose
``train``, ``test`` and ``meta`` files are pickles: they are read with
``metabook_learn.data.safe_pickle``. Mirror layout: ``<mirror>/cifar-100/cifar-100-python.tar.gz``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from metabook_learn.data.classes import ClassImages
from metabook_learn.data.safe_pickle import safe_load
from metabook_learn.data.storage import DataError, UpstreamFile, cache_dir, extract_archive, fetch, load_tensors, save_tensors

__all__ = ["CIFAR100_ARCHIVE", "CIFAR_FS_SPLITS", "cifar_fs_classes", "load_cifar_fs", "prepare_cifar_fs"]

CIFAR100_ARCHIVE = UpstreamFile(
    "cifar-100", "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
)
CIFAR_FS_SPLITS = {
    "train": (
        "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can", "castle",
        "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur", "dolphin", "elephant",
        "forest", "girl", "hamster", "house", "kangaroo", "keyboard", "lawn_mower", "lion", "lizard", "lobster",
        "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "palm_tree", "pear", "pine_tree",
        "plate", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "seal", "shrew", "skunk",
        "skyscraper", "snake", "spider", "squirrel", "streetcar", "sunflower", "tank", "tiger", "train", "trout",
        "tulip", "turtle", "willow_tree", "wolf",
    ),
    "val": (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish", "lamp", "maple_tree",
        "motorcycle", "otter", "sea", "shark", "television", "tractor",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain", "poppy",
        "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale", "woman", "worm",
    ),
}
IMAGES_PER_CLASS = 600
_FORMAT_VERSION = 1


def cifar_fs_classes(split: str) -> tuple[str, ...]:
    """The CIFAR-100 class names of a CIFAR-FS split, alphabetically (the order of its classes)."""
    if split not in CIFAR_FS_SPLITS:
        raise DataError(f"unknown CIFAR-FS split {split!r}; choose one of {', '.join(CIFAR_FS_SPLITS)}")
    return CIFAR_FS_SPLITS[split]


def _cache_file(cache, split: str) -> Path:
    return cache_dir(cache) / "cifar-100" / f"cifar-fs-{split}-v{_FORMAT_VERSION}.pt"


def load_cifar_fs(
    split: str,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> ClassImages:
    """One CIFAR-FS split: ``images`` ``uint8 [classes * 600, 3, 32, 32]``, classes named as in CIFAR-100."""
    names = cifar_fs_classes(split)
    content = load_tensors(_cache_file(cache, split))
    if content is None:
        content = _build_all_splits(cache, mirror, allow_download)[split]
    if content["class_names"] != list(names):
        raise DataError(f"{_cache_file(cache, split)} holds other classes than the {split!r} split; delete it")
    return ClassImages.from_sizes(content["images"], content["sizes"], content["class_names"])


def prepare_cifar_fs(cache=None, mirror=None, allow_download: bool = True) -> dict[str, ClassImages]:
    """Fetch, verify, unpack and cache the three splits."""
    return {split: load_cifar_fs(split, cache, mirror, allow_download) for split in CIFAR_FS_SPLITS}


def _read_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path} is missing: the CIFAR-100 archive is incomplete; delete {path.parent.parent} "
                        "and run `python -m metabook_learn data prepare cifar-fs` again")
    content = safe_load(path, encoding="bytes")  # written by Python 2: keys are bytes, like b"data"
    if not isinstance(content, dict):
        raise DataError(f"{path} is not a CIFAR-100 batch (a pickled dict)")
    return content


def _build_all_splits(cache, mirror, allow_download) -> dict[str, dict]:
    """Decode the archive once and cache every split's tensors; returns them by split."""
    archive = fetch(CIFAR100_ARCHIVE, cache, mirror, allow_download)
    folder = extract_archive(archive, cache_dir(cache) / "cifar-100" / "cifar-100-python-unpacked") / "cifar-100-python"
    label_names = [name.decode() if isinstance(name, bytes) else name
                   for name in _read_batch(folder / "meta").get(b"fine_label_names", [])]
    split_names = [name for names in CIFAR_FS_SPLITS.values() for name in names]
    if len(set(split_names)) != len(split_names) or sorted(split_names) != sorted(label_names):
        raise DataError(f"{folder / 'meta'} does not list the 100 CIFAR-100 classes of the CIFAR-FS split; "
                        "is this the CIFAR-100 python archive?")
    images, labels = [], []
    for part in ("train", "test"):
        batch = _read_batch(folder / part)
        data = np.asarray(batch.get(b"data"))
        fine = np.asarray(batch.get(b"fine_labels"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or fine.shape != data.shape[:1]:
            raise DataError(f"{folder / part}: expected b'data' uint8 [N, 3072] and N b'fine_labels'")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32)))  # rows hold the R, G, B planes in turn
        labels.append(torch.from_numpy(fine.astype(np.int64)))
    images, labels = torch.cat(images), torch.cat(labels)
    result = {}
    for split, names in CIFAR_FS_SPLITS.items():
        # Within a class, images keep CIFAR-100's order: its 500 training images, then its 100 test images.
        class_ids = torch.tensor([label_names.index(name) for name in names])
        chosen = torch.cat([torch.nonzero(labels == c).flatten() for c in class_ids])
        sizes = torch.stack([(labels == c).sum() for c in class_ids])
        content = {"images": images[chosen], "sizes": sizes, "class_names": list(names)}
        save_tensors(content, _cache_file(cache, split))
        result[split] = content
    return result
