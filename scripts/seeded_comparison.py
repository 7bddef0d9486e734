"""Methods compared the way a comparison must be: several training seeds each, every run scored on the same test tasks.

    .venv/bin/python scripts/seeded_comparison.py                        # every method, 3 seeds -> results/protomaml_comparison.json
    .venv/bin/python scripts/seeded_comparison.py --methods protomaml    # one method's seeds (merged into that file)
    .venv/bin/python scripts/seeded_comparison.py --smoke                # a few steps, temp output

The question is the one ``book/add-your-own-method.md`` leaves open: does
ProtoMAML (Triantafillou et al., 2020), MAML started from a prototypical
head, beat MAML and Prototypical Networks on Omniglot 5-way 1-shot? One
training run of each answers nothing, since two runs of one method differ
by their seed. So every method trains with seeds 0, 1 and 2, at its paper's
hyperparameters (``metabook_learn.train_cli.paper_defaults``) for a short,
fixed budget that fits two CPU cores:

==========  ===========  ==================================================
method      steps        one step
==========  ===========  ==================================================
maml           800       32 tasks of 5-way 1-shot, 1 inner step (3 at test), α = 2.0
protomaml      800       the same, from the prototype head
protonet     2,000       one 60-way 1-shot episode, 5 queries per class
==========  ===========  ==================================================

These budgets are a fraction of full training (MAML: 60,000 steps in its
paper, App. A.1; ProtoNets' paper gives no episode count for Omniglot, and the
authors' code trains until the validation loss stops improving), and they are not equal compute (the table in the results
file records each run's wall time): the comparison is of the methods at this
budget, not of their converged accuracy. No validation, no model selection:
each run is scored after its last step.

Every run is scored on the same 600 test tasks (5-way 1-shot, 15 queries per
class, test characters, sampler seed 0), in both batch-norm modes. Methods are
compared by :func:`metabook_learn.evaluation.paired_difference`: for each seed,
the mean over those tasks of the difference of the two runs' accuracies,
then the mean of the three differences and its 95% t-interval over seeds (t
with 2 degrees of freedom, 4.30).
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from metabook_learn.data import NWayKShotSampler, load_omniglot
from metabook_learn.evaluation import evaluate, over_seeds, paired_difference
from metabook_learn.methods import get as get_method
from metabook_learn.runtime import seed_everything
from metabook_learn.setups import build_model, make_sampler
from metabook_learn.train_cli import paper_defaults
from metabook_learn.training import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when the tests load this file by path
from full_scale_common import (Script, command_line, open_results, print_table, run_record, save,  # noqa: E402
                               settle, test_record, train_run)

BUDGETS = {"maml": 800, "protomaml": 800, "protonet": 2_000}  # meta-steps (ProtoNets: episodes) per run
SEEDS = (0, 1, 2)
WAYS, SHOTS, TEST_QUERIES, TEST_SEED = 5, 1, 15, 0
MODES = ("transductive", "inductive")
PAPER = ("no published number at this budget; at full scale: MAML 98.7 ± 0.4 (Finn et al., 2017, Table 1), "
         "ProtoNets 98.8 (Snell et al., 2017, Table 1); ProtoMAML has no Omniglot experiment "
         "(Triantafillou et al., 2020, train on Meta-Dataset)")
DEVIATIONS = ("a short budget (steps column) instead of MAML's 60,000 meta-steps (Finn et al., App. A.1) and "
              "ProtoNets' training until the validation loss stops improving (the authors' code); no "
              "validation or early stopping; metabook's Omniglot split of Vinyals et al.'s sizes; "
              "ProtoMAML on Omniglot with MAML's hyperparameters (its paper trains on Meta-Dataset only)")
SCRIPT = Script(__file__, __doc__, "protomaml_comparison.json", runs=tuple(BUDGETS), test_tasks=(600, 8),
                checkpoints="runs/comparison", smoke="3 steps per run and 8 test tasks", needs_gpu=False)


def run_config(method: str, seed: int, args, device: torch.device) -> TrainConfig:
    values, _ = paper_defaults(method, "omniglot", WAYS, SHOTS)
    values.update(steps=BUDGETS[method], validate_every=0, checkpoint_every=200, log_every=50)
    if args.smoke:
        values.update(steps=3, meta_batch=2, checkpoint_every=2, log_every=1)
        if "train_ways" in values:
            values["train_ways"] = WAYS
    return TrainConfig(algorithm=method, dataset="omniglot", ways=WAYS, shots=SHOTS, seed=seed, device=str(device),
                       **values)


def do_run(method: str, seed: int, args, device: torch.device, test_images) -> dict:
    config = run_config(method, seed, args, device)
    seed_everything(seed)
    model = build_model(config, config.training_ways)
    sampler = make_sampler(config, "train", seed, device, args.cache, args.mirror, training=True)
    checkpoint = args.checkpoints / f"{method}-seed{seed}.pt"
    trained = train_run(f"{method}, seed {seed}", config, model, sampler, None, checkpoint, args)

    began = time.perf_counter()
    if hasattr(model, "at_ways"):  # an episodic learner trained with more ways than it is tested with
        model = model.at_ways(WAYS)
    tests = {}
    for mode in MODES:
        if hasattr(model, "query_bn"):
            model.query_bn = mode
        inner = replace(trained.eval_inner, query_bn=mode) if trained.eval_inner is not None else None
        sampler = NWayKShotSampler(test_images, WAYS, SHOTS, TEST_QUERIES, seed=TEST_SEED)
        scores = evaluate(model, sampler, inner, num_tasks=args.test_tasks, lrs=trained.lrs, method=method,
                          progress=not args.no_progress)
        tests[mode] = test_record(scores, "test", TEST_SEED, WAYS, SHOTS, TEST_QUERIES)
    print(f"{method}, seed {seed}: {100 * tests['transductive']['mean']:.2f}% transductive, "
          f"{100 * tests['inductive']['mean']:.2f}% inductive; trained in {trained.wall_time_s / 60:.1f} min",
          flush=True)
    return run_record(trained, config, checkpoint, began, method=method, seed=seed, steps=config.steps,
                      setting=f"Omniglot {WAYS}-way {SHOTS}-shot, {config.steps} steps", paper=PAPER,
                      tests=tests, test_setting="transductive", test=tests["transductive"])


def per_task(results: dict, method: str, mode: str) -> list[list[float]] | None:
    """``[seeds, tasks]`` for ``method`` in batch-norm ``mode``, or None while a seed is missing."""
    runs = [results["runs"].get(f"{method}-seed{seed}") for seed in SEEDS]
    if any(run is None for run in runs):
        return None
    return [run["tests"][mode]["per_task"] for run in runs]


def summarize(results: dict) -> dict:
    """Each method's mean over seeds and every pair's paired difference, in both modes, for the methods done."""
    summary = {"seeds": list(SEEDS), "confidence": 0.95, "by_method": {}, "paired": {}}
    for mode in MODES:
        done = {method: scores for method in BUDGETS if (scores := per_task(results, method, mode)) is not None}
        for method, scores in done.items():
            seed_means = [sum(row) / len(row) for row in scores]
            summary["by_method"].setdefault(method, {})[mode] = vars(over_seeds(seed_means))
        names = list(done)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                summary["paired"].setdefault(f"{a} - {b}", {})[mode] = vars(paired_difference(done[a], done[b]))
    return summary


def main(argv=None) -> int:
    parser = command_line(SCRIPT)
    parser.add_argument("--summarize", action="store_true",
                        help="train nothing: recompute the summary of the runs in --output (after merging files "
                             "written by several processes with scripts/merge_results.py)")
    args = parser.parse_args(argv)
    device = settle(args, SCRIPT)
    protocol = {"ways": WAYS, "shots": SHOTS, "queries": TEST_QUERIES, "test_seed": TEST_SEED, "tasks": args.test_tasks}
    results = open_results(args, SCRIPT, **({} if args.summarize else {"protocol": protocol}), budgets=BUDGETS,
                           deviations_from_paper=DEVIATIONS)
    if args.summarize:
        args.runs = []
        results["summary"] = summarize(results)
        save(results, args.output)
    else:
        test_images = load_omniglot("test", cache=args.cache, mirror=args.mirror).to(device)
    for method in args.runs:
        get_method(method)  # an unknown name fails here, before any training
        for seed in SEEDS:
            results["runs"][f"{method}-seed{seed}"] = do_run(method, seed, args, device, test_images)
            results["summary"] = summarize(results)
            save(results, args.output)

    rows = []
    for method, modes in results["summary"]["by_method"].items():
        rows.append([method, *(f"{100 * modes[m]['mean']:.2f} ± {100 * modes[m]['half_width']:.2f}" for m in MODES)])
    for pair, modes in results["summary"]["paired"].items():
        rows.append([pair, *(f"{100 * modes[m]['mean']:+.2f} ± {100 * modes[m]['half_width']:.2f}" for m in MODES)])
    print_table(["method or pair", *MODES], rows, args.output,
                notes=[f"± : half-width of the 95% t-interval over {len(SEEDS)} training seeds (differences paired "
                       f"on the same {results['protocol']['tasks']} test tasks)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
