"""RL²: a short training on 5-armed bandits of 10 pulls learns to beat random play; rollouts are reproducible.

Beating greedy play is not asserted: at n = 10 the posterior-mean greedy arm is as good as the Gittins index
(the chapter's table), and seconds of training do not reach it.
"""
import pytest
import torch

from metabook_learn.bandit_baselines import BASELINES, play
from metabook_learn.rl2 import RL2Config, RL2Policy, play_rl2, rollout, train_rl2
from metabook_learn.rl_envs import BernoulliBandits


def test_rl2_learns_to_explore_and_exploit_better_than_random_play():
    result = train_rl2(RL2Config(arms=5, horizon=10, iterations=120, tasks_per_batch=512, hidden_size=32,
                                 learning_rate=3e-2, entropy=0.0, seed=0))
    env = BernoulliBandits(4000, 5, 10)
    rl2 = play_rl2(result.policy, env, seed=99).regret.mean().item()
    random_regret = play(BASELINES["random"](10), env, seed=99).regret.mean().item()
    # the standard error of a 4000-task mean regret is about 0.03: these margins are many of them
    assert rl2 < random_regret - 0.4, (rl2, random_regret)
    assert result.mean_reward[-10:] > result.mean_reward[:10]


def test_rollouts_repeat_with_a_seed_and_the_hidden_state_carries_the_task():
    torch.manual_seed(0)
    policy = RL2Policy(1, 3, hidden_size=8)
    env = BernoulliBandits(6, 3, 5)
    first, second = rollout(policy, env, seed=4), rollout(policy, env, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # the action taken at step t depends on the rewards before it: a different reward history, different logits
    inputs = lambda reward: policy.inputs(torch.zeros(1, 1), torch.tensor([1]), torch.tensor([reward]),  # noqa: E731
                                          torch.tensor([False]))
    hidden = policy.initial_state(1)
    assert not torch.allclose(policy.step(inputs(1.0), hidden)[0], policy.step(inputs(0.0), hidden)[0])
    with pytest.raises(ValueError, match="horizon"):
        RL2Config(horizon=0)


def test_rl2_training_that_diverges_stops_and_says_so():
    with pytest.raises(RuntimeError, match="diverged at iteration 1.*lower learning_rate"):
        train_rl2(RL2Config(iterations=5, tasks_per_batch=8, hidden_size=8, learning_rate=1e30))
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        RL2Config(learning_rate=float("nan"))
