"""Reptile (Nichol, Achiam & Schulman, 2018): move the initialization toward each task's solution.

For every task i of a meta-batch, train from φ for k steps, then step toward
where training went:

    W_i = U^k_τi(φ)                          k gradient steps on task i (inner_loop.fine_tune)
    φ ← φ + ε (1/n) Σ_i (W_i − φ)            Algorithm 2; with n = 1 task, Algorithm 1

No derivative flows through the inner steps. :func:`reptile_direction` returns
φ − mean_i W_i in the place of a gradient, so plain SGD with learning rate ε
performs exactly the update above, and any other optimizer (Adam, a schedule
for ε) can be used on it as well.

The inner steps are those of the inner loop every method of the book shares:
SGD on the whole support set by default, or, as in the paper's Omniglot and
mini-ImageNet experiments, Adam with β1 = 0 on minibatches
(``InnerLoop(optimizer="adam", batch_size=...)``). As in the authors' code
(openai/supervised-reptile, ``_mini_batches``), each task's support set is
shuffled on its own for its minibatches, a new shuffle for every pass over
it (:func:`~metabook_learn.inner_loop.task_minibatches`), so the k-th
minibatch of two tasks has different label counts; at test time too, where
the shuffles come from a generator of the evaluation's own. As in the authors' code too, training keeps the inner
Adam's second moments from one task to the next (only the weights go back to
φ): :func:`reptile_direction` with ``moments``, which the training loop carries
and checkpoints (``Method.carried_state``). A full-scale run that restarted them
with every task ended far below the paper (kept in ``results/gradient_based.json``).
Evaluation starts every test task with fresh moments (the reference starts it
from the training's; how much that matters is not measured here).
Evaluation is :func:`~metabook_learn.inner_loop.adapt`, the same as MAML's: fine-tune on the support set,
predict the query set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from metabook_learn.inner_loop import (
    DIFFERENTIATE,
    AdamMoments,
    Adaptation,
    InnerLoop,
    Params,
    adapt,
    fine_tune,
    lay_out_minibatches,
    over_tasks,
    resolve_strategy,
    stacked_network,
    task_minibatches,
)
from metabook_learn.maml import build_maml_network
from metabook_learn.methods import Method, Preset, Step, inner_loop, register

__all__ = ["ReptileStep", "task_minibatches", "task_weights", "reptile_direction", "adapt", "Adaptation",
           "reptile_step", "reptile_optimizer", "reptile_step_size", "REPTILE"]


@dataclass
class ReptileStep:
    """``direction``: φ − mean_i W_i per parameter, to be used as a gradient.
    ``strategy``: how the tasks ran (``"loop"`` or ``"vmap"``)."""

    direction: Params
    strategy: str


def task_weights(
    model: nn.Module,
    inner: InnerLoop,
    differentiate: Callable,
    params: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    moments: AdamMoments | None = None,
) -> Params:
    """W_i: the parameters after ``inner.steps`` steps on one task's support set ``[S, ...]``.

    ``moments``: the inner Adam's, carried over from the task before and updated
    (:class:`~metabook_learn.inner_loop.AdamMoments`).
    """
    return fine_tune(model, params, support_x, support_y, inner, differentiate=differentiate, moments=moments)


def reptile_direction(
    model: nn.Module,
    params: Params,
    tasks,
    inner: InnerLoop,
    strategy: str = "auto",
    moments: AdamMoments | None = None,
) -> ReptileStep:
    """φ − (1/n) Σ_i W_i for the n tasks of a batch (their support sets ``[n, S, ...]``).

    ``moments``: run the tasks one after the other, each starting its inner Adam
    where the task before left it, as the authors' code does, and leave the last
    moments in it (``inner.optimizer`` must be ``"adam"``; the strategy is then
    ``"loop"``). ``None``: every task starts with fresh moments, in any strategy.

    ``tasks``: anything with ``support_x [n, S, ...]`` and ``support_y [n, S]``
    (its query set is not used). With ``torch.optim.SGD(lr=ε)``::

        step = reptile_direction(model, params, tasks, inner)
        set_gradients(params, step.direction)  # metabook_learn.inner_loop.set_gradients
        optimizer.step()                       # φ ← φ + ε (mean_i W_i − φ)
    """
    params = {name: p.detach() for name, p in params.items()}
    if moments is not None and inner.optimizer != "adam":
        raise ValueError(f"moments are the inner Adam's, but the inner optimizer is {inner.optimizer!r}: "
                         f"pass moments=None, or InnerLoop(optimizer='adam')")
    strategy = "loop" if moments is not None else resolve_strategy(strategy, tasks.support_x.device, stacks=True)
    # Each task's minibatches laid out one after the other (its own shuffles); the inner loop takes them in order.
    support_x, support_y, inner = lay_out_minibatches(tasks.support_x, tasks.support_y, inner)
    # No derivative flows through Reptile's inner steps: they are first order by definition.
    network, sgd_steps = stacked_network(strategy, model, replace(inner, first_order=True))
    differentiate = DIFFERENTIATE[strategy]
    if moments is not None:  # one task after the other: each starts from the moments the one before left
        adapted = [task_weights(network, sgd_steps, differentiate, params, x, y, moments)
                   for x, y in zip(support_x, support_y)]
        weights = {name: torch.stack([w[name] for w in adapted]) for name in params}
    else:
        weights = over_tasks(
            lambda *args: task_weights(network, sgd_steps, differentiate, *args),
            (params,),
            (support_x, support_y),
            strategy,
        )
    return ReptileStep({name: params[name] - weights[name].mean(0) for name in params}, strategy)


# ── Reptile as a metabook method (metabook_learn.methods) ──────────────────────────


def reptile_carried_state(config, params: Params) -> dict | None:
    """What training carries from one meta-batch to the next: the inner Adam's moments (``None`` with SGD)."""
    if config.inner_optimizer != "adam":
        return None
    return {"second_moments": AdamMoments.zeros(params).second, "steps": 0}


def reptile_step(config, model: nn.Module, params: Params, lrs: Params | None, tasks,
                 carried: dict | None = None) -> Step:
    """One meta-batch of Reptile: the direction φ − mean_i W_i, and no metrics (Reptile uses no query set).

    ``carried``: the dict of ``reptile_carried_state``, updated here.
    """
    moments = None if carried is None else AdamMoments(dict(carried["second_moments"]), carried["steps"])
    direction = reptile_direction(model, params, tasks, inner_loop(config), config.strategy, moments).direction
    if moments is not None:
        carried.update(second_moments=moments.second, steps=moments.steps)
    return Step(direction, None, None, None)


def reptile_optimizer(config, params: Params, lrs: Params | None) -> torch.optim.Optimizer:
    """SGD of step ε along φ − mean W: exactly φ ← φ + ε (mean W − φ), Reptile's update."""
    return torch.optim.SGD(params.values(), lr=config.outer_step_size)


def reptile_step_size(config, step: int) -> float:
    """Reptile's ε at ``step`` (0-based): constant, or annealed linearly to ``outer_step_size_final``.

    As in Nichol et al.'s code: with ``f = step / steps``, ε = (1 − f) ε_0 + f ε_final.
    """
    if config.outer_step_size_final is None:
        return config.outer_step_size
    done = step / config.steps
    return (1 - done) * config.outer_step_size + done * config.outer_step_size_final


def check_reptile(config) -> None:
    """Reptile has no ANIL head-only or Meta-SGD rates."""
    if config.head_only or config.learn_lrs:
        raise ValueError("Reptile moves every parameter toward the adapted weights with a fixed inner "
                         "learning rate: head_only and learn_lrs belong to ANIL and Meta-SGD")


_SOURCE = ("Reptile (Nichol et al., 2018), App. A / the commands of openai/supervised-reptile's README (--inner-batch, "
           "--inner-iters, --learning-rate, --meta-step 1, --meta-step-final 0, --meta-batch 5, --meta-iters, "
           "--train-shots, --eval-iters 50): inner Adam (beta1 = 0, models.py), lr 0.001 (0.0005 for 20-way), on "
           "minibatches; their Adam moments carry over from task to task in training (only the weights are "
           "reset), here too. Evaluation steps on minibatches of their --eval-batch (5 for Omniglot 5-way, 10 for "
           "20-way, 5 and 15 for mini-ImageNet 1- and 5-shot), but each test task starts with fresh moments "
           "(theirs from the training's). --query-bn transductive matches their --transductive runs, per-query "
           "their other mode (each query classified batched with the support set)")
# The mini-ImageNet values, which CIFAR-FS borrows (the paper has no CIFAR-FS experiment).
_MINI_IMAGENET = dict(train_shots=15, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=8,
                      inner_batch_size=10, eval_inner_steps=50, eval_inner_batch_size=5, meta_batch=5,
                      outer_step_size=1.0,
                      outer_step_size_final=0.0, steps=100_000)
PRESETS = {
    ("omniglot", "5-way"): Preset(
        dict(train_shots=10, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=5, inner_batch_size=10,
             eval_inner_steps=50, eval_inner_batch_size=5, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=100_000), _SOURCE),
    ("omniglot", "20-way"): Preset(
        dict(train_shots=10, queries=1, inner_optimizer="adam", inner_lr=5e-4, inner_steps=10, inner_batch_size=20,
             eval_inner_steps=50, eval_inner_batch_size=10, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=200_000), _SOURCE),
    ("mini-imagenet", ""): Preset(_MINI_IMAGENET, _SOURCE),
    ("cifar-fs", ""): Preset(
        _MINI_IMAGENET, "Reptile's mini-ImageNet values (the paper has no CIFAR-FS experiment)"),
    ("sinusoid", ""): Preset(
        dict(shots=10, train_shots=50, queries=10, inner_lr=0.02, inner_steps=5, eval_inner_steps=32,
             meta_batch=1, outer_step_size=0.1, outer_step_size_final=0.0, steps=30_000),
        "the Reptile authors' sine-wave demo (gist joschu/f503500cda64f2ce87c8288906b09e2d: innerstepsize 0.02, "
        "outerstepsize0 0.1 annealed to 0, niterations 30000, 32 test steps on ntrain = 10 points); its 5 inner steps "
        "are one epoch of minibatches of 10 of the 50 points, here 5 full-batch steps, and MAML's 1-40-40-1 ReLU "
        "network and sine waves (phase in [0, pi]) replace its 1-64-64-1 tanh network (phase in [0, 2 pi])"),
}


def adjust_preset(values: dict, data: str, ways: int, shots: int, train_shots: int | None) -> dict:
    """The test-time minibatch for ``shots``: their mini-ImageNet 5-shot command tests on minibatches of 15
    (--eval-batch 15), the 1-shot one of 5; a minibatch as large as the support set is the whole set (``None``)."""
    if data in ("mini-imagenet", "cifar-fs") and shots >= 5:
        values["eval_inner_batch_size"] = 15
    if values.get("eval_inner_batch_size") and values["eval_inner_batch_size"] >= ways * shots:
        values["eval_inner_batch_size"] = None
    return values


REPTILE = register(Method(
    name="reptile",
    description="Reptile (Nichol et al., 2018): move the initialization toward each task's adapted weights",
    build=build_maml_network,  # Reptile's experiments use MAML's networks
    step=reptile_step,
    carried_state=reptile_carried_state,
    optimizer=reptile_optimizer,
    learning_rate=reptile_step_size,
    check=check_reptile,
    implies=("first_order",),
    unused_fields={
        ("first_order",): "Reptile never differentiates through its inner loop",
        ("meta_lr", "meta_lr_halving_every"):
            "Reptile's outer step is --outer-step-size (epsilon, annealed with --outer-step-size-final), "
            "not --meta-lr or --meta-lr-halving-every",
    },
    presets=PRESETS, adjust_preset=adjust_preset,
), origin=__name__)
