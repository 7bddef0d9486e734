"""MAML-RL: its meta-gradient against finite differences, and a short meta-training whose one step adapts."""
import itertools

import pytest
import torch

from metabook_learn.maml_rl import (AUTHORS_TEST, MAMLRLConfig, adaptation_curve, advantages_of, init_policy,
                                    inner_step, log_prob, meta_loss, sample_trajectories, train_maml_rl)
from metabook_learn.rl_envs import PointNavigation


def test_meta_gradient_matches_central_finite_differences_with_the_trajectories_held_fixed():
    params = init_policy(hidden=4, seed=0, dtype=torch.float64)
    params["log_std"] = torch.tensor([-0.5, -0.2], dtype=torch.float64)
    # nonzero biases: with zero ones every unit sits on ReLU's kink at the start (the origin), where finite
    # differences and the derivative disagree
    generator = torch.Generator().manual_seed(5)
    for name in ("b0", "b1", "b2"):
        params[name] = 0.3 * torch.randn(params[name].shape, generator=generator, dtype=torch.float64)
    goals = torch.tensor([[0.3, -0.2], [-0.4, 0.1]], dtype=torch.float64)
    before = sample_trajectories(params, goals, paths=3, horizon=6, seed=0)
    after = sample_trajectories(params, goals, paths=3, horizon=6, seed=1)
    before_adv, after_adv = advantages_of(before, 0.99), advantages_of(after, 0.99)
    leaves = {name: tensor.clone().requires_grad_() for name, tensor in params.items()}
    loss = meta_loss(leaves, before, before_adv, after, after_adv, inner_lr=0.5)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    first_order = torch.autograd.grad(
        meta_loss(leaves, before, before_adv, after, after_adv, inner_lr=0.0), list(leaves.values()))
    eps = 1e-6
    for (name, tensor), grad, plain in zip(params.items(), grads, first_order):
        for index in list(itertools.product(*map(range, tensor.shape)))[:6]:
            shifted = {k: v.clone() for k, v in params.items()}
            shifted[name][index] += eps
            up = meta_loss(shifted, before, before_adv, after, after_adv, 0.5)
            shifted[name][index] -= 2 * eps
            down = meta_loss(shifted, before, before_adv, after, after_adv, 0.5)
            assert grad[index].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5, abs=1e-8)
    # the inner step matters: the meta-gradient is not the gradient at θ itself
    assert not all(torch.allclose(g, p) for g, p in zip(grads, first_order))


def test_inner_step_is_one_gradient_step_of_each_task_surrogate():
    params = init_policy(hidden=3, seed=1, dtype=torch.float64)
    goals = torch.tensor([[0.1, 0.2], [0.3, -0.3]], dtype=torch.float64)
    trajectories = sample_trajectories(params, goals, paths=2, horizon=4, seed=2)
    advantages = advantages_of(trajectories, 0.99)
    adapted = inner_step(params, trajectories, advantages, inner_lr=0.3, create_graph=False)
    for task in range(2):
        leaves = {name: tensor.clone().requires_grad_() for name, tensor in params.items()}
        logp = log_prob(leaves, trajectories.observations[task], trajectories.actions[task])
        mask = trajectories.mask[task]
        loss = -(logp * advantages[task] * mask).sum() / mask.sum()
        grads = torch.autograd.grad(loss, list(leaves.values()))
        for (name, tensor), grad in zip(params.items(), grads):
            assert torch.allclose(adapted[name][task], tensor - 0.3 * grad)


def test_a_short_meta_training_adapts_in_one_step():
    config = MAMLRLConfig(iterations=20, meta_batch=20, paths=10, hidden=32, seed=0)
    result = train_maml_rl(config)
    goals = PointNavigation(40).sample_goals(40, torch.Generator().manual_seed(7))
    curve = adaptation_curve(result.params, goals, steps=1, inner_lr=config.inner_lr, paths=20, seed=3)
    # returns near −70 before training; one step after 20 meta-iterations gains many standard errors
    before, after = curve[0], curve[1]
    gain = after - before
    assert gain.mean() > 4 * gain.std() / 40**0.5 and gain.mean() > 5, (before.mean(), after.mean())
    assert result.return_after[-1] > result.return_before[0]
    with pytest.raises(ValueError, match="paths"):
        MAMLRLConfig(paths=1)


def test_the_adaptation_curve_takes_one_step_size_per_step_as_the_authors_test_does():
    params = init_policy(8, seed=1)
    goals = PointNavigation(3).sample_goals(3, torch.Generator().manual_seed(2))
    curve = adaptation_curve(params, goals, steps=2, inner_lr=(0.5, 0.25), paths=4, horizon=10, seed=5)
    # The same by hand: sample, step with 0.5 on fresh trajectories, sample, step with 0.25, sample.
    current = {name: tensor.expand(3, *tensor.shape).clone() for name, tensor in params.items()}
    expected = []
    for step, rate in enumerate((0.5, 0.25, None)):
        trajectories = sample_trajectories(current, goals, 4, 10, seed=5 + step)
        expected.append(trajectories.mean_return())
        if rate is not None:
            current = inner_step(current, trajectories, advantages_of(trajectories, 0.99), rate, create_graph=False,
                                 per_task_params=True)
    torch.testing.assert_close(curve, torch.stack(expected))
    same = adaptation_curve(params, goals, steps=2, inner_lr=0.5, paths=4, horizon=10, seed=5)
    assert torch.equal(same[:2], curve[:2]) and not torch.equal(same[2], curve[2])
    assert AUTHORS_TEST == {"inner_lr": (0.5, 0.25, 0.25), "paths": 40}
    with pytest.raises(ValueError, match="one per step"):
        adaptation_curve(params, goals, steps=3, inner_lr=(0.5, 0.25), paths=4, horizon=10)


def test_training_is_reproducible_and_divergence_stops_it():
    tiny = dict(iterations=2, meta_batch=2, paths=2, hidden=4, horizon=5)
    first, second = train_maml_rl(MAMLRLConfig(**tiny)), train_maml_rl(MAMLRLConfig(**tiny))
    assert all(torch.equal(first.params[name], second.params[name]) for name in first.params)
    with pytest.raises(RuntimeError, match="diverged at iteration 1.*lower outer_lr"):
        train_maml_rl(MAMLRLConfig(**{**tiny, "iterations": 5}, outer_lr=1e30))
    with pytest.raises(ValueError, match="inner_lr must be a finite number"):
        MAMLRLConfig(inner_lr=-1.0)
