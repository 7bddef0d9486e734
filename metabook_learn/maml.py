"""MAML (Finn et al., 2017) and the methods that share its code path.

MAML learns an initialization θ from which a few gradient steps on a task's
support set already do well on its query set:

    θ'_i = θ − α ∇θ L_support_i(θ)                   (eq. 1: inner_loop.fine_tune)
    θ ← θ − β ∇θ (1/T) Σ_i L_query_i(θ'_i)           (eq. 2: meta_gradient, then any optimizer)

The meta-gradient differentiates *through* the inner steps, so it contains
second derivatives of the support loss. The meta-loss is the mean over the T
tasks of the meta-batch, as in MAML's reference code. Options of the same code
(:class:`metabook_learn.inner_loop.InnerLoop` and ``lrs``):

* ``first_order=True``, first-order MAML (Finn et al., 2017, Section 5.2): the
  inner gradients are constants, so the meta-gradient is the query gradient at
  the adapted parameters, ∇θ' L_query(θ').
* ``head_only=True``, ANIL (Raghu et al., 2020): only the head adapts in the
  inner loop; the outer loop still updates every parameter, the body included.
* ``lrs``, Meta-SGD (Li et al., 2017): θ' = θ − α ∘ ∇θ L_support(θ) with one
  learning rate per parameter entry, α meta-learned with θ
  (:func:`init_learning_rates`).

One task's meta-gradient is :func:`task_meta_gradient`; :func:`meta_gradient`
runs it for every task of a batch, in a Python loop (differentiating with
torch.autograd), batched with ``torch.func.vmap`` (differentiating with
torch.func), or once on every task's copy of the network side by side
(:mod:`metabook_learn.stacked`, differentiating with torch.autograd), and averages.

A trap with vmap and batch norm. The textbook torch.func form takes the outer
gradient *outside* vmap, ``grad(lambda θ: vmap(task_query_loss)(θ, ...).mean())``
(or calls ``.backward()`` on that mean). With ``F.batch_norm`` in the network
this returns a wrong second-order meta-gradient (seen in torch 2.11 to 2.13,
in float64 too: off by 0.1% to a few percent of the gradient's size, where
rounding would explain 1e-16), while finite differences agree with the
per-task loop. Taking each task's
gradient *inside* vmap and averaging afterwards, as here, is correct. With
batch norm written as elementary operations both forms are right, so the fault
lies in ``F.batch_norm``'s batching rule for second derivatives.
``tests/test_maml.py`` checks all of this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from metabook_learn import validation
from metabook_learn.inner_loop import (
    DIFFERENTIATE,
    Adaptation,
    InnerLoop,
    Params,
    adapt,
    fine_tune,
    lay_out_minibatches,
    over_tasks,
    predict,
    query_metrics,
    resolve_strategy,
    stacked_network,
    task_tensors,
)
from metabook_learn.methods import Method, Preset, Step, inner_loop, register
from metabook_learn.models import maml_network

__all__ = [
    "MetaGradient",
    "task_meta_gradient",
    "meta_gradient",
    "meta_gradient_reference",
    "init_learning_rates",
    "adapt",
    "Adaptation",
    "maml_step",
    "build_maml_network",
    "MAML",
    "FOMAML",
    "ANIL",
    "METASGD",
]


@dataclass
class MetaGradient:
    """The gradient of the meta-loss for one batch of tasks.

    ``params``: ∇θ, name -> tensor of the parameter's shape. ``lrs``: Meta-SGD's
    ∇α (``None`` without learned rates). ``query_loss``: the meta-loss, the
    mean over tasks of the query loss after adaptation; ``query_accuracy``: the
    same for accuracy (``None`` for regression). ``strategy``: how the tasks ran.
    """

    params: Params
    lrs: Params | None
    query_loss: torch.Tensor
    query_accuracy: torch.Tensor | None
    strategy: str


def task_meta_gradient(
    model: nn.Module,
    inner: InnerLoop,
    differentiate: Callable,
    params: Params,
    lrs: Params,
    tune_x: torch.Tensor,
    tune_y: torch.Tensor,
    support_x: torch.Tensor,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
):
    """∇ of one task's query loss after adaptation, w.r.t. θ and Meta-SGD's α.

    One task: ``tune_x [S', ...]``, ``tune_y [S']``: the support rows the
    inner steps take, in order (the support set itself, or its minibatches
    laid out by :func:`~metabook_learn.inner_loop.lay_out_minibatches`);
    ``support_x [S, ...]``: the support set as drawn, which the inductive and
    per-query batch-norm modes normalize with; ``query_x [Q, ...]``,
    ``query_y [Q]``. ``lrs``: α by name, ``{}`` for a fixed ``inner.lr``.
    ``differentiate``: :func:`~metabook_learn.inner_loop.func_gradient` or
    :func:`~metabook_learn.inner_loop.autograd_gradient`.
    Returns ``(∇θ, ∇α, query loss, query outputs [Q, ...])``.
    """

    def query_loss(meta: tuple[Params, Params]):
        params, lrs = meta
        adapted = fine_tune(model, params, tune_x, tune_y, inner, lrs, differentiate)  # θ' = θ − α∇L_support(θ)
        outputs = predict(model, adapted, support_x, query_x, inner.query_bn)
        return inner.loss(outputs, query_y), outputs.detach()

    (grads, lr_grads), loss, outputs = differentiate(query_loss, (params, lrs), create_graph=False)
    return grads, lr_grads, loss, outputs


def meta_gradient(
    model: nn.Module,
    params: Params,
    tasks,
    inner: InnerLoop,
    lrs: Params | None = None,
    strategy: str = "auto",
) -> MetaGradient:
    """The meta-gradient of a batch of tasks: the mean of :func:`task_meta_gradient` over tasks.

    ``tasks``: a ``TaskBatch``, ``SinusoidTasks`` or any object with
    ``support_x [T, S, ...]``, ``support_y [T, S]``, ``query_x [T, Q, ...]``,
    ``query_y [T, Q]``. ``strategy``: ``"loop"``, ``"vmap"``, ``"stacked"``
    (MAML's ConvNet only) or ``"auto"`` (vmap on a GPU, the loop on the CPU). Use it with any optimizer::

        g = meta_gradient(model, params, tasks, inner)
        set_gradients(params, g.params)  # metabook_learn.inner_loop.set_gradients
        optimizer.step()
    """
    # The meta-gradient is computed by torch.func, not recorded on θ's autograd graph.
    params = {name: p.detach() for name, p in params.items()}
    rates = {} if lrs is None else {name: a.detach() for name, a in lrs.items()}
    validation.network(model, inner.head_only, getattr(tasks, "num_ways", None))
    support_x, support_y, query_x, query_y = task_tensors(tasks)
    strategy = resolve_strategy(strategy, support_x.device, stacks=True)
    differentiate = DIFFERENTIATE[strategy]
    # Minibatches (an inner batch size below S): each task's support set shuffled on its own, before vmap.
    tune_x, tune_y, tuning = lay_out_minibatches(support_x, support_y, inner)
    network, task_inner = stacked_network(strategy, model, tuning)
    # Each task's gradient is taken inside vmap, never grad of vmap's mean: see the module docstring.
    grads, lr_grads, _, outputs = over_tasks(
        lambda *args: task_meta_gradient(network, task_inner, differentiate, *args),
        (params, rates),
        (tune_x, tune_y, support_x, query_x, query_y),
        strategy,
    )
    loss, accuracy = query_metrics(outputs, query_y, inner.loss)
    return MetaGradient(
        params={name: g.mean(0) for name, g in grads.items()},
        lrs={name: g.mean(0) for name, g in lr_grads.items()} if lrs is not None else None,
        query_loss=loss,
        query_accuracy=accuracy,
        strategy=strategy,
    )


def init_learning_rates(params: Params, inner: InnerLoop) -> Params:
    """Meta-SGD's α: for each parameter that adapts, a tensor of its shape filled with ``inner.lr``.

    The tensors require grad; give them to the outer optimizer with θ.
    """
    return {
        name: torch.full_like(p, inner.lr, requires_grad=True)
        for name, p in params.items()
        if inner.adapts(name)
    }


def meta_gradient_reference(
    model: nn.Module,
    params: Params,
    tasks,
    inner: InnerLoop,
    lrs: Params | None = None,
) -> Params:
    """The textbook form in one function: task by task, plain autograd with ``create_graph``.

    This is how learn2learn and higher compute MAML. It is written out
    independently of :func:`~metabook_learn.inner_loop.fine_tune` and :func:`task_meta_gradient`, so that
    the tests and the benchmark can check those against it. Returns ∇θ (and
    Meta-SGD's ∇α under ``"lr." + name``) of the mean query loss over tasks.
    It takes plain gradient steps on the whole support set, MAML's own inner loop.
    """
    if inner.optimizer != "sgd" or inner.batch_size is not None:
        raise ValueError(f"meta_gradient_reference takes plain gradient steps on the whole support set; got "
                         f"optimizer={inner.optimizer!r}, batch_size={inner.batch_size}: use "
                         "InnerLoop(optimizer='sgd', batch_size=None)")
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    rates = {} if lrs is None else {name: a.detach().requires_grad_() for name, a in lrs.items()}
    names = [name for name in leaves if inner.adapts(name)]
    support_x, support_y, query_x, query_y = task_tensors(tasks)
    num_tasks = support_x.shape[0]
    for t in range(num_tasks):
        fast = dict(leaves)
        for _ in range(inner.steps):
            loss = inner.loss(torch.func.functional_call(model, fast, (support_x[t],)), support_y[t])
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not inner.first_order)
            fast.update({n: fast[n] - (rates[n] if rates else inner.lr) * g for n, g in zip(names, grads)})
        outputs = predict(model, fast, support_x[t], query_x[t], inner.query_bn)
        (inner.loss(outputs, query_y[t]) / num_tasks).backward()
    result = {name: p.grad for name, p in leaves.items()}
    result.update({"lr." + name: a.grad for name, a in rates.items()})
    return result


# ── MAML and its variants as metabook methods (metabook_learn.methods) ─────────────


def maml_step(config, model: nn.Module, params: Params, lrs: Params | None, tasks) -> Step:
    """One meta-batch of MAML (and first-order MAML, ANIL, Meta-SGD: ``config``'s flags say which).

    The direction is ∇θ of the mean query loss after adaptation (eq. 2) and,
    with Meta-SGD's rates ``lrs``, ∇α; the metrics are that loss and the query
    accuracy after adaptation. ``tasks``: ``support_x [T, S, ...]`` etc.
    """
    g = meta_gradient(model, params, tasks, inner_loop(config), lrs, config.strategy)
    return Step(g.params, g.lrs, g.query_loss, g.query_accuracy)


def build_maml_network(config, ways: int) -> nn.Module:
    """MAML's network for ``config.dataset`` with ``ways`` outputs (sinusoids: its 1-40-40-1 MLP)."""
    return maml_network(config.dataset, ways)


_SOURCE = ("MAML (Finn et al., 2017), Sec. 5 and App. A.1; meta-lr and queries from cbfinn/maml main.py; inner-lr "
           "is the paper's alpha times the number of ways, because the reference code's inner loss (utils.xent: "
           "cross-entropy / K, summed over the N*K support examples by tf.gradients) is N times the mean loss "
           "used here")
# The mini-ImageNet values, which CIFAR-FS borrows (the MAML paper has no CIFAR-FS experiment).
_MINI_IMAGENET = dict(inner_lr=0.05, inner_steps=5, eval_inner_steps=10, meta_batch=4, meta_lr=1e-3,
                      steps=60_000, queries=15)
# ANIL and Meta-SGD are run with MAML's values here.
PRESETS = {
    ("omniglot", "5-way"): Preset(
        dict(inner_lr=2.0, inner_steps=1, eval_inner_steps=3, meta_batch=32, meta_lr=1e-3, steps=60_000), _SOURCE),
    ("omniglot", "20-way"): Preset(
        dict(inner_lr=2.0, inner_steps=5, eval_inner_steps=5, meta_batch=16, meta_lr=1e-3, steps=60_000), _SOURCE),
    ("mini-imagenet", ""): Preset(
        _MINI_IMAGENET, _SOURCE + "; meta-batch 2 for 5-shot is App. A.1's (main.py's usage line for 5-shot says "
        "--meta_batch_size=4); 32 filters and max-pooling as main.py's --num_filters=32 --max_pool=True"),
    ("cifar-fs", ""): Preset(
        _MINI_IMAGENET, "MAML's mini-ImageNet values (the MAML paper has no CIFAR-FS experiment)"),
    ("sinusoid", ""): Preset(
        dict(shots=10, queries=10, inner_lr=0.01, inner_steps=1, eval_inner_steps=10, meta_batch=25,
             meta_lr=1e-3, steps=70_000),
        "MAML Sec. 5.1 (alpha 0.01, K = 10); meta-batch 25 (--meta_batch_size default), 70,000 steps (usage line) "
        "and 10 test steps from main.py, whose sinusoid command leaves --update_lr at its default 0.001: alpha is "
        "the paper's"),
}


def adjust_preset(values: dict, data: str, ways: int, shots: int, train_shots: int | None) -> dict:
    """MAML's Omniglot query sets have as many examples per class as the support set; its mini-ImageNet
    meta-batch is 4 tasks for 1-shot and 2 for 5-shot."""
    if data == "omniglot":
        values["queries"] = shots
    if data == "mini-imagenet" and shots >= 5:
        values["meta_batch"] = 2
    return values


def _method(name: str, description: str, implies: tuple[str, ...] = ()) -> Method:
    return Method(
        name=name, description=description, build=build_maml_network, step=maml_step, implies=implies,
        unused_fields={("outer_step_size", "outer_step_size_final"):
                       "--outer-step-size and --outer-step-size-final are Reptile's epsilon; {name} takes Adam "
                       "steps of --meta-lr"},
        presets=PRESETS, adjust_preset=adjust_preset,
        preset_notes="MAML on Omniglot: --queries equals --shots; on mini-ImageNet: --meta-batch 2 for 5-shot. "
                     "ANIL and Meta-SGD take MAML's values, to compare the methods at equal settings: Meta-SGD "
                     "(Li et al., 2017) has no official code and adapts in one step (abstract; --inner-steps 1 "
                     "--eval-inner-steps 1), its learned rates start at --inner-lr here.",
    )


MAML = register(_method("maml", "MAML (Finn et al., 2017): differentiate through the inner SGD steps"),
                origin=__name__)
FOMAML = register(_method("fomaml", "first-order MAML: the inner gradients as constants", ("first_order",)),
                  origin=__name__)
ANIL = register(_method("anil", "ANIL (Raghu et al., 2020): only the head adapts in the inner loop", ("head_only",)),
                origin=__name__)
METASGD = register(_method("metasgd", "Meta-SGD (Li et al., 2017): one learned inner rate per parameter entry",
                           ("learn_lrs",)), origin=__name__)
