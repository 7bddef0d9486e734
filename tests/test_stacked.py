"""The stacked strategy: T copies of a network side by side compute what T separate networks compute.

Checked layer by layer against the networks themselves (each task with its own
parameters), then end to end: MAML's meta-gradient, evaluation and Reptile
against the per-task loop are in test_maml.py, test_inner_loop.py and
test_reptile.py, parametrized over every strategy.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabook_learn.episodic import episode_gradient
from metabook_learn.inner_loop import InnerLoop, parameters_of
from metabook_learn.models import ConvNet, sinusoid_mlp
from metabook_learn.protonets import PrototypicalNetwork
from metabook_learn.stacked import StackedConvNet, stack_tasks, summed_over_tasks

from meta_fixtures import random_tasks, tiny_convnet  # noqa: E402

NUM_TASKS = 3


def per_task_parameters(model: torch.nn.Module, seed: int = 0) -> list[dict]:
    """T different parameter sets for ``model``: its own, perturbed differently for every task."""
    g = torch.Generator().manual_seed(seed)
    return [{n: p.detach() + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in model.named_parameters()}
            for _ in range(NUM_TASKS)]


def stack(dicts: list[dict]) -> dict:
    return {n: torch.stack([d[n] for d in dicts]) for n in dicts[0]}


@pytest.mark.parametrize("downsample,image_size,num_classes", [("stride", 8, 3), ("maxpool", 16, 3),
                                                                ("stride", 8, None)])
@pytest.mark.parametrize("stats_rows", [None, 4])
def test_the_stacked_network_computes_each_tasks_network(downsample, image_size, num_classes, stats_rows):
    torch.manual_seed(0)
    model = ConvNet(num_classes, in_channels=2, filters=4, downsample=downsample, image_size=image_size,
                    blocks=3).double()
    params = per_task_parameters(model)
    x = torch.randn(NUM_TASKS, 7, 2, image_size, image_size, dtype=torch.float64)  # 7 examples per task
    expected = torch.stack([functional_call(model, params[t], (x[t],), {"stats_rows": stats_rows})
                            for t in range(NUM_TASKS)])
    stacked = functional_call(StackedConvNet(model), stack(params), (x.transpose(0, 1),), {"stats_rows": stats_rows})
    assert stacked.shape == expected.shape  # [T, N, K]: tasks first out, examples first in
    torch.testing.assert_close(stacked, expected, rtol=1e-12, atol=1e-12)


def test_one_gradient_of_the_summed_loss_is_every_tasks_own_gradient():
    model = tiny_convnet()
    params = per_task_parameters(model)
    tasks = random_tasks(NUM_TASKS)
    network, inner = stack_tasks(model, InnerLoop())
    stacked = {n: p.requires_grad_() for n, p in stack(params).items()}
    outputs = functional_call(network, stacked, (tasks.support_x.transpose(0, 1),))
    grads = torch.autograd.grad(inner.loss(outputs, tasks.support_y.transpose(0, 1)), list(stacked.values()))
    for t in range(NUM_TASKS):
        own = {n: p.requires_grad_() for n, p in params[t].items()}
        loss = F.cross_entropy(functional_call(model, own, (tasks.support_x[t],)), tasks.support_y[t])
        for g, expected in zip(grads, torch.autograd.grad(loss, list(own.values()))):
            torch.testing.assert_close(g[t], expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss,targets", [(F.cross_entropy, torch.tensor([[0, 2, 1], [1, 1, 0]])),
                                          (F.mse_loss, torch.randn(2, 3, 5))])
def test_the_summed_loss_is_the_sum_of_the_tasks_losses(loss, targets):
    outputs = torch.randn(3, 2, 5)  # [T, N, K]; targets [N, T] or [N, T, K]
    expected = sum(loss(outputs[t], targets[:, t]) for t in range(3))
    torch.testing.assert_close(summed_over_tasks(loss)(outputs, targets), expected)


def test_stacked_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="ConvNet only.*SinusoidMLP.*'loop' or 'vmap'"):
        stack_tasks(sinusoid_mlp(), InnerLoop())
    embedding = PrototypicalNetwork(ConvNet(None, in_channels=1, filters=4, downsample="stride", image_size=8,
                                            blocks=2).double(), ways=3)
    with pytest.raises(ValueError, match="inner-loop methods"):
        episode_gradient(embedding, parameters_of(embedding), random_tasks(2), strategy="stacked")
