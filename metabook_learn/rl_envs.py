"""Two families of reinforcement-learning tasks, written in torch so that many tasks step at once.

A meta-RL method learns from thousands of tasks; stepping them one at a time in
Python, or through a simulator package, would dominate the run time and add a
dependency. Here every method of an environment acts on a batch of ``B``
independent tasks at once, as tensors on the CPU.

The interface follows gymnasium's where that helps a reader who knows it:
``reset(seed) -> observation`` and ``step(action) -> (observation, reward,
terminated, truncated, info)``, all batched over the first dimension.

* :class:`BernoulliBandits`: ``k`` arms, arm ``i`` of task ``b`` pays 1 with
  probability ``means[b, i]`` and 0 otherwise; the means are drawn uniformly in
  [0, 1] per task, as in Duan et al. (2016, Sec. 4.1). One episode is ``horizon``
  pulls of the same bandit.
* :class:`PointNavigation`: MAML's 2-D navigation (Finn et al. 2017, Sec. 5.3),
  after the authors' ``maml_examples/point_env_randgoal.py`` run through rllab's
  ``normalize`` wrapper: the point starts at the origin, the goal of each task is
  uniform in [-0.5, 0.5]², the policy's action ``a`` moves the point by
  ``clip(0.1·a, -0.1, 0.1)`` (rllab maps the action box [-0.1, 0.1]² to [-1, 1]²),
  the reward is ``-‖position - goal‖₂`` after the move, an episode ends when
  both coordinates are within 0.01 of the goal (terminated) or after ``horizon``
  = 100 steps (truncated).
"""
from __future__ import annotations

import torch

__all__ = ["BernoulliBandits", "PointNavigation"]


def _generator(seed: int | None, old: torch.Generator | None) -> torch.Generator:
    if seed is None and old is not None:
        return old
    generator = torch.Generator()
    generator.manual_seed(int(torch.randint(0, 2**62, ()).item()) if seed is None else seed)
    return generator


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class BernoulliBandits:
    """``num_tasks`` Bernoulli bandits of ``arms`` arms, each played for ``horizon`` pulls.

    A bandit has no state: the observation is a constant ``[B, 1]`` tensor of
    zeros, kept so that a policy written for MDPs runs on it unchanged. ``step``
    takes the pulled arms ``[B]`` (integers) and returns rewards ``[B]`` in {0, 1}.
    """

    def __init__(self, num_tasks: int, arms: int, horizon: int):
        self.num_tasks = _positive_int("num_tasks", num_tasks)
        self.arms = _positive_int("arms", arms)
        if arms < 2:
            raise ValueError(f"a bandit needs at least 2 arms, got arms={arms}")
        self.horizon = _positive_int("horizon", horizon)
        self.means: torch.Tensor | None = None
        self.generator: torch.Generator | None = None
        self.t = 0

    def reset(self, seed: int | None = None, means: torch.Tensor | None = None) -> torch.Tensor:
        """Start an episode on new tasks (means drawn U[0, 1]), or on ``means`` ``[B, arms]`` when given."""
        self.generator = _generator(seed, self.generator)
        if means is None:
            means = torch.rand(self.num_tasks, self.arms, generator=self.generator)
        elif means.shape != (self.num_tasks, self.arms):
            raise ValueError(f"means must have shape ({self.num_tasks}, {self.arms}), got {tuple(means.shape)}")
        self.means = means
        self.t = 0
        return torch.zeros(self.num_tasks, 1)

    def step(self, action: torch.Tensor):
        if self.means is None:
            raise RuntimeError("call reset() before step()")
        if self.t >= self.horizon:
            raise RuntimeError(f"the episode ended after horizon={self.horizon} pulls: call reset()")
        if action.shape != (self.num_tasks,) or action.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"action must be integer arms of shape ({self.num_tasks},), got "
                             f"{action.dtype} {tuple(action.shape)}")
        if (action < 0).any() or (action >= self.arms).any():
            raise ValueError(f"arms must lie in 0..{self.arms - 1}")
        chosen_mean = self.means.gather(1, action.long()[:, None])[:, 0]
        reward = (torch.rand(self.num_tasks, generator=self.generator) < chosen_mean).float()
        self.t += 1
        truncated = torch.full((self.num_tasks,), self.t == self.horizon)
        terminated = torch.zeros(self.num_tasks, dtype=torch.bool)
        return torch.zeros(self.num_tasks, 1), reward, terminated, truncated, {"chosen_mean": chosen_mean}


class PointNavigation:
    """MAML's 2-D navigation to a goal per task; observation the position ``[B, 2]``, action ``[B, 2]``.

    A task whose episode has terminated stays where it is and earns reward 0
    until the batch is reset: rllab ended such a path early, which counted no
    further (negative) reward either.
    """

    ACTION_SCALE = 0.1  # rllab's normalize(): the action box [-0.1, 0.1]² seen by the policy as [-1, 1]²
    GOAL_RANGE = 0.5
    SUCCESS_RADIUS = 0.01

    def __init__(self, num_tasks: int, horizon: int = 100):
        self.num_tasks = _positive_int("num_tasks", num_tasks)
        self.horizon = _positive_int("horizon", horizon)
        self.goals: torch.Tensor | None = None
        self.generator: torch.Generator | None = None

    def sample_goals(self, num_tasks: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[num_tasks, 2]`` goals uniform in [-0.5, 0.5]²."""
        return (torch.rand(num_tasks, 2, generator=generator) * 2 - 1) * self.GOAL_RANGE

    def reset(self, seed: int | None = None, goals: torch.Tensor | None = None) -> torch.Tensor:
        """Start an episode at the origin, on new goals, or on ``goals`` ``[B, 2]`` when given."""
        self.generator = _generator(seed, self.generator)
        if goals is None:
            goals = self.sample_goals(self.num_tasks, self.generator)
        elif goals.shape != (self.num_tasks, 2):
            raise ValueError(f"goals must have shape ({self.num_tasks}, 2), got {tuple(goals.shape)}")
        self.goals = goals
        self.position = torch.zeros(self.num_tasks, 2, dtype=goals.dtype)
        self.done = torch.zeros(self.num_tasks, dtype=torch.bool)
        self.t = 0
        return self.position.clone()

    def step(self, action: torch.Tensor):
        if self.goals is None:
            raise RuntimeError("call reset() before step()")
        if self.t >= self.horizon:
            raise RuntimeError(f"the episode ended after horizon={self.horizon} steps: call reset()")
        if action.shape != (self.num_tasks, 2):
            raise ValueError(f"action must have shape ({self.num_tasks}, 2), got {tuple(action.shape)}")
        running = ~self.done
        move = (self.ACTION_SCALE * action).clamp(-self.ACTION_SCALE, self.ACTION_SCALE)
        self.position = torch.where(running[:, None], self.position + move, self.position)
        offset = self.position - self.goals
        reward = torch.where(running, -offset.norm(dim=1), torch.zeros((), dtype=offset.dtype))
        reached = (offset.abs() < self.SUCCESS_RADIUS).all(dim=1)
        self.done = self.done | reached
        self.t += 1
        truncated = torch.full((self.num_tasks,), self.t == self.horizon)
        return self.position.clone(), reward, self.done.clone(), truncated, {"running": running}
