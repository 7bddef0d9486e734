"""The classical bandit algorithms RL² is measured against (Duan et al. 2016, Table 1), for Bernoulli arms.

Every policy here is a function ``choose(successes, failures, t, generator) ->
arms``: ``successes`` and ``failures`` ``[B, k]`` count each arm's 1s and 0s so
far in each of ``B`` tasks, ``t`` is the number of pulls made (0 at the first),
and the result is the arm ``[B]`` to pull next. :func:`play` runs one on a batch
of bandits and returns what happened.

* :func:`random_policy`: an arm uniformly at random.
* :func:`greedy`: the arm of highest posterior mean under a Beta(1, 1) prior
  (ties broken at random); it never explores on purpose.
* :func:`ucb1`: Auer, Cesa-Bianchi & Fischer (2002), Fig. 1: each arm once, then
  the arm maximizing ``mean + sqrt(2 ln t / pulls)``.
* :func:`thompson`: Thompson (1933): sample each arm's mean from its Beta(1 + s,
  1 + f) posterior, pull the arm of the largest sample.
* :func:`gittins`: the Gittins (1979) index of a Bernoulli arm with a uniform
  prior for a discount factor γ, computed by calibration (below); the policy pulls
  the arm of the largest index. The index policy is Bayes-optimal for the
  infinite discounted problem; for a finite horizon ``n`` it is an
  approximation. We use γ = 1 − 1/n, the discount whose effective horizon
  1/(1−γ) is ``n`` (a common choice; Duan et al. do not state theirs).

Calibration (Gittins 1979; Gittins, Glazebrook & Weber 2011, Ch. 7): an arm in
posterior state Beta(a, b) is compared with a retirement option paying λ forever.
``V(a, b; λ) = max(λ/(1−γ), p(1 + γV(a+1, b)) + (1−p)γV(a, b+1))``, p = a/(a+b);
the index is the λ at which retiring and pulling once more are equally good.
We solve the recursion backwards from a depth where the arm is treated as known
(``V = max(λ, p)/(1−γ)``), for a grid of λ at once, and interpolate the root.

``DUAN_TABLE1`` holds Duan et al.'s (2016) Table 1 as printed: the average *total
reward* of each algorithm over 1000 bandits with uniform arm means. Their UCB1
starts every arm at one success and one failure and has a tuned constant ``c``;
every method with a hyperparameter was tuned by grid search per setting. They
also ran optimistic Thompson sampling and ε-greedy play, which this module does
not have. :func:`duan_regret` converts a row to expected regret,
``n · E[max_i μ_i] − total reward`` with ``E[max_i μ_i] = k / (k + 1)`` for ``k``
uniform means, which is what :func:`play` measures (up to the reward noise that
averages out over bandits).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from metabook_learn.rl_envs import BernoulliBandits

__all__ = ["random_policy", "greedy", "ucb1", "thompson", "gittins", "gittins_indices", "play", "BanditRun",
           "BASELINES", "DUAN_TABLE1", "DUAN_TABLE1_COLUMNS", "duan_regret", "expected_best_mean"]

Policy = Callable[[torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]


def _argmax_random_ties(scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The index of the largest entry of each row ``[B, k]``, ties broken uniformly at random."""
    jitter = torch.rand(scores.shape, generator=generator, dtype=torch.float64)
    best = scores == scores.max(dim=1, keepdim=True).values
    return torch.where(best, jitter, torch.full_like(jitter, -1.0)).argmax(dim=1)


def random_policy(successes, failures, t, generator):
    """An arm ``[B]`` uniformly at random."""
    return torch.randint(0, successes.shape[1], (successes.shape[0],), generator=generator)


def greedy(successes, failures, t, generator):
    """The arm ``[B]`` of highest posterior mean (s + 1) / (s + f + 2), ties at random."""
    posterior_mean = (successes + 1) / (successes + failures + 2)
    return _argmax_random_ties(posterior_mean.double(), generator)


def ucb1(successes, failures, t, generator):
    """UCB1 (Auer et al. 2002, Fig. 1): an untried arm first, else the arm ``[B]`` maximizing
    ``s / pulls + sqrt(2 ln t / pulls)``."""
    pulls = (successes + failures).double()
    bonus = torch.sqrt(2 * math.log(max(t, 1)) / pulls.clamp(min=1))
    scores = torch.where(pulls == 0, torch.full_like(pulls, math.inf), successes / pulls.clamp(min=1) + bonus)
    return _argmax_random_ties(scores, generator)


def thompson(successes, failures, t, generator):
    """Thompson sampling: the arm ``[B]`` of the largest draw from each arm's Beta(1 + s, 1 + f) posterior."""
    # Beta(α, β) = X / (X + Y), X ~ Gamma(α), Y ~ Gamma(β); torch's samplers take no generator, so draw
    # the Gammas from a seeded stream of their own to stay reproducible.
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = torch._standard_gamma((successes + 1).double())
        y = torch._standard_gamma((failures + 1).double())
    return _argmax_random_ties(x / (x + y), generator)


def gittins_indices(max_pulls: int, discount: float, extra_depth: int = 200, grid: int = 401) -> torch.Tensor:
    """``[max_pulls + 1, max_pulls + 1]`` float64: entry ``[s, f]`` is the Gittins index of an arm with
    ``s`` successes and ``f`` failures (posterior Beta(1 + s, 1 + f)) for the discount ``discount``.

    Entries with ``s + f > max_pulls`` are NaN. The recursion is truncated
    ``extra_depth`` pulls beyond ``max_pulls`` (there the arm counts as known);
    the index is interpolated on a grid of ``grid`` retirement rewards in [0, 1].
    """
    if not 0 < discount < 1:
        raise ValueError(f"discount must lie in (0, 1), got {discount}")
    lam = torch.linspace(0, 1, grid, dtype=torch.float64)
    retire = lam / (1 - discount)
    depth = max_pulls + extra_depth  # pulls s + f on the last diagonal
    # values on diagonal s + f = d: [d + 1 states (s = 0..d), grid]
    s = torch.arange(depth + 1, dtype=torch.float64)
    p = (s + 1) / (depth + 2)
    value = torch.maximum(retire[None, :], (p / (1 - discount))[:, None].expand(-1, grid))
    table = torch.full((max_pulls + 1, max_pulls + 1), math.nan, dtype=torch.float64)
    for d in range(depth - 1, -1, -1):
        s = torch.arange(d + 1, dtype=torch.float64)
        p = ((s + 1) / (d + 2))[:, None]
        # from (s, d - s): a success leads to (s + 1, d - s) = index s + 1 of the next diagonal
        pull = p * (1 + discount * value[1:d + 2]) + (1 - p) * discount * value[:d + 1]
        if d <= max_pulls:
            gap = pull - retire[None, :]  # decreasing in λ; the index is its root
            below = (gap > 0).sum(dim=1).clamp(1, grid - 1)  # first grid point where retiring wins
            g0, g1 = gap.gather(1, (below - 1)[:, None])[:, 0], gap.gather(1, below[:, None])[:, 0]
            l0, l1 = lam[below - 1], lam[below]
            root = l0 + (l1 - l0) * g0 / (g0 - g1).clamp(min=1e-300)
            table[s.long(), d - s.long()] = root
        value = torch.maximum(retire[None, :], pull)
    return table


def gittins(horizon: int, discount: float | None = None) -> Policy:
    """The Gittins-index policy for episodes of ``horizon`` pulls (discount 1 − 1/horizon unless given)."""
    discount = 1 - 1 / max(horizon, 2) if discount is None else discount
    table = gittins_indices(horizon, discount)

    def choose(successes, failures, t, generator):
        return _argmax_random_ties(table[successes.long(), failures.long()], generator)

    choose.__name__ = "gittins"
    return choose


class BanditRun(tuple):
    """``(arms [B, H], rewards [B, H], regret [B])`` of one batch of episodes; regret is
    ``H · max mean − Σ_t mean of the pulled arm`` (expected regret given the arms pulled)."""

    @property
    def arms(self):
        return self[0]

    @property
    def rewards(self):
        return self[1]

    @property
    def regret(self):
        return self[2]


def play(policy: Policy, env: BernoulliBandits, seed: int, means: torch.Tensor | None = None) -> BanditRun:
    """Run ``policy`` on ``env``'s ``num_tasks`` bandits (new ones drawn with ``seed`` unless ``means``)."""
    env.reset(seed=seed, means=means)
    generator = torch.Generator().manual_seed(seed + 1)
    successes = torch.zeros(env.num_tasks, env.arms)
    failures = torch.zeros(env.num_tasks, env.arms)
    arms, rewards, chosen_means = [], [], []
    for t in range(env.horizon):
        arm = policy(successes, failures, t, generator)
        _, reward, _, _, info = env.step(arm)
        rows = torch.arange(env.num_tasks)
        successes[rows, arm] += reward
        failures[rows, arm] += 1 - reward
        arms.append(arm)
        rewards.append(reward)
        chosen_means.append(info["chosen_mean"])
    regret = env.horizon * env.means.max(dim=1).values - torch.stack(chosen_means, 1).sum(1)
    return BanditRun((torch.stack(arms, 1), torch.stack(rewards, 1), regret))


BASELINES = {"random": lambda horizon: random_policy, "greedy": lambda horizon: greedy,
             "ucb1": lambda horizon: ucb1, "thompson": lambda horizon: thompson, "gittins": gittins}


# Duan et al. (2016), "RL²: Fast reinforcement learning via slow reinforcement learning", arXiv:1611.02779,
# Table 1: average total reward over 1000 bandits, (arms k, pulls n) -> one value per column.
DUAN_TABLE1_COLUMNS = ("random", "gittins", "thompson", "optimistic_thompson", "ucb1", "epsilon_greedy", "greedy",
                       "rl2")
DUAN_TABLE1 = {
    (5, 10): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7),
    (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7),
    (50, 10): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8),
    (5, 100): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7),
    (10, 100): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5),
    (50, 100): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9),
    (5, 500): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6),
    (10, 500): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5),
    (50, 500): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9),
}


def expected_best_mean(arms: int) -> float:
    """E[max of ``arms`` independent Uniform(0, 1) means] = k / (k + 1)."""
    return arms / (arms + 1)


def duan_regret(arms: int, pulls: int) -> dict[str, float]:
    """Duan et al.'s Table 1 row for ``arms`` and ``pulls`` as expected regret, by column name."""
    if (arms, pulls) not in DUAN_TABLE1:
        raise KeyError(f"Duan et al.'s Table 1 has no row for k = {arms}, n = {pulls}; "
                       f"it has {sorted(DUAN_TABLE1)}")
    best = pulls * expected_best_mean(arms)
    return {column: best - reward for column, reward in zip(DUAN_TABLE1_COLUMNS, DUAN_TABLE1[(arms, pulls)])}
