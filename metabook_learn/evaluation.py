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
norm treated the query set (``"transductive"``, ``"inductive"`` or ``"per-query"``,
see :mod:`metabook_learn.inner_loop`), because they give different numbers and a
results table must say which one it reports; ``"none"`` for a network
without batch norm.

The tasks come from any sampler with ``sample(T)``; the same sampler state
gives the same tasks, and fine-tuning draws no random numbers, so a fresh
sampler with the same seed gives the same result, bit for bit on the CPU.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from metabook_learn import validation
from metabook_learn.episodic import episodic_outputs, is_episodic
from metabook_learn.inner_loop import STRATEGIES, InnerLoop, Params, parameters_of
from metabook_learn.methods import Method, adapted_outputs
from metabook_learn.methods import get as get_method
from metabook_learn.models import TaskBatchNorm2d

__all__ = ["Evaluation", "evaluate", "confidence_interval", "per_task_scores", "batch_norm_mode",
           "SeedSummary", "t_quantile", "over_seeds", "paired_difference"]

TEST_TASKS = 600  # MAML's reference code (NUM_TEST_POINTS) and many papers since (ProtoNets: 1,000 on Omniglot)
EVALUATION_SHUFFLE_SEED = 0  # the seed of each evaluation's test-time minibatch shuffles (evaluate)
Z_95 = 1.96  # the two-sided 95% quantile of the normal distribution


@dataclass
class Evaluation:
    """Scores after adapting to ``num_tasks`` test tasks.

    ``metric``: ``"accuracy"`` (a fraction in [0, 1]) or ``"mse"``.
    ``mean``, ``ci95``: the mean score over tasks and the half-width of its
    95% confidence interval (module docstring); ``std``: the standard
    deviation over tasks (divisor n). ``query_loss``: the mean query loss
    (cross-entropy or MSE). ``per_task``: ``float64 [num_tasks]``, each task's
    score. ``query_bn``: ``"transductive"``, ``"inductive"``, ``"per-query"`` or ``"none"``.
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


@contextlib.contextmanager
def _explain_gradients_under_no_grad(model: nn.Module):
    """Turn torch's "does not require grad", met by a method that differentiates under ``no_grad``, into the rule."""
    try:
        yield
    except RuntimeError as error:
        if "does not require grad" not in str(error):
            raise
        raise RuntimeError(f"{type(model).__name__} differentiates during evaluation, which runs under "
                           "torch.no_grad(): wrap the gradient it takes in `with torch.enable_grad():` "
                           f"(as metabook_learn.inner_loop.autograd_gradient does); torch said: {error}") from None


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
    For an episodic learner (:mod:`metabook_learn.episodic`: Prototypical Networks,
    R2-D2, neural processes) the episode itself adapts, and ``inner`` is
    ignored (pass ``None``).
    ``lrs``: Meta-SGD's learned learning rates. ``sampler.sample(k)`` must
    return ``k`` tasks (a ``TaskBatch`` or ``SinusoidTasks``); they are moved
    to the model's device. Tasks are drawn ``tasks_per_batch`` at a time,
    which bounds memory. The model's parameters are not changed.

    **No gradients are recorded here**: tasks run under ``torch.no_grad()``.
    The inner loop's own steps differentiate under ``torch.enable_grad()``
    (:func:`metabook_learn.inner_loop.autograd_gradient`); a method of your own
    that calls ``torch.autograd.grad`` while it evaluates must do the same,
    or it fails with a ``RuntimeError`` that says so.

    Refused with a ``ValueError``: a model with NaN or infinite weights (its
    training diverged), a network the inner loop cannot adapt
    (:func:`metabook_learn.validation.network`: batch norm with running statistics,
    ANIL without ``head.`` parameters, fewer outputs than the sampler's ways).
    Fine-tuning that diverges is reported as it is, a NaN or infinite score
    (a sweep over step sizes meets some), never as a number that looks right.

    ``method``: the :class:`metabook_learn.methods.Method` (or its name) whose
    ``outputs`` score each task; ``None``: fine-tuning for a network on
    inputs, the episode for an episodic learner.
    """
    if not callable(getattr(sampler, "sample", None)):
        raise TypeError(f"sampler must draw tasks with sample(k) (e.g. metabook_learn.data.NWayKShotSampler), got "
                        f"{type(sampler).__name__}")
    validation.count("num_tasks", num_tasks)
    validation.count("tasks_per_batch", tasks_per_batch)
    validation.choice("strategy", strategy, STRATEGIES)
    episodic = is_episodic(model) if method is None else get_method(method).episodic
    if method is not None:
        outputs_of = get_method(method).outputs
    else:
        outputs_of = episodic_outputs if episodic else adapted_outputs
    if inner is None and not episodic:
        raise ValueError(f"{type(model).__name__} adapts by gradient steps: pass an InnerLoop saying how "
                         "(inner=None is only for episodic learners, see metabook_learn.episodic)")
    if not episodic:
        if not isinstance(inner, InnerLoop):
            raise TypeError(f"inner must be a metabook_learn.inner_loop.InnerLoop, got {type(inner).__name__}")
        validation.network(model, inner.head_only, getattr(sampler, "num_ways", None))
        if inner.generator is None:
            # Test-time minibatches (Reptile's) shuffle each task's support set from a generator of this
            # evaluation's own: the score depends on the tasks, never on what ran before (inner_loop.InnerLoop).
            inner = replace(inner, generator=torch.Generator().manual_seed(EVALUATION_SHUFFLE_SEED))
    validation.finite_parameters(model, f"this {type(model).__name__}")
    params = parameters_of(model)
    device = next(iter(params.values())).device
    scores, losses, done = [], [], 0
    with tqdm(total=num_tasks, disable=not progress, desc="evaluate", unit="task", leave=False) as bar:
        while done < num_tasks:
            count = min(tasks_per_batch, num_tasks - done)
            tasks = sampler.sample(count).to(device)
            with _explain_gradients_under_no_grad(model):
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


# ── Several training runs: the mean over seeds and its t-interval ────────────
#
# The interval of an Evaluation is over test tasks: it says how much one trained network's score would move with
# another draw of tasks. Whether one *method* beats another is a question about training runs, which differ by
# their seed: train each method with several seeds, score every run on the same test tasks, and compare the
# per-seed differences with a t-interval (few seeds: the normal quantile 1.96 would be far too narrow).


@dataclass
class SeedSummary:
    """The mean of one number over ``seeds`` training runs and the half-width of its ``confidence`` t-interval.

    ``values``: the per-seed numbers, ``[seeds]``. With one seed the interval is undefined (``nan``).
    """

    mean: float
    half_width: float
    seeds: int
    confidence: float
    values: list[float]

    def __str__(self) -> str:
        return (f"{self.mean:.4f} ± {self.half_width:.4f} ({100 * self.confidence:.0f}% t-interval over "
                f"{self.seeds} seeds)")


def _t_cdf(x: float, df: int, points: int = 4000) -> float:
    """P(T ≤ x) for Student's t with ``df`` degrees of freedom, x ≥ 0: 1/2 + the density integrated by Simpson's rule."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t):
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    h = x / points
    total = density(0.0) + density(x) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, points))
    return 0.5 + total * h / 3


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile (> 0.5) of Student's t with ``df`` ≥ 1 degrees of freedom, by bisection.

    E.g. ``t_quantile(0.975, 2)`` = 4.303: a 95% interval over 3 seeds is 2.2 times wider than with 1.96.
    """
    if not 0.5 < probability < 1 or df < 1:
        raise ValueError(f"need 0.5 < probability < 1 and df >= 1, got {probability} and {df}")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < probability:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_cdf(middle, df) < probability else (low, middle)
    return (low + high) / 2


def over_seeds(values, confidence: float = 0.95) -> SeedSummary:
    """The mean of per-seed ``values`` (a sequence or tensor ``[seeds]``) and its t-interval, ± t·s/√n.

    ``s`` is the sample standard deviation (divisor n − 1), ``t`` the quantile of
    Student's t with n − 1 degrees of freedom.
    """
    values = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten()]
    n = len(values)
    if n == 0:
        raise ValueError("over_seeds needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return SeedSummary(mean, math.nan, 1, confidence, values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return SeedSummary(mean, t_quantile((1 + confidence) / 2, n - 1) * std / math.sqrt(n), n, confidence, values)


def paired_difference(a, b, confidence: float = 0.95) -> SeedSummary:
    """Method ``a`` minus method ``b``, paired on the same test tasks, with a t-interval over seeds.

    ``a``, ``b``: per-task scores ``[seeds, tasks]`` (``Evaluation.per_task`` of
    each seed's run, stacked; seed i of ``a`` and of ``b`` scored on the very same
    tasks), or per-seed scores ``[seeds]``. Each seed gives one difference of
    means, d_i = mean_t (a_it − b_it); their mean and t-interval say whether
    ``a`` is better than ``b`` beyond the spread of training runs. Pairing on
    the tasks removes the tasks' difficulty from each d_i.
    """
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same shape (seeds, tasks), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}: score both methods on the same tasks with the same seeds")
    differences = (a - b) if a.dim() == 1 else (a - b).mean(dim=1)
    return over_seeds(differences, confidence)

