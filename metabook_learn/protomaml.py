"""ProtoMAML (Triantafillou et al., 2020, Meta-Dataset, Sec. 3): MAML whose head starts as a prototypical classifier.

MAML learns one initialization θ for every task, its last layer included,
although the classes of a task are arbitrary: class 3 of one task has
nothing to do with class 3 of the next. ProtoMAML initializes the head of
each task from its support set instead. With the prototypes

    c_k = mean of f_θ(x) over the support examples of class k         (ProtoNets, eq. 1)

the squared distance a prototypical network uses is linear in f(x) up to a
term every class shares (Snell et al., 2017, Sec. 2.7):

    −‖f(x) − c_k‖² = 2 c_kᵀ f(x) − ‖c_k‖² − ‖f(x)‖²

so a linear head with

    W_k = 2 c_k,   b_k = −‖c_k‖²                                        (prototype_head)

gives the same softmax as the prototypical network. ProtoMAML starts MAML's
inner loop from it, takes MAML's inner steps on the support set, and
differentiates the query loss through the steps *and* through the head's
initialization, which depends on θ through the prototypes. With
``first_order=True`` the inner gradients are constants (first-order
MAML), but the path through the prototypes is kept, as in the paper's
fo-Proto-MAML.

This file is a complete metabook method: the network, one task's
meta-gradient, the batch's, evaluation, and the
:class:`metabook_learn.methods.Method` that registers it. It was written
outside the package first, as ``book/add-your-own-method.md`` shows how to
write a method of your own, and then joined the package's methods. Train it with

    python -m metabook_learn train --algorithm protomaml --data omniglot --steps 1000

or, in Python, ``TrainConfig(algorithm="protomaml")``.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call

from metabook_learn.inner_loop import (
    DIFFERENTIATE,
    InnerLoop,
    Params,
    fine_tune,
    lay_out_minibatches,
    over_tasks,
    predict,
    query_metrics,
    resolve_strategy,
    task_tensors,
)
from metabook_learn.maml import PRESETS as MAML_PRESETS
from metabook_learn.maml import adjust_preset as maml_adjust_preset
from metabook_learn.methods import Method, Preset, Step, inner_loop, register
from metabook_learn.models import IMAGE_DATA_SETS, embedding_network
from metabook_learn.protonets import prototypes


class ProtoMAMLNetwork(nn.Module):
    """An embedding f_θ and a linear head: ``x [B, C, H, W]`` -> logits ``W f(x) + b``, ``[B, ways]``.

    The head's own parameters are placeholders: every task replaces them with
    its prototype head (:func:`prototype_head`) before adapting, so they are
    never used and never change. ``forward(x, stats_rows)`` passes
    ``stats_rows`` to the embedding (inductive batch norm).
    """

    def __init__(self, embedding: nn.Module, ways: int):
        super().__init__()
        self.embedding = embedding
        self.head = nn.Linear(embedding.num_features, ways)
        self.ways = ways

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        return self.head(self.embedding(x, stats_rows))


def prototype_head(model: ProtoMAMLNetwork, params: Params, support_x: torch.Tensor,
                   support_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The prototypical head of one task: ``W [N, D] = 2 c``, ``b [N] = −‖c_k‖²``, c ``[N, D]`` the prototypes.

    ``support_x [S, ...]``, ``support_y [S]``; the embedding runs with ``params``.
    """
    body = {name.removeprefix("embedding."): p for name, p in params.items() if name.startswith("embedding.")}
    features = functional_call(model.embedding, body, (support_x,))  # [S, D]
    centres = prototypes(features, support_y, model.ways)  # [N, D]
    return 2 * centres, -centres.pow(2).sum(-1)


def with_prototype_head(model: ProtoMAMLNetwork, params: Params, support_x, support_y) -> Params:
    """θ with the head replaced by the task's prototype head: where the inner loop starts.

    In the inner loop the head is a variable of its own, as in the authors'
    code (meta-dataset's ``MAMLLearner``): the inner gradient w.r.t. the body
    holds the head fixed. ``view_as`` gives the body new nodes on the autograd
    graph, so that ``torch.autograd.grad`` w.r.t. them does not also run
    through the head's dependence on θ (``torch.func`` treats its inputs as
    independent anyway); the meta-gradient still flows through both.
    """
    weight, bias = prototype_head(model, params, support_x, support_y)
    body = {name: p.view_as(p) for name, p in params.items() if not name.startswith("head.")}
    return {**body, "head.weight": weight, "head.bias": bias}


def task_meta_gradient(model: ProtoMAMLNetwork, inner: InnerLoop, differentiate, params: Params,
                       tune_x, tune_y, support_x, support_y, query_x, query_y):
    """∇θ of one task's query loss after the inner steps from the prototype head; ``(∇θ, loss, outputs [Q, N])``.

    ``tune_x``, ``tune_y``: the rows the inner steps take (the support set, or its minibatches laid out by
    :func:`~metabook_learn.inner_loop.lay_out_minibatches`); the prototypes come from the whole support set.
    """

    def query_loss(params: Params):
        start = with_prototype_head(model, params, support_x, support_y)
        adapted = fine_tune(model, start, tune_x, tune_y, inner, differentiate=differentiate)
        outputs = predict(model, adapted, support_x, query_x, inner.query_bn)
        return inner.loss(outputs, query_y), outputs.detach()

    grads, loss, outputs = differentiate(query_loss, params, create_graph=False)
    return grads, loss, outputs


def protomaml_step(config, model: ProtoMAMLNetwork, params: Params, lrs: Params | None, tasks) -> Step:
    """One meta-batch: the mean over tasks of :func:`task_meta_gradient`, the query loss and accuracy.

    ``tasks``: ``support_x [T, S, ...]``, ``support_y [T, S]``, ``query_x [T, Q, ...]``, ``query_y [T, Q]``.
    """
    params = {name: p.detach() for name, p in params.items()}
    support_x, support_y, query_x, query_y = task_tensors(tasks)
    strategy = resolve_strategy(config.strategy, support_x.device)
    differentiate = DIFFERENTIATE[strategy]
    tune_x, tune_y, inner = lay_out_minibatches(support_x, support_y, inner_loop(config))
    grads, _, outputs = over_tasks(
        lambda *task: task_meta_gradient(model, inner, differentiate, *task),
        (params,), (tune_x, tune_y, support_x, support_y, query_x, query_y), strategy)
    loss, accuracy = query_metrics(outputs, query_y, inner.loss)
    return Step({name: g.mean(0) for name, g in grads.items()}, None, loss, accuracy)


def protomaml_outputs(model: ProtoMAMLNetwork, params: Params, tasks, inner: InnerLoop, lrs: Params | None,
                      strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation: for each task, the prototype head, ``inner``'s steps, the query logits ``[T, Q, N]``; and the loss."""
    params = {name: p.detach() for name, p in params.items()}
    support_x, support_y, query_x, query_y = task_tensors(tasks)
    strategy = resolve_strategy(strategy, support_x.device)
    differentiate = DIFFERENTIATE[strategy]
    tune_x, tune_y, tuning = lay_out_minibatches(support_x, support_y, inner)
    steps_only = replace(tuning, first_order=True)  # nothing is differentiated through the steps here

    def task_outputs(params, tx, ty, sx, sy, qx):
        adapted = fine_tune(model, with_prototype_head(model, params, sx, sy), tx, ty, steps_only,
                            differentiate=differentiate)
        return predict(model, adapted, sx, qx, inner.query_bn)

    with torch.no_grad():  # the inner steps still differentiate; nothing else is recorded
        outputs = over_tasks(task_outputs, (params,), (tune_x, tune_y, support_x, support_y, query_x), strategy)
    loss, _ = query_metrics(outputs, query_y, inner.loss)
    return outputs, loss


def build_protomaml_network(config, ways: int) -> ProtoMAMLNetwork:
    """MAML's conv body for ``config.dataset`` as the embedding, and a ``ways``-way head."""
    return ProtoMAMLNetwork(embedding_network(config.dataset), ways)


def check_protomaml(config) -> None:
    """One inner learning rate here: Meta-SGD's learned rates are not combined with ProtoMAML."""
    if config.learn_lrs:
        raise ValueError("protomaml adapts with one inner learning rate: learn_lrs belongs to Meta-SGD")


# The ProtoMAML paper trains on Meta-Dataset only: on these data sets it runs with MAML's values.
PRESETS = {key: Preset(values, f"MAML's values (the ProtoMAML paper has no fixed N-way K-shot experiment on "
                               f"{key[0]}: it trains and tests on Meta-Dataset's episodes of varying ways and "
                               f"shots): {source}")
           for key, (values, source) in MAML_PRESETS.items() if key[0] in IMAGE_DATA_SETS}

PROTOMAML = register(Method(
    name="protomaml",
    description="ProtoMAML (Triantafillou et al., 2020): MAML's inner steps from a prototypical head",
    build=build_protomaml_network,
    step=protomaml_step,
    outputs=protomaml_outputs,
    check=check_protomaml,
    data_sets=IMAGE_DATA_SETS,
    data_hint="classifies images",
    unused_fields={("outer_step_size", "outer_step_size_final"):
                   "--outer-step-size and --outer-step-size-final are Reptile's epsilon; {name} takes Adam "
                   "steps of --meta-lr"},
    presets=PRESETS,
    adjust_preset=maml_adjust_preset,
))
