"""Rotated MNIST domains from the real MNIST test set, and the IDX parser's checks."""
from __future__ import annotations

import gzip

import pytest
import torch

from fixtures_data import skip_without
from metabook_learn.data.rotated_mnist import ROTATED_MNIST_ANGLES, load_rotated_mnist, read_idx
from metabook_learn.data.storage import DataError

pytestmark = pytest.mark.usefixtures("no_data_environment")


@pytest.fixture(scope="module")
def rotated(real_cache, real_mirror):
    if not (real_mirror / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        skip_without(f"no MNIST test set in the mirror {real_mirror}")
    return load_rotated_mnist(cache=real_cache, mirror=real_mirror, allow_download=False)


def test_six_domains_of_the_same_thousand_digits(rotated):
    assert rotated.angles == ROTATED_MNIST_ANGLES == (0, 15, 30, 45, 60, 75)
    assert rotated.images.shape == (6000, 1, 28, 28) and rotated.images.dtype == torch.uint8
    assert rotated.labels.dtype == rotated.domains.dtype == torch.int64
    for d in range(6):
        labels = rotated.labels[rotated.domains == d]
        assert torch.bincount(labels, minlength=10).tolist() == [100] * 10
        assert torch.equal(labels, rotated.labels[:1000])  # the same digits in every domain


def test_rotation_turns_the_digits(rotated):
    upright, _ = rotated.domain(0)
    turned, _ = rotated.domain(75)
    assert not torch.equal(upright, turned)
    # Rotation moves ink but keeps roughly as much of it (corners are empty in MNIST).
    ratio = turned.float().sum() / upright.float().sum()
    assert 0.9 < float(ratio) < 1.1
    with pytest.raises(DataError, match="no domain rotated by 90 degrees"):
        rotated.domain(90)


def test_choice_of_digits_is_reproducible(real_cache, real_mirror, rotated):
    again = load_rotated_mnist(angles=(0,), cache=real_cache, mirror=real_mirror, allow_download=False)
    assert torch.equal(again.images, rotated.domain(0)[0])
    other = load_rotated_mnist(angles=(0,), seed=1, cache=real_cache, mirror=real_mirror, allow_download=False)
    assert not torch.equal(other.images, again.images)


def idx_file(path, magic: bytes, shape, payload: bytes):
    header = magic + b"".join(n.to_bytes(4, "big") for n in shape)
    path.write_bytes(gzip.compress(header + payload))
    return path


def test_idx_parser_reads_images_and_labels(tmp_path):
    images = read_idx(idx_file(tmp_path / "i.gz", b"\x00\x00\x08\x03", (2, 3, 4), bytes(range(24))), 3)
    assert images.shape == (2, 3, 4) and images.dtype == torch.uint8 and int(images[1, 2, 3]) == 23
    labels = read_idx(idx_file(tmp_path / "l.gz", b"\x00\x00\x08\x01", (3,), b"\x07\x01\x09"), 1)
    assert labels.tolist() == [7, 1, 9]


def test_idx_parser_checks_magic_numbers_and_sizes(tmp_path):
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(idx_file(tmp_path / "a.gz", b"\x01\x00\x08\x03", (1, 1, 1), b"\x00"), 3)
    with pytest.raises(DataError, match=r"expected an IDX file of unsigned bytes with 3 dimensions.*right file"):
        read_idx(idx_file(tmp_path / "b.gz", b"\x00\x00\x08\x01", (3,), b"\x00\x01\x02"), 3)  # labels, not images
    with pytest.raises(DataError, match="truncated or damaged"):
        read_idx(idx_file(tmp_path / "c.gz", b"\x00\x00\x08\x03", (2, 28, 28), bytes(100)), 3)
    (tmp_path / "d.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_idx(tmp_path / "d.gz", 3)
