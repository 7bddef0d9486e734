"""mini-ImageNet from small files in both circulating formats, written by the tests."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from fixtures_data import wnid, write_mini_imagenet_csv, write_mini_imagenet_pickle
from metabook_learn.data.mini_imagenet import load_mini_imagenet
from metabook_learn.data.safe_pickle import UnsafePickleError
from metabook_learn.data.storage import DataError

pytestmark = pytest.mark.usefixtures("no_data_environment")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_cache_format(tmp_path, protocol):
    mirror = tmp_path / "mirror"
    write_mini_imagenet_pickle(mirror / "mini-imagenet", "train", num_classes=64, per_class=2, protocol=protocol)
    data = load_mini_imagenet("train", cache=tmp_path / "cache", mirror=mirror)
    assert data.images.shape == (128, 3, 84, 84) and data.images.dtype == torch.uint8
    assert data.num_classes == 64 and data.class_names[:2] == [wnid(0), wnid(1)]
    assert set(data.sizes.tolist()) == {2}
    for k in (0, 5, 63):  # class k's images, gathered from interleaved indices, are filled with k
        block = data.images[int(data.starts[k]): int(data.starts[k] + data.sizes[k])]
        assert bool((block == k).all())


def test_csv_and_images_format_is_decoded_once_and_cached(tmp_path):
    folder = tmp_path / "cache" / "mini-imagenet"
    write_mini_imagenet_csv(folder, "val", num_classes=16, per_class=2, size=(100, 90))
    data = load_mini_imagenet("val", cache=tmp_path / "cache")
    assert data.images.shape == (32, 3, 84, 84) and data.num_classes == 16
    assert data.class_names == sorted(data.class_names) and data.class_names[0] == wnid(100)
    assert abs(int(data.images[int(data.starts[3])].float().mean()) - 30) <= 2  # JPEG grey level 10 k
    cached = list(folder.glob("mini-imagenet-val-84px-v*.pt"))
    assert len(cached) == 1
    for image in (folder / "images").iterdir():  # the second load must not need the JPEGs
        image.unlink()
    assert torch.equal(load_mini_imagenet("val", cache=tmp_path / "cache").images, data.images)


def test_missing_split_names_the_folders_and_the_files(tmp_path):
    with pytest.raises(DataError) as error:
        load_mini_imagenet("test", cache=tmp_path / "cache", mirror=tmp_path / "mirror")
    message = str(error.value)
    assert str(tmp_path / "mirror" / "mini-imagenet") in message and str(tmp_path / "cache" / "mini-imagenet") in message
    assert "mini-imagenet-cache-test.pkl" in message and "test.csv" in message and "no official download" in message


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown mini-ImageNet split 'validation'; choose one of train, val, test"):
        load_mini_imagenet("validation", cache=tmp_path)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cache" / "mini-imagenet"
    folder.mkdir(parents=True)
    (folder / "mini-imagenet-cache-test.pkl").write_bytes(pickle.dumps({"image_data": Payload(), "class_dict": {}}))
    with pytest.raises(UnsafePickleError, match="system"):
        load_mini_imagenet("test", cache=tmp_path / "cache")
    assert not marker.exists()


def test_wrong_contents_are_clear_errors(tmp_path):
    folder = tmp_path / "cache" / "mini-imagenet"
    write_mini_imagenet_pickle(folder, "test", num_classes=19)
    with pytest.raises(DataError, match="has 19 classes, but the 'test' split of Ravi and Larochelle has 20"):
        load_mini_imagenet("test", cache=tmp_path / "cache")
    (folder / "mini-imagenet-cache-test.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="not a mini-ImageNet cache"):
        load_mini_imagenet("test", cache=tmp_path / "cache")
    (folder / "mini-imagenet-cache-test.pkl").unlink()
    (folder / "test.csv").write_text("file,class\n")
    with pytest.raises(DataError, match="should start with the header 'filename,label'"):
        load_mini_imagenet("test", cache=tmp_path / "cache")
