"""Joint training: the baseline every meta-learner must beat.

One network is trained on the pooled examples of many tasks at once, as if
they were one data set, and only at test time fine-tuned on a new task's
support set. MAML's paper calls it the *pretrained* baseline (Finn et al.,
2017, Section 5.1: "pretraining on all of the tasks"). With the squared error
it learns the average of the tasks' functions: for MAML's sine waves
A sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], that is E[A]·E[sin(x − φ)] =
−(2/π)·2.55·cos x ≈ −1.62 cos x (the phases do not cancel), from which a few
gradient steps on ten points cannot go far. What separates it from MAML is
that MAML trains for the steps that follow.

    for step in range(steps):
        tasks = sampler.sample(tasks_per_step)
        θ ← Adam step on mean_i L(f_θ(support_x_i), support_y_i)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["joint_training"]


def joint_training(model: nn.Module, sampler, steps: int, tasks_per_step: int, lr: float = 1e-3, loss=F.mse_loss,
                   device: torch.device | str = "cpu") -> list[float]:
    """Train ``model`` in place on the support sets of ``steps`` batches of ``tasks_per_step`` tasks.

    ``sampler.sample(n)``: ``support_x [n, S, ...]``, ``support_y [n, S, ...]``
    (a :class:`metabook_learn.data.sinusoid.SinusoidSampler`, say). The network sees every
    task's points as one batch ``[n, S, ...]``; there is no inner loop. Returns
    the training loss of every step.
    """
    if steps < 1 or tasks_per_step < 1:
        raise ValueError(f"need steps >= 1 and tasks_per_step >= 1, got {steps} and {tasks_per_step}")
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        batch = sampler.sample(tasks_per_step).to(device)
        value = loss(model(batch.support_x), batch.support_y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses
