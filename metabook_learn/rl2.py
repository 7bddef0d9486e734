"""RL² (Duan et al. 2016; also Wang et al. 2016): a recurrent policy whose hidden state is the learning algorithm.

A GRU sees, at every step, the observation, the previous action (one-hot), the
previous reward and the previous done flag, and keeps its hidden state across
all the episodes of one task (a "trial"). Trained by an ordinary policy gradient
to maximize the total reward of whole trials over many tasks, its weights come
to encode how to explore a new task and then exploit what it found: the "fast"
reinforcement learning happens in the activations, the "slow" one in the weights.

On Bernoulli bandits a trial is ``n`` pulls of one bandit. Duan et al. count
every pull as an episode of length 1; the env here makes the ``n`` pulls one
episode, so the done flag the policy sees is 1 only after the last pull. The
hidden state carries everything either way; nothing learned depends on it.

Training: Duan et al. used TRPO with GAE. We use the plain policy gradient of
:mod:`metabook_learn.policy_gradient` with GAE(γ, λ) advantages from a learned value
head, an entropy bonus, and Adam: the advantage actor-critic that Wang et al.
(2016) used for the same bandit experiments. TRPO's trust region (a conjugate-
gradient solve and a line search per update) steadies large policies; at this
size the first-order update trains in seconds and is far shorter to read.

This is not a :class:`metabook_learn.methods.Method`: that protocol adapts a network
to a labelled support set and scores it on a query set; an RL² task has
neither, only a reward stream, so RL² has its own training function here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metabook_learn.bandit_baselines import BanditRun
from metabook_learn.policy_gradient import discounted_returns, gae, surrogate_loss
from metabook_learn.rl_envs import BernoulliBandits

__all__ = ["RL2Policy", "RL2Config", "rollout", "largest_return", "rl2_loss", "train_rl2", "play_rl2"]


class RL2Policy(nn.Module):
    """GRU over ``(observation [D], previous action one-hot [A], previous reward, previous done)``.

    ``step(inputs [B, D + A + 2], hidden [B, H]) -> (logits [B, A], value [B], hidden [B, H])``.
    """

    def __init__(self, observation_size: int, actions: int, hidden_size: int = 128):
        super().__init__()
        self.observation_size, self.actions, self.hidden_size = observation_size, actions, hidden_size
        self.cell = nn.GRUCell(observation_size + actions + 2, hidden_size)
        self.policy_head = nn.Linear(hidden_size, actions)
        self.value_head = nn.Linear(hidden_size, 1)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hidden_size)

    def inputs(self, observation, previous_action, previous_reward, previous_done) -> torch.Tensor:
        """``[B, D + A + 2]``; ``previous_action`` ``[B]`` is −1 before the first step (a zero one-hot)."""
        one_hot = F.one_hot(previous_action.clamp(min=0), self.actions).float() * (previous_action >= 0)[:, None]
        return torch.cat([observation, one_hot, previous_reward[:, None], previous_done.float()[:, None]], dim=1)

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor):
        hidden = self.cell(inputs, hidden)
        return self.policy_head(hidden), self.value_head(hidden)[:, 0], hidden


@dataclass(frozen=True)
class RL2Config:
    """RL² training on Bernoulli bandits.

    ``discount``/``gae_lambda``: the advantage estimate's. The defaults γ = λ = 1
    (Monte-Carlo returns minus the value head) score the undiscounted total reward
    that regret measures, and trained faster than γ = 0.99, λ = 0.3 in short runs
    (k = 5, n = 10, 300 iterations of 1024 tasks, one seed: regret 2.23 against
    2.58); Duan et al.'s own TRPO and GAE settings are in their paper's appendix
    (not re-checked here). ``entropy``: the bonus's weight, decayed linearly to 0.
    """
    arms: int = 5
    horizon: int = 10
    iterations: int = 300
    tasks_per_batch: int = 1024
    hidden_size: int = 64
    learning_rate: float = 1e-2
    discount: float = 1.0
    gae_lambda: float = 1.0
    entropy: float = 0.01
    value_weight: float = 0.5
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("arms", "horizon", "iterations", "tasks_per_batch", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RL2Config.{name} must be a positive integer, got {value!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"RL2Config.learning_rate must be a finite number > 0, got {self.learning_rate}")
        if not 0 < self.discount <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"discount must lie in (0, 1] and gae_lambda in [0, 1], got "
                             f"{self.discount}, {self.gae_lambda}")


def rollout(policy: RL2Policy, env: BernoulliBandits, seed: int, means: torch.Tensor | None = None,
            sample: bool = True):
    """One trial on each of ``env``'s tasks. Returns ``(log_probs, values, entropies, rewards, arms)``, each
    ``[B, n]``, and the regret ``[B]`` (``n · max mean − Σ mean of the pulled arm``)."""
    observation = env.reset(seed=seed, means=means)
    generator = torch.Generator().manual_seed(seed + 1)
    batch = env.num_tasks
    hidden = policy.initial_state(batch)
    action = torch.full((batch,), -1, dtype=torch.long)
    reward = torch.zeros(batch)
    done = torch.zeros(batch, dtype=torch.bool)
    log_probs, values, entropies, rewards, arms, chosen = [], [], [], [], [], []
    for _ in range(env.horizon):
        logits, value, hidden = policy.step(policy.inputs(observation, action, reward, done), hidden)
        log_pi = torch.log_softmax(logits, dim=1)
        if sample:
            action = torch.multinomial(log_pi.detach().exp(), 1, generator=generator)[:, 0]
        else:
            action = log_pi.argmax(dim=1)
        observation, reward, terminated, truncated, info = env.step(action)
        done = terminated | truncated
        log_probs.append(log_pi.gather(1, action[:, None])[:, 0])
        entropies.append(-(log_pi.exp() * log_pi).sum(1))
        values.append(value)
        rewards.append(reward)
        arms.append(action)
        chosen.append(info["chosen_mean"])
    regret = env.horizon * env.means.max(dim=1).values - torch.stack(chosen, 1).sum(1)
    stack = lambda xs: torch.stack(xs, dim=1)  # noqa: E731
    return stack(log_probs), stack(values), stack(entropies), stack(rewards), stack(arms), regret


@dataclass
class RL2Result:
    policy: RL2Policy
    config: RL2Config
    mean_reward: list[float] = field(default_factory=list)  # per iteration: mean total reward of a trial


def largest_return(config: RL2Config) -> float:
    """Σ_{l<n} γ^l: the largest discounted return to go of a trial (every pull paying 1), the value head's unit."""
    return sum(config.discount ** l for l in range(config.horizon))


def rl2_loss(config: RL2Config, log_probs, values, entropies, rewards):
    """``(policy loss, value loss, entropy)`` of one batch of trials, each a scalar; ``train_rl2`` minimizes
    ``policy + value_weight · value − entropy_weight · entropy``.

    The inputs are :func:`rollout`'s ``[B, n]`` tensors. The value head predicts
    the return to go divided by :func:`largest_return`, a number in [0, 1] for any
    n. Unscaled, its squared error at n = 100 had a gradient thousands of times the
    policy loss's on an untrained policy (n = 500: tens of thousands), so that after clipping the total
    gradient norm the policy's share of an update was tiny (``tests/test_rl2.py``
    keeps the two gradients within a factor of 100 of each other). The first
    full-scale runs, made so, learned nothing at those horizons; with this scaling
    alone and γ = 1 a probe at n = 100 still learned nothing, so the full-scale
    script also discounts (``scripts/full_scale_meta_rl.py`` says why).
    """
    scale = largest_return(config)
    advantages = gae(rewards, scale * values.detach(), config.discount, config.gae_lambda)
    # centred and scaled, as rllab's center_adv (Duan et al.'s code) does
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    returns = discounted_returns(rewards, config.discount)
    return (surrogate_loss(log_probs, advantages) / config.horizon,
            F.mse_loss(values, returns / scale), entropies.mean())


def train_rl2(config: RL2Config) -> RL2Result:
    """Train an RL² policy on fresh random bandits every iteration (means U[0, 1] per arm and task)."""
    torch.manual_seed(config.seed)
    policy = RL2Policy(1, config.arms, config.hidden_size)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    env = BernoulliBandits(config.tasks_per_batch, config.arms, config.horizon)
    result = RL2Result(policy, config)
    for iteration in range(config.iterations):
        log_probs, values, entropies, rewards, _, _ = rollout(policy, env, seed=config.seed * 1_000_003 + iteration)
        entropy_weight = config.entropy * (1 - iteration / config.iterations)
        policy_loss, value_loss, entropy = rl2_loss(config, log_probs, values, entropies, rewards)
        loss = policy_loss + config.value_weight * value_loss - entropy_weight * entropy
        if not torch.isfinite(loss):
            raise RuntimeError(f"RL² training diverged at iteration {iteration} (loss {loss.item()}): "
                               f"lower learning_rate (now {config.learning_rate})")
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        optimizer.step()
        result.mean_reward.append(rewards.sum(1).mean().item())
    return result


@torch.no_grad()
def play_rl2(policy: RL2Policy, env: BernoulliBandits, seed: int, means: torch.Tensor | None = None) -> BanditRun:
    """Evaluate a trained policy (sampling its actions) as :func:`metabook_learn.bandit_baselines.play` does a baseline."""
    _, _, _, rewards, arms, regret = rollout(policy, env, seed, means)
    return BanditRun((arms, rewards, regret))
