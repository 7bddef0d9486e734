"""The episodic-learner path of training and evaluation (metabook_learn.episodic), on a tiny learner."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meta_fixtures import WAYS, random_tasks
from metabook_learn.episodic import episode_gradient, episode_outputs
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import parameters_of
from metabook_learn.training import TrainConfig, train


class NearestMean(nn.Module):
    """Embed linearly, classify by negative squared distance to class means: the smallest episodic learner."""

    episodic = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(64, 5).double()

    def forward(self, support_x, support_y, query_x, query_y):
        s, q = self.embed(support_x.flatten(1)), self.embed(query_x.flatten(1))
        # Neither boolean masks nor F.one_hot (it calls .item()) can run under vmap.
        onehot = (support_y[:, None] == torch.arange(WAYS)).to(s.dtype)
        means = onehot.T @ s / onehot.sum(0)[:, None]
        logits = -torch.cdist(q, means).pow(2)
        return F.cross_entropy(logits, query_y), logits


class Tasks:
    """A sampler of random tasks (the same distribution at every draw, a new draw each time)."""

    num_ways, num_shots, num_queries = WAYS, 2, 3

    def __init__(self, seed=0):
        self.seed = seed

    def sample(self, n):
        self.seed += 1
        tasks = random_tasks(n, seed=self.seed)
        tasks.to = lambda device: tasks
        return tasks

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        self.seed = state["seed"]


def test_episode_gradient_is_the_gradient_of_the_mean_episode_loss():
    model, tasks = NearestMean(), random_tasks(4)
    params = parameters_of(model)
    losses = [model(tasks.support_x[t], tasks.support_y[t], tasks.query_x[t], tasks.query_y[t])[0] for t in range(4)]
    expected = torch.autograd.grad(torch.stack(losses).mean(), list(params.values()))
    for strategy in ("loop", "vmap"):
        g = episode_gradient(model, params, tasks, strategy)
        for name, e in zip(params, expected):
            torch.testing.assert_close(g.params[name], e, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g.loss, torch.stack(losses).mean().detach())
        assert g.outputs.shape == (4, WAYS * 3, WAYS)


def test_training_an_episodic_learner_lowers_its_loss_and_evaluate_needs_no_inner_loop():
    model = NearestMean()
    before, _ = episode_outputs(model, parameters_of(model), random_tasks(16, seed=99))
    config = TrainConfig(algorithm="protonet", ways=WAYS, shots=2, queries=3, meta_batch=4, steps=30,
                         meta_lr=1e-2, device="cpu")
    result = train(config, model, Tasks(), progress=False)
    assert result.curve[-1].meta_loss < result.curve[0].meta_loss
    evaluation = evaluate(model, Tasks(seed=1000), None, num_tasks=10, tasks_per_batch=5)
    assert evaluation.inner_steps == 0 and evaluation.query_bn == "none"
    assert 0 <= evaluation.mean <= 1


def test_mismatched_algorithm_and_model_fail_clearly():
    with pytest.raises(ValueError, match="episodic learner"):
        train(TrainConfig(algorithm="maml", ways=WAYS, shots=2, queries=3, steps=1, device="cpu"),
              NearestMean(), Tasks(), progress=False)
    with pytest.raises(ValueError, match="no inner loop"):
        TrainConfig(algorithm="protonet", first_order=True)
    with pytest.raises(ValueError, match="InnerLoop"):
        from meta_fixtures import tiny_convnet
        evaluate(tiny_convnet(), Tasks(), None, num_tasks=1)
