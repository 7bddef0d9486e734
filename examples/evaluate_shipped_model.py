"""Evaluating a shipped model: load a trained network by name, re-score it, and use it on one task by hand.

    python examples/evaluate_shipped_model.py                               # MAML, all 600 recorded tasks (~1 min)
    python examples/evaluate_shipped_model.py --model protonet-omniglot-1shot --tasks 100

The package ships the full-scale runs of ``results/`` as small weight files
with checksums (``metabook_learn.pretrained``). Each records the exact test
protocol it was scored with (split, sampler seed, tasks, ways, shots, queries,
batch-norm mode), so re-scoring it on all of the recorded tasks gives the
recorded number again, on any CPU with the same thread count.
"""
from __future__ import annotations

import argparse

import torch

from metabook_learn import pretrained
from metabook_learn.data import NWayKShotSampler, load_omniglot
from metabook_learn.inner_loop import adapt, parameters_of


def main(name: str = "maml-omniglot-5w1s", tasks: int | None = None) -> float:
    """Re-score ``name`` on ``tasks`` of its recorded test tasks (all of them by default); return the accuracy."""
    print("shipped models:", ", ".join(pretrained.available()))
    shipped = pretrained.load(name)  # checks the SHA-256, then reads tensors only
    recorded = shipped.results["test"]
    print(f"{name}: {shipped.config.algorithm} trained {shipped.results['trained_steps']} steps; recorded "
          f"{100 * recorded['mean']:.2f}% ± {100 * recorded['ci95']:.2f}% on {recorded['num_tasks']} test tasks "
          f"(paper: {shipped.results['paper']})")

    score = pretrained.evaluate(name, num_tasks=tasks)  # the recorded protocol; fewer tasks when asked
    print(f"re-scored now: {score}")
    if tasks is None:
        print("equal to the recorded score:", abs(score.mean - recorded["mean"]) < 1e-9)

    # One new task by hand: five characters never seen in training, one image of each to learn from.
    protocol = recorded["protocol"]
    task = NWayKShotSampler(load_omniglot("test"), protocol["ways"], protocol["shots"], 5, seed=2026).sample(1)
    with torch.no_grad():
        if shipped.eval_inner is None:  # an episodic learner: the episode itself adapts, at the task's ways
            learner = shipped.model.at_ways(protocol["ways"])
            _, logits = learner(task.support_x[0], task.support_y[0], task.query_x[0], task.query_y[0])
        else:  # a gradient-based learner: the recorded inner loop fine-tunes on the support images
            logits = adapt(shipped.model, parameters_of(shipped.model), task, shipped.eval_inner,
                           lrs=shipped.lrs, strategy="loop").query_outputs[0]
    print(f"one new task: labels {task.query_y[0].tolist()}\n        predicted {logits.argmax(-1).tolist()}")
    return score.mean


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="maml-omniglot-5w1s", help="a shipped model's name")
    parser.add_argument("--tasks", type=int, default=None, help="test tasks (default: all the recorded ones)")
    arguments = parser.parse_args()
    main(arguments.model, arguments.tasks)
