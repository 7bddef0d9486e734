"""``python -m metabook_learn data prepare|info NAME``: get a data set ready, or describe it.

``prepare`` fetches the upstream files (the mirror first, then the upstream
URL), checks them, unpacks them and caches the preprocessed tensors, so that
notebooks and training runs later load in well under a second. ``info``
prints the splits, their number of classes and images per class, without
downloading anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from metabook_learn.data.storage import CACHE_ENV, MIRROR_ENV, CannotWrite, DataError, cache_dir
from metabook_learn.errors import UserError

__all__ = ["add_parser", "DATA_SETS"]


@dataclass(frozen=True)
class DataSetCommands:
    """What the command line knows about one data set."""

    summary: str
    # splits(cache, mirror, allow_download) loads every split (preparing it on the way when
    # allowed) and returns one row per split: (name, classes, images per class, note).
    splits: Callable[[object, object, bool], list[tuple[str, int, str, str]]]
    downloadable: bool = True  # False where no official download exists (mini-ImageNet)


def _images_per_class(sizes) -> str:
    low, high = int(sizes.min()), int(sizes.max())
    return str(low) if low == high else f"{low}-{high}"


def _omniglot_splits(cache, mirror, allow_download):
    from metabook_learn.data.omniglot import OMNIGLOT_SPLITS, load_omniglot, load_omniglot_characters

    load_omniglot_characters(cache=cache, mirror=mirror, allow_download=allow_download)  # fetch and cache once
    notes = {"background": "Lake et al.: learn here", "evaluation": "Lake et al.: test here",
             "all": "background + evaluation", "train": "characters x 4 rotations",
             "val": "characters x 4 rotations", "trainval": "train + val", "test": "characters x 4 rotations"}
    rows = []
    for split in OMNIGLOT_SPLITS:
        data = load_omniglot(split, cache=cache, mirror=mirror, allow_download=False)
        rows.append((split, data.num_classes, _images_per_class(data.sizes), notes[split]))
    return rows


def _omniglot_runs_splits(cache, mirror, allow_download):
    from metabook_learn.data.omniglot_runs import load_omniglot_runs

    runs = load_omniglot_runs(cache=cache, mirror=mirror, allow_download=allow_download)
    return [(run.name, len(run.training), "1 + 1 test", "20-way 1-shot within one alphabet") for run in runs]


def _rotated_mnist_splits(cache, mirror, allow_download):
    import torch

    from metabook_learn.data.rotated_mnist import load_rotated_mnist

    data = load_rotated_mnist(cache=cache, mirror=mirror, allow_download=allow_download)
    rows = []
    for d, angle in enumerate(data.angles):
        counts = torch.bincount(data.labels[data.domains == d], minlength=10)
        rows.append((f"{angle} degrees", 10, _images_per_class(counts), "digits from the MNIST test set"))
    return rows


def _mini_imagenet_splits(cache, mirror, allow_download):
    from metabook_learn.data.mini_imagenet import MINI_IMAGENET_SPLITS, load_mini_imagenet

    rows = []
    for split in MINI_IMAGENET_SPLITS:
        data = load_mini_imagenet(split, cache=cache, mirror=mirror)
        rows.append((split, data.num_classes, _images_per_class(data.sizes), "84x84 colour"))
    return rows


def _cifar_fs_splits(cache, mirror, allow_download):
    from metabook_learn.data.cifar_fs import CIFAR_FS_SPLITS, load_cifar_fs

    rows = []
    for split in CIFAR_FS_SPLITS:
        data = load_cifar_fs(split, cache=cache, mirror=mirror, allow_download=allow_download)
        rows.append((split, data.num_classes, _images_per_class(data.sizes), "32x32 colour"))
    return rows


def _sinusoid_splits(cache, mirror, allow_download):
    from metabook_learn.data.sinusoid import AMPLITUDE_RANGE, INPUT_RANGE, PHASE_RANGE

    return [("any", 0, "-", f"y = A sin(x - phase), A in {AMPLITUDE_RANGE}, phase in "
                           f"(0, {PHASE_RANGE[1]:.4f}), x in {INPUT_RANGE}; generated, nothing to download")]


DATA_SETS = {
    "omniglot": DataSetCommands(
        "Omniglot: 1623 handwritten characters x 20 drawers, 28x28, strokes 255 on 0", _omniglot_splits),
    "omniglot-runs": DataSetCommands(
        "Omniglot one-shot runs of Lake et al. (2015): 20 runs of 20-way 1-shot, 105x105", _omniglot_runs_splits),
    "rotated-mnist": DataSetCommands(
        "Rotated MNIST (Ghifary et al., 2015): 1000 digits in 6 rotation domains, 28x28", _rotated_mnist_splits),
    "mini-imagenet": DataSetCommands(
        "mini-ImageNet, split of Ravi and Larochelle (2017): 64/16/20 classes x 600 images", _mini_imagenet_splits,
        downloadable=False),
    "cifar-fs": DataSetCommands(
        "CIFAR-FS (Bertinetto et al., 2019): CIFAR-100 split 64/16/20 classes x 600 images", _cifar_fs_splits),
    "sinusoid": DataSetCommands("Sinusoid regression tasks of MAML (Finn et al., 2017)", _sinusoid_splits),
}


def _data_set(name: str) -> DataSetCommands:
    if name not in DATA_SETS:
        raise UserError(f"unknown data set {name!r}; choose one of: {', '.join(DATA_SETS)}")
    return DATA_SETS[name]


def _print_table(rows) -> None:
    print(f"  {'split':<12} {'classes':>7}  {'images/class':<12}  notes")
    for split, classes, per_class, note in rows:
        print(f"  {split:<12} {classes:>7}  {per_class:<12}  {note}")


def _run_prepare(args) -> int:
    commands = _data_set(args.name)
    print(f"preparing {args.name} in {cache_dir(args.cache)} (downloads what the cache and mirror lack)", flush=True)
    try:
        rows = commands.splits(args.cache, args.mirror, True)
    except CannotWrite:
        raise  # says which folder and what to do already
    except OSError as error:  # another failure of the file system
        raise UserError(f"preparing {args.name} failed: {' '.join(str(error).split())}; "
                        "check that the cache folder is writable, or pass --cache DIR") from None
    print(f"{args.name} is ready: {len(rows)} splits")
    return 0


def _run_info(args) -> int:
    commands = _data_set(args.name)
    try:
        rows = commands.splits(args.cache, args.mirror, False)
    except DataError as error:
        if not commands.downloadable:
            raise
        raise UserError(f"{error}; or run `python -m metabook_learn data prepare {args.name}`") from None
    except OSError as error:
        raise UserError(f"reading {args.name} failed: {' '.join(str(error).split())}") from None
    print(commands.summary)
    _print_table(rows)
    return 0


def add_parser(subparsers) -> None:
    """Register ``data`` and its actions with the top-level command line."""
    names = ", ".join(DATA_SETS)
    where = (f"--cache DIR is the writable data folder (default: ${CACHE_ENV}, else $XDG_CACHE_HOME/metabook "
             f"or ~/.cache/metabook); --mirror DIR a read-only folder of upstream archives laid out as "
             f"DIR/<data set>/<file>, searched before any download (default: ${MIRROR_ENV}).")
    data = subparsers.add_parser(
        "data", help="prepare and describe data sets",
        description="Prepare and describe the data sets of metabook. " + where,
    )
    actions = data.add_subparsers(dest="data_action", metavar="ACTION")
    actions.required = True
    for action, run, text in (
        ("prepare", _run_prepare, "fetch (mirror first, then upstream), verify, unpack and cache a data set"),
        ("info", _run_info, "print a data set's splits, classes and images per class (downloads nothing)"),
    ):
        parser = actions.add_parser(action, help=text, description=f"{text[0].upper()}{text[1:]}. {where}",
                                    epilog=f"NAME is one of: {names}. Example: python -m metabook_learn data {action} omniglot")
        parser.add_argument("name", metavar="NAME", help=f"the data set: {names}")
        parser.add_argument("--cache", metavar="DIR", default=None, help=f"writable data folder (default: ${CACHE_ENV})")
        parser.add_argument("--mirror", metavar="DIR", default=None,
                            help=f"read-only folder of upstream archives (default: ${MIRROR_ENV})")
        parser.set_defaults(run=run)
