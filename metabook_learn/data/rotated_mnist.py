"""Rotated MNIST, the domain-generalization benchmark of Ghifary et al. (2015).

Ghifary, Kleijn, Zhang and Balduzzi ("Domain generalization for object
recognition with multi-task autoencoders", ICCV 2015) pick 1,000 MNIST digits,
100 per class, and rotate them by 0, 15, 30, 45, 60 and 75 degrees: six
domains of the same digits. A model learns on some domains and is tested on
an unseen one.

**Which digits.** Ghifary et al. drew theirs from the MNIST training set.
Only the 10,000-image MNIST *test* set (``t10k-*``) is in the shared mirror,
so metabook draws the 1,000 digits from the test set: for each class, 100
images chosen without replacement by NumPy's ``RandomState(seed)`` (frozen by
NEP 19, so the choice is the same on every version), kept in file order. The
same digits appear in every domain, as in the paper.

**Rotation.** Counter-clockwise by the domain's angle about the image centre,
bilinear interpolation, corners filled with 0 (PIL ``Image.rotate``).

Pixels: ``uint8``, strokes bright (MNIST's own convention).

The IDX files (LeCun et al., 1998) are parsed here: a big-endian header of two
zero bytes, a type code (``0x08``: unsigned bytes), the number of dimensions,
then one 32-bit size per dimension, then the data.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from metabook_learn import validation
from metabook_learn.data.storage import DataError, UpstreamFile, fetch

__all__ = [
    "ROTATED_MNIST_ANGLES", "MNIST_TEST_FILES", "RotatedMNIST", "load_rotated_mnist", "prepare_rotated_mnist", "read_idx",
]

ROTATED_MNIST_ANGLES = (0, 15, 30, 45, 60, 75)
_UPSTREAM = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # yann.lecun.com often refuses downloads
MNIST_TEST_FILES = {
    "images": UpstreamFile("mnist", "t10k-images-idx3-ubyte.gz", _UPSTREAM + "t10k-images-idx3-ubyte.gz",
                           "9fb629c4189551a2d022fa330f9573f3"),
    "labels": UpstreamFile("mnist", "t10k-labels-idx1-ubyte.gz", _UPSTREAM + "t10k-labels-idx1-ubyte.gz",
                           "ec29112dd5afa0611ce80d1b7f02629c"),
}
_IDX_UNSIGNED_BYTE = 0x08


@dataclass
class RotatedMNIST:
    """Digits in several rotation domains; ``D`` domains of ``n`` digits each.

    ``images``: ``uint8 [D * n, 1, 28, 28]``, domain after domain;
    ``labels``: ``int64 [D * n]`` (0-9); ``domains``: ``int64 [D * n]``, an
    index into ``angles`` (degrees).
    """

    images: torch.Tensor
    labels: torch.Tensor
    domains: torch.Tensor
    angles: tuple[int, ...]

    def domain(self, angle: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of the domain rotated by ``angle`` degrees."""
        if angle not in self.angles:
            raise DataError(f"no domain rotated by {angle} degrees; the domains are {list(self.angles)}")
        keep = self.domains == self.angles.index(angle)
        return self.images[keep], self.labels[keep]


def read_idx(path: str | os.PathLike, expected_dims: int) -> torch.Tensor:
    """The ``uint8`` array in a gzip-compressed IDX file, checking its magic number and size."""
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable gzip file ({error}); replace it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (its magic number does not start with two zero bytes)")
    type_code, dims = raw[2], raw[3]
    if type_code != _IDX_UNSIGNED_BYTE or dims != expected_dims:
        raise DataError(f"{path}: expected an IDX file of unsigned bytes with {expected_dims} dimensions "
                        f"(magic 0x{_IDX_UNSIGNED_BYTE:02x}{expected_dims:02x}), "
                        f"got type 0x{type_code:02x} with {dims}; is it the right file?")
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path}: the header announces shape {shape} ({int(np.prod(shape))} bytes of data) "
                        f"but the file holds {len(raw) - header}; the file is truncated or damaged")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy())


def _choose_digits(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of each digit, drawn with a frozen NumPy generator: ``int64 [10 * per_class]``."""
    generator = np.random.RandomState(seed)
    chosen = []
    for digit in range(10):
        candidates = np.flatnonzero(labels.numpy() == digit)
        if len(candidates) < per_class:
            raise DataError(f"only {len(candidates)} images of digit {digit}, fewer than per_class={per_class}")
        chosen.append(np.sort(generator.choice(candidates, size=per_class, replace=False)))
    return torch.from_numpy(np.concatenate(chosen)).long()


def _rotate(images: torch.Tensor, angle: float) -> torch.Tensor:
    """``uint8 [n, 1, 28, 28]`` rotated counter-clockwise by ``angle`` degrees (bilinear, zero fill)."""
    if angle == 0:
        return images.clone()
    rotated = [np.asarray(Image.fromarray(image[0].numpy()).rotate(angle, resample=Image.BILINEAR))
               for image in images]
    return torch.from_numpy(np.stack(rotated)).unsqueeze(1)


def load_rotated_mnist(
    angles: tuple[int, ...] = ROTATED_MNIST_ANGLES,
    per_class: int = 100,
    seed: int = 0,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> RotatedMNIST:
    """Rotated MNIST domains from the MNIST test set (see the module docstring for the protocol)."""
    per_class = validation.count("per_class", per_class)
    seed = validation.count("seed", seed, minimum=0)
    images = read_idx(fetch(MNIST_TEST_FILES["images"], cache, mirror, allow_download), expected_dims=3)
    labels = read_idx(fetch(MNIST_TEST_FILES["labels"], cache, mirror, allow_download), expected_dims=1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise DataError(f"MNIST images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
    chosen = _choose_digits(labels, per_class, seed)
    digits = images[chosen].unsqueeze(1)
    angles = tuple(int(angle) for angle in angles)
    return RotatedMNIST(
        images=torch.cat([_rotate(digits, angle) for angle in angles]),
        labels=labels[chosen].long().repeat(len(angles)),
        domains=torch.arange(len(angles)).repeat_interleave(len(chosen)),
        angles=angles,
    )


def prepare_rotated_mnist(cache=None, mirror=None, allow_download: bool = True) -> RotatedMNIST:
    """Fetch and check the MNIST test files; returns the six standard domains."""
    return load_rotated_mnist(cache=cache, mirror=mirror, allow_download=allow_download)
