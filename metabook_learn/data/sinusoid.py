"""Sinusoid regression, the task family of MAML's Section 5.1 (Finn et al., 2017).

A task is a sine wave ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5.0]``
and phase ``phi ~ U[0, pi]``; inputs are drawn uniformly from ``[-5, 5]``. The
loss is the mean squared error. MAML's reference implementation writes the
wave as ``amp * sin(x - phase)``, which is what is used here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from metabook_learn import validation

__all__ = ["SinusoidTasks", "SinusoidSampler", "sample_sinusoid_tasks", "AMPLITUDE_RANGE", "PHASE_RANGE", "INPUT_RANGE"]

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


@dataclass
class SinusoidTasks:
    """A batch of sinusoid tasks.

    Shapes (T tasks, K support and Q query points per task):
    ``support_x, support_y``: ``[T, K, 1]``; ``query_x, query_y``: ``[T, Q, 1]``;
    ``amplitude, phase``: ``[T]``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The true functions at ``x`` (``[T, M, 1]`` or ``[M, 1]``, broadcast over tasks)."""
        return sinusoid(x, self.amplitude, self.phase)

    def to(self, device) -> "SinusoidTasks":
        return SinusoidTasks(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def sinusoid(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``A sin(x - phi)`` per task: ``x`` is ``[T, M, 1]`` (or ``[M, 1]``), ``amplitude, phase`` ``[T]``."""
    return amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))


def _uniform(shape, bounds, generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


def sample_sinusoid_tasks(
    num_tasks: int,
    num_support: int = 10,
    num_query: int = 10,
    generator: torch.Generator | None = None,
) -> SinusoidTasks:
    """Draw ``num_tasks`` sine waves with ``num_support`` + ``num_query`` points each.

    MAML trains with K = 10 support points (``num_support``) per task. Deterministic
    for a given ``generator`` state; tensors are float32 on the CPU.
    """
    num_tasks = validation.count("num_tasks", num_tasks)
    num_support = validation.count("num_support", num_support, minimum=0)
    num_query = validation.count("num_query", num_query, minimum=0)
    amplitude = _uniform((num_tasks,), AMPLITUDE_RANGE, generator)
    phase = _uniform((num_tasks,), PHASE_RANGE, generator)
    x = _uniform((num_tasks, num_support + num_query, 1), INPUT_RANGE, generator)
    y = sinusoid(x, amplitude, phase)
    return SinusoidTasks(
        support_x=x[:, :num_support],
        support_y=y[:, :num_support],
        query_x=x[:, num_support:],
        query_y=y[:, num_support:],
        amplitude=amplitude,
        phase=phase,
    )


class SinusoidSampler:
    """Sinusoid tasks (:func:`sample_sinusoid_tasks`) behind the sampler interface.

    ``sample(T)`` draws T sine waves with ``num_shots`` support and
    ``num_queries`` query points each, from the sampler's own generator, so
    ``state_dict()`` / ``load_state_dict()`` resume the stream like the image
    samplers do.
    """

    def __init__(self, num_shots: int = 10, num_queries: int = 10, seed: int = 0):
        self.num_shots = validation.count("num_shots", num_shots, minimum=0)
        self.num_queries = validation.count("num_queries", num_queries)
        self.generator = torch.Generator().manual_seed(validation.count("seed", seed, minimum=0))

    def sample(self, num_tasks: int):
        return sample_sinusoid_tasks(num_tasks, self.num_shots, self.num_queries, self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
