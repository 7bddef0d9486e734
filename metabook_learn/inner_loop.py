"""The inner loop: adapt a network to one task with a few gradient steps on its support set.

MAML, first-order MAML, ANIL, Meta-SGD and Reptile all adapt a network the same way,

    θ' = θ − α ∇θ L(f_θ(support_x), support_y)        (MAML, eq. 1)

repeated ``steps`` times, and differ only in what they do with θ'. This module
is that step, written once as a function of an explicit dictionary of
parameters (``torch.func.functional_call`` runs the network with any
parameters), so the same code serves one task at a time in a Python loop and
every task of a meta-batch at once under ``torch.func.vmap``, with or without
an outer derivative through it (the meta-gradient).

The options (:class:`InnerLoop`): how many steps, which learning rate (a
number, or Meta-SGD's learned tensors), first or second order, which
parameters adapt (all, or the head only: ANIL), the loss, and how batch norm
treats the query set:

* ``"transductive"``: the query set is normalized with its own batch
  statistics, as MAML's reference code does. A query example's prediction then
  depends on the other query examples it is predicted with.
* ``"inductive"``: the query set is normalized with the support set's
  statistics, so each query example is predicted on its own.
* ``"per-query"``: each query example is forwarded with the support set, one
  at a time, and normalized with the statistics of those S + 1 examples: no
  query example influences another, but each enters its own statistics. This
  is the non-transductive test of Reptile's code (``_test_predictions`` in
  openai/supervised-reptile), which the paper's non-transductive numbers use.
  Only the inner-loop methods have it (ProtoNets and R2-D2 embed a whole
  episode at once).

The support set is always normalized with its own statistics. Results carry
the mode they were computed with (``Adaptation.query_bn``).

Gradients are taken by one of two functions with the same interface:
:func:`func_gradient` (``torch.func.grad``: composes with ``vmap``, so the
batched strategy uses it) and :func:`autograd_gradient` (plain
``torch.autograd.grad``: one task at a time, faster so on the CPU, so the loop
uses it). The per-task code is the same either way; only the differentiation
is passed in.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils import _pytree as pytree

from metabook_learn import validation
from metabook_learn.models import is_head
from metabook_learn.stacked import stack_tasks

__all__ = [
    "Params",
    "QUERY_BN_MODES",
    "INNER_LOOP_QUERY_BN_MODES",
    "InnerLoop",
    "Adaptation",
    "func_gradient",
    "autograd_gradient",
    "fine_tune",
    "predict",
    "adapt_task",
    "adapt",
    "task_minibatches",
    "lay_out_minibatches",
    "AdamMoments",
    "over_tasks",
    "pick_strategy",
    "stacked_network",
    "task_tensors",
    "parameters_of",
    "set_gradients",
]

Params = dict[str, torch.Tensor]
QUERY_BN_MODES = ("transductive", "inductive")  # every method's
INNER_LOOP_QUERY_BN_MODES = (*QUERY_BN_MODES, "per-query")  # the inner-loop methods' (module docstring)
STRATEGIES = ("auto", "loop", "vmap", "stacked")
INNER_OPTIMIZERS = ("sgd", "adam")
ADAM_BETA2, ADAM_EPS = 0.999, 1e-8  # TensorFlow's and PyTorch's defaults, which Reptile's code kept
TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class InnerLoop:
    """How a network adapts to one task.

    ``steps``: gradient steps on the support set (0: no adaptation). ``lr``: their
    learning rate α, finite and not negative (Meta-SGD passes learned
    per-parameter rates instead, see :func:`fine_tune`).
    ``first_order``: treat each step's gradient as a constant (first-order MAML).
    ``head_only``: adapt only the head (ANIL); the body keeps θ's values.
    ``loss(prediction, target)``: mean loss over a set, e.g. ``F.cross_entropy``
    or ``F.mse_loss``. ``query_bn``: ``"transductive"``, ``"inductive"`` or
    ``"per-query"`` (module docstring).

    ``optimizer``: ``"sgd"`` (MAML's θ − α∇) or ``"adam"``: Adam with β1 = 0,
    β2 = 0.999, ε = 1e-8 and fresh moments for every task (Reptile's
    training carries them from task to task, ``fine_tune(moments=...)``), the inner
    optimizer of Reptile's Omniglot and mini-ImageNet experiments (Nichol et
    al., 2018, Appendix A). ``batch_size``: each step uses this many support
    examples instead of all of them (Reptile's "inner batch size"); ``None``:
    the whole support set. ``shuffle``: with ``batch_size``, ``True``
    shuffles each task's support set on its own for the minibatches, as
    Reptile's reference code does: :func:`lay_out_minibatches` lays the rows
    out before the tasks run (in :func:`adapt`, every evaluation, and in
    MAML's, ProtoMAML's and Reptile's training steps). ``False`` takes
    consecutive minibatches of the support set as it is given (wrapping
    around), which is all :func:`fine_tune` itself ever does. ``generator``:
    the ``torch.Generator`` (on the CPU) that each task's shuffles are drawn
    from; ``None``: torch's global one (as in training, whose checkpoints save
    it). :func:`metabook_learn.evaluation.evaluate` gives every evaluation its
    own, seeded, so a score does not depend on what ran before it.
    """

    steps: int = 1
    lr: float = 0.4
    first_order: bool = False
    head_only: bool = False
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    query_bn: str = "transductive"
    optimizer: str = "sgd"
    batch_size: int | None = None
    shuffle: bool = True
    generator: torch.Generator | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        validation.count("steps", self.steps, minimum=0, meaning="0: no adaptation")
        validation.rate("lr", self.lr, zero_ok=True)  # 0: the steps change nothing, a control
        validation.choice("optimizer", self.optimizer, INNER_OPTIMIZERS)
        validation.optional_count("batch_size", self.batch_size, none_means="the whole support set")
        validation.choice("query_bn", self.query_bn, INNER_LOOP_QUERY_BN_MODES)
        if not callable(self.loss):
            raise TypeError(f"loss must be a function loss(prediction, target), e.g. F.cross_entropy, "
                            f"got {self.loss!r}")

    def adapts(self, name: str) -> bool:
        """Whether the parameter ``name`` changes in the inner loop."""
        return is_head(name) or not self.head_only


# ── Differentiation: torch.func or torch.autograd, one interface ─────────────


def func_gradient(loss_of: Callable, inputs: Any, create_graph: bool = True):
    """``(∇ loss w.r.t. inputs, loss, extras)`` where ``loss, extras = loss_of(inputs)``, by torch.func.

    ``inputs``: a dict of tensors, or a tuple of dicts. ``extras``: a tuple of
    tensors to pass through (may be empty). This composes with ``vmap`` and
    with an outer ``func_gradient``: the batched strategy differentiates so.
    ``create_graph=False`` makes the gradient a constant for any outer
    derivative (first-order MAML).
    """
    grads, (loss, extras) = torch.func.grad_and_value(loss_of, has_aux=True)(inputs)
    if not create_graph:
        grads = pytree.tree_map(torch.Tensor.detach, grads)
    return grads, loss.detach(), extras


def autograd_gradient(loss_of: Callable, inputs: Any, create_graph: bool = True):
    """The same as :func:`func_gradient`, by ``torch.autograd.grad``: one task at a time, never under vmap.

    The loop strategy differentiates so: measured on 2 CPU cores, a per-task
    MAML loop runs 1.1-1.4x faster this way than with torch.func, which wraps
    every operation and splits batch norm's second derivative into elementary
    operations.
    """
    leaves, spec = pytree.tree_flatten(inputs)
    with torch.enable_grad():
        # θ arrives detached: differentiate w.r.t. it as a leaf. Adapted
        # parameters already hang on θ's graph and are kept as they are.
        leaves = [x if x.requires_grad else x.detach().requires_grad_() for x in leaves]
        loss, extras = loss_of(pytree.tree_unflatten(leaves, spec))
        grads = torch.autograd.grad(
            loss, leaves, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )
    return pytree.tree_unflatten(list(grads), spec), loss.detach(), extras


# ── The inner loop ───────────────────────────────────────────────────────────


@dataclass
class AdamMoments:
    """The state of the inner Adam that Reptile's reference code keeps from one task to the next.

    ``second``: v, name -> tensor of that parameter's shape; ``steps``: the
    inner steps taken so far, t in the bias correction 1 − β2^t. openai/
    supervised-reptile resets only the weights after each task, so its Adam
    starts every task where the previous one left off; :func:`fine_tune`
    does so when given one (and updates it), and starts from zeros otherwise.
    """

    second: Params
    steps: int = 0

    @classmethod
    def zeros(cls, params: Params) -> "AdamMoments":
        return cls({name: torch.zeros_like(value) for name, value in params.items()})


def fine_tune(
    model: nn.Module,
    params: Params,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    inner: InnerLoop,
    lrs: Params | None = None,
    differentiate: Callable = func_gradient,
    moments: AdamMoments | None = None,
) -> Params:
    """θ' after ``inner.steps`` gradient steps on one task's support set.

    ``params``: θ, parameter name -> tensor. ``support_x``: ``[S, ...]``;
    ``support_y``: ``[S]`` (labels) or ``[S, 1]`` (regression targets).
    ``lrs``: Meta-SGD's learning rates α, name -> tensor of that parameter's
    shape; an adapted parameter without one steps with ``inner.lr``.
    ``differentiate``: :func:`func_gradient` or :func:`autograd_gradient`.
    ``moments``: with ``inner.optimizer == "adam"``, start from these
    moments instead of fresh ones and leave the last ones in it (Reptile as
    its reference code trains; one task at a time, never under vmap).
    Returns θ' under the same names; parameters that do not adapt (ANIL's
    body) are θ's own tensors.

    With ``inner.batch_size`` b, step i takes rows i·b, ..., i·b + b − 1 of
    ``support_x`` (modulo S), in the order given: shuffled minibatches are
    laid out by the caller (:func:`lay_out_minibatches`), outside any vmap.
    """
    names = [name for name in params if inner.adapts(name)]
    rates = {name: (lrs or {}).get(name, inner.lr) for name in names}
    fast = dict(params)
    # Adam's v: fresh for every task, or where the previous task left it.
    second_moments = ({name: torch.zeros_like(params[name]) for name in names} if moments is None
                      else {name: moments.second[name] for name in names})
    steps_before = 0 if moments is None else moments.steps
    for step in range(inner.steps):
        rows = minibatch_rows(support_x.shape[0], inner.batch_size, step, support_x.device)
        batch_x, batch_y = (support_x, support_y) if rows is None else (support_x[rows], support_y[rows])

        def support_loss(adapted: Params):
            prediction = functional_call(model, {**fast, **adapted}, (batch_x,))
            return inner.loss(prediction, batch_y), ()

        # First-order MAML: without create_graph the step's gradient is a
        # constant, so the outer derivative has no second-order term.
        grads, _, _ = differentiate(
            support_loss, {name: fast[name] for name in names}, create_graph=not inner.first_order
        )
        if inner.optimizer == "adam":
            # Adam with β1 = 0: the first moment is the gradient itself; v is bias-corrected.
            second_moments = {name: ADAM_BETA2 * second_moments[name] + (1 - ADAM_BETA2) * grads[name] ** 2
                              for name in names}
            correction = 1 - ADAM_BETA2 ** (steps_before + step + 1)
            # clamp_min: √v has an infinite derivative at v = 0 (a conv bias before batch norm has zero
            # gradient), which would make a second-order meta-gradient NaN; √tiny ≈ 1e-19 is far below ε.
            grads = {name: grads[name] / ((second_moments[name] / correction).clamp_min(TINY).sqrt() + ADAM_EPS)
                     for name in names}
        fast = {**fast, **{name: fast[name] - rates[name] * grads[name] for name in names}}
    if moments is not None and inner.optimizer == "adam":
        moments.second.update({name: v.detach() for name, v in second_moments.items()})
        moments.steps = steps_before + inner.steps
    return fast


def minibatch_rows(num_rows: int, batch_size: int | None, step: int, device) -> torch.Tensor | None:
    """The support rows inner step ``step`` uses: ``[batch_size]`` indices, or ``None`` for all rows.

    Rows ``step·b, ..., step·b + b − 1`` modulo ``num_rows``: consecutive
    minibatches of the rows as given. The order depends only on the step,
    never on the data or on a random draw, so it is the same under every
    strategy (under ``vmap(randomness="different")`` torch's random functions
    would draw anew for every task even with a seeded generator).
    """
    if batch_size is None or batch_size >= num_rows:
        return None
    return torch.arange(step * batch_size, (step + 1) * batch_size, device=device) % num_rows


def predict(
    model: nn.Module,
    params: Params,
    support_x: torch.Tensor,
    query_x: torch.Tensor,
    query_bn: str,
) -> torch.Tensor:
    """The network's outputs on one task's query set, ``[Q, ...]``.

    ``"transductive"``: forward the query set alone; batch norm uses its
    statistics. ``"inductive"``: forward ``cat[support, query]`` and let batch
    norm take its statistics from the support rows only, so no query example
    influences another. ``"per-query"``: forward ``cat[support, query_q]`` for
    each query example q alone, batch norm taking the statistics of all S + 1
    rows (Reptile's non-transductive test): Q forward passes.
    """
    if query_bn == "transductive":
        return functional_call(model, params, (query_x,))
    if query_bn == "inductive":
        num_support = support_x.shape[0]
        both = torch.cat([support_x, query_x])
        # The query rows, along the examples' dimension: -2 of [S+Q, K] and of the stacked [T, S+Q, K].
        return functional_call(model, params, (both,), {"stats_rows": num_support})[..., num_support:, :]
    if query_bn == "per-query":
        num_support = support_x.shape[0]
        each = [functional_call(model, params, (torch.cat([support_x, query_x[q:q + 1]]),))[..., num_support:, :]
                for q in range(query_x.shape[0])]
        return torch.cat(each, dim=-2)
    raise ValueError(f"query_bn must be one of {INNER_LOOP_QUERY_BN_MODES}, got {query_bn!r}")


def adapt_task(
    model: nn.Module,
    inner: InnerLoop,
    differentiate: Callable,
    params: Params,
    lrs: Params,
    tune_x: torch.Tensor,
    tune_y: torch.Tensor,
    support_x: torch.Tensor,
    query_x: torch.Tensor,
) -> torch.Tensor:
    """Fine-tune on one task's support rows, then predict its query set: ``[Q, ...]``.

    ``tune_x``, ``tune_y``: the rows the inner steps take, in their order (the support set itself, or its
    minibatches laid out by :func:`lay_out_minibatches`); ``support_x``: the support set as drawn, which the
    ``"inductive"`` and ``"per-query"`` modes normalize with.
    """
    fast = fine_tune(model, params, tune_x, tune_y, inner, lrs, differentiate)
    return predict(model, fast, support_x, query_x, inner.query_bn)


def task_minibatches(num_tasks: int, num_rows: int, batch_size: int, steps: int, device=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Each task's support rows for ``steps`` minibatches of ``batch_size``, in order:
    ``[num_tasks, steps · batch_size]``.

    As ``_mini_batches`` of openai/supervised-reptile (without replacement):
    shuffle the task's ``num_rows`` examples, deal them out in minibatches, and
    shuffle again whenever they run out, a minibatch spanning two passes when
    ``batch_size`` does not divide ``num_rows``. Every task draws its own
    shuffles, on the CPU and outside any vmap, from ``generator`` (``None``:
    torch's global generator, which a training checkpoint saves), so every
    strategy sees the same rows.
    """
    passes = -(-steps * batch_size // num_rows)  # ceiling division
    orders = [torch.cat([torch.randperm(num_rows, generator=generator) for _ in range(passes)])[:steps * batch_size]
              for _ in range(num_tasks)]
    return torch.stack(orders).to(device)


def lay_out_minibatches(support_x: torch.Tensor, support_y: torch.Tensor,
                        inner: InnerLoop) -> tuple[torch.Tensor, torch.Tensor, InnerLoop]:
    """Each task's support rows in the order its minibatches take them, and the inner loop that takes them so.

    ``support_x``: ``[T, S, ...]``, ``support_y``: ``[T, S]``. With minibatches
    (``inner.batch_size`` below S, ``inner.shuffle``): ``[T, steps · b, ...]``
    and ``[T, steps · b]`` from :func:`task_minibatches` (drawn from
    ``inner.generator``), with ``inner`` set to take them one after the other;
    otherwise all three unchanged. The rows are copied, ``steps · b`` per task.
    Every caller that fine-tunes a batch of tasks with minibatches lays them
    out here: :func:`adapt`, :func:`metabook_learn.maml.meta_gradient`,
    :func:`metabook_learn.reptile.reptile_direction` and ProtoMAML's step and
    evaluation.
    """
    num_tasks, num_rows = support_y.shape[:2]
    if inner.batch_size is None or inner.batch_size >= num_rows or not inner.shuffle:
        return support_x, support_y, inner
    rows = task_minibatches(num_tasks, num_rows, inner.batch_size, inner.steps, support_x.device, inner.generator)
    return (torch.stack([x[r] for x, r in zip(support_x, rows)]), torch.stack([y[r] for y, r in zip(support_y, rows)]),
            replace(inner, shuffle=False))


# ── Every task of a meta-batch: a Python loop or torch.func.vmap ──────────────


# How each strategy takes gradients: torch.autograd.grad cannot run under vmap.
DIFFERENTIATE = {"loop": autograd_gradient, "vmap": func_gradient, "stacked": autograd_gradient}


def pick_strategy(device: torch.device | str) -> str:
    """``"vmap"`` on a GPU, ``"loop"`` elsewhere.

    Measured for this project (MAML's Omniglot network, 32 tasks, 5-way
    1-shot): on an H200, vmap takes 32 ms per meta-step against 430 ms for the
    loop; on 2 CPU cores vmap is 1.5-3x slower than the loop and needs GBs.
    For a network as small as the sinusoid MLP, where per-operation overhead
    dominates, vmap is faster on the CPU too: pass ``strategy="vmap"``.
    """
    return "vmap" if torch.device(device).type == "cuda" else "loop"


def over_tasks(per_task: Callable, shared: tuple, batched: tuple, strategy: str):
    """``per_task(*shared, *task_t)`` for every task t, results stacked along a new first dim.

    ``batched``: tensors whose first dimension is the task, ``[T, ...]``;
    ``task_t`` takes row t of each. ``shared`` (parameters, options) is the
    same for every task. Every strategy runs the very same ``per_task``:
    ``"loop"`` calls it T times, ``"vmap"`` once, batched over the tasks, and
    ``"stacked"`` once, on T copies of the network side by side: there
    ``per_task`` must be built on :func:`stacked_network`'s network and inner
    loop, and it receives every shared tensor copied per task ``[T, ...]`` and
    the batched tensors examples first ``[N, T, ...]`` (:mod:`metabook_learn.stacked`).
    ``DIFFERENTIATE[strategy]`` is how ``per_task`` should take gradients.
    Every task's results are kept until the end (for a meta-gradient: T
    copies of the parameters' size).
    """
    if strategy == "stacked":
        num_tasks = batched[0].shape[0]
        copies = pytree.tree_map(
            lambda s: s.expand(num_tasks, *s.shape).contiguous() if isinstance(s, torch.Tensor) else s, shared)
        return per_task(*copies, *(b.transpose(0, 1) for b in batched))
    if strategy == "vmap":
        in_dims = (None,) * len(shared) + (0,) * len(batched)
        # "different": a learner that samples (a neural process's latent) draws independently per task.
        return torch.func.vmap(per_task, in_dims=in_dims, randomness="different")(*shared, *batched)
    if strategy == "loop":
        results = [per_task(*shared, *(b[t] for b in batched)) for t in range(batched[0].shape[0])]
        leaves, spec = zip(*(pytree.tree_flatten(r) for r in results))
        return pytree.tree_unflatten([torch.stack(column) for column in zip(*leaves)], spec[0])
    raise ValueError(f"strategy must be 'loop', 'vmap' or 'stacked' (or 'auto'), got {strategy!r}")


def resolve_strategy(strategy: str, device: torch.device, stacks: bool = False) -> str:
    """``strategy``, or the device's default for ``"auto"``. ``stacks``: whether the caller supports ``"stacked"``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "stacked" and not stacks:
        raise ValueError("strategy 'stacked' runs the inner-loop methods (MAML, first-order MAML, ANIL, Meta-SGD, "
                         "Reptile); use 'loop' or 'vmap' here")
    return pick_strategy(device) if strategy == "auto" else strategy


def stacked_network(strategy: str, model: nn.Module, inner: InnerLoop) -> tuple[nn.Module, InnerLoop]:
    """The network and inner loop that ``per_task`` runs with under ``strategy``.

    ``"stacked"``: T copies of ``model`` side by side and the loss summed
    over tasks (:func:`metabook_learn.stacked.stack_tasks`); any other strategy:
    ``model`` and ``inner`` themselves.
    """
    return stack_tasks(model, inner) if strategy == "stacked" else (model, inner)


# ── Evaluation: adapt to every task, predict its queries ─────────────────────


@dataclass
class Adaptation:
    """Predictions after adapting to each task of a batch.

    ``query_outputs``: ``[T, Q, ...]`` (logits ``[T, Q, N]``, or ``[T, Q, 1]``
    for regression). ``query_loss``: mean over tasks. ``query_accuracy``: mean
    over tasks, ``None`` for regression. ``query_bn`` and ``strategy`` say how
    they were computed.
    """

    query_outputs: torch.Tensor
    query_loss: torch.Tensor
    query_accuracy: torch.Tensor | None
    query_bn: str
    strategy: str


def adapt(
    model: nn.Module,
    params: Params,
    tasks,
    inner: InnerLoop,
    lrs: Params | None = None,
    strategy: str = "auto",
) -> Adaptation:
    """Evaluate: fine-tune on each task's support set, predict its query set.

    ``tasks``: a :class:`~metabook_learn.data.tasks.TaskBatch`, a ``SinusoidTasks``, or any
    object with ``support_x [T, S, ...]``, ``support_y [T, S]``, ``query_x
    [T, Q, ...]``, ``query_y [T, Q]``. No meta-gradient is kept.
    """
    params = {name: p.detach() for name, p in params.items()}
    rates = {} if lrs is None else {name: a.detach() for name, a in lrs.items()}
    support_x, support_y, query_x, query_y = task_tensors(tasks)
    strategy = resolve_strategy(strategy, support_x.device, stacks=True)
    # Minibatches: each task's support set shuffled on its own, as Reptile's reference code tests.
    tune_x, tune_y, tuning = lay_out_minibatches(support_x, support_y, inner)
    # No outer derivative here, so the steps need no graph of their own gradients.
    network, steps_only = stacked_network(strategy, model, replace(tuning, first_order=True))
    differentiate = DIFFERENTIATE[strategy]
    with torch.no_grad():  # the inner steps still differentiate; nothing else is recorded
        outputs = over_tasks(
            lambda *args: adapt_task(network, steps_only, differentiate, *args),
            (params, rates),
            (tune_x, tune_y, support_x, query_x),
            strategy,
        )
    loss, accuracy = query_metrics(outputs, query_y, inner.loss)
    return Adaptation(outputs, loss, accuracy, inner.query_bn, strategy)


def query_metrics(outputs: torch.Tensor, query_y: torch.Tensor, loss: Callable):
    """Mean query loss over tasks ``[T, Q, ...]``, and accuracy when the targets are labels."""
    mean_loss = torch.stack([loss(o, y) for o, y in zip(outputs, query_y)]).mean()
    if query_y.is_floating_point():
        return mean_loss, None
    return mean_loss, (outputs.argmax(-1) == query_y).float().mean()


# ── Small helpers ────────────────────────────────────────────────────────────


def task_tensors(tasks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(support_x, support_y, query_x, query_y)`` of a task batch, task dimension first (checked tensors)."""
    return validation.task_tensors(tasks)


def parameters_of(model: nn.Module) -> Params:
    """The model's parameters by name: the tensors an outer optimizer updates."""
    return dict(model.named_parameters())


def set_gradients(tensors: Params, grads: Params) -> None:
    """Store ``grads[name]`` in ``tensors[name].grad``, so any torch optimizer can step."""
    for name, grad in grads.items():
        tensors[name].grad = grad.detach().clone()
