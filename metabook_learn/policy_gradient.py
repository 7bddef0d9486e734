"""Policy-gradient estimation: returns, generalized advantage estimation, a linear baseline, the surrogate loss.

The gradient of the expected return ``J(θ) = E[Σ_t r_t]`` of a policy ``π_θ`` is
(Williams 1992; Sutton et al. 2000)

    ∇J(θ) = E[ Σ_t ∇ log π_θ(a_t | s_t) · A_t ]

where ``A_t`` may be the return from ``t`` on minus any baseline that depends on
the state only (REINFORCE with a baseline), or the generalized advantage
estimate GAE(γ, λ) of Schulman et al. (2016), eq. 16:

    δ_t = r_t + γ V(s_{t+1}) − V(s_t),     A_t = Σ_l (γλ)^l δ_{t+l}.

With λ = 1 this is the discounted return minus V (unbiased for any V); with
λ = 0 it is the one-step TD error (unbiased only when V is exact).
:func:`surrogate_loss` is the function whose gradient is the estimate, so the
same code serves an outer optimizer and MAML's inner step, which
differentiates through it.

Every tensor is batched as ``[B, T]`` (``B`` trajectories of ``T`` steps), with a
``mask`` ``[B, T]`` that is 1 while the episode runs and 0 after it ended.
"""
from __future__ import annotations

import torch

__all__ = ["discounted_returns", "gae", "surrogate_loss", "linear_baseline_features", "fit_linear_baseline"]


def discounted_returns(rewards: torch.Tensor, discount: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T]``: ``Σ_{l ≥ 0} γ^l r_{t+l}`` within the episode (steps after its end count 0)."""
    if mask is not None:
        rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + discount * running
        returns[:, t] = running
    return returns


def gae(rewards: torch.Tensor, values: torch.Tensor, discount: float, lam: float,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """GAE(γ, λ) advantages ``[B, T]`` from rewards and state values ``V(s_t)`` ``[B, T]``.

    The value after the last step (or after an episode's end) is 0: the
    episodes here end at their horizon or at termination, never mid-way.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must have the same shape")
    if mask is None:
        mask = torch.ones_like(rewards)
    rewards, values = rewards * mask, values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = rewards + discount * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = deltas[:, t] + discount * lam * running
        advantages[:, t] = running
    return advantages * mask


def surrogate_loss(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None,
                   per_step: bool = False) -> torch.Tensor:
    """``−(1/B) Σ_b Σ_t log π(a_t|s_t) · A_t``: its gradient is minus the policy-gradient estimate.

    ``per_step``: divide by the number of (unmasked) steps instead of the number
    of trajectories, as rllab's surrogate (a mean over all samples) does; the
    direction is the same, the scale ``1/T`` of the other, which matters where a
    step size was tuned for it (MAML's α = 0.5). The advantages are constants
    (detached): only the log-probabilities carry θ.
    """
    weighted = log_probs * advantages.detach()
    if mask is not None:
        weighted = weighted * mask
    if per_step:
        return -weighted.sum() / (mask.sum() if mask is not None else weighted.numel())
    return -weighted.sum() / log_probs.shape[0]


def linear_baseline_features(observations: torch.Tensor) -> torch.Tensor:
    """``[..., T, 2D + 5]``: rllab's ``LinearFeatureBaseline`` features of observations ``[..., T, D]``:
    the observation clipped to ±10, its square, t/100 and its square and cube, and 1."""
    o = observations.clamp(-10, 10)
    steps = torch.arange(o.shape[-2], dtype=o.dtype) / 100
    steps = steps.reshape([1] * (o.dim() - 2) + [-1, 1]).expand(*o.shape[:-1], 1)
    return torch.cat([o, o**2, steps, steps**2, steps**3, torch.ones_like(steps)], dim=-1)


def fit_linear_baseline(observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                        reg: float = 1e-5) -> torch.Tensor:
    """Fit, per task, a ridge regression of the returns on :func:`linear_baseline_features` and return its
    predictions ``[N, P, T]`` (as rllab, which fit it on the same paths it then served as a baseline).

    ``observations``: ``[N, P, T, D]`` (``N`` tasks of ``P`` paths of ``T`` steps),
    ``returns`` and ``mask``: ``[N, P, T]``. Steps after an episode's end are left
    out of the fit. The fit is a constant for any derivative (no gradient flows
    through the baseline).
    """
    with torch.no_grad():
        features = linear_baseline_features(observations) * mask[..., None]
        n, p, t, f = features.shape
        x = features.reshape(n, p * t, f).double()
        y = (returns * mask).reshape(n, p * t, 1).double()
        gram = x.transpose(1, 2) @ x + reg * torch.eye(f, dtype=x.dtype)
        coefficients = torch.linalg.solve(gram, x.transpose(1, 2) @ y)
        return ((x @ coefficients).reshape(n, p, t) * mask).to(returns.dtype)
