"""Reptile against its definition (Nichol, Achiam & Schulman, 2018, Algorithms 1 and 2)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabook_learn import reptile
from metabook_learn.data.sinusoid import sample_sinusoid_tasks
from metabook_learn.inner_loop import AdamMoments, InnerLoop, adapt, parameters_of, set_gradients
from metabook_learn.models import sinusoid_mlp

from meta_fixtures import random_tasks, tiny_convnet  # noqa: E402


def sgd_steps_by_hand(model, params, x, y, lr, steps):
    """W = U^k(φ): k plain SGD steps with autograd."""
    weights = {n: p.detach().clone() for n, p in params.items()}
    for _ in range(steps):
        weights = {n: p.requires_grad_() for n, p in weights.items()}
        loss = F.cross_entropy(functional_call(model, weights, (x,)), y)
        grads = torch.autograd.grad(loss, list(weights.values()))
        weights = {n: (p - lr * g).detach() for (n, p), g in zip(weights.items(), grads)}
    return weights


@pytest.mark.parametrize("strategy", ["loop", "vmap", "stacked"])
def test_reptile_update_is_the_mean_step_toward_each_tasks_weights(strategy):
    model, tasks = tiny_convnet(), random_tasks(3)
    params = parameters_of(model)
    phi = {n: p.detach().clone() for n, p in params.items()}
    inner = InnerLoop(steps=4, lr=0.3)
    step = reptile.reptile_direction(model, params, tasks, inner, strategy=strategy)
    assert step.strategy == strategy
    weights = [sgd_steps_by_hand(model, phi, tasks.support_x[i], tasks.support_y[i], 0.3, 4) for i in range(3)]
    # Algorithm 2: φ ← φ + ε (1/n) Σ_i (W_i − φ), here as one SGD step of size ε on the direction.
    epsilon = 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=epsilon)
    set_gradients(params, step.direction)
    optimizer.step()
    for name, p in params.items():
        mean_move = sum(w[name] - phi[name] for w in weights) / 3
        torch.testing.assert_close(p.detach(), phi[name] + epsilon * mean_move)


def test_serial_reptile_is_a_batch_of_one():
    """Algorithm 1 (one task per iteration) is Algorithm 2 with n = 1: the direction is φ − W."""
    model, tasks = tiny_convnet(), random_tasks(1)
    params = parameters_of(model)
    inner = InnerLoop(steps=3, lr=0.3)
    direction = reptile.reptile_direction(model, params, tasks, inner).direction
    weights = sgd_steps_by_hand(model, params, tasks.support_x[0], tasks.support_y[0], 0.3, 3)
    for name, p in params.items():
        torch.testing.assert_close(direction[name], p.detach() - weights[name])


def test_one_inner_step_reptile_is_sgd_on_the_support_loss():
    """With k = 1, W − φ = −α ∇L(φ): Reptile is then SGD on the tasks' joint loss, as the paper notes."""
    model, tasks = tiny_convnet(), random_tasks(2)
    params = parameters_of(model)
    direction = reptile.reptile_direction(model, params, tasks, InnerLoop(steps=1, lr=0.3)).direction
    losses = [F.cross_entropy(model(tasks.support_x[i]), tasks.support_y[i]) for i in range(2)]
    grads = torch.autograd.grad(sum(losses) / 2, list(params.values()))
    for (name, _), g in zip(params.items(), grads):
        torch.testing.assert_close(direction[name], 0.3 * g)


def test_a_few_reptile_steps_on_sinusoids_lower_the_loss_after_adaptation():
    torch.manual_seed(0)
    model = sinusoid_mlp()
    params = parameters_of(model)
    inner = InnerLoop(steps=5, lr=0.02, loss=F.mse_loss)
    held_out = sample_sinusoid_tasks(50, 10, 10, generator=torch.Generator().manual_seed(123))
    before = adapt(model, params, held_out, inner).query_loss.item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # ε = 0.5
    train = torch.Generator().manual_seed(0)
    for _ in range(100):
        step = reptile.reptile_direction(model, params, sample_sinusoid_tasks(5, 10, 0, generator=train), inner)
        optimizer.zero_grad()
        set_gradients(params, step.direction)
        optimizer.step()
    after = adapt(model, params, held_out, inner).query_loss.item()
    assert after < 0.75 * before, f"post-adaptation MSE {before:.3f} -> {after:.3f}"


def test_each_task_shuffles_its_own_support_set_for_its_minibatches():
    """As openai/supervised-reptile's _mini_batches: a fresh shuffle per task and per pass, batches may span passes."""
    torch.manual_seed(0)
    rows = reptile.task_minibatches(num_tasks=4, num_rows=12, batch_size=5, steps=5, device="cpu")
    assert rows.shape == (4, 25)
    for task in rows:
        assert sorted(task[:12].tolist()) == list(range(12))  # the first pass visits every row once
        assert sorted(task[12:24].tolist()) == list(range(12))  # and so does the second
    first_batches = {tuple(task[:5].tolist()) for task in rows}
    assert len(first_batches) == 4, "every task draws its own order"


def adam_on_rows(model, weights, adam, x, y, rows, steps: int, batch_size: int) -> None:
    """``steps`` steps of ``adam`` on ``weights``, step k on rows ``rows[k·b:(k+1)·b]`` of one task's ``(x, y)``."""
    for step in range(steps):
        batch = rows[batch_size * step:batch_size * (step + 1)]
        adam.zero_grad()
        F.cross_entropy(functional_call(model, weights, (x[batch],)), y[batch]).backward()
        adam.step()


@pytest.mark.parametrize("strategy", ["loop", "vmap", "stacked"])
def test_reptile_on_minibatches_is_adam_on_each_tasks_own_shuffled_rows(strategy):
    """The direction equals torch.optim.Adam(β1 = 0), fresh per task, on the rows task_minibatches deals that task."""
    model, tasks = tiny_convnet(), random_tasks(3, shots=4)  # 12 support rows per task
    params = parameters_of(model)
    phi = {n: p.detach().clone() for n, p in params.items()}
    inner = InnerLoop(steps=4, lr=0.01, optimizer="adam", batch_size=5)
    torch.manual_seed(7)
    direction = reptile.reptile_direction(model, params, tasks, inner, strategy=strategy).direction
    torch.manual_seed(7)
    rows = reptile.task_minibatches(3, 12, 5, 4)
    moved = {n: torch.zeros_like(p) for n, p in phi.items()}
    for t in range(3):
        weights = {n: p.clone().requires_grad_() for n, p in phi.items()}
        adam = torch.optim.Adam(weights.values(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
        adam_on_rows(model, weights, adam, tasks.support_x[t], tasks.support_y[t], rows[t], steps=4, batch_size=5)
        for n in phi:
            moved[n] += (phi[n] - weights[n].detach()) / 3
    for n in phi:
        torch.testing.assert_close(direction[n], moved[n], rtol=1e-4, atol=1e-6)


def test_carried_moments_are_one_adam_whose_weights_go_back_to_phi_after_every_task():
    """With ``moments``, the direction equals that of one torch.optim.Adam(β1 = 0) kept over all the tasks of two
    meta-batches, its weights reset to φ after each task and its state not (openai/supervised-reptile's
    ``train_step``), and the moments left behind are that Adam's."""
    model = tiny_convnet()
    params = parameters_of(model)
    phi = {n: p.detach().clone() for n, p in params.items()}
    inner = InnerLoop(steps=3, lr=0.01, optimizer="adam", batch_size=5)
    batches = [random_tasks(2, shots=4, seed=seed) for seed in (1, 2)]  # 12 support rows per task
    moments = AdamMoments.zeros(params)
    torch.manual_seed(7)
    directions = [reptile.reptile_direction(model, params, tasks, inner, moments=moments).direction
                  for tasks in batches]
    assert moments.steps == 2 * 2 * 3

    torch.manual_seed(7)
    weights = {n: p.clone().requires_grad_() for n, p in phi.items()}
    adam = torch.optim.Adam(weights.values(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for tasks, direction in zip(batches, directions):
        rows = reptile.task_minibatches(2, 12, 5, 3)
        moved = {n: torch.zeros_like(p) for n, p in phi.items()}
        for t in range(2):
            with torch.no_grad():
                for n in phi:
                    weights[n].copy_(phi[n])
            adam_on_rows(model, weights, adam, tasks.support_x[t], tasks.support_y[t], rows[t], steps=3,
                         batch_size=5)
            for n in phi:
                moved[n] += (phi[n] - weights[n].detach()) / 2
        for n in phi:
            torch.testing.assert_close(direction[n], moved[n], rtol=1e-4, atol=1e-6)
    for n, w in weights.items():
        torch.testing.assert_close(moments.second[n], adam.state[w]["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    # fresh moments give another direction: the carried state matters from the second task on
    torch.manual_seed(7)
    fresh = reptile.reptile_direction(model, params, batches[0], inner).direction
    assert not all(torch.allclose(fresh[n], directions[0][n]) for n in phi)
    with pytest.raises(ValueError, match="inner optimizer is 'sgd'"):
        reptile.reptile_direction(model, params, batches[0], InnerLoop(steps=1, lr=0.1), moments=moments)


def test_test_time_minibatches_are_the_eval_inner_batch_size():
    """Reptile's code tests on minibatches of --eval-batch, not of its training --inner-batch."""
    from metabook_learn.methods import inner_loop
    from metabook_learn.training import TrainConfig

    config = TrainConfig(algorithm="reptile", shots=5, inner_optimizer="adam", inner_lr=1e-3, inner_batch_size=10,
                         eval_inner_batch_size=5, eval_inner_steps=50, device="cpu")
    assert (inner_loop(config).batch_size, inner_loop(config, evaluation=True).batch_size) == (10, 5)
    assert inner_loop(replace(config, eval_inner_batch_size=None), evaluation=True).batch_size is None
    with pytest.raises(ValueError, match="eval_inner_batch_size"):
        TrainConfig(algorithm="reptile", eval_inner_batch_size=0)
