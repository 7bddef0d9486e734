"""Episodic learners: methods that solve a task in one forward pass, with no inner gradient steps.

MAML adapts to a task with gradient steps (:mod:`metabook_learn.inner_loop`).
Prototypical Networks average embeddings, R2-D2 solves a ridge regression in
closed form, a neural process encodes the context set; each turns a task's
support set into predictions on its query set in one differentiable
computation. Such a learner is an ``nn.Module`` whose ``forward`` is one
*episode*::

    loss, query_outputs = model(support_x, support_y, query_x, query_y)

``support_x [S, ...]``, ``support_y [S]`` (labels) or ``[S, 1]`` (targets),
``query_x [Q, ...]``, ``query_y`` like ``support_y``. ``loss`` is the
episode's training loss (a scalar: cross-entropy on the query set, or a
neural process's negative ELBO); ``query_outputs`` are its predictions:
logits ``[Q, N]`` for classification, predictive means ``[Q, 1]`` for
regression, which :func:`metabook_learn.evaluation.per_task_scores` scores like
MAML's. Every such model sets the class attribute ``episodic = True``.

Meta-training is then ordinary training on episodes: the update direction is
the gradient of the mean episode loss over a meta-batch,

    θ ← θ − β ∇θ (1/T) Σ_i L_i(θ)

computed here task by task with the same two strategies as MAML
(:func:`metabook_learn.inner_loop.over_tasks`): a Python loop, or ``torch.func.vmap``.
A model whose ``forward`` also takes a whole batch of episodes ``[T, S, ...]``
and returns the mean of their losses sets ``reads_task_batches = True`` (an
attribute or a property; the in-context learners of :mod:`metabook_learn.in_context`
do, for sequences of vectors); with
``strategy="auto"`` it is then called once on the batch, which gives the same
gradient when every task has as many points, in one vectorized pass.
:func:`metabook_learn.training.train` and :func:`metabook_learn.evaluation.evaluate` use
these functions for every episodic model, so a new method only writes its
``forward``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from metabook_learn.inner_loop import (DIFFERENTIATE, QUERY_BN_MODES, InnerLoop, Params, over_tasks, resolve_strategy,
                                       task_tensors)
from metabook_learn.methods import Method, Step
from metabook_learn.models import IMAGE_DATA_SETS

__all__ = ["is_episodic", "reads_task_batches", "EpisodeGradient", "episode_gradient", "episode_outputs",
           "episodic_step", "episodic_outputs", "check_episodic_config", "NO_INNER_LOOP", "episodic_image_classifier"]


def is_episodic(model: nn.Module) -> bool:
    """Whether ``model.forward`` is one episode (``episodic = True``) rather than a network on inputs."""
    return bool(getattr(model, "episodic", False))


def _check_episodic(model: nn.Module) -> None:
    if not is_episodic(model):
        raise TypeError(f"{type(model).__name__} is not an episodic learner: its forward must take "
                        "(support_x, support_y, query_x, query_y) and return (loss, query_outputs), and "
                        "the class must set episodic = True (see metabook_learn.episodic)")


def reads_task_batches(model: nn.Module) -> bool:
    """Whether ``model.forward`` also takes a batch of episodes ``[T, ...]`` and returns the mean of their losses."""
    return bool(getattr(model, "reads_task_batches", False))


@dataclass
class EpisodeGradient:
    """``params``: ∇θ of the mean episode loss over the batch; ``loss``: that mean;
    ``outputs``: every task's query outputs ``[T, Q, ...]``; ``strategy``: how tasks ran
    (``"batched"``: in one call of a model that reads task batches)."""

    params: Params
    loss: torch.Tensor
    outputs: torch.Tensor
    strategy: str


def task_episode_gradient(model: nn.Module, differentiate: Callable, params: Params,
                          support_x, support_y, query_x, query_y):
    """∇θ of one episode's loss, the loss, and its query outputs."""

    def episode_loss(params: Params):
        loss, outputs = functional_call(model, params, (support_x, support_y, query_x, query_y))
        return loss, outputs.detach()

    grads, loss, outputs = differentiate(episode_loss, params, create_graph=False)
    return grads, loss, outputs


def episode_gradient(model: nn.Module, params: Params, tasks, strategy: str = "auto") -> EpisodeGradient:
    """The meta-gradient of an episodic learner: the mean over tasks of ∇θ of each episode's loss.

    ``tasks``: a ``TaskBatch``, ``SinusoidTasks`` or anything with
    ``support_x [T, S, ...]``, ``support_y``, ``query_x [T, Q, ...]``, ``query_y``.
    """
    _check_episodic(model)
    params = {name: p.detach() for name, p in params.items()}
    support_x, support_y, query_x, query_y = task_tensors(tasks)
    if strategy == "auto" and reads_task_batches(model):  # one call: its loss is already the mean over tasks
        grads, loss, outputs = task_episode_gradient(model, DIFFERENTIATE["loop"], params,
                                                     support_x, support_y, query_x, query_y)
        return EpisodeGradient(grads, loss, outputs, "batched")
    strategy = resolve_strategy(strategy, support_x.device)
    differentiate = DIFFERENTIATE[strategy]
    grads, losses, outputs = over_tasks(
        lambda *args: task_episode_gradient(model, differentiate, *args),
        (params,),
        (support_x, support_y, query_x, query_y),
        strategy,
    )
    return EpisodeGradient({name: g.mean(0) for name, g in grads.items()}, losses.mean(), outputs, strategy)


def episode_outputs(model: nn.Module, params: Params, tasks, strategy: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate: ``(query outputs [T, Q, ...], mean episode loss)`` of every task, no gradient kept."""
    _check_episodic(model)
    support_x, support_y, query_x, query_y = task_tensors(tasks)

    def episode(params, sx, sy, qx, qy):
        loss, outputs = functional_call(model, params, (sx, sy, qx, qy))
        return loss, outputs

    if strategy == "auto" and reads_task_batches(model):
        with torch.no_grad():
            loss, outputs = episode(params, support_x, support_y, query_x, query_y)
        return outputs, loss
    strategy = resolve_strategy(strategy, support_x.device)
    with torch.no_grad():
        losses, outputs = over_tasks(episode, ({n: p.detach() for n, p in params.items()},),
                                     (support_x, support_y, query_x, query_y), strategy)
    return outputs, losses.mean()


# ── Batch norm over an episode: shared by every episodic learner that embeds images ──


def check_query_bn(embedding: nn.Module | None, query_bn: str) -> str:
    """``query_bn`` if ``embedding`` can normalize that way, else one ``ValueError`` saying what to use instead.

    ``"transductive"``: batch statistics of the whole episode. ``"inductive"``:
    statistics of the support rows only, so ``embedding.forward`` must accept
    ``stats_rows`` (as :class:`metabook_learn.models.ConvNet` does).
    """
    if query_bn not in QUERY_BN_MODES:
        raise ValueError(f"query_bn must be one of {', '.join(QUERY_BN_MODES)}, got {query_bn!r}")
    if query_bn == "inductive" and embedding is None:
        raise ValueError("query_bn='inductive' normalizes embedded images with the support rows' batch statistics, "
                         "and this model embeds no images: use query_bn='transductive' (the default)")
    if query_bn == "inductive" and "stats_rows" not in inspect.signature(embedding.forward).parameters:
        raise ValueError(f"query_bn='inductive' takes batch statistics from the support rows, so the embedding "
                         f"must accept stats_rows (as metabook_learn.models.ConvNet does); "
                         f"{type(embedding).__name__} does not: use query_bn='transductive'")
    return query_bn


def embed_episode(embedding: nn.Module, both: torch.Tensor, num_support: int, query_bn: str) -> torch.Tensor:
    """The embeddings of one episode's images ``both = cat[support, query]`` ``[S + Q, C, H, W]`` -> ``[S + Q, D]``,
    in one pass: batch statistics of all rows (``"transductive"``) or of the first ``num_support`` (``"inductive"``)."""
    if query_bn == "transductive":
        return embedding(both)
    if query_bn == "inductive":
        return embedding(both, stats_rows=num_support)
    raise ValueError(f"query_bn must be one of {', '.join(QUERY_BN_MODES)}, got {query_bn!r}")


# ── What every episodic method hands metabook_learn.methods ────────────────────────


def episodic_step(config, model: nn.Module, params: Params, lrs: Params | None, tasks) -> Step:
    """One meta-batch of an episodic learner: ∇θ of the mean episode loss, that loss, and the query accuracy.

    The accuracy is ``None`` for regression (real-valued ``query_y``). ``lrs`` is unused.
    """
    g = episode_gradient(model, params, tasks, config.strategy)
    accuracy = None if tasks.query_y.is_floating_point() else (g.outputs.argmax(-1) == tasks.query_y).float().mean()
    return Step(g.params, None, g.loss, accuracy)


def episodic_outputs(model: nn.Module, params: Params, tasks, inner: InnerLoop | None, lrs: Params | None,
                     strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation: ``(query outputs [T, Q, ...], mean episode loss)``; ``inner`` and ``lrs`` are unused."""
    return episode_outputs(model, params, tasks, strategy)


def check_episodic_config(config) -> None:
    """An episodic learner has no inner loop, so none of its flags."""
    if config.head_only or config.learn_lrs or config.first_order:
        raise ValueError(f"{config.algorithm} has no inner loop: head_only, learn_lrs and first_order "
                         "belong to the gradient-based algorithms")
    if config.query_bn not in QUERY_BN_MODES:
        raise ValueError(f"{config.algorithm} embeds a whole episode in one forward pass: query_bn must be one of "
                         f"{', '.join(QUERY_BN_MODES)}, got {config.query_bn!r} (an inner-loop method's mode)")


# The TrainConfig settings an episodic learner has no use for, and why (metabook_learn.methods.Method.unused_fields).
NO_INNER_LOOP = {
    ("inner_steps", "inner_lr", "inner_optimizer", "inner_batch_size", "eval_inner_steps", "eval_inner_batch_size",
     "first_order", "outer_step_size", "outer_step_size_final"):
        "{name} solves each task in one forward pass, with no inner loop and Adam steps of --meta-lr",
}


def episodic_image_classifier(name: str, description: str, build: Callable, **fields) -> Method:
    """The :class:`~metabook_learn.methods.Method` of an episodic learner that classifies images.

    What ProtoNets, R2-D2, LR-D2 and a learner of your own of that kind share:
    the episode is the whole adaptation (:func:`episodic_step`,
    :func:`episodic_outputs`), no inner-loop flag applies, any number of ways
    can be tested with the weights trained at another, and the data sets are
    the image ones. ``build(config, ways)`` makes the network; ``fields``:
    the method's own ``presets``, ``adjust_preset``, ``preset_notes``, ...
    """
    return Method(name=name, description=description, build=build, step=episodic_step, outputs=episodic_outputs,
                  check=check_episodic_config, episodic=True, any_ways=True, data_sets=IMAGE_DATA_SETS,
                  data_hint="classifies images", unused_fields=NO_INNER_LOOP, **fields)
