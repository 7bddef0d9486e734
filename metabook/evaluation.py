"""Evaluation: one routine for every algorithm — adapt to each test task, score its query set.

Few-shot results are reported as in MAML's reference code and most papers
since: draw test tasks (600 by default), fine-tune the meta-learned network
on each task's support set, score its query set, and report the mean over
tasks with a 95% confidence interval,

    mean ± 1.96 · std / √n

where ``n`` is the number of tasks and ``std`` the standard deviation of the
per-task scores, computed with divisor ``n`` (NumPy's ``np.std``, which
MAML's reference code uses; with 600 tasks the divisor ``n − 1`` would widen
the interval by 0.08%). It is a normal approximation to the sampling error of
the mean over *tasks*: it says how much the number would move with another
draw of 600 tasks, not how much it would move with another training run.

The score is the accuracy on the query set for classification, and the mean
squared error for regression (sinusoids). The result also says how batch
norm treated the query set (``"transductive"`` or ``"inductive"``, see
:mod:`metabook.inner_loop`), because the two give different numbers and a
results table must say which one it reports; ``"none"`` for a network
without batch norm.

The tasks come from any sampler with ``sample(T)``; the same sampler state
gives the same tasks, and fine-tuning draws no random numbers, so a fresh
sampler with the same seed gives the same result, bit for bit on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from metabook.episodic import episodic_outputs, is_episodic
from metabook.inner_loop import InnerLoop, Params, parameters_of
from metabook.methods import Method, adapted_outputs
from metabook.methods import get as get_method
from metabook.models import TaskBatchNorm2d

__all__ = ["Evaluation", "evaluate", "confidence_interval", "per_task_scores", "batch_norm_mode"]

TEST_TASKS = 600  # MAML's reference code (NUM_TEST_POINTS), Prototypical Networks and most papers since
Z_95 = 1.96  # the two-sided 95% quantile of the normal distribution


@dataclass
class Evaluation:
    """Scores after adapting to ``num_tasks`` test tasks.

    ``metric``: ``"accuracy"`` (a fraction in [0, 1]) or ``"mse"``.
    ``mean``, ``ci95``: the mean score over tasks and the half-width of its
    95% confidence interval (module docstring); ``std``: the standard
    deviation over tasks (divisor n). ``query_loss``: the mean query loss
    (cross-entropy or MSE). ``per_task``: ``float64 [num_tasks]``, each task's
    score. ``query_bn``: ``"transductive"``, ``"inductive"`` or ``"none"``.
    ``inner_steps``, ``inner_lr``: how each task was fine-tuned;
    ``tasks_per_batch``: how many tasks were drawn at a time (the draw, and so
    the tasks, depend on it).
    """

    metric: str
    mean: float
    ci95: float
    std: float
    num_tasks: int
    query_loss: float
    query_bn: str
    inner_steps: int
    inner_lr: float
    tasks_per_batch: int
    per_task: torch.Tensor

    def as_dict(self) -> dict:
        """The JSON-ready summary (everything but ``per_task``)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "per_task"}

    def __str__(self) -> str:
        if self.metric == "accuracy":
            score = f"accuracy {100 * self.mean:.2f}% ± {100 * self.ci95:.2f}%"
        else:
            score = f"MSE {self.mean:.3f} ± {self.ci95:.3f}"
        return f"{score} (95% CI over {self.num_tasks} tasks; batch norm: {self.query_bn})"


def confidence_interval(scores: torch.Tensor) -> tuple[float, float, float]:
    """``(mean, ci95, std)`` of per-task scores ``[n]``: ci95 = 1.96 · std / √n, std with divisor n."""
    scores = scores.double()
    n = scores.numel()
    if n == 0:
        raise ValueError("no scores: evaluate at least one task")
    std = scores.std(correction=0).item()
    return scores.mean().item(), Z_95 * std / math.sqrt(n), std


def per_task_scores(outputs: torch.Tensor, query_y: torch.Tensor) -> torch.Tensor:
    """Each task's score, ``[T]``: accuracy for integer labels, mean squared error for real targets.

    ``outputs``: ``[T, Q, N]`` logits or ``[T, Q, 1]`` predictions; ``query_y``:
    ``[T, Q]`` labels or ``[T, Q, 1]`` targets.
    """
    if query_y.is_floating_point():
        return (outputs - query_y).pow(2).flatten(1).mean(1)
    return (outputs.argmax(-1) == query_y).float().mean(1)


def batch_norm_mode(model: nn.Module, query_bn: str) -> str:
    """``query_bn`` when the network normalizes with batch statistics, ``"none"`` when it has no batch norm.

    An episodic learner says its own mode in its ``query_bn`` attribute, when it has one.
    """
    query_bn = getattr(model, "query_bn", query_bn) if is_episodic(model) else query_bn
    return query_bn if any(isinstance(m, TaskBatchNorm2d) for m in model.modules()) else "none"


def evaluate(
    model: nn.Module,
    sampler,
    inner: InnerLoop | None,
    num_tasks: int = TEST_TASKS,
    lrs: Params | None = None,
    tasks_per_batch: int = 20,
    strategy: str = "auto",
    progress: bool = False,
    method: Method | str | None = None,
) -> Evaluation:
    """Fine-tune ``model`` on each of ``num_tasks`` tasks from ``sampler`` and score its query set.

    ``inner``: how to fine-tune (steps, learning rate, loss, batch-norm mode);
    the loop is first order here, since nothing is differentiated through it.
    For an episodic learner (:mod:`metabook.episodic`: Prototypical Networks,
    R2-D2, neural processes) the episode itself adapts, and ``inner`` is
    ignored (pass ``None``).
    ``lrs``: Meta-SGD's learned learning rates. ``sampler.sample(k)`` must
    return ``k`` tasks (a ``TaskBatch`` or ``SinusoidTasks``); they are moved
    to the model's device. Tasks are drawn ``tasks_per_batch`` at a time,
    which bounds memory. The model's parameters are not changed.
    ``method``: the :class:`metabook.methods.Method` (or its name) whose
    ``outputs`` score each task; ``None``: fine-tuning for a network on
    inputs, the episode for an episodic learner.
    """
    if num_tasks < 1 or tasks_per_batch < 1:
        raise ValueError(f"need num_tasks >= 1 and tasks_per_batch >= 1, got {num_tasks} and {tasks_per_batch}")
    episodic = is_episodic(model) if method is None else get_method(method).episodic
    if method is not None:
        outputs_of = get_method(method).outputs
    else:
        outputs_of = episodic_outputs if episodic else adapted_outputs
    if inner is None and not episodic:
        raise ValueError(f"{type(model).__name__} adapts by gradient steps: pass an InnerLoop saying how "
                         "(inner=None is only for episodic learners, see metabook.episodic)")
    params = parameters_of(model)
    device = next(iter(params.values())).device
    scores, losses, done = [], [], 0
    with tqdm(total=num_tasks, disable=not progress, desc="evaluate", unit="task", leave=False) as bar:
        while done < num_tasks:
            count = min(tasks_per_batch, num_tasks - done)
            tasks = sampler.sample(count).to(device)
            outputs, loss = outputs_of(model, params, tasks, inner, lrs, strategy)  # [T, Q, ...], mean loss
            scores.append(per_task_scores(outputs, tasks.query_y).double().cpu())
            # The loss is a mean over this batch's tasks; weight it by their number.
            losses.append(loss.double().cpu() * count)
            done += count
            bar.update(count)
    per_task = torch.cat(scores)
    mean, ci95, std = confidence_interval(per_task)
    return Evaluation(
        metric="mse" if tasks.query_y.is_floating_point() else "accuracy",
        mean=mean,
        ci95=ci95,
        std=std,
        num_tasks=num_tasks,
        query_loss=(torch.stack(losses).sum() / num_tasks).item(),
        query_bn=batch_norm_mode(model, "transductive" if inner is None else inner.query_bn),
        inner_steps=0 if episodic else inner.steps,
        inner_lr=0.0 if episodic else float(inner.lr),
        tasks_per_batch=tasks_per_batch,
        per_task=per_task,
    )
