"""The policy-gradient estimator's mean against exact gradients of tiny problems, and GAE against a slow loop."""
import math

import pytest
import torch

from metabook_learn.policy_gradient import discounted_returns, fit_linear_baseline, gae, surrogate_loss


def test_reinforce_with_a_baseline_matches_the_exact_gradient_of_a_softmax_bandit():
    # J(θ) = Σ_i π_i μ_i, so ∂J/∂θ_j = π_j (μ_j − J)
    torch.manual_seed(0)
    means = torch.tensor([0.2, 0.7, 0.4], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.5, 0.1], dtype=torch.float64, requires_grad=True)
    pi = torch.softmax(theta, 0)
    exact = (pi * (means - (pi * means).sum())).detach()
    samples = 200_000
    actions = torch.multinomial(pi.detach(), samples, replacement=True)
    rewards = torch.bernoulli(means[actions])
    log_probs = torch.log_softmax(theta, 0)[actions]
    for baseline in (0.0, 0.5):
        # ∇θ log π(a) = e_a − π for a softmax policy
        score = torch.nn.functional.one_hot(actions, 3) - pi.detach()
        per_sample = score * (rewards - baseline)[:, None]
        estimate = -torch.autograd.grad(surrogate_loss(log_probs[:, None], (rewards - baseline)[:, None]),
                                        theta, retain_graph=True)[0]
        assert torch.allclose(estimate, per_sample.mean(0))
        stderr = per_sample.std(0) / math.sqrt(samples)
        assert ((estimate - exact).abs() < 4 * stderr).all(), (estimate, exact, stderr)


def _two_step_mdp():
    """State 0 at t = 0; action a leads to state 1 + a at t = 1; a tabular softmax policy; rewards r[s, a]."""
    rewards = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 1.5]], dtype=torch.float64)
    theta = torch.tensor([[0.2, -0.3], [0.5, 0.0], [-1.0, 0.4]], dtype=torch.float64, requires_grad=True)
    return rewards, theta


def test_gae_policy_gradient_matches_the_exact_gradient_of_a_two_step_mdp():
    rewards, theta = _two_step_mdp()
    pi = torch.softmax(theta, 1)
    second_value = (pi[1:] * rewards[1:]).sum(1)  # V(s) at t = 1 for s = 1, 2
    objective = (pi[0] * (rewards[0] + second_value)).sum()  # exact J(θ), γ = 1
    exact = torch.autograd.grad(objective, theta)[0]

    generator = torch.Generator().manual_seed(0)
    samples = 200_000
    first = torch.multinomial(pi[0].detach(), samples, replacement=True, generator=generator)
    state = 1 + first
    second = torch.multinomial(pi[state].detach(), 1, generator=generator)[:, 0]
    log_probs = torch.stack([torch.log_softmax(theta[0], 0)[first],
                             torch.log_softmax(theta, 1)[state, second]], 1)
    reward = torch.stack([rewards[0, first], rewards[state, second]], 1)
    exact_values = torch.stack([objective.detach().expand(samples), second_value.detach()[first]], 1)
    wrong_values = torch.stack([torch.full((samples,), 3.0, dtype=torch.float64),
                                torch.tensor([-1.0, 2.0], dtype=torch.float64)[first]], 1)
    cases = [(wrong_values, 1.0, True), (exact_values, 1.0, True), (exact_values, 0.0, True), (exact_values, 0.5, True),
             (wrong_values, 0.0, False)]  # the last is biased: the test must see it
    for values, lam, unbiased in cases:
        advantages = gae(reward, values, discount=1.0, lam=lam)
        estimate = -torch.autograd.grad(surrogate_loss(log_probs, advantages), theta, retain_graph=True)[0]
        # per-sample gradients of a tabular softmax: ∇θ[s] log π(a|s) = e_a − π(s) in the row of s
        per_sample = torch.zeros(samples, 3, 2, dtype=torch.float64)
        rows = torch.arange(samples)
        per_sample[rows, 0] += (torch.nn.functional.one_hot(first, 2) - pi[0].detach()) * advantages[:, :1]
        per_sample[rows, state] += (torch.nn.functional.one_hot(second, 2) - pi[state].detach()) * advantages[:, 1:]
        assert torch.allclose(estimate, per_sample.mean(0))
        stderr = per_sample.std(0) / math.sqrt(samples)
        within = ((estimate - exact).abs() <= 4 * stderr + 1e-12).all()
        assert within == unbiased, (lam, estimate, exact, stderr)


def test_gae_against_a_slow_loop_and_its_limits():
    generator = torch.Generator().manual_seed(1)
    rewards = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    mask = torch.ones(4, 7, dtype=torch.float64)
    mask[1, 5:] = 0
    gamma, lam = 0.9, 0.7
    slow = torch.zeros(4, 7, dtype=torch.float64)
    for b in range(4):
        length = int(mask[b].sum())
        for t in range(length):
            for l in range(length - t):
                next_value = values[b, t + l + 1] if t + l + 1 < length else 0.0
                delta = rewards[b, t + l] + gamma * next_value - values[b, t + l]
                slow[b, t] += (gamma * lam) ** l * delta
    assert torch.allclose(gae(rewards, values, gamma, lam, mask), slow)
    returns = discounted_returns(rewards, gamma, mask)
    assert torch.allclose(gae(rewards, values, gamma, 1.0, mask), (returns - values) * mask)
    assert returns[1, 5:].abs().sum() == 0


def test_linear_baseline_fits_returns_it_can_represent_and_ignores_ended_steps():
    t = torch.arange(5, dtype=torch.float64)
    observations = torch.randn(2, 3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    returns = 2 * observations[..., 0] - observations[..., 1] ** 2 + (t / 100) ** 2 + 0.5
    mask = torch.ones(2, 3, 5, dtype=torch.float64)
    mask[0, 0, 3:] = 0
    fitted = fit_linear_baseline(observations, returns, mask, reg=1e-10)
    assert torch.allclose(fitted, returns * mask, atol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        gae(returns[0], returns[0, :, :4], 1.0, 1.0)
