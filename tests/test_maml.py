"""MAML, first-order MAML, ANIL and Meta-SGD: meta-gradients checked, not assumed.

* against central finite differences of the meta-loss (float64, batch norm in the network);
* the loop, vmap and stacked strategies against the textbook per-task autograd loop;
* first-order MAML against MAML with the second-order term removed by hand;
* ANIL's body and Meta-SGD's learning rates receive the right meta-gradients;
* the vmap + batch norm trap: the outer gradient taken outside vmap is wrong;
* a few meta-steps on sinusoids lower the loss after adaptation.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabook_learn import maml
from metabook_learn.data.sinusoid import sample_sinusoid_tasks
from metabook_learn.inner_loop import InnerLoop, adapt, parameters_of, set_gradients
from metabook_learn.models import is_head, sinusoid_mlp

from meta_fixtures import random_tasks, tiny_convnet  # noqa: E402


def assert_same_gradients(actual: dict, expected: dict, atol: float = 1e-10):
    assert actual.keys() <= expected.keys()
    for name in actual:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-7, atol=atol, msg=name)


def meta_loss_by_hand(model, params, tasks, lr, steps) -> float:
    """(1/T) Σ_t L_query_t(θ'_t), θ'_t after `steps` plain-autograd SGD steps: the function MAML differentiates."""
    total = 0.0
    for t in range(len(tasks.support_x)):
        fast = dict(params)
        for _ in range(steps):
            fast = {n: p.detach().requires_grad_() for n, p in fast.items()}
            loss = F.cross_entropy(functional_call(model, fast, (tasks.support_x[t],)), tasks.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), grads)}
        total += F.cross_entropy(functional_call(model, fast, (tasks.query_x[t],)), tasks.query_y[t]).item()
    return total / len(tasks.support_x)


# ── MAML's meta-gradient ─────────────────────────────────────────────────────


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(steps):
    model, tasks = tiny_convnet(filters=2), random_tasks(2)
    params = {n: p.detach() for n, p in parameters_of(model).items()}
    inner = InnerLoop(steps=steps, lr=0.5)
    computed = {s: maml.meta_gradient(model, params, tasks, inner, strategy=s).params
                for s in ("loop", "vmap", "stacked")}
    eps = 1e-6
    for name, p in params.items():
        numeric = torch.zeros_like(p)
        for i in range(p.numel()):
            shifted = {}
            for sign in (1, -1):
                q = p.clone()
                q.view(-1)[i] += sign * eps
                shifted[sign] = meta_loss_by_hand(model, {**params, name: q}, tasks, inner.lr, steps)
            numeric.view(-1)[i] = (shifted[1] - shifted[-1]) / (2 * eps)
        for strategy, grads in computed.items():
            torch.testing.assert_close(grads[name], numeric, rtol=1e-5, atol=1e-8, msg=f"{strategy} {name}")


@pytest.mark.parametrize("strategy", ["loop", "vmap", "stacked"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 5])
def test_fast_paths_match_the_per_task_autograd_loop(strategy, first_order, steps):
    model, tasks = tiny_convnet(), random_tasks(3)
    params = parameters_of(model)
    inner = InnerLoop(steps=steps, lr=0.4, first_order=first_order)
    result = maml.meta_gradient(model, params, tasks, inner, strategy=strategy)
    assert result.strategy == strategy
    assert_same_gradients(result.params, maml.meta_gradient_reference(model, params, tasks, inner))
    # The reported meta-loss is the query loss after adaptation, as evaluation computes it.
    evaluated = adapt(model, params, tasks, inner, strategy=strategy)
    torch.testing.assert_close(result.query_loss, evaluated.query_loss)
    torch.testing.assert_close(result.query_accuracy, evaluated.query_accuracy)


def test_meta_gradient_through_adam_minibatch_steps_is_finite_and_the_same_for_every_strategy():
    """Two past faults: √v̂ at v̂ = 0 (a conv bias before batch norm gets no gradient) made the meta-gradient NaN,
    and under vmap every task drew its own minibatch rows."""
    model, tasks = tiny_convnet(), random_tasks(3, shots=2)
    params = parameters_of(model)

    def inner():  # each strategy draws the same minibatches: a generator seeded alike
        return InnerLoop(steps=3, lr=0.01, optimizer="adam", batch_size=3, generator=torch.Generator().manual_seed(1))

    results = {s: maml.meta_gradient(model, params, tasks, inner(), strategy=s).params
               for s in ("loop", "vmap", "stacked")}
    for strategy, grads in results.items():
        assert all(torch.isfinite(g).all() for g in grads.values()), strategy
        for name in params:
            torch.testing.assert_close(grads[name], results["loop"][name], rtol=1e-7, atol=1e-10)


def test_meta_gradient_with_minibatches_shuffles_each_tasks_support_set_on_its_own():
    """As at test time and in Reptile: task t's inner steps take the rows task_minibatches deals it, and the
    query set is normalized with the support set as drawn (a per-task autograd loop over those rows)."""
    from metabook_learn.inner_loop import autograd_gradient, fine_tune, predict, task_minibatches

    model, tasks = tiny_convnet(), random_tasks(3, shots=4)  # 12 support rows per task
    params = parameters_of(model)
    inner = InnerLoop(steps=3, lr=0.1, batch_size=5, query_bn="inductive", generator=torch.Generator().manual_seed(4))
    computed = maml.meta_gradient(model, params, tasks, inner, strategy="loop").params
    rows = task_minibatches(3, 12, 5, 3, generator=torch.Generator().manual_seed(4))
    assert len({tuple(r[:5].tolist()) for r in rows}) == 3, "every task draws its own order"
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    one_by_one = InnerLoop(steps=3, lr=0.1, batch_size=5, shuffle=False)
    for t in range(3):
        fast = fine_tune(model, leaves, tasks.support_x[t][rows[t]], tasks.support_y[t][rows[t]], one_by_one,
                         differentiate=autograd_gradient)
        outputs = predict(model, fast, tasks.support_x[t], tasks.query_x[t], "inductive")
        (F.cross_entropy(outputs, tasks.query_y[t]) / 3).backward()
    assert_same_gradients(computed, {name: p.grad for name, p in leaves.items()})


def test_outer_gradient_outside_vmap_is_wrong_with_batch_norm():
    """The trap the chapter teaches (torch 2.11-2.13): grad OUTSIDE vmap through F.batch_norm.

    ``grad(mean of vmap(task loss))`` differs from the loop, while taking each
    task's gradient inside vmap (metabook's form) agrees with it. Written with
    elementary operations instead of the fused F.batch_norm, both forms agree:
    the fault is in batch_norm's batching rule for second derivatives. If this
    test fails because the two forms now agree, torch has fixed the bug: update
    the docstring of metabook_learn.maml and the chapter.
    """
    model, tasks = tiny_convnet(), random_tasks(3)
    params = {n: p.detach() for n, p in parameters_of(model).items()}
    inner = InnerLoop(steps=1, lr=0.4)
    loop = maml.meta_gradient_reference(model, params, tasks, inner)
    inside = maml.meta_gradient(model, params, tasks, inner, strategy="vmap").params
    assert_same_gradients(inside, loop)

    def outside_vmap(stats_rows: bool):
        def forward(p, x):  # stats_rows = all rows: the same statistics, computed by elementary ops
            return functional_call(model, p, (x,), {"stats_rows": x.shape[0]} if stats_rows else {})

        def task_query_loss(p, support_x, support_y, query_x, query_y):
            g = torch.func.grad(lambda p: F.cross_entropy(forward(p, support_x), support_y))(p)
            adapted = {n: p[n] - inner.lr * g[n] for n in p}
            return F.cross_entropy(forward(adapted, query_x), query_y)

        batched = torch.func.vmap(task_query_loss, in_dims=(None, 0, 0, 0, 0))
        tensors = (tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)
        return torch.func.grad(lambda p: batched(p, *tensors).mean())(params)

    wrong = outside_vmap(stats_rows=False)
    error = max((wrong[n] - loop[n]).abs().max().item() for n in loop)
    assert error > 1e-6, f"grad outside vmap now agrees with the loop (max diff {error:.1e}): torch fixed the bug"
    assert_same_gradients(outside_vmap(stats_rows=True), loop)


def test_first_order_maml_drops_exactly_the_second_order_term():
    model, tasks = tiny_convnet(), random_tasks(2)
    params = parameters_of(model)
    inner = InnerLoop(steps=2, lr=0.4, first_order=True)
    first_order = maml.meta_gradient(model, params, tasks, inner).params
    # By hand: inner gradients computed without a graph (constants), then the query
    # gradient w.r.t. θ, which is then ∇θ' L_query(θ') (Finn et al., 2017, Section 5.2).
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in range(2):
        fast = {n: p.detach() for n, p in params.items()}
        for _ in range(inner.steps):
            fast = {n: p.requires_grad_() for n, p in fast.items()}
            loss = F.cross_entropy(functional_call(model, fast, (tasks.support_x[t],)), tasks.support_y[t])
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {n: (p - inner.lr * g).detach() for (n, p), g in zip(fast.items(), grads)}
        fast = {n: p.requires_grad_() for n, p in fast.items()}
        query_loss = F.cross_entropy(functional_call(model, fast, (tasks.query_x[t],)), tasks.query_y[t])
        for (n, _), g in zip(fast.items(), torch.autograd.grad(query_loss, list(fast.values()))):
            expected[n] += g / 2
    assert_same_gradients(first_order, expected)
    second_order = maml.meta_gradient(model, params, tasks, InnerLoop(steps=2, lr=0.4)).params
    assert max((second_order[n] - first_order[n]).abs().max() for n in params) > 1e-4


# ── ANIL and Meta-SGD ────────────────────────────────────────────────────────


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_still_meta_learns_the_body(first_order):
    model, tasks = tiny_convnet(), random_tasks(3)
    params = parameters_of(model)
    inner = InnerLoop(steps=2, lr=0.4, head_only=True, first_order=first_order)
    grads = maml.meta_gradient(model, params, tasks, inner, strategy="vmap").params
    assert_same_gradients(grads, maml.meta_gradient_reference(model, params, tasks, inner))
    body = [n for n in params if not is_head(n) and not n.endswith("conv.bias")]  # a conv bias before BN has no effect
    assert all(grads[n].abs().max() > 1e-6 for n in body)


@pytest.mark.parametrize("strategy", ["loop", "vmap", "stacked"])
def test_meta_sgd_learns_its_learning_rates(strategy):
    model, tasks = tiny_convnet(), random_tasks(3)
    params = parameters_of(model)
    inner = InnerLoop(steps=1, lr=0.4)
    lrs = maml.init_learning_rates(params, inner)
    assert all(a.requires_grad and torch.equal(a, torch.full_like(params[n], 0.4)) for n, a in lrs.items())
    result = maml.meta_gradient(model, params, tasks, inner, lrs, strategy=strategy)
    reference = maml.meta_gradient_reference(model, params, tasks, inner, lrs)
    assert_same_gradients(result.params, reference)
    assert_same_gradients({"lr." + n: g for n, g in result.lrs.items()}, reference)
    # θ' = θ − α ∘ g with g = ∇L_support(θ) independent of α, so ∂L_query/∂α = −g ∘ ∇θ' L_query(θ').
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in range(3):
        p0 = {n: p.detach().requires_grad_() for n, p in params.items()}
        support_loss = F.cross_entropy(functional_call(model, p0, (tasks.support_x[t],)), tasks.support_y[t])
        g = dict(zip(p0, torch.autograd.grad(support_loss, list(p0.values()))))
        fast = {n: (p0[n] - 0.4 * g[n]).detach().requires_grad_() for n in p0}
        query_loss = F.cross_entropy(functional_call(model, fast, (tasks.query_x[t],)), tasks.query_y[t])
        for n, gq in zip(fast, torch.autograd.grad(query_loss, list(fast.values()))):
            expected[n] += -g[n] * gq / 3
    assert_same_gradients(result.lrs, expected)
    assert all(result.lrs[n].abs().max() > 0 for n in ("head.weight", "body.0.conv.weight"))


# ── Learning happens ─────────────────────────────────────────────────────────


def test_a_few_meta_steps_on_sinusoids_lower_the_loss_after_adaptation():
    torch.manual_seed(0)
    model = sinusoid_mlp()
    params = parameters_of(model)
    inner = InnerLoop(steps=1, lr=0.01, loss=F.mse_loss)  # MAML's sinusoid settings: α = 0.01, K = 10
    held_out = sample_sinusoid_tasks(50, 10, 10, generator=torch.Generator().manual_seed(123))
    before = adapt(model, params, held_out, inner).query_loss.item()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train = torch.Generator().manual_seed(0)
    for _ in range(100):
        result = maml.meta_gradient(model, params, sample_sinusoid_tasks(10, 10, 10, generator=train), inner)
        optimizer.zero_grad()
        set_gradients(params, result.params)
        optimizer.step()
    after = adapt(model, params, held_out, inner).query_loss.item()
    assert after < 0.75 * before, f"post-adaptation MSE {before:.3f} -> {after:.3f}"
