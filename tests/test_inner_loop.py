"""The networks and the shared inner loop: shapes, names, batch norm, SGD steps, ANIL, Meta-SGD, strategies.

Everything runs in float64 on small networks, so that "equal" can mean equal
to ~1e-12 and a wrong formula cannot hide behind float32 noise.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metabook_learn.inner_loop import (
    InnerLoop,
    adapt,
    autograd_gradient,
    fine_tune,
    func_gradient,
    parameters_of,
    pick_strategy,
    predict,
    set_gradients,
)
from metabook_learn.models import (
    TaskBatchNorm2d,
    is_head,
    miniimagenet_convnet,
    omniglot_convnet,
    sinusoid_mlp,
)

from meta_fixtures import WAYS, random_tasks, tiny_convnet  # noqa: E402


def sgd_by_hand(model, params, x, y, lrs, steps):
    """θ ← θ − α ∇L, with plain autograd; ``lrs`` maps every adapted name to its learning rate."""
    fast = {name: p.detach().clone() for name, p in params.items()}
    for _ in range(steps):
        for p in fast.values():
            p.requires_grad_()
        loss = F.cross_entropy(functional_call(model, fast, (x,)), y)
        grads = torch.autograd.grad(loss, list(fast.values()))
        fast = {
            name: (p - lrs[name] * g if name in lrs else p).detach()
            for (name, p), g in zip(fast.items(), grads)
        }
    return fast


# ── Networks ─────────────────────────────────────────────────────────────────


def test_networks_have_the_papers_shapes_and_a_named_head():
    omniglot, mini, mlp = omniglot_convnet(5), miniimagenet_convnet(5), sinusoid_mlp()
    assert omniglot(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    assert omniglot.head.in_features == 64  # 28 -> 14 -> 7 -> 4 -> 2 by strides, then a spatial mean
    assert all(block.conv.stride == (2, 2) for block in omniglot.body)
    assert mini(torch.zeros(2, 3, 84, 84)).shape == (2, 5)
    assert mini.head.in_features == 32 * 5 * 5  # 84 -> 42 -> 21 -> 10 -> 5 by 2x2 max-pooling
    assert mlp(torch.zeros(7, 1)).shape == (7, 1)
    assert [p.shape for p in mlp.parameters()] == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]
    for net in (omniglot, mini, mlp):
        names = list(parameters_of(net))
        assert all(n.startswith(("body.", "head.")) for n in names)
        assert [n for n in names if is_head(n)] == ["head.weight", "head.bias"]
        assert not list(net.buffers()), "batch norm must keep no running statistics"


def test_task_batch_norm_uses_the_batch_or_its_first_rows():
    torch.manual_seed(0)
    norm = TaskBatchNorm2d(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    torch_norm = nn.BatchNorm2d(3, track_running_stats=False).double()
    torch_norm.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), torch_norm(x))
    # stats_rows=2: rows 0-1 normalize as a batch of their own, and every other
    # row is normalized with those two rows' statistics.
    out = norm(x, stats_rows=2)
    torch.testing.assert_close(out[:2], torch_norm(x[:2]))
    for j in range(2, 6):
        alone = norm(torch.cat([x[:2], x[j : j + 1]]), stats_rows=2)[2]
        torch.testing.assert_close(out[j], alone)


# ── The inner loop ───────────────────────────────────────────────────────────


@pytest.mark.parametrize("differentiate", [func_gradient, autograd_gradient])
def test_fine_tune_is_sgd_on_the_support_set(differentiate):
    model, tasks = tiny_convnet(), random_tasks(1)
    params = parameters_of(model)
    inner = InnerLoop(steps=3, lr=0.3)
    fast = fine_tune(model, params, tasks.support_x[0], tasks.support_y[0], inner, differentiate=differentiate)
    expected = sgd_by_hand(model, params, tasks.support_x[0], tasks.support_y[0], dict.fromkeys(params, 0.3), 3)
    for name in params:
        torch.testing.assert_close(fast[name], expected[name])


def test_anil_adapts_only_the_head():
    model, tasks = tiny_convnet(), random_tasks(1)
    params = parameters_of(model)
    fast = fine_tune(model, params, tasks.support_x[0], tasks.support_y[0], InnerLoop(steps=2, head_only=True))
    for name, p in params.items():
        if is_head(name):
            assert not torch.equal(fast[name], p), name
        else:
            assert fast[name] is p, f"{name} must stay θ's own tensor"
    head_rates = {name: 0.4 for name in params if is_head(name)}
    expected = sgd_by_hand(model, params, tasks.support_x[0], tasks.support_y[0], head_rates, 2)
    for name in params:
        torch.testing.assert_close(fast[name], expected[name])


def test_meta_sgd_steps_with_one_learning_rate_per_entry():
    model, tasks = tiny_convnet(), random_tasks(1)
    params = parameters_of(model)
    g = torch.Generator().manual_seed(3)
    lrs = {name: torch.rand(p.shape, generator=g, dtype=p.dtype) for name, p in params.items()}
    fast = fine_tune(model, params, tasks.support_x[0], tasks.support_y[0], InnerLoop(steps=1), lrs)
    loss = F.cross_entropy(model(tasks.support_x[0]), tasks.support_y[0])
    grads = torch.autograd.grad(loss, list(params.values()))
    for (name, p), grad in zip(params.items(), grads):
        torch.testing.assert_close(fast[name], p - lrs[name] * grad)


# ── Strategies and evaluation ────────────────────────────────────────────────


def test_strategy_follows_the_device():
    assert pick_strategy("cpu") == "loop"
    assert pick_strategy(torch.device("cuda")) == "vmap"


@pytest.mark.parametrize("query_bn", ["transductive", "inductive", "per-query"])
@pytest.mark.parametrize("strategy", ["vmap", "stacked"])
def test_every_strategy_adapts_as_the_loop(strategy, query_bn):
    model, tasks = tiny_convnet(), random_tasks(3)
    inner = InnerLoop(steps=2, query_bn=query_bn)
    loop = adapt(model, parameters_of(model), tasks, inner, strategy="loop")
    other = adapt(model, parameters_of(model), tasks, inner, strategy=strategy)
    assert (loop.strategy, other.strategy, loop.query_bn, other.query_bn) == ("loop", strategy, query_bn, query_bn)
    assert loop.query_outputs.shape == other.query_outputs.shape == (3, WAYS * 3, WAYS)
    torch.testing.assert_close(loop.query_outputs, other.query_outputs)
    torch.testing.assert_close(loop.query_accuracy, other.query_accuracy)
    assert not loop.query_outputs.requires_grad
    assert adapt(model, parameters_of(model), tasks, inner).strategy == "loop"  # "auto" on the CPU


def test_inductive_predictions_do_not_depend_on_other_queries():
    model, tasks = tiny_convnet(), random_tasks(1, queries=4)
    params = parameters_of(model)
    support_x, query_x = tasks.support_x[0], tasks.query_x[0]
    other_query_x = query_x.clone()
    other_query_x[1:] = torch.randn_like(query_x[1:])  # keep example 0, change the rest

    with torch.no_grad():
        inductive = predict(model, params, support_x, query_x, "inductive")
        transductive = predict(model, params, support_x, query_x, "transductive")
        # Inductive: example 0 is predicted the same whatever it is predicted with,
        # and each example alone (support + that one example) gets the same output.
        torch.testing.assert_close(predict(model, params, support_x, other_query_x, "inductive")[0], inductive[0])
        for j in range(len(query_x)):
            alone = predict(model, params, support_x, query_x[j : j + 1], "inductive")
            torch.testing.assert_close(alone[0], inductive[j])
        # Transductive: the query set's own statistics, so the other examples matter.
        torch.testing.assert_close(transductive, model(query_x))
        changed = predict(model, params, support_x, other_query_x, "transductive")[0]
        assert (changed - transductive[0]).abs().max() > 1e-3
    assert (inductive - transductive).abs().max() > 1e-3, "the two modes should give different predictions"

    for mode in ("transductive", "inductive"):
        result = adapt(model, params, tasks, InnerLoop(steps=1, query_bn=mode))
        assert result.query_bn == mode
        assert torch.isfinite(result.query_outputs).all() and 0 <= result.query_accuracy <= 1
    assert InnerLoop().query_bn == "transductive"  # the default, as in MAML's reference code
    with pytest.raises(ValueError, match="query_bn"):
        InnerLoop(query_bn="running")


def test_per_query_predictions_normalize_each_query_with_the_support_set_alone():
    """Reptile's non-transductive test: each query forwarded with the support set, statistics over those S + 1 rows."""
    model, tasks = tiny_convnet(), random_tasks(1, queries=4)
    params = parameters_of(model)
    support_x, query_x = tasks.support_x[0], tasks.query_x[0]
    other_query_x = query_x.clone()
    other_query_x[1:] = torch.randn_like(query_x[1:])

    with torch.no_grad():
        per_query = predict(model, params, support_x, query_x, "per-query")
        assert per_query.shape == (len(query_x), WAYS)
        for j in range(len(query_x)):  # the network itself, on the support set and that one example
            torch.testing.assert_close(per_query[j], model(torch.cat([support_x, query_x[j:j + 1]]))[-1])
        torch.testing.assert_close(predict(model, params, support_x, other_query_x, "per-query")[0], per_query[0])
        # The example is in its own statistics, as it is not with inductive batch norm.
        inductive = predict(model, params, support_x, query_x, "inductive")
        assert (per_query - inductive).abs().max() > 1e-3
    assert adapt(model, params, tasks, InnerLoop(steps=1, query_bn="per-query")).query_bn == "per-query"


def test_set_gradients_feeds_any_optimizer():
    model = tiny_convnet()
    params = parameters_of(model)
    grads = {name: torch.ones_like(p) for name, p in params.items()}
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    set_gradients(params, grads)
    optimizer.step()
    for name, p in params.items():
        torch.testing.assert_close(p.detach(), before[name] - 0.1)


def test_adam_inner_loop_matches_torch_adam_with_beta1_zero_on_minibatches():
    """Reptile's inner optimizer: Adam(β1=0) on minibatches, against torch.optim.Adam on the same rows."""
    from metabook_learn.inner_loop import minibatch_rows

    model, tasks = tiny_convnet(), random_tasks(1, shots=4)  # 12 support rows
    inner = InnerLoop(steps=5, lr=0.01, optimizer="adam", batch_size=4)
    params = {name: p.detach() for name, p in model.named_parameters()}
    ours = fine_tune(model, params, tasks.support_x[0], tasks.support_y[0], inner, differentiate=autograd_gradient)

    reference = {name: p.clone().requires_grad_() for name, p in params.items()}
    adam = torch.optim.Adam(reference.values(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    seen = []
    for step in range(5):
        rows = minibatch_rows(12, 4, step, "cpu")
        seen.append(rows)
        adam.zero_grad()
        loss = F.cross_entropy(torch.func.functional_call(model, reference, (tasks.support_x[0][rows],)),
                               tasks.support_y[0][rows])
        loss.backward()
        adam.step()
    for name in params:
        # Where v̂ is near ε², g / (√v̂ + ε) amplifies rounding: agreement to 1e-9 on steps of 1e-2.
        torch.testing.assert_close(ours[name], reference[name].detach(), rtol=1e-7, atol=1e-9)
    # fine_tune takes consecutive minibatches of the rows as given (shuffles are laid out before it), wrapping around.
    assert torch.cat(seen).tolist() == [i % 12 for i in range(20)]


@pytest.mark.parametrize("strategy", ["loop", "vmap", "stacked"])
def test_test_time_minibatches_shuffle_each_tasks_support_set_on_its_own(strategy):
    """adapt with minibatches: task t fine-tunes on the rows task_minibatches deals it from inner.generator (as
    openai/supervised-reptile tests), and the query set is normalized with the support set as drawn."""
    from metabook_learn.inner_loop import task_minibatches

    model, tasks = tiny_convnet(), random_tasks(3, shots=4)  # 12 support rows per task
    params = parameters_of(model)
    inner = InnerLoop(steps=4, lr=0.01, optimizer="adam", batch_size=5, query_bn="per-query",
                      generator=torch.Generator().manual_seed(3))
    outputs = adapt(model, params, tasks, inner, strategy=strategy).query_outputs
    rows = task_minibatches(3, 12, 5, 4, generator=torch.Generator().manual_seed(3))
    assert len({tuple(r[:5].tolist()) for r in rows}) == 3, "every task draws its own order"
    for t in range(3):
        one_by_one = InnerLoop(steps=4, lr=0.01, optimizer="adam", batch_size=5, shuffle=False)
        fast = fine_tune(model, params, tasks.support_x[t][rows[t]], tasks.support_y[t][rows[t]], one_by_one,
                         differentiate=autograd_gradient)
        expected = predict(model, fast, tasks.support_x[t], tasks.query_x[t], "per-query")
        torch.testing.assert_close(outputs[t], expected, rtol=1e-5, atol=1e-6)
