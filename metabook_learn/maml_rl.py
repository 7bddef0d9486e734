"""MAML for reinforcement learning (Finn et al. 2017, Sec. 3.2 and 5.3) on the 2-D navigation tasks.

For each task (a goal), the meta-parameters θ of a Gaussian policy take one
policy-gradient step on trajectories sampled with θ,

    θ'_i = θ + α ∇θ Ĵ_i(θ),      Ĵ_i: REINFORCE with rllab's linear feature baseline

(Algorithm 3 of the paper), and θ is trained so that the adapted policies do
well: the outer objective is the policy-gradient surrogate of trajectories
sampled with each θ'_i, differentiated through the inner step (a second-order
meta-gradient). Settings follow the authors' ``maml_examples/maml_trpo_point.py``
where this file says nothing else: a 100-100 ReLU MLP, α = 0.5, 20 trajectories
per task for the inner step, 40 tasks per meta-batch, horizon 100, γ = 0.99,
advantages centred per batch.

Where this differs from the authors, and why:

* The outer update is Adam on the vanilla policy-gradient surrogate, not TRPO.
  TRPO needs Fisher-vector products through the second-order meta-gradient and
  a line search; the first-order optimizer keeps the code short and runs on a
  CPU. (PPO would re-run the inner step for every epoch over the same samples.)
* Like the authors' code, the meta-gradient ignores how θ changes the
  distribution of the pre-update trajectories (Rothfuss et al. 2019 and Foerster
  et al. 2018 add that term); it differentiates the inner step with those
  trajectories held fixed.

The inner step is :func:`metabook_learn.inner_loop.func_gradient` (``torch.func``),
vmapped over the tasks of a meta-batch, the same differentiation the supervised
inner loop uses; :func:`metabook_learn.inner_loop.fine_tune` itself is not used,
because its loss takes a labelled support set ``(x, y)`` while a policy-gradient
step needs trajectories and their advantages, fitted per task first.

Not a :class:`metabook_learn.methods.Method` either, for the reason given in
:mod:`metabook_learn.rl2`: there is no labelled support and query set.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.func import vmap

from metabook_learn.inner_loop import Params, func_gradient
from metabook_learn.policy_gradient import discounted_returns, fit_linear_baseline, surrogate_loss
from metabook_learn.rl_envs import PointNavigation

__all__ = ["MAMLRLConfig", "init_policy", "policy_mean", "log_prob", "sample_trajectories", "Trajectories",
           "advantages_of", "inner_step", "meta_loss", "train_maml_rl", "adaptation_curve", "AUTHORS_TEST"]


# How the authors measured adaptation on new goals (cbfinn/maml_rl, maml_examples/test_maml_point.py):
# step sizes of the three test steps, and trajectories sampled for each step (batch_size 4000 / horizon 100).
AUTHORS_TEST = {"inner_lr": (0.5, 0.25, 0.25), "paths": 40}


@dataclass(frozen=True)
class MAMLRLConfig:
    """MAML-RL on 2-D navigation; ``maml=False`` trains the "pretrained" policy of the paper's Fig. 4 (one
    policy for all tasks, by the policy gradient, with no inner step)."""
    iterations: int = 100
    meta_batch: int = 40
    paths: int = 20          # trajectories per task, for the inner step and for the outer objective
    horizon: int = 100
    hidden: int = 100
    inner_lr: float = 0.5    # α
    outer_lr: float = 1e-2
    discount: float = 0.99
    maml: bool = True
    seed: int = 0

    def __post_init__(self):
        for name in ("iterations", "meta_batch", "paths", "horizon", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MAMLRLConfig.{name} must be a positive integer, got {value!r}")
        for name in ("inner_lr", "outer_lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"MAMLRLConfig.{name} must be a finite number > 0, got {value}")
        if self.paths < 2:
            raise ValueError("MAMLRLConfig.paths must be at least 2: the advantages are centred per task")


def init_policy(hidden: int, seed: int, dtype=torch.float32) -> Params:
    """A 2-``hidden``-``hidden``-2 ReLU MLP (Glorot-uniform weights, zero biases, as rllab) and log σ = 0."""
    generator = torch.Generator().manual_seed(seed)

    def glorot(fan_in, fan_out):
        bound = math.sqrt(6 / (fan_in + fan_out))
        return (torch.rand(fan_in, fan_out, generator=generator, dtype=dtype) * 2 - 1) * bound

    sizes = [2, hidden, hidden, 2]
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{layer}"] = glorot(fan_in, fan_out)
        params[f"b{layer}"] = torch.zeros(fan_out, dtype=dtype)
    params["log_std"] = torch.zeros(2, dtype=dtype)
    return params


def policy_mean(params: Params, observations: torch.Tensor) -> torch.Tensor:
    """The Gaussian policy's mean action ``[..., 2]`` for observations ``[..., 2]``."""
    x = observations
    for layer in range(3):
        x = x @ params[f"w{layer}"] + params[f"b{layer}"]
        if layer < 2:
            x = torch.relu(x)
    return x


def log_prob(params: Params, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log π(a | s)`` ``[...]`` of a diagonal Gaussian with mean :func:`policy_mean` and σ = exp(log_std)."""
    log_std = params["log_std"]
    z = (actions - policy_mean(params, observations)) / log_std.exp()
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


@dataclass
class Trajectories:
    """``P`` trajectories on each of ``N`` tasks: observations and actions ``[N, P, T, 2]``, rewards and
    mask ``[N, P, T]`` (mask 1 while the episode runs)."""
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor

    def mean_return(self) -> torch.Tensor:
        """``[N]``: the undiscounted return of a trajectory, averaged over a task's trajectories."""
        return (self.rewards * self.mask).sum(-1).mean(-1)


@torch.no_grad()
def sample_trajectories(params: Params | list[Params], goals: torch.Tensor, paths: int, horizon: int,
                        seed: int) -> Trajectories:
    """Sample ``paths`` trajectories per goal ``[N, 2]``: with ``params`` for every task, or with
    ``params[i]`` (a batched dict, each tensor ``[N, ...]``) for task ``i`` when ``params`` is batched."""
    n = goals.shape[0]
    env = PointNavigation(n * paths, horizon)
    observation = env.reset(seed=seed, goals=goals.repeat_interleave(paths, 0)).to(goals.dtype)
    generator = torch.Generator().manual_seed(seed + 1)
    batched = params["w0"].dim() == 3
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(horizon):
        per_task = observation.reshape(n, paths, 2)
        if batched:
            mean = vmap(policy_mean)(params, per_task)
            std = params["log_std"].exp()[:, None, :]
        else:
            mean, std = policy_mean(params, per_task), params["log_std"].exp()
        action = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        running = ~env.done
        next_observation, reward, *_ = env.step(action.reshape(n * paths, 2))
        observations.append(per_task)
        actions.append(action)
        rewards.append(reward.reshape(n, paths))
        masks.append(running.reshape(n, paths).to(goals.dtype))
        observation = next_observation
    stack = lambda xs: torch.stack(xs, dim=2)  # noqa: E731
    return Trajectories(stack(observations), stack(actions), stack(rewards), stack(masks))


def advantages_of(trajectories: Trajectories, discount: float) -> torch.Tensor:
    """``[N, P, T]``: discounted return minus rllab's linear feature baseline fitted per task, then centred
    and scaled per task (rllab's ``center_adv``). Constants: no gradient flows through them."""
    n, p, t = trajectories.rewards.shape
    returns = discounted_returns(trajectories.rewards.reshape(n * p, t), discount,
                                 trajectories.mask.reshape(n * p, t)).reshape(n, p, t)
    baseline = fit_linear_baseline(trajectories.observations, returns, trajectories.mask)
    advantages = (returns - baseline) * trajectories.mask
    count = trajectories.mask.sum((1, 2), keepdim=True)
    mean = advantages.sum((1, 2), keepdim=True) / count
    std = (((advantages - mean) ** 2 * trajectories.mask).sum((1, 2), keepdim=True) / count).sqrt()
    return ((advantages - mean) / (std + 1e-8) * trajectories.mask).detach()


def _task_surrogate(params: Params, observations, actions, advantages, mask):
    """The surrogate loss of one task's trajectories ``[P, T, ...]``; the ``(loss, extras)`` pair that
    :func:`metabook_learn.inner_loop.func_gradient` differentiates."""
    return surrogate_loss(log_prob(params, observations, actions), advantages, mask, per_step=True), ()


def inner_step(params: Params, trajectories: Trajectories, advantages: torch.Tensor, inner_lr: float,
               create_graph: bool = True, per_task_params: bool = False) -> Params:
    """θ'_i = θ − α ∇θ surrogate_i(θ) for every task ``i`` at once: a batched dict, each tensor ``[N, ...]``.

    ``params``: shared by all tasks, or (``per_task_params``) batched ``[N, ...]``,
    one set per task (a second adaptation step). With ``create_graph`` the adapted
    parameters stay differentiable in θ (the meta-gradient).
    """

    def one_task(task_params, observations, actions, task_advantages, mask):
        grads, _, _ = func_gradient(
            lambda p: _task_surrogate(p, observations, actions, task_advantages, mask), task_params, create_graph)
        return {name: task_params[name] - inner_lr * grads[name] for name in task_params}

    return vmap(one_task, in_dims=(0 if per_task_params else None, 0, 0, 0, 0))(
        params, trajectories.observations, trajectories.actions, advantages, trajectories.mask)


def meta_loss(params: Params, before: Trajectories, before_advantages: torch.Tensor, after: Trajectories,
              after_advantages: torch.Tensor, inner_lr: float) -> torch.Tensor:
    """The outer surrogate: the mean over tasks of the surrogate of the post-update trajectories under θ'_i,
    θ'_i computed from the pre-update trajectories; differentiable in ``params`` through the inner step."""
    adapted = inner_step(params, before, before_advantages, inner_lr)
    losses = vmap(lambda p, o, a, adv, m: _task_surrogate(p, o, a, adv, m)[0])(
        adapted, after.observations, after.actions, after_advantages, after.mask)
    return losses.mean()


@dataclass
class MAMLRLResult:
    params: Params
    config: MAMLRLConfig
    return_before: list[float] = field(default_factory=list)  # per iteration: mean return with θ
    return_after: list[float] = field(default_factory=list)   # with θ'_i (MAML only)


def train_maml_rl(config: MAMLRLConfig) -> MAMLRLResult:
    """Meta-train (``maml=True``) or jointly pretrain (``maml=False``) a navigation policy."""
    params = {name: tensor.requires_grad_() for name, tensor in init_policy(config.hidden, config.seed).items()}
    optimizer = torch.optim.Adam(params.values(), lr=config.outer_lr)
    env = PointNavigation(config.meta_batch, config.horizon)
    goal_generator = torch.Generator().manual_seed(config.seed + 12345)
    result = MAMLRLResult(params, config)
    for iteration in range(config.iterations):
        goals = env.sample_goals(config.meta_batch, goal_generator)
        seed = config.seed * 1_000_003 + 2 * iteration
        detached = {name: tensor.detach() for name, tensor in params.items()}
        before = sample_trajectories(detached, goals, config.paths, config.horizon, seed)
        before_advantages = advantages_of(before, config.discount)
        result.return_before.append(before.mean_return().mean().item())
        if config.maml:
            with torch.no_grad():
                adapted = inner_step(detached, before, before_advantages, config.inner_lr, create_graph=False)
            after = sample_trajectories(adapted, goals, config.paths, config.horizon, seed + 1)
            result.return_after.append(after.mean_return().mean().item())
            loss = meta_loss(params, before, before_advantages, after, advantages_of(after, config.discount),
                             config.inner_lr)
        else:
            loss = vmap(lambda o, a, adv, m: _task_surrogate(params, o, a, adv, m)[0])(
                before.observations, before.actions, before_advantages, before.mask).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"MAML-RL training diverged at iteration {iteration} (loss {loss.item()}): "
                                     f"lower outer_lr (now {config.outer_lr}) or inner_lr (now {config.inner_lr})")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result.params = {name: tensor.detach() for name, tensor in params.items()}
    return result


def adaptation_curve(params: Params, goals: torch.Tensor, steps: int, inner_lr: float | Sequence[float],
                     paths: int = 20, horizon: int = 100, discount: float = 0.99, seed: int = 0) -> torch.Tensor:
    """``[steps + 1, N]``: the mean return on each goal after 0, 1, ..., ``steps`` policy-gradient steps
    from ``params``, each on ``paths`` fresh trajectories (the paper's Fig. 4).

    ``inner_lr``: one step size for every step, or one per step. The authors'
    test (``maml_examples/test_maml_point.py`` of cbfinn/maml_rl) takes its first
    step with the training α = 0.5 and every later one with half of it (rllab's
    ``VPG`` with ``init_learning_rate=0.5`` and a learning rate of 0.5 · 0.5), on
    40 trajectories per step (``batch_size=4000``, horizon 100): ``AUTHORS_TEST``.
    """
    rates = [float(inner_lr)] * steps if isinstance(inner_lr, (int, float)) else [float(r) for r in inner_lr]
    if len(rates) != steps:
        raise ValueError(f"inner_lr gives {len(rates)} step sizes for {steps} steps: give one, or one per step")
    n = goals.shape[0]
    current = {name: tensor.detach().expand(n, *tensor.shape).clone() for name, tensor in params.items()}
    returns = []
    for step in range(steps + 1):
        trajectories = sample_trajectories(current, goals, paths, horizon, seed + step)
        returns.append(trajectories.mean_return())
        if step < steps:
            advantages = advantages_of(trajectories, discount)
            current = inner_step(current, trajectories, advantages, rates[step], create_graph=False,
                                 per_task_params=True)
    return torch.stack(returns)
