"""Few-shot classification tasks (episodes): one task, and a batch of them stacked.

A task asks: given a few labelled examples of N classes (the *support* set),
label new examples of the same classes (the *query* set). Labels are
re-numbered 0..N-1 inside every task, in a random order, so a learner cannot
memorise "class 17 is always label 3": it has to learn from the support set.

Support and query examples are ordered class by class. In a task with K shots
per class, ``support_x.view(N, K, C, H, W)[i]`` are the K examples of label
``i``, which is how a prototype (a class mean) is one ``mean(dim=1)`` away.

Sinusoid regression tasks (``metabook_learn.data.sinusoid.SinusoidTasks``) use the
same field names, ``support_x, support_y, query_x, query_y``, with the task
index first, so code that only reads those fields works on both.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from metabook_learn import validation

__all__ = ["Task", "TaskBatch", "stack_tasks"]


@dataclass
class Task:
    """One episode: N classes, a support set and a query set.

    ``support_x``: ``float32 [S, C, H, W]``, pixels in [0, 1].
    ``support_y``: ``int64 [S]``, labels 0..N-1.
    ``query_x``: ``float32 [Q, C, H, W]``; ``query_y``: ``int64 [Q]``.
    ``classes``: ``int64 [N]``; label ``i`` stands for class ``classes[i]`` of
    the data set the task was drawn from (for checks and figures, never for
    learning).

    In an N-way K-shot task with Q queries per class, ``S = N * K`` and the
    query set holds ``N * Q`` examples; in a Meta-Dataset episode the number of
    support examples differs from class to class.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    def __post_init__(self) -> None:
        _check_fields(self)

    @property
    def num_ways(self) -> int:
        return len(self.classes)

    def to(self, device) -> "Task":
        return Task(*(getattr(self, f.name).to(device) for f in fields(self)))


@dataclass
class TaskBatch:
    """T tasks of the same shape stacked, so that an algorithm handles a meta-batch at once.

    ``support_x``: ``float32 [T, N*K, C, H, W]``; ``support_y``: ``int64 [T, N*K]``.
    ``query_x``: ``float32 [T, N*Q, C, H, W]``; ``query_y``: ``int64 [T, N*Q]``.
    ``classes``: ``int64 [T, N]``, the data set's classes behind each task's labels.

    ``batch[i]`` is task ``i`` as a :class:`Task`; ``batch[a:b]`` is a smaller batch.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    def __post_init__(self) -> None:
        _check_fields(self)

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def __getitem__(self, index):
        parts = (getattr(self, f.name)[index] for f in fields(self))
        # An integer drops the task dimension: what is left is one task.
        return Task(*parts) if isinstance(index, int) else TaskBatch(*parts)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def num_ways(self) -> int:
        return self.classes.shape[1]

    @property
    def num_shots(self) -> int:
        return self.support_y.shape[1] // self.num_ways

    @property
    def num_queries(self) -> int:
        """Query examples per class."""
        return self.query_y.shape[1] // self.num_ways

    def to(self, device) -> "TaskBatch":
        return TaskBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def _check_fields(task) -> None:
    """Every field a tensor (a NumPy array gets the call that converts it)."""
    for f in fields(task):
        validation.tensor(f.name, getattr(task, f.name))


def stack_tasks(tasks: list[Task]) -> TaskBatch:
    """Stack tasks of equal shapes (same N, K and Q) into one batch."""
    if not tasks:
        raise ValueError("stack_tasks needs at least one task")
    first = tasks[0]
    for i, task in enumerate(tasks):
        if (task.support_x.shape, task.query_x.shape, task.classes.shape) != (
            first.support_x.shape, first.query_x.shape, first.classes.shape
        ):
            raise ValueError(
                "only tasks of one shape (same ways, shots and queries) can be stacked: task 0 has "
                f"{first.num_ways} ways, support {tuple(first.support_x.shape)}, query {tuple(first.query_x.shape)}; "
                f"task {i} has {task.num_ways} ways, {tuple(task.support_x.shape)}, {tuple(task.query_x.shape)}. "
                "Keep variable-shape episodes (Meta-Dataset) as a list of Task."
            )
    return TaskBatch(*(torch.stack([getattr(t, f.name) for t in tasks]) for f in fields(Task)))
