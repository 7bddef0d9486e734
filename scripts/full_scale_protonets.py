"""Prototypical Networks on Omniglot at full scale, on two CPU cores or a GPU: the numbers behind the chapter's table.

    .venv/bin/python scripts/full_scale_protonets.py                          # every run -> results/protonets.json
    .venv/bin/python scripts/full_scale_protonets.py --runs protonet-vinyals  # one run (merged into that file)
    .venv/bin/python scripts/full_scale_protonets.py --smoke                  # a few steps, any device, temp output

Each run meta-trains a :class:`metabook_learn.protonets.PrototypicalNetwork` with
:func:`metabook_learn.training.train` (``algorithm="protonet"``) on 60-way 1-shot
episodes with 5 queries per class (1-shot, or 5-shot for the 5-shot
tests), Adam with learning rate 1e-3 and one episode per update, as Snell et
al. (2017, Sec. 3.1) trained for Omniglot, and tests with
:func:`metabook_learn.evaluation.evaluate` on 1,000 episodes of 15 queries per
class (their test episodes: 1,000, and the authors' code's default of 15
test queries), in both batch-norm modes.

===================  ===============================  ==========================================
run                  trained on                       tested on (paper, Table 1)
===================  ===============================  ==========================================
protonet-vinyals     metabook's 1100-character split  test split, 5-way 1-shot (98.8%) and
                     with rotations (MAML's body)     20-way 1-shot (96.0%)
protonet-snell-enc   the same, Snell et al.'s         the same
                     max-pooling encoder (bf16,
                     channels-last)
protonet-5shot       the same, 60-way 5-shot          5-way 5-shot (99.7%), 20-way 5-shot (98.9%)
protonet-authors-    the authors' split files         their test split, as protonet-vinyals:
split                (train.txt, val.txt), as         the paper's split, like for like with
                     protonet-vinyals-bf16            Table 1 (needs ``--split-files``)
protonet-vinyals-    as protonet-vinyals, under       as protonet-vinyals: does the CPU fast
bf16                 bfloat16 autocast, channels-     path (benchmarks/cpu_fast_path.py) keep
                     last                             the accuracy?
protonet-lake        Lake et al.'s background set     Lake et al.'s 20 one-shot runs (people: 4.5%
                     (30 alphabets), with rotations   error) and 20-way 1-shot episodes of the
                     (bf16, channels-last)            evaluation set
===================  ===============================  ==========================================

The learning rate starts at 1e-3 and halves every 2,000 episodes, as in the
paper. Deviations from it, recorded in the results file: their code stops
early on validation loss, then retrains on training + validation characters
(``run_train.py``, then ``run_trainval.py``); these runs train for a fixed
number of episodes (``STEPS``), on the training characters only. Their split
files are not distributed with Omniglot; metabook's split has the same sizes
(``metabook_learn.data.omniglot``) but draws its test characters across
alphabets, where theirs are by alphabet. ``protonet-authors-split`` trains and
tests on their files instead: download ``train.txt``, ``val.txt`` and
``test.txt`` from ``data/omniglot/splits/vinyals`` of
https://github.com/jakesnell/prototypical-networks (MIT licence) into a folder
and pass it as ``--split-files``; the results record each file's SHA-256. Their test-time batch norm used running
averages; metabook's networks normalize with episode statistics
(``transductive`` and ``inductive``, :mod:`metabook_learn.protonets`).

Checkpoints go to ``--checkpoints`` (default ``runs/full_scale``) and runs
resume from them; the results file is rewritten atomically after every run,
with each run's provenance (GPU, torch, commit, wall times) and configuration.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from metabook_learn.data import NWayKShotSampler, load_omniglot, load_omniglot_runs, score_one_shot
from metabook_learn.data.omniglot import omniglot_split_characters
from metabook_learn.evaluation import evaluate
from metabook_learn.models import use_channels_last
from metabook_learn.protonets import PrototypicalNetwork, omniglot_embedding, one_shot_classifier
from metabook_learn.runtime import seed_everything
from metabook_learn.training import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when the tests load this file by path
from full_scale_common import (Script, command_line, open_results, print_table, run_record, save, score,  # noqa: E402
                               settle, test_record, train_run)

TRAIN_WAYS, QUERIES, TEST_QUERIES, LEARNING_RATE, HALVING_EVERY = 60, 5, 15, 1e-3, 2_000
STEPS = 20_000
# Snell et al. (2017), Table 1: Omniglot, Euclidean distance, trained 60-way (1 shot for the 1-shot columns, 5 for
# the 5-shot ones), mean over 1,000 test episodes.
PAPER = {"5-way 1-shot": 0.988, "20-way 1-shot": 0.960, "5-way 5-shot": 0.997, "20-way 5-shot": 0.989}
PAPER_SOURCE = "Snell et al. (2017), Table 1"
LAKE_REFERENCE = "people 4.5% error (Lake et al., 2015); chance 95%"
FIXED_BUDGET = ("a fixed number of episodes on the training characters (the authors' code stops early on "
                "validation loss, then retrains on training + validation)")
METABOOK_SPLIT = ("metabook's split (1,100 training, 100 validation, 423 test characters, drawn across alphabets) "
                  "where the authors' split files (jakesnell/prototypical-networks, data/omniglot/splits/vinyals) "
                  "are by alphabet")
BATCH_NORM = "batch norm with episode statistics (the paper's code uses running averages at test time)"
STRIDED_BODY = "MAML's body, strided convolutions, where Snell et al. use 2x2 max-pooling (protonet-snell-enc)"
RESAMPLING = ("28x28 grey levels resized with PIL's Lanczos filter, where the authors' code rotates and resizes the "
              "1-bit PNGs with PIL's default, nearest neighbour: binary images")


def deviations(run: "Run") -> str:
    """How the run differs from Snell et al.'s Omniglot protocol."""
    return "; ".join((FIXED_BUDGET, *(() if run.authors_split else (METABOOK_SPLIT,)), BATCH_NORM,
                      *((STRIDED_BODY,) if run.downsample == "stride" else ()), RESAMPLING))
AUTHORS_SPLIT_FILES = ("train", "val", "test")  # <name>.txt in --split-files, one class per line


@dataclass(frozen=True)
class Run:
    name: str
    train_split: str  # load_omniglot split; "background" gets rotations added here
    downsample: str  # "stride": MAML's body; "maxpool": Snell et al.'s encoder
    lake: bool  # test on Lake et al.'s runs and the evaluation set instead of the test split
    shots: int = 1  # in training and test episodes
    fast: bool = False  # the CPU fast path: bfloat16 autocast and channels-last convolutions
    authors_split: bool = False  # the authors' split files (--split-files) instead of metabook's split


RUNS = (
    Run("protonet-vinyals", "train", "stride", lake=False),
    Run("protonet-5shot", "train", "stride", lake=False, shots=5),
    Run("protonet-vinyals-bf16", "train", "stride", lake=False, fast=True),
    Run("protonet-authors-split", "train", "stride", lake=False, fast=True, authors_split=True),
    # The runs made after protonet-vinyals-bf16 showed that the fast path keeps the accuracy take it.
    Run("protonet-snell-enc", "train", "maxpool", lake=False, fast=True),
    Run("protonet-lake", "background", "stride", lake=True, fast=True),
)
SCRIPT = Script(__file__, __doc__, "protonets.json", runs=tuple(r.name for r in RUNS), test_tasks=(1000, 4),
                smoke="3 episodes of 5-way training and 4 test episodes per setting", needs_gpu=False)


def run_config(run: Run, args, device: torch.device) -> TrainConfig:
    values = dict(steps=STEPS, meta_batch=1, validate_every=1000, validation_tasks=200, checkpoint_every=1000,
                  log_every=100)
    if args.smoke:  # a few of everything: checks the pipeline end to end, not the numbers
        values.update(steps=3, validate_every=3, validation_tasks=4, checkpoint_every=2, log_every=1)
    if run.lake:  # Lake et al.'s protocol has no validation alphabets
        values["validate_every"] = 0
    return TrainConfig(algorithm="protonet", dataset=f"omniglot-{run.train_split}", ways=args.train_ways,
                       shots=run.shots, queries=QUERIES, meta_lr=LEARNING_RATE, meta_lr_halving_every=HALVING_EVERY,
                       seed=args.seed, device=str(device), bf16=args.bf16 or run.fast, channels_last=run.fast,
                       **values)


def load_split(run: Run, name: str, args, device):
    """The ``name`` split ("train", "val", "test", or Lake et al.'s "background"/"evaluation") of ``run``."""
    if run.authors_split:
        return load_omniglot(split_file=args.split_files / f"{name}.txt", cache=args.cache, mirror=args.mirror).to(device)
    data = load_omniglot(name, cache=args.cache, mirror=args.mirror)
    # Lake et al.'s background set has no rotations of its own; they are the usual augmentation.
    return (data.with_rotations((0, 1, 2, 3)) if name == "background" else data).to(device)


def authors_split_folder(args) -> Path | None:
    """The folder of the authors' split files; in a smoke test without one, stand-ins in their format."""
    if args.split_files is None and args.smoke:  # a few characters of metabook's split, written as the authors do
        folder = args.output.parent / "splits"
        folder.mkdir(parents=True, exist_ok=True)
        for name in AUTHORS_SPLIT_FILES:
            lines = [f"{character}/rot{90 * turns:03d}" for character in omniglot_split_characters(name)[:10]
                     for turns in range(4)]
            (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
        return folder
    if args.split_files is None:
        return None
    missing = [f"{name}.txt" for name in AUTHORS_SPLIT_FILES if not (args.split_files / f"{name}.txt").is_file()]
    if missing:
        raise SystemExit(f"--split-files {args.split_files}: {', '.join(missing)} missing; download them from "
                         "data/omniglot/splits/vinyals of https://github.com/jakesnell/prototypical-networks")
    return args.split_files


def test_scores(model: PrototypicalNetwork, data, ways: int, args, seed: int, shots: int = 1,
                split: str = "test") -> dict:
    """Both batch-norm modes on the same ``args.test_tasks`` episodes (same sampler seed), in float32.

    ``split``: how the results file names the test classes (``metabook_learn.pretrained`` re-draws them)."""
    scores = {}
    for mode in ("transductive", "inductive"):
        sampler = NWayKShotSampler(data, ways, shots, TEST_QUERIES, seed=seed)
        learner = PrototypicalNetwork(model.embedding, ways, mode)
        test = evaluate(learner, sampler, None, num_tasks=args.test_tasks, strategy=args.strategy,
                        progress=not args.no_progress)
        scores[mode] = test_record(test, split, seed, ways, shots, TEST_QUERIES)
    return scores


def do_run(run: Run, args, device: torch.device) -> dict:
    config = run_config(run, args, device)
    seed_everything(config.seed)
    model = PrototypicalNetwork(omniglot_embedding(64, run.downsample), ways=config.ways)
    train_data = load_split(run, run.train_split, args, device)
    train_sampler = NWayKShotSampler(train_data, config.ways, run.shots, QUERIES, config.seed)
    val_sampler = None
    if config.validate_every:
        val_data = load_split(run, "val", args, device)
        val_sampler = NWayKShotSampler(val_data, config.ways, run.shots, QUERIES, config.seed + 1)
    checkpoint = args.checkpoints / f"{run.name}.pt"
    trained = train_run(run.name, config, model, train_sampler, val_sampler, checkpoint, args,
                        unit=f"episodes of {config.ways}-way {run.shots}-shot")

    began = time.perf_counter()
    use_channels_last(model, on=False)  # tested in float32 and the default layout, as every other run
    result = {"setting": f"Omniglot, trained {config.ways}-way {run.shots}-shot on {run.train_split}"
                         + (" of the authors' split files" if run.authors_split else "")
                         + (" (bfloat16 autocast, channels-last)" if run.fast else ""),
              "embedding": "MAML's Omniglot body (strided convolutions)" if run.downsample == "stride"
              else "Snell et al.'s encoder (max-pooling)"}
    # "tests": every setting in both batch-norm modes; "test": the headline number (transductive, as the
    # other results files report it), so that tables across methods can read every file the same way.
    if run.lake:
        evaluation = load_omniglot("evaluation", cache=args.cache, mirror=args.mirror).to(device)
        result["tests"] = {"evaluation set, 20-way 1-shot": test_scores(model, evaluation, 20, args, seed=0)}
        result["test_setting"] = "evaluation set, 20-way 1-shot"
        runs = load_omniglot_runs(image_size=28, cache=args.cache, mirror=args.mirror)
        result["lake_runs_error"] = {
            mode: score_one_shot(one_shot_classifier(PrototypicalNetwork(model.embedding, 20, mode)), runs).mean_error
            for mode in ("transductive", "inductive")}
        result["lake_runs_reference"] = LAKE_REFERENCE
        result["paper"] = ("none for Lake et al.'s alphabets (the paper tests on Vinyals et al.'s split of the "
                           f"characters); Lake et al.'s runs: {LAKE_REFERENCE}")
    else:
        test_data = load_split(run, "test", args, device)
        split = "the authors' test.txt" if run.authors_split else "test"
        result["tests"] = {f"{ways}-way {run.shots}-shot": test_scores(model, test_data, ways, args, 0, run.shots,
                                                                       split) for ways in (5, 20)}
        result["test_setting"] = f"5-way {run.shots}-shot"
        result["paper"] = f"{100 * PAPER[result['test_setting']]:.1f} ({PAPER_SOURCE}, {result['test_setting']})"
        result["paper_by_setting"] = {**PAPER, "source": PAPER_SOURCE}
    if run.authors_split:  # which files, exactly: they are not part of this repository
        result["split_files_sha256"] = {f"{name}.txt": hashlib.sha256((args.split_files / f"{name}.txt").read_bytes())
                                        .hexdigest() for name in AUTHORS_SPLIT_FILES}
    result["test"] = result["tests"][result["test_setting"]]["transductive"]
    # validation: accuracy on 60-way 1-shot episodes of the val split (the training way), every 1000 episodes
    return run_record(trained, config, checkpoint, began, **result,
                      validation=dict(zip(*trained.column("validation"))),
                      deviations_from_paper=deviations(run))


def summary_rows(results: dict) -> list[list[str]]:
    """Every run's every test setting in both batch-norm modes, and Lake et al.'s runs."""
    rows = []
    for name, result in results["runs"].items():
        for setting, modes in result["tests"].items():
            rows.append([name, setting, *(score(modes[m]) for m in ("transductive", "inductive"))])
        if "lake_runs_error" in result:
            rows.append([name, "Lake et al.'s runs, error (people 4.5%)",
                         *(f"{100 * result['lake_runs_error'][m]:.1f}%" for m in ("transductive", "inductive"))])
    return rows


def main(argv=None) -> int:
    parser = command_line(SCRIPT)
    parser.add_argument("--strategy", default="auto", choices=("auto", "loop", "vmap"),
                        help="how the episodes of a batch run (default: vmap on a GPU, loop on the CPU)")
    parser.add_argument("--split-files", type=Path, default=None,
                        help="folder with the authors' train.txt, val.txt and test.txt (run protonet-authors-split)")
    args = parser.parse_args(argv)
    device = settle(args, SCRIPT)
    args.split_files = authors_split_folder(args)
    if "protonet-authors-split" in args.runs and args.split_files is None:
        parser.error("run protonet-authors-split needs --split-files: a folder with train.txt, val.txt and test.txt "
                     "from data/omniglot/splits/vinyals of https://github.com/jakesnell/prototypical-networks "
                     "(or leave the run out with --runs)")
    args.train_ways = 5 if args.smoke else TRAIN_WAYS
    results = open_results(args, SCRIPT)
    for run in RUNS:
        if run.name in args.runs:
            results["runs"][run.name] = do_run(run, args, device)
            save(results, args.output)

    print_table(["run", "test episodes", "transductive", "inductive"], summary_rows(results), args.output,
                text_columns=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
