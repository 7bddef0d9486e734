"""mini-ImageNet (Vinyals et al., 2016) with the class split of Ravi and Larochelle (2017).

100 ImageNet classes, 600 colour images each, resized to 84x84; 64 classes
for meta-training, 16 for validation, 20 for testing. There is no official
release and no download: the data circulate in two formats, both read here.

1. **Pickle caches**: ``mini-imagenet-cache-{train,val,test}.pkl``, each a
   dict with ``"image_data"`` (``uint8 [N, 84, 84, 3]``) and ``"class_dict"``
   (``{wnid: [indices into image_data]}``). They are read with
   ``metabook_learn.data.safe_pickle``, which refuses any pickle that tries to do
   more than build containers and arrays.
2. **CSV and images**: ``{train,val,test}.csv`` with ``filename,label`` rows
   (Ravi and Larochelle's files) and an ``images/`` folder of JPEGs. Images
   not already 84x84 are resized with PIL's LANCZOS (as in MAML's
   ``proc_images.py``); the decoded split is cached as a tensor file.

Files are looked for in ``<mirror>/mini-imagenet/`` and then in
``<cache>/mini-imagenet/``; put either format in one of them.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metabook_learn.data.classes import ClassImages
from metabook_learn.data.safe_pickle import safe_load
from metabook_learn.data.storage import DataError, cache_dir, cached_tensors, mirror_dir, open_image

__all__ = ["MINI_IMAGENET_SPLITS", "MINI_IMAGENET_CLASSES", "IMAGE_SIZE", "load_mini_imagenet",
           "mini_imagenet_folders"]

MINI_IMAGENET_SPLITS = ("train", "val", "test")
MINI_IMAGENET_CLASSES = {"train": 64, "val": 16, "test": 20}  # Ravi and Larochelle (2017)
IMAGE_SIZE = 84
_FORMAT_VERSION = 1


def mini_imagenet_folders(cache=None, mirror=None) -> list[Path]:
    """Where mini-ImageNet files are looked for, in order."""
    folders = []
    root = mirror_dir(mirror)
    if root is not None:
        folders.append(root / "mini-imagenet")
    folders.append(cache_dir(cache) / "mini-imagenet")
    return folders


def load_mini_imagenet(
    split: str,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
) -> ClassImages:
    """One split as ``ClassImages``: ``images`` ``uint8 [N, 3, 84, 84]``, classes named by WordNet id, sorted.

    Raises ``DataError`` naming the folders searched and the expected files
    when neither format is found.
    """
    if split not in MINI_IMAGENET_SPLITS:
        raise DataError(f"unknown mini-ImageNet split {split!r}; choose one of {', '.join(MINI_IMAGENET_SPLITS)}")
    folders = mini_imagenet_folders(cache, mirror)
    for folder in folders:
        pickle_file = folder / f"mini-imagenet-cache-{split}.pkl"
        if pickle_file.is_file():
            return _check_split(_from_pickle(pickle_file), split, pickle_file)
        csv_file = folder / f"{split}.csv"
        if csv_file.is_file():
            target = cache_dir(cache) / "mini-imagenet" / f"mini-imagenet-{split}-{IMAGE_SIZE}px-v{_FORMAT_VERSION}.pt"
            content = cached_tensors(target, lambda: _decode_csv_split(csv_file, folder / "images"))
            images = ClassImages(content["images"], content["starts"], content["sizes"], content["class_names"])
            return _check_split(images, split, csv_file)
    raise DataError(
        f"mini-ImageNet {split!r} split not found (looked in: {'; '.join(map(str, folders))}); mini-ImageNet has "
        f"no official download: put mini-imagenet-cache-{split}.pkl, or {split}.csv with an images/ folder of "
        "JPEGs, in one of those folders (a mirror folder is set with METABOOK_MIRROR or --mirror)"
    )


def _check_split(images: ClassImages, split: str, source: Path) -> ClassImages:
    expected = MINI_IMAGENET_CLASSES[split]
    if images.num_classes != expected:
        raise DataError(f"{source} has {images.num_classes} classes, but the {split!r} split of Ravi and "
                        f"Larochelle has {expected}; is it the right file?")
    return images


def _from_pickle(path: Path) -> ClassImages:
    content = safe_load(path, encoding="latin1")  # some copies were written by Python 2
    if not isinstance(content, dict) or not {"image_data", "class_dict"} <= set(content):
        raise DataError(f"{path} is not a mini-ImageNet cache: expected a dict with 'image_data' and 'class_dict'")
    data, class_dict = content["image_data"], content["class_dict"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4
            and data.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3)):
        raise DataError(f"{path}: 'image_data' should be uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3], got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    names = sorted(class_dict)
    order = [np.asarray(class_dict[name], dtype=np.int64) for name in names]
    flat = np.concatenate(order)
    if flat.size and (flat.min() < 0 or flat.max() >= len(data)):
        raise DataError(f"{path}: 'class_dict' points outside 'image_data' ({len(data)} images)")
    # [N, H, W, C] -> [N, C, H, W], classes in contiguous blocks; one copy, however large the split.
    images = torch.from_numpy(data).permute(0, 3, 1, 2)[torch.from_numpy(flat)]
    return ClassImages.from_sizes(images, [len(indices) for indices in order], [str(name) for name in names])


def _decode_csv_split(csv_file: Path, image_folder: Path) -> dict:
    with open(csv_file, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise DataError(f"{csv_file} should start with the header 'filename,label'")
    by_class: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise DataError(f"{csv_file}, line {line}: expected 'filename,label', got {row!r}")
        by_class.setdefault(row[1].strip(), []).append(row[0].strip())
    names = sorted(by_class)
    total = sum(len(files) for files in by_class.values())
    images = np.empty((total, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    position = 0
    for name in names:
        for filename in by_class[name]:
            path = image_folder / filename
            if not path.is_file():
                raise DataError(f"{csv_file} lists {filename}, but {path} does not exist; "
                                f"put the images in {image_folder}")
            with open_image(path) as image:
                image = image.convert("RGB")
                if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.LANCZOS)
                images[position] = np.asarray(image).transpose(2, 0, 1)
            position += 1
    sizes = torch.tensor([len(by_class[name]) for name in names], dtype=torch.int64)
    return {"images": torch.from_numpy(images), "starts": torch.cumsum(sizes, 0) - sizes,
            "sizes": sizes, "class_names": names}
