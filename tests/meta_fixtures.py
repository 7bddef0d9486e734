"""Small networks, random tasks and checks shared by the tests of the meta-learners."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from metabook_learn.models import ConvNet

WAYS = 3


def tiny_convnet(filters: int = 4) -> ConvNet:
    """Two blocks with batch norm on 8x8 images, in float64: MAML's network, shrunk."""
    torch.manual_seed(0)
    return ConvNet(WAYS, in_channels=1, filters=filters, downsample="stride", image_size=8, blocks=2).double()


def random_tasks(num_tasks: int, shots: int = 2, queries: int = 3, seed: int = 1) -> SimpleNamespace:
    """Plain tensors shaped like a TaskBatch: support [T, WAYS*shots, 1, 8, 8], query [T, WAYS*queries, ...]."""
    g = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(WAYS).repeat_interleave(n).repeat(num_tasks, 1)  # noqa: E731
    return SimpleNamespace(
        support_x=torch.randn(num_tasks, WAYS * shots, 1, 8, 8, generator=g, dtype=torch.float64),
        support_y=labels(shots),
        query_x=torch.randn(num_tasks, WAYS * queries, 1, 8, 8, generator=g, dtype=torch.float64),
        query_y=labels(queries),
    )


def loop_and_vmap_episode_gradients(model, tasks, rtol: float = 1e-10):
    """An episodic learner's meta-gradient by both strategies, checked equal (gradients and outputs); both returned."""
    from metabook_learn.episodic import episode_gradient
    from metabook_learn.inner_loop import parameters_of

    params = parameters_of(model)
    loop = episode_gradient(model, params, tasks, "loop")
    vmap = episode_gradient(model, params, tasks, "vmap")
    for name in params:
        torch.testing.assert_close(vmap.params[name], loop.params[name], rtol=rtol, atol=1e-12)
    torch.testing.assert_close(vmap.outputs, loop.outputs, rtol=rtol, atol=1e-12)
    return loop, vmap
