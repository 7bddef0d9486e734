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
it (:func:`task_minibatches`), so the k-th minibatch of two tasks has
different label counts. The authors' code kept Adam's moments from one task
to the next; here they restart with every task.
Evaluation is :func:`adapt`, the same as MAML's: fine-tune on the support set,
predict the query set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from metabook.inner_loop import (
    DIFFERENTIATE,
    Adaptation,
    InnerLoop,
    Params,
    adapt,
    fine_tune,
    over_tasks,
    resolve_strategy,
    stacked_network,
)

__all__ = ["ReptileStep", "task_minibatches", "task_weights", "reptile_direction", "adapt", "Adaptation"]


@dataclass
class ReptileStep:
    """``direction``: φ − mean_i W_i per parameter, to be used as a gradient.
    ``strategy``: how the tasks ran (``"loop"`` or ``"vmap"``)."""

    direction: Params
    strategy: str


def task_minibatches(num_tasks: int, num_rows: int, batch_size: int, steps: int, device=None) -> torch.Tensor:
    """Each task's support rows for ``steps`` minibatches of ``batch_size``, in order: ``[num_tasks, steps · batch_size]``.

    As ``_mini_batches`` of openai/supervised-reptile (without replacement):
    shuffle the task's ``num_rows`` examples, deal them out in minibatches, and
    shuffle again whenever they run out, a minibatch spanning two passes when
    ``batch_size`` does not divide ``num_rows``. Every task draws its own
    shuffles from torch's global generator on the CPU, outside any vmap, so
    every strategy sees the same rows and a checkpoint (which saves that
    generator) resumes them exactly.
    """
    passes = -(-steps * batch_size // num_rows)  # ceiling division
    orders = [torch.cat([torch.randperm(num_rows) for _ in range(passes)])[:steps * batch_size]
              for _ in range(num_tasks)]
    return torch.stack(orders).to(device)


def task_weights(
    model: nn.Module,
    inner: InnerLoop,
    differentiate: Callable,
    params: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
) -> Params:
    """W_i: the parameters after ``inner.steps`` SGD steps on one task's support set ``[S, ...]``."""
    return fine_tune(model, params, support_x, support_y, inner, differentiate=differentiate)


def reptile_direction(
    model: nn.Module,
    params: Params,
    tasks,
    inner: InnerLoop,
    strategy: str = "auto",
) -> ReptileStep:
    """φ − (1/n) Σ_i W_i for the n tasks of a batch (their support sets ``[n, S, ...]``).

    ``tasks``: anything with ``support_x [n, S, ...]`` and ``support_y [n, S]``
    (its query set is not used). With ``torch.optim.SGD(lr=ε)``::

        step = reptile_direction(model, params, tasks, inner)
        set_gradients(params, step.direction)  # metabook.inner_loop.set_gradients
        optimizer.step()                       # φ ← φ + ε (mean_i W_i − φ)
    """
    params = {name: p.detach() for name, p in params.items()}
    strategy = resolve_strategy(strategy, tasks.support_x.device, stacks=True)
    support_x, support_y = tasks.support_x, tasks.support_y
    num_tasks, num_rows = support_y.shape[:2]
    if inner.batch_size is not None and inner.batch_size < num_rows:
        # Lay each task's minibatches out one after the other; the inner loop then takes them in order.
        rows = task_minibatches(num_tasks, num_rows, inner.batch_size, inner.steps, support_x.device)
        support_x = torch.stack([x[r] for x, r in zip(support_x, rows)])
        support_y = torch.stack([y[r] for y, r in zip(support_y, rows)])
        inner = replace(inner, shuffle=False)
    # No derivative flows through Reptile's inner steps: they are first order by definition.
    network, sgd_steps = stacked_network(strategy, model, replace(inner, first_order=True))
    differentiate = DIFFERENTIATE[strategy]
    weights = over_tasks(
        lambda *args: task_weights(network, sgd_steps, differentiate, *args),
        (params,),
        (support_x, support_y),
        strategy,
    )
    return ReptileStep({name: params[name] - weights[name].mean(0) for name in params}, strategy)
