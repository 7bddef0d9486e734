"""Pretrain, then fine-tune: the baseline every few-shot comparison needs (Chen et al., 2019, Sec. 3.1).

Meta-learning trains for the few-shot problem directly, task by task. The
*Baseline* of Chen et al. ("A Closer Look at Few-shot Classification") does
not: it trains an ordinary classifier on all the training classes at once,
then, for a new task, keeps the feature extractor f_θ fixed and fits a new
linear head on the task's support set:

    pretraining:  for every step, a batch of training images x and their class numbers y ∈ {0..C−1}
                  (θ, W_C) ← Adam step on CE(W_C f_θ(x) + b_C, y)
    a new task:   W_N, b_N ← fitted on the N·K support examples by gradient descent on CE(W_N f_θ(x) + b_N, y),
                  f_θ frozen; the query set is classified by W_N f_θ(x) + b_N

Chen et al. found that this baseline, with a deeper backbone, is competitive
with the meta-learners of its time on mini-ImageNet and CUB; so a
meta-learner that does not beat it has not shown what meta-learning adds.

How metabook runs it, and where it differs from the authors' code
(wyharveychen/CloserLookFewShot, ``methods/baselinefinetune.py``):

* pretraining: Adam, learning rate 1e-3, batches of 16 images (the paper's
  values) drawn at random from all training classes, each rotated class a
  class of its own (as in the episodic methods' Omniglot protocol), for the
  caller's number of steps (the authors' ``train.py`` pretrains for 5 epochs
  on Omniglot, 400 on mini-ImageNet);
* the new head: :data:`FINE_TUNING`, the package's inner loop adapting the
  head only (ANIL's ``head_only``), from a zero head, full-batch gradient
  descent. The authors' code fits a randomly initialized head with SGD
  (learning rate 0.01, momentum 0.9, weight decay 1e-3, batches of 4, 100
  epochs). Fitting a linear softmax head on fixed features is a convex
  problem, so the start matters little; the step size does, and is a
  test-time hyperparameter to be chosen on validation tasks only.
* batch norm: the network normalizes with batch statistics (metabook's
  networks keep no running averages), during pretraining over each batch
  and at test time in the chosen ``query_bn`` mode, as for every method.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F

from metabook_learn.data import ClassImages
from metabook_learn.data.samplers import load_images
from metabook_learn.inner_loop import InnerLoop
from metabook_learn.models import ConvNet

__all__ = ["class_batch", "pretrain", "with_new_head", "FINE_TUNING"]

#: How the new head is fitted at test time, 100 full-batch gradient steps on the support set with the body fixed.
FINE_TUNING = InnerLoop(steps=100, lr=0.5, head_only=True, first_order=True)


def class_batch(data: ClassImages, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` images drawn uniformly over classes, then over each class's images.

    Returns ``x float32 [B, C, H, W]`` in [0, 1], rotated by their class's
    quarter turns, and ``y int64 [B]``, the class numbers ``0..data.num_classes − 1``.
    """
    classes = torch.randint(data.num_classes, (batch_size,), generator=generator)
    positions = (torch.rand(batch_size, generator=generator) * data.sizes[classes].cpu()).long()
    device = data.images.device
    return load_images(data, classes.to(device), positions.to(device)), classes.to(device)


def pretrain(network: ConvNet, data: ClassImages, steps: int, batch_size: int = 16, lr: float = 1e-3,
             seed: int = 0, after_step: Callable[[int], None] | None = None) -> list[float]:
    """Train ``network`` in place as an ordinary ``data.num_classes``-way classifier; the loss of every step.

    ``network``: a ConvNet whose head has ``data.num_classes`` outputs.
    ``after_step(step)``, if given, is called after every step (1, 2, ...):
    to validate along the way, as the comparison chapter does. Raises
    ``ValueError`` when it has another number, and when training diverges (a
    non-finite loss), naming the step.
    """
    if network.head is None or network.head.out_features != data.num_classes:
        outputs = None if network.head is None else network.head.out_features
        raise ValueError(f"pretraining classifies all {data.num_classes} training classes, but the network has "
                         f"{outputs} outputs: build it with ConvNet({data.num_classes}, ...)")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    losses = []
    for step in range(1, steps + 1):
        x, y = class_batch(data, batch_size, generator)
        loss = F.cross_entropy(network(x), y)
        if not torch.isfinite(loss):
            raise ValueError(f"pretraining diverged at step {step} (loss {loss.item()}); lower lr (now {lr})")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(step)
    return losses


def with_new_head(network: ConvNet, ways: int) -> ConvNet:
    """A copy of ``network`` with a ``ways``-way head of zeros: what :data:`FINE_TUNING` fits for each task.

    The body (and its weights) is copied, so the pretrained network is left as it is.
    """
    copied = copy.deepcopy(network)
    old = copied.head.weight
    copied.head = torch.nn.Linear(copied.head.in_features, ways, device=old.device, dtype=old.dtype)
    torch.nn.init.zeros_(copied.head.weight)
    torch.nn.init.zeros_(copied.head.bias)
    return copied
