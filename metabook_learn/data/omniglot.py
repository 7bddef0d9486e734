"""Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015): 1623 handwritten characters, 20 drawings each.

The upstream archives ``images_background.zip`` (30 alphabets, 964 characters)
and ``images_evaluation.zip`` (20 alphabets, 659 characters) hold one
105x105 black-on-white PNG per drawing, at
``images_<set>/<Alphabet>/characterNN/XXXX_YY.png`` (``YY``: the drawer).

**Pixels.** Images are returned as ``uint8 [N, 1, S, S]`` with **strokes
bright** (ink 255, paper 0), which is what MAML's and Prototypical Networks'
code feed their networks (they compute ``1 - pixel``). Dividing by 255 gives
strokes 1.0, background 0.0.

**Resizing.** 105 -> ``image_size`` (28 by default) with PIL's LANCZOS filter
on the grey-level image, so strokes keep anti-aliased edges. MAML's
``resize_images.py`` calls ``resize((28, 28), resample=Image.LANCZOS)``, but
on the PNGs' 1-bit mode, where PIL ignores the filter and uses nearest
neighbour: MAML's 28x28 images are binary. ``antialias=False`` reproduces
that (PIL's nearest neighbour on the 1-bit image).

**Two protocols.**

* Lake et al.: learn on ``"background"``, test on ``"evaluation"`` (disjoint
  alphabets); no rotations.
* Vinyals et al. (2016), as used by MAML and Prototypical Networks: 1200
  characters for training, the other 423 for testing, and each character
  rotated by 0, 90, 180 and 270 degrees counts as four classes. Their split
  files are not distributed with Omniglot, so metabook defines its own,
  deterministic split, in the way MAML's reference code makes its split:
  MAML lists the character folders (in ``os.listdir`` order, which differs
  between machines), shuffles them with ``random.seed(1)``, meta-trains on the
  first 1100, validates on the next 100 and tests on the remaining 423.
  metabook sorts all 1623 ``"Alphabet/characterNN"`` names, permutes them with
  NumPy's ``RandomState(1)`` (frozen by NEP 19, hence identical on every
  version) and then cuts as MAML does: ``"train"`` = positions 0-1099,
  ``"val"`` = 1100-1199 (the last 100 of the 1200), ``"trainval"`` = 0-1199,
  ``"test"`` = 1200-1622. ``omniglot_split_characters(split)`` lists them.
  The split mixes alphabets. The split files of Prototypical Networks
  (``Alphabet/characterNN/rotDDD`` lines; their ``val.txt`` lists whole
  alphabets) are not part of Omniglot either; given one, use
  ``load_omniglot(split_file=...)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metabook_learn import validation
from metabook_learn.data.classes import ClassImages
from metabook_learn.data.storage import DataError, UpstreamFile, cache_dir, cached_tensors, extract_archive, fetch, open_image

__all__ = [
    "BACKGROUND_ALPHABETS",
    "EVALUATION_ALPHABETS",
    "OMNIGLOT_FILES",
    "OMNIGLOT_SPLITS",
    "DRAWINGS_PER_CHARACTER",
    "omniglot_characters",
    "omniglot_split_characters",
    "load_omniglot",
    "load_omniglot_characters",
    "prepare_omniglot",
    "read_split_file",
    "resize_drawing",
]

_UPSTREAM = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
OMNIGLOT_FILES = {
    "background": UpstreamFile(
        "omniglot", "images_background.zip", _UPSTREAM + "images_background.zip", "68d2efa1b9178cc56df9314c21c6e718"
    ),
    "evaluation": UpstreamFile(
        "omniglot", "images_evaluation.zip", _UPSTREAM + "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811"
    ),
}

# (alphabet, number of characters), as in the upstream archives, in sorted order.
# Characters are numbered character01 .. characterNN within each alphabet.
BACKGROUND_ALPHABETS = (
    ("Alphabet_of_the_Magi", 20), ("Anglo-Saxon_Futhorc", 29), ("Arcadian", 26), ("Armenian", 41),
    ("Asomtavruli_(Georgian)", 40), ("Balinese", 24), ("Bengali", 46),
    ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 14), ("Braille", 26), ("Burmese_(Myanmar)", 34),
    ("Cyrillic", 33), ("Early_Aramaic", 22), ("Futurama", 26), ("Grantha", 43), ("Greek", 24),
    ("Gujarati", 48), ("Hebrew", 22), ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 16),
    ("Japanese_(hiragana)", 52), ("Japanese_(katakana)", 47), ("Korean", 40), ("Latin", 26),
    ("Malay_(Jawi_-_Arabic)", 40), ("Mkhedruli_(Georgian)", 41), ("N_Ko", 33),
    ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 14), ("Sanskrit", 42), ("Syriac_(Estrangelo)", 23),
    ("Tagalog", 17), ("Tifinagh", 55),
)
EVALUATION_ALPHABETS = (
    ("Angelic", 20), ("Atemayar_Qelisayer", 26), ("Atlantean", 26), ("Aurek-Besh", 26), ("Avesta", 26),
    ("Ge_ez", 26), ("Glagolitic", 45), ("Gurmukhi", 45), ("Kannada", 41), ("Keble", 26), ("Malayalam", 47),
    ("Manipuri", 40), ("Mongolian", 30), ("Old_Church_Slavonic_(Cyrillic)", 45), ("Oriya", 46),
    ("Sylheti", 28), ("Syriac_(Serto)", 23), ("Tengwar", 25), ("Tibetan", 42), ("ULOG", 26),
)
DRAWINGS_PER_CHARACTER = 20
NUM_TRAINVAL, NUM_VAL = 1200, 100  # Vinyals et al.'s 1200 training characters; MAML's last 100 of them validate
SPLIT_SEED = 1  # the seed of MAML's random.seed(1); here NumPy's frozen RandomState
OMNIGLOT_SPLITS = ("background", "evaluation", "all", "train", "val", "trainval", "test")
_FORMAT_VERSION = 1  # bump when the cached tensors change meaning


def omniglot_characters(image_set: str = "all") -> list[str]:
    """``"Alphabet/characterNN"`` names of ``"background"``, ``"evaluation"`` or ``"all"`` characters.

    Order: background before evaluation, alphabets sorted, characters by
    number. This is the order of ``load_omniglot_characters``'s classes.
    """
    tables = {"background": [BACKGROUND_ALPHABETS], "evaluation": [EVALUATION_ALPHABETS],
              "all": [BACKGROUND_ALPHABETS, EVALUATION_ALPHABETS]}
    if image_set not in tables:
        raise DataError(f"unknown Omniglot image set {image_set!r}; choose 'background', 'evaluation' or 'all'")
    return [f"{alphabet}/character{number:02d}"
            for table in tables[image_set] for alphabet, count in table for number in range(1, count + 1)]


def omniglot_split_characters(split: str) -> list[str]:
    """The characters (unrotated ``"Alphabet/characterNN"``) that make up ``split``, in class order.

    ``"background"``, ``"evaluation"``, ``"all"``: Lake et al.'s sets.
    ``"train"`` (1100), ``"val"`` (100), ``"trainval"`` (1200), ``"test"`` (423):
    metabook's version of the Vinyals et al. split, described in the module docstring.
    """
    if split in ("background", "evaluation", "all"):
        return omniglot_characters(split)
    shuffled = _shuffled_characters()
    cuts = {"train": (0, NUM_TRAINVAL - NUM_VAL), "val": (NUM_TRAINVAL - NUM_VAL, NUM_TRAINVAL),
            "trainval": (0, NUM_TRAINVAL), "test": (NUM_TRAINVAL, len(shuffled))}
    if split not in cuts:
        raise DataError(f"unknown Omniglot split {split!r}; choose one of {', '.join(OMNIGLOT_SPLITS)}")
    start, stop = cuts[split]
    return shuffled[start:stop]


def _shuffled_characters() -> list[str]:
    names = sorted(omniglot_characters("all"))
    order = np.random.RandomState(SPLIT_SEED).permutation(len(names))
    return [names[i] for i in order]


def resize_drawing(image: Image.Image, image_size: int, antialias: bool = True) -> np.ndarray:
    """A 1-bit Omniglot PNG as ``uint8 [image_size, image_size]``, strokes 255 on 0.

    ``antialias=True``: LANCZOS on the grey-level image (grey stroke edges).
    ``antialias=False``: what PIL does with MAML's call on the 1-bit image
    (nearest neighbour; strokes stay exactly 0 or 255).
    """
    if antialias:
        image = image.convert("L")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), resample=Image.LANCZOS)
    return 255 - np.asarray(image.convert("L"), dtype=np.uint8)


def _decode_image_set(folder: Path, image_set: str, image_size: int, antialias: bool) -> torch.Tensor:
    """All drawings of one image set, ``uint8 [characters * 20, 1, S, S]``, in ``omniglot_characters`` order."""
    root = folder / f"images_{image_set}"
    names = omniglot_characters(image_set)
    images = np.empty((len(names) * DRAWINGS_PER_CHARACTER, 1, image_size, image_size), dtype=np.uint8)
    for c, name in enumerate(names):
        drawings = sorted((root / name).glob("*.png"))
        if len(drawings) != DRAWINGS_PER_CHARACTER:
            raise DataError(
                f"{root / name} has {len(drawings)} drawings instead of {DRAWINGS_PER_CHARACTER}; the Omniglot "
                f"archive is incomplete: delete {folder} and run `python -m metabook_learn data prepare omniglot`"
            )
        for d, path in enumerate(drawings):
            with open_image(path) as image:
                images[c * DRAWINGS_PER_CHARACTER + d, 0] = resize_drawing(image, image_size, antialias)
    return torch.from_numpy(images)


def load_omniglot_characters(
    image_size: int = 28,
    antialias: bool = True,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> ClassImages:
    """All 1623 characters, unrotated: ``images`` ``uint8 [32460, 1, S, S]``, 20 drawings per class.

    Classes follow ``omniglot_characters("all")``: the 964 background
    characters, then the 659 evaluation ones; within a class, drawings are in
    drawer order. The first call fetches, unpacks and decodes the archives
    (seconds); the result is cached as a tensor file, so later calls take
    well under a second.
    """
    image_size = validation.count("image_size", image_size)
    resampling = "lanczos" if antialias else "nearest"
    cache_file = _cache_folder(cache) / f"omniglot-{image_size}px-{resampling}-v{_FORMAT_VERSION}.pt"

    def build() -> dict:
        parts = []
        for image_set, upstream in OMNIGLOT_FILES.items():
            archive = fetch(upstream, cache, mirror, allow_download)
            folder = extract_archive(archive, _cache_folder(cache) / archive.stem)
            parts.append(_decode_image_set(folder, image_set, image_size, antialias))
        return {"images": torch.cat(parts), "class_names": omniglot_characters("all")}

    content = cached_tensors(cache_file, build)
    names = content["class_names"]
    return ClassImages.from_sizes(content["images"], [DRAWINGS_PER_CHARACTER] * len(names), names)


def _cache_folder(cache) -> Path:
    return cache_dir(cache) / "omniglot"


def read_split_file(path: str | os.PathLike) -> list[tuple[str, int]]:
    """``(character, quarter_turns)`` pairs from a Prototypical Networks split file.

    Each line reads ``Alphabet/characterNN/rotDDD`` with ``DDD`` one of
    000, 090, 180, 270 (degrees, counter-clockwise).
    """
    pairs = []
    known = set(omniglot_characters("all"))
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.split("/")
        degrees = parts[2][3:] if len(parts) == 3 and parts[2].startswith("rot") else ""
        if not degrees.isdigit() or int(degrees) % 90 or int(degrees) >= 360:
            raise DataError(f"{path}, line {number}: expected 'Alphabet/characterNN/rotDDD' "
                            f"with DDD in 000, 090, 180, 270, got {line!r}")
        character = f"{parts[0]}/{parts[1]}"
        if character not in known:
            raise DataError(f"{path}, line {number}: {character!r} is not an Omniglot character")
        pairs.append((character, int(degrees) // 90))
    if not pairs:
        raise DataError(f"{path} lists no classes")
    return pairs


def load_omniglot(
    split: str = "background",
    image_size: int = 28,
    antialias: bool = True,
    split_file: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> ClassImages:
    """One split of Omniglot as ``ClassImages`` (``uint8 [N, 1, S, S]``, strokes 255).

    * ``"background"`` (964 classes) / ``"evaluation"`` (659): Lake et al.'s
      protocol, no rotations; ``"all"``: both.
    * ``"train"`` (4400 classes = 1100 characters x 4 rotations), ``"val"``
      (400), ``"trainval"`` (4800), ``"test"`` (1692): the Vinyals et al.
      protocol with metabook's split (module docstring). Class
      ``r * characters + c`` is character ``c`` turned by ``90 r`` degrees.
    * ``split_file``: a Prototypical Networks split file instead (``split`` is
      then ignored); one class per line, in file order, named like
      ``with_rotations`` names them (``rot090`` in the file becomes ``/rot90``).

    Images are shared with the cached tensor of all characters; rotations
    are applied by the sampler, so no rotated copies are stored.
    """
    if split_file is None and split not in OMNIGLOT_SPLITS:
        raise DataError(f"unknown Omniglot split {split!r}; choose one of {', '.join(OMNIGLOT_SPLITS)}")
    everything = load_omniglot_characters(image_size, antialias, cache, mirror, allow_download)
    index = {name: c for c, name in enumerate(everything.class_names)}
    if split_file is not None:
        pairs = read_split_file(split_file)
        chosen = everything.subset([index[character] for character, _ in pairs])
        chosen.rotations = torch.tensor([turns for _, turns in pairs], dtype=torch.int64)
        chosen.class_names = [f"{character}/rot{90 * turns}" for character, turns in pairs]
        return chosen
    chosen = everything.subset([index[name] for name in omniglot_split_characters(split)])
    if split in ("train", "val", "trainval", "test"):
        return chosen.with_rotations((0, 1, 2, 3))
    return chosen


def prepare_omniglot(
    image_size: int = 28,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> ClassImages:
    """Fetch, verify, unpack and cache Omniglot; returns all characters (see ``load_omniglot_characters``)."""
    return load_omniglot_characters(image_size, True, cache, mirror, allow_download)
