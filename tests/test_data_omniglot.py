"""Omniglot from the real upstream archives (in the shared mirror), and its two protocols."""
from __future__ import annotations

import time

import pytest
import torch

from fixtures_data import files_under
from metabook_learn.data.classes import ClassImages
from metabook_learn.data.omniglot import (
    BACKGROUND_ALPHABETS,
    EVALUATION_ALPHABETS,
    load_omniglot,
    load_omniglot_characters,
    omniglot_characters,
    omniglot_split_characters,
    read_split_file,
)
from metabook_learn.data.storage import DataError

pytestmark = pytest.mark.usefixtures("no_data_environment")


@pytest.fixture(scope="module")
def omniglot(real_cache, real_mirror) -> ClassImages:
    return load_omniglot_characters(cache=real_cache, mirror=real_mirror, allow_download=False)


# ---------------------------------------------------------------- splits, no data needed


def test_character_tables_match_the_published_counts():
    assert len(BACKGROUND_ALPHABETS) == 30 and len(EVALUATION_ALPHABETS) == 20
    assert len(omniglot_characters("background")) == 964
    assert len(omniglot_characters("evaluation")) == 659
    assert len(set(omniglot_characters("all"))) == 1623


def test_vinyals_style_split_sizes_are_disjoint_and_cover_everything():
    train, val, test = (set(omniglot_split_characters(s)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1100, 100, 423)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(omniglot_characters("all"))
    assert omniglot_split_characters("trainval") == omniglot_split_characters("train") + omniglot_split_characters("val")


def test_split_is_fixed_forever():
    # NumPy's RandomState is frozen (NEP 19): if these change, published numbers stop being comparable.
    assert omniglot_split_characters("test")[:3] == [
        "Oriya/character18", "Inuktitut_(Canadian_Aboriginal_Syllabics)/character05", "Sanskrit/character32"]
    assert omniglot_split_characters("val")[0] == omniglot_split_characters("trainval")[1100]


def test_unknown_split_is_a_clear_error():
    with pytest.raises(DataError, match="unknown Omniglot split 'training'; choose one of background, evaluation"):
        omniglot_split_characters("training")
    with pytest.raises(DataError, match="unknown Omniglot split"):
        load_omniglot("training")  # refused before touching any file


def test_split_file_in_the_prototypical_networks_format(tmp_path):
    path = tmp_path / "val.txt"
    path.write_text("Hebrew/character01/rot000\nHebrew/character01/rot090\nAngelic/character20/rot270\n\n")
    assert read_split_file(path) == [("Hebrew/character01", 0), ("Hebrew/character01", 1), ("Angelic/character20", 3)]
    path.write_text("Hebrew/character01/rot045\n")
    with pytest.raises(DataError, match="line 1: expected 'Alphabet/characterNN/rotDDD'"):
        read_split_file(path)
    path.write_text("Klingon/character01/rot000\n")
    with pytest.raises(DataError, match="'Klingon/character01' is not an Omniglot character"):
        read_split_file(path)


# ---------------------------------------------------------------- the real data


def test_full_omniglot_loads_with_names_and_counts(omniglot):
    assert omniglot.images.shape == (1623 * 20, 1, 28, 28) and omniglot.images.dtype == torch.uint8
    assert omniglot.num_classes == 1623 and set(omniglot.sizes.tolist()) == {20}
    assert omniglot.class_names == omniglot_characters("all")
    assert omniglot.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert omniglot.class_names[964] == "Angelic/character01"
    # Strokes are bright on a dark background: most pixels are paper.
    assert omniglot.images.float().mean() < 0.2 * 255 and int(omniglot.images.max()) == 255


def test_lake_protocol_splits(real_cache, real_mirror):
    background = load_omniglot("background", cache=real_cache, mirror=real_mirror, allow_download=False)
    evaluation = load_omniglot("evaluation", cache=real_cache, mirror=real_mirror, allow_download=False)
    assert (background.num_classes, evaluation.num_classes) == (964, 659)
    assert {name.split("/")[0] for name in background.class_names} == {a for a, _ in BACKGROUND_ALPHABETS}
    assert {name.split("/")[0] for name in evaluation.class_names} == {a for a, _ in EVALUATION_ALPHABETS}
    assert set(evaluation.sizes.tolist()) == {20} and bool((background.rotations == 0).all())


def test_vinyals_protocol_splits_have_four_rotations(real_cache, real_mirror):
    sizes = {}
    for split in ("train", "val", "trainval", "test"):
        data = load_omniglot(split, cache=real_cache, mirror=real_mirror, allow_download=False)
        sizes[split] = data.num_classes
        characters = len(omniglot_split_characters(split))
        assert data.rotations.tolist() == [k for k in range(4) for _ in range(characters)]
        assert data.class_names[characters] == omniglot_split_characters(split)[0] + "/rot90"
    assert sizes == {"train": 4400, "val": 400, "trainval": 4800, "test": 1692}


def test_split_file_classes_load(real_cache, real_mirror, tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("Latin/character03/rot000\nLatin/character03/rot180\nTibetan/character01/rot090\n")
    data = load_omniglot(split_file=path, cache=real_cache, mirror=real_mirror, allow_download=False)
    everything = load_omniglot("all", cache=real_cache, mirror=real_mirror, allow_download=False)
    assert data.class_names == ["Latin/character03/rot0", "Latin/character03/rot180", "Tibetan/character01/rot90"]
    assert data.rotations.tolist() == [0, 2, 1]
    latin = everything.class_names.index("Latin/character03")
    assert int(data.starts[0]) == int(everything.starts[latin])


def test_second_load_comes_from_the_tensor_cache_quickly(omniglot, real_cache, real_mirror):
    start = time.perf_counter()
    again = load_omniglot_characters(cache=real_cache, mirror=real_mirror, allow_download=False)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(again.images, omniglot.images)
    assert list((real_cache / "omniglot").glob("omniglot-28px-lanczos-v*.pt"))


def test_the_mirror_is_never_written(omniglot, real_mirror):
    # The session has loaded Omniglot from the mirror by now; nothing new may appear there.
    names = set(files_under(real_mirror))
    assert {"omniglot/images_background.zip", "omniglot/images_evaluation.zip"} <= names
    assert not [name for name in names if "partial" in name or name.endswith(".pt")]


def test_resizing_keeps_strokes_bright_and_documents_mamls_binary_images():
    from PIL import Image, ImageDraw

    from metabook_learn.data.omniglot import resize_drawing

    drawing = Image.new("1", (105, 105), 1)  # Omniglot PNGs: 1-bit, paper 1 (white), ink 0
    ImageDraw.Draw(drawing).line([(10, 10), (90, 60)], fill=0, width=3)
    smooth = resize_drawing(drawing, 28, antialias=True)
    binary = resize_drawing(drawing, 28, antialias=False)  # PIL ignores LANCZOS on 1-bit images
    assert smooth.shape == binary.shape == (28, 28)
    assert set(binary.flatten().tolist()) == {0, 255}
    assert len(set(smooth.flatten().tolist())) > 2
    assert smooth[0, 0] == 0 and smooth.max() > 128  # paper dark, ink bright
    assert resize_drawing(drawing, 105).shape == (105, 105)
