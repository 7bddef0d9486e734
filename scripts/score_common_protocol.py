"""Score every shipped 5-way Omniglot model under one common protocol: ``results/common_protocol.json``.

    .venv/bin/python scripts/score_common_protocol.py                     # every such shipped model
    .venv/bin/python scripts/score_common_protocol.py --models r2d2-omniglot-5w1s   # some (merged into the file)

Each full-scale run is scored as its paper scored it (MAML with one query per
class, ProtoNets with 15, ...), so their headline numbers do not compare. This
script scores each shipped model of ``metabook_learn.pretrained`` once more on
the same footing: 600 test tasks drawn with seed 0 from the test characters,
15 queries per class, in both batch-norm modes (transductive and inductive);
each model keeps its own shots and test-time steps. It records per model and
mode the score with its 95% interval over the tasks and the per-task scores
(so the results page can pair two 1-shot models on the very same tasks), the
SHA-256 of the weights it scored (the results page refuses a stale entry, and
``tests/test_common_protocol.py`` fails when a shipped model has none), and
the provenance (hardware, torch, commit, time).

It runs on one CPU thread, as every shipped model was scored; Reptile's 50 test
steps make it the slowest (346 s for both modes when the file was first written). The results page reads
the file instead of scoring again in every book build: the shipped models'
reproduction is checked by ``tests/test_pretrained.py``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metabook_learn import pretrained
from metabook_learn.checkpoint import provenance, write_json

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "results" / "common_protocol.json"
PROTOCOL = {"split": "test", "seed": 0, "num_tasks": 600, "ways": 5, "queries": 15,
            "query_bn": ["transductive", "inductive"]}


def in_scope(name: str) -> bool:
    """A shipped 5-way Omniglot classifier: what the common protocol can score."""
    shipped = pretrained.load(name)
    return shipped.config.dataset.startswith("omniglot") and shipped.results["test"]["protocol"]["ways"] == 5


def score(name: str, num_tasks: int) -> dict:
    """``name`` under the common protocol, in both batch-norm modes."""
    began = time.perf_counter()
    modes = {}
    for mode in PROTOCOL["query_bn"]:
        evaluation = pretrained.evaluate(name, num_tasks=num_tasks, queries=PROTOCOL["queries"], query_bn=mode,
                                         seed=PROTOCOL["seed"])
        modes[mode] = {**evaluation.as_dict(), "per_task": [round(float(s), 6) for s in evaluation.per_task]}
    shipped = pretrained.load(name)
    return {"sha256": shipped.results["sha256"], "shots": shipped.results["test"]["protocol"]["shots"],
            "tests": modes, "wall_time_s": time.perf_counter() - began, "provenance": provenance("cpu")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="shipped model names (default: every one in scope)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"results file (default {OUTPUT.relative_to(ROOT)})")
    parser.add_argument("--num-tasks", type=int, default=PROTOCOL["num_tasks"],
                        help="test tasks per model and mode (default 600; fewer only for a quick check)")
    args = parser.parse_args(argv)
    names = args.models or [name for name in pretrained.available() if in_scope(name)]
    for name in names:
        if name not in pretrained.available():
            parser.error(f"no shipped model named {name!r}; available: {', '.join(pretrained.available())}")
        if not in_scope(name):
            parser.error(f"{name} is not a 5-way Omniglot classifier: the common protocol cannot score it")
    if args.num_tasks < 1:
        parser.error(f"--num-tasks must be at least 1, got {args.num_tasks}")
    torch.set_num_threads(1)
    results = json.loads(args.output.read_text()) if args.output.is_file() else {"protocol": {}, "models": {}}
    if results["protocol"] and results["protocol"] != {**PROTOCOL, "num_tasks": args.num_tasks}:
        parser.error(f"{args.output} holds scores under another protocol ({results['protocol']}); "
                     "write to another --output")
    results["protocol"] = {**PROTOCOL, "num_tasks": args.num_tasks}
    for name in names:
        results["models"][name] = score(name, args.num_tasks)
        write_json(args.output, results)  # after every model: an interruption keeps the ones done
        tests = results["models"][name]["tests"]
        print(f"{name:24s} " + "   ".join(f"{mode} {100 * t['mean']:.2f} ± {100 * t['ci95']:.2f}%"
                                          for mode, t in tests.items()), flush=True)
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
