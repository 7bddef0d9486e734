"""Ship a full-scale run's trained network with the package: ``metabook_learn/pretrained/NAME.pt`` and its index entry.

    .venv/bin/python scripts/ship_model.py results/gradient_based.json maml-5way-1shot maml-omniglot-5w1s

Reads the run's record in the results file (its checkpoint, configuration,
test score with its protocol, provenance) and the checkpoint itself, keeps
only what evaluation needs (the float32 weights, Meta-SGD's rates, the
configuration: no optimizer state), and writes the weights file and its entry
in ``metabook_learn/pretrained/index.json`` with the file's SHA-256. Then it loads
the model back with :func:`metabook_learn.pretrained.load` as a check.
``metabook_learn.pretrained.evaluate(NAME)`` re-scores it on the recorded tasks, and
``tests/test_pretrained.py`` does so for every shipped model.

A run of several training seeds (the in-context transformer on Omniglot: one
record, a ``seeds`` list, no checkpoint of its own) ships one seed's network,
named with ``--seed`` and ``--checkpoint``; its entry carries that seed's test
score, training time and provenance, and the run's test protocol::

    .venv/bin/python scripts/ship_model.py results/in_context.json omniglot in-context-omniglot-5w1s \
        --seed 1 --checkpoint runs/full_scale_in_context/in-context-omniglot-seed1.pt
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from metabook_learn import pretrained
from metabook_learn.checkpoint import load_checkpoint, write_json
from metabook_learn.files import atomic_output


def one_seed(run: dict, args) -> dict:
    """The record of one seed of a run of several (``run["seeds"]``), shaped as a run of one: that seed's test
    score (with the run's protocol), training time and provenance; the checkpoint must be named."""
    if args.seed is None or args.checkpoint is None:
        raise SystemExit(f"run {args.run!r} has several seeds and keeps no checkpoint: name one with --seed and "
                         "its network with --checkpoint")
    entries = {entry["seed"]: entry for entry in run.get("seeds", []) if "test" in entry and "provenance" in entry}
    if args.seed not in entries:
        raise SystemExit(f"run {args.run!r} records no scored seed {args.seed} with its provenance; scored: "
                         f"{', '.join(map(str, sorted(entries))) or 'none'}")
    entry = entries[args.seed]
    return {**run, "test": {**entry["test"], "protocol": run["test"]["protocol"]},
            "training_wall_time_s": entry["training_wall_time_s"], "provenance": entry["provenance"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results file written by scripts/full_scale_*.py")
    parser.add_argument("run", help="the run's name in that file")
    parser.add_argument("name", help="the shipped model's name, e.g. maml-omniglot-5w1s")
    parser.add_argument("--checkpoint", type=Path, default=None, help="the checkpoint (default: the run's own)")
    parser.add_argument("--seed", type=int, default=None, help="for a run of several seeds: the seed to ship")
    args = parser.parse_args(argv)

    results = json.loads(args.results.read_text())
    if results.get("smoke"):
        raise SystemExit(f"{args.results} was written by --smoke: its numbers mean nothing; ship a full run")
    run = results["runs"][args.run]
    if args.seed is not None or "checkpoint" not in run and "seeds" in run:
        run = one_seed(run, args)
    domain_run = "held_out" in run  # ERM or MLDG on Rotated MNIST: scored on its held-out domain, as it is
    if "protocol" not in run["test"] and not domain_run:
        raise SystemExit(f"run {args.run!r} records no test protocol; score it again with the current script")
    state = load_checkpoint(args.checkpoint or run["checkpoint"])
    if args.seed is not None and state["config"]["seed"] != args.seed:
        raise SystemExit(f"{args.checkpoint} was trained with seed {state['config']['seed']}, not {args.seed}")
    if state["step"] != run["config"]["steps"]:
        raise SystemExit(f"the checkpoint is at step {state['step']} of {run['config']['steps']}: finish the run first")
    config = dict(state["config"])
    if config["dataset"].startswith("omniglot-"):
        # The ProtoNets script names the training split in the data set ("omniglot-train"); the shipped model is
        # rebuilt and tested on Omniglot's test split like every other (MAML's body, as that script's main runs).
        config["dataset"] = "omniglot"
    weights = {"format": pretrained.FORMAT, "config": config,
               "model": {k: v.contiguous() for k, v in state["model"].items()}, "lrs": state["lrs"]}
    if domain_run:  # no few-shot method builds its network: the file names it (scripts/full_scale_mldg.py's)
        weights["network"] = {"name": "DigitConvNet", "num_classes": 10, "filters": results["settings"]["filters"]}
    try:  # nothing is written for weights that pretrained.load would not rebuild
        pretrained.rebuild(weights, f"{args.run}'s checkpoint")
    except ValueError as error:
        raise SystemExit(str(error)) from None
    file = f"{args.name}.pt"
    with atomic_output(pretrained.FOLDER / file) as temporary:
        torch.save(weights, temporary)
    test = {k: v for k, v in run["test"].items() if k != "per_task"}
    if domain_run:
        test["protocol"] = {"held_out": run["held_out"], "num_examples": run["test"]["num_examples"]}
    index_path = pretrained.FOLDER / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[args.name] = {
        "file": file, "sha256": pretrained.file_digest(pretrained.FOLDER / file),
        "source": {"results": str(args.results), "run": args.run, "script": results.get("script"),
                   **({} if args.seed is None else {"seed": args.seed})},
        "paper": run["paper"], "test": test, "trained_steps": state["step"],
        "training_wall_time_s": run["training_wall_time_s"], "provenance": run["provenance"],
    }
    write_json(index_path, dict(sorted(index.items())))
    shipped = pretrained.load(args.name)
    size = (pretrained.FOLDER / file).stat().st_size
    print(f"shipped {args.name}: {size / 1024:.0f} KB, {type(shipped.model).__name__}, "
          f"recorded test {100 * test['mean']:.2f}% ± {100 * test['ci95']:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
