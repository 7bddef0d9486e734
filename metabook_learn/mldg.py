"""MLDG (Li, Yang, Song & Hospedales, 2018): meta-learning to generalize to unseen domains.

Domain generalization: learn from several *source* domains (the same labels,
different input statistics) a model that works on a *target* domain never seen
in training, with no adaptation at test time. MLDG simulates that train/test
shift inside training. At every iteration (Algorithm 1 of the paper):

    split the source domains at random into meta-train S̄ and meta-test S̆     (data.domains.split_domains)
    F(θ)   = loss on the meta-train domains
    θ'     = θ − α ∇F(θ)                         one virtual step (inner_loop.fine_tune)
    G(θ')  = loss on the meta-test domains after that step
    θ ← θ − γ ∇θ [ F(θ) + β G(θ − α ∇F(θ)) ]     (mldg_gradient, then any optimizer)

The gradient of the objective is ∇F(θ) + β (I − α ∇²F(θ)) ∇G(θ'). The
first-order version (``InnerLoop(first_order=True)``) treats ∇F(θ) inside θ' as
a constant and drops the Hessian term: ∇F(θ) + β ∇G(θ').

Why it helps, to first order in α (the paper's analysis):

    F(θ) + β G(θ − α ∇F(θ)) = F(θ) + β G(θ) − β α ∇F(θ)·∇G(θ) + O(α²)

so MLDG minimizes the loss on both groups of domains *and* rewards a step on
the meta-train domains that also lowers the loss on the meta-test domains:
gradients that agree across domains.

F and G here are mean losses over the examples of their domains; with the
same number of examples from every domain (:class:`~metabook_learn.data.domains.DomainBatchSampler`) that is the mean over domains of each domain's mean loss.
(The authors' code sums the meta-train domains' losses instead.)

The baseline, ERM, is the gradient of the mean loss over all source examples
of the same batch (:func:`erm_gradient`): the same data, the same budget.
Neither method adapts at test time: :func:`domain_accuracy` scores a network
on a held-out domain as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from metabook_learn.data.domains import split_domains  # noqa: F401 (re-exported: the domain sampler draws the splits)
from metabook_learn.inner_loop import DIFFERENTIATE, InnerLoop, Params, fine_tune, over_tasks, resolve_strategy
from metabook_learn.methods import Method, Step, inner_loop, register

__all__ = [
    "split_domains",
    "DomainGradient",
    "task_mldg_gradient",
    "mldg_gradient",
    "task_erm_gradient",
    "erm_gradient",
    "domain_accuracy",
    "domain_correct",
    "domain_logits",
    "domain_gradient_cosines",
    "gradient_alignment",
    "mldg_step",
    "erm_step",
    "ERM",
    "MLDG",
]


@dataclass
class DomainGradient:
    """One update direction of MLDG or ERM from a :class:`~metabook_learn.data.domains.DomainBatch`.

    ``params``: ∇θ by parameter name, averaged over the batch's splits.
    ``loss``: the objective, F + βG for MLDG, the mean loss over all source
    examples for ERM. ``accuracy``: MLDG's accuracy on the meta-test domains
    after the virtual step (at θ'), ERM's on the whole batch.
    ``meta_train_loss`` F(θ) and ``meta_test_loss`` G(θ'): MLDG only (``None``
    for ERM). ``strategy``: ``"loop"`` or ``"vmap"``.
    """

    params: Params
    loss: torch.Tensor
    accuracy: torch.Tensor
    meta_train_loss: torch.Tensor | None
    meta_test_loss: torch.Tensor | None
    strategy: str


def task_mldg_gradient(
    model: nn.Module,
    inner: InnerLoop,
    beta: float,
    differentiate: Callable,
    params: Params,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
):
    """∇θ [F(θ) + β G(θ − α ∇F(θ))] for one split of the domains.

    ``train_x [S, ...]``, ``train_y [S]``: the meta-train domains' examples;
    ``test_x [Q, ...]``, ``test_y [Q]``: the meta-test domains'. ``inner``:
    one step of size α (``InnerLoop(steps=1, lr=alpha, first_order=...)``).
    Returns ``(∇θ, F + βG, F, G, meta-test outputs at θ' [Q, ...])``.
    """

    def objective(theta: Params):
        f = inner.loss(functional_call(model, theta, (train_x,)), train_y)                 # F(θ)
        adapted = fine_tune(model, theta, train_x, train_y, inner, differentiate=differentiate)  # θ' = θ − α∇F(θ)
        outputs = functional_call(model, adapted, (test_x,))
        g = inner.loss(outputs, test_y)                                                    # G(θ')
        return f + beta * g, (f.detach(), g.detach(), outputs.detach())

    # The fine-tuning step recomputes F's forward pass: one extra forward, kept so that the
    # virtual step is the book's one inner loop (second order: its graph is differentiated).
    grads, loss, (f, g, outputs) = differentiate(objective, params, create_graph=False)
    return grads, loss, f, g, outputs


def mldg_gradient(
    model: nn.Module,
    params: Params,
    batch,
    inner: InnerLoop,
    beta: float,
    strategy: str = "auto",
) -> DomainGradient:
    """MLDG's update direction for a batch: :func:`task_mldg_gradient` averaged over its splits.

    ``batch``: a :class:`~metabook_learn.data.domains.DomainBatch` (or any object
    with ``support_x [T, S, ...]``, ``support_y [T, S]`` for the meta-train
    domains and ``query_x [T, Q, ...]``, ``query_y [T, Q]`` for the
    meta-test domains). ``inner``: the virtual step, ``steps=1``, ``lr=α``.
    ``beta``: β, the weight of the meta-test loss. Use it with any optimizer::

        g = mldg_gradient(model, params, batch, InnerLoop(steps=1, lr=alpha), beta)
        set_gradients(params, g.params)  # metabook_learn.inner_loop.set_gradients
        optimizer.step()
    """
    params = {name: p.detach() for name, p in params.items()}
    strategy = resolve_strategy(strategy, batch.support_x.device)
    differentiate = DIFFERENTIATE[strategy]
    grads, loss, f, g, outputs = over_tasks(
        lambda *args: task_mldg_gradient(model, inner, beta, differentiate, *args),
        (params,),
        (batch.support_x, batch.support_y, batch.query_x, batch.query_y),
        strategy,
    )
    accuracy = (outputs.argmax(-1) == batch.query_y).float().mean()
    return DomainGradient({name: grad.mean(0) for name, grad in grads.items()}, loss.mean(), accuracy,
                          f.mean(), g.mean(), strategy)


def task_erm_gradient(
    model: nn.Module, loss: Callable, differentiate: Callable, params: Params, x: torch.Tensor, y: torch.Tensor
):
    """∇θ of the mean loss over ``x [N, ...]``, ``y [N]``; returns ``(∇θ, loss, outputs [N, ...])``."""

    def mean_loss(theta: Params):
        outputs = functional_call(model, theta, (x,))
        return loss(outputs, y), (outputs.detach(),)

    grads, value, (outputs,) = differentiate(mean_loss, params, create_graph=False)
    return grads, value, outputs


def erm_gradient(
    model: nn.Module,
    params: Params,
    batch,
    loss: Callable = torch.nn.functional.cross_entropy,
    strategy: str = "auto",
) -> DomainGradient:
    """ERM's direction: ∇θ of the mean loss over *all* source examples of ``batch`` (``batch.x``, ``batch.y``).

    The same examples MLDG sees in a step, meta-train and meta-test domains
    alike, pooled: empirical risk minimization over the sources.
    """
    params = {name: p.detach() for name, p in params.items()}
    x, y = batch.x, batch.y
    strategy = resolve_strategy(strategy, x.device)
    differentiate = DIFFERENTIATE[strategy]
    grads, value, outputs = over_tasks(
        lambda *args: task_erm_gradient(model, loss, differentiate, *args), (params,), (x, y), strategy
    )
    accuracy = (outputs.argmax(-1) == y).float().mean()
    return DomainGradient({name: grad.mean(0) for name, grad in grads.items()}, value.mean(), accuracy,
                          None, None, strategy)


@torch.no_grad()
def domain_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """The fraction of ``x [N, ...]`` that ``model`` labels ``y [N]``, as it is: no adaptation.

    How a domain-generalization model is scored on its held-out target domain.
    ``uint8`` images are scaled to [0, 1] as the samplers do; the examples go
    through the network ``batch_size`` at a time, on the model's device.
    """
    return int(domain_correct(model, x, y, batch_size).sum()) / len(x)


@torch.no_grad()
def domain_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """``model``'s outputs for ``x [N, ...]``, ``batch_size`` examples at a time on its device: ``[N, C]`` on the CPU.

    ``uint8`` images are scaled to [0, 1] as the samplers do.
    """
    device = next(model.parameters()).device
    logits = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        logits.append(model(xb.float().div_(255) if xb.dtype == torch.uint8 else xb).cpu())
    return torch.cat(logits)


def domain_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Whether ``model`` labels each example of ``x [N, ...]`` as ``y [N]``: ``bool [N]``, on the CPU."""
    return domain_logits(model, x, batch_size).argmax(-1) == y.cpu()


def domain_gradient_cosines(model: nn.Module, x: torch.Tensor, y: torch.Tensor, domains: torch.Tensor,
                            sources, loss: Callable = torch.nn.functional.cross_entropy) -> torch.Tensor:
    """Cosines between the loss gradients of the source domains at the model's parameters: ``float64 [D, D]``.

    ``x [N, ...]``, ``y [N]``: examples; ``domains [N]``: each example's domain;
    ``sources``: the D domains to compare. For each, g_d = ∇θ of the mean loss over
    its examples (all parameters, flattened into one vector), and entry (d, e) is
    g_d·g_e / (‖g_d‖ ‖g_e‖). This measures what MLDG's first-order expansion
    rewards, −βα ∇F·∇G: gradients of different domains that point the same way.
    Cosines, not inner products, because every gradient shrinks as training
    converges. ``uint8`` images are scaled to [0, 1] as the samplers do.
    """
    sources = list(sources)
    if len(sources) < 2:
        raise ValueError(f"gradient alignment compares domains: give at least 2 source domains, got {sources}")
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    gradients = []
    for d in sources:
        keep = domains == d
        if not bool(keep.any()):
            raise ValueError(f"domain {d} has no examples in `domains`: pass the domains that the data contains")
        xd = x[keep].to(device)
        xd = xd.float().div(255) if xd.dtype == torch.uint8 else xd
        grads = torch.autograd.grad(loss(model(xd), y[keep].to(device)), params)
        gradients.append(torch.cat([g.reshape(-1) for g in grads]).double())
    unit = torch.nn.functional.normalize(torch.stack(gradients), dim=1)
    return (unit @ unit.T).cpu()


def gradient_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor, domains: torch.Tensor, sources,
                       loss: Callable = torch.nn.functional.cross_entropy) -> float:
    """The mean cosine between the loss gradients of two different source domains, over all D(D − 1)/2 pairs.

    Arguments as :func:`domain_gradient_cosines`. 1 when every domain's gradient points the
    same way, 0 when they are orthogonal on average.
    """
    cosines = domain_gradient_cosines(model, x, y, domains, sources, loss)
    pairs = torch.triu_indices(len(cosines), len(cosines), offset=1)
    return cosines[pairs[0], pairs[1]].mean().item()


# ── ERM and MLDG as metabook methods (metabook_learn.methods) ──────────────────────


def mldg_step(config, model: nn.Module, params: Params, lrs: Params | None, batch) -> Step:
    """One batch of source domains: MLDG's direction, F + βG, and the meta-test accuracy after the virtual step."""
    g = mldg_gradient(model, params, batch, inner_loop(config), config.mldg_beta, config.strategy)
    return Step(g.params, None, g.loss, g.accuracy)


def erm_step(config, model: nn.Module, params: Params, lrs: Params | None, batch) -> Step:
    """One batch of source domains: ∇θ of the mean loss over all its examples, that loss, and the accuracy."""
    g = erm_gradient(model, params, batch, inner_loop(config).loss, config.strategy)
    return Step(g.params, None, g.loss, g.accuracy)


def check_domain_config(config) -> None:
    """ERM and MLDG: every parameter, a fixed step, no validation tasks; MLDG's one virtual step and β ≥ 0."""
    if config.head_only or config.learn_lrs:
        raise ValueError(f"{config.algorithm} trains every parameter with a fixed step: head_only and "
                         "learn_lrs belong to ANIL and Meta-SGD")
    if config.algorithm == MLDG_NAME and config.inner_steps != 1:
        raise ValueError(f"MLDG takes one virtual step on the meta-train domains: inner_steps must be 1, "
                         f"got {config.inner_steps}")
    if config.mldg_beta < 0:
        raise ValueError(f"mldg_beta must be at least 0, got {config.mldg_beta}")
    if config.validate_every:
        raise ValueError(f"{config.algorithm} has no validation tasks: set validate_every=0 and score "
                         "held-out domains with metabook_learn.mldg.domain_accuracy")


MLDG_NAME = "mldg"
_HINT = ("learns from source domains, not from the few-shot tasks of these data sets: train it with metabook_learn.mldg "
         "(see the MLDG chapter)")

ERM = register(Method(
    name="erm", description="empirical risk minimization over the pooled source domains (MLDG's baseline)",
    build=None, step=erm_step, check=check_domain_config, domains=True, data_sets=(), data_hint=_HINT,
), origin=__name__)
MLDG = register(Method(
    name=MLDG_NAME, description="MLDG (Li et al., 2018): a virtual step on meta-train domains, scored on meta-test "
                                "domains", build=None, step=mldg_step, check=check_domain_config, domains=True,
    data_sets=(), data_hint=_HINT,
), origin=__name__)
