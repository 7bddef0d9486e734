"""Meta-training: one loop for MAML, first-order MAML, ANIL, Meta-SGD, Reptile, and MLDG with its ERM baseline.

Every gradient-based meta-learner of the book trains the same way::

    for step in range(steps):
        tasks = sampler.sample(meta_batch)       # a meta-batch of tasks
        direction = ...                          # the algorithm's update direction
        optimizer.step()                         # move θ (and Meta-SGD's α) along it

and they differ only in the direction and the optimizer, which each method
supplies (:class:`metabook_learn.methods.Method`; :func:`meta_step` calls its ``step``):

=========  ==========================================  ================================
algorithm  direction                                   optimizer
=========  ==========================================  ================================
maml       ∇θ of the query loss after adaptation       Adam, learning rate ``meta_lr``
fomaml     the same, inner gradients as constants      Adam
anil       the same, only the head adapts              Adam
metasgd    ∇θ and ∇α, α the learned inner rates        Adam (θ and α together)
reptile    φ − mean_i W_i (no query set)               SGD with step ε: φ ← φ + ε (mean W − φ)
protonet,  ∇θ of the episode loss (no inner loop; the  Adam
r2d2, ...  model's forward is one episode)
mldg       ∇θ [F(θ) + β G(θ − α∇F(θ))]: F, G the       Adam
           losses on the meta-train and meta-test
           domains of a DomainBatch
erm        ∇θ of the loss on all of that batch's       Adam
           source examples
=========  ==========================================  ================================

The episodic algorithms (``Method.episodic``) train a model whose
``forward`` solves a task in one pass (:mod:`metabook_learn.episodic`): the inner-loop
settings do not apply to them.

The domain-generalization algorithms (``Method.domains``, :mod:`metabook_learn.mldg`)
train a network on batches of a :class:`metabook_learn.data.domains.DomainBatchSampler`:
each "task" is one batch per source domain, its support set the meta-train
domains' examples and its query set the meta-test domains'. MLDG's virtual step
is the inner loop (one step of size ``inner_lr``, second order unless
``first_order``); ERM uses every example and no inner loop.

Reptile's ε (``outer_step_size``) can be annealed linearly to
``outer_step_size_final`` over the run, as Nichol et al. (2018) did (from 1 to
0 on Omniglot and mini-ImageNet): at step t of T, ε_t = ε_0 + (ε_final − ε_0) t/T.

Around the loop, :func:`train` keeps a learning curve (meta-loss and
meta-accuracy, averaged over ``log_every`` steps, and validation scores),
validates every ``validate_every`` steps on the *same* validation tasks each
time (so the curve moves because the network changes, not the draw), and
writes checkpoints from which a run resumes exactly: model, optimizer,
Meta-SGD's rates, the samplers' generators, every global random generator,
the step, the configuration and the curve (:mod:`metabook_learn.checkpoint`). On
the CPU an interrupted and resumed run ends with the very same parameters as
an uninterrupted one. Ctrl-C or ``timeout`` (SIGINT, SIGTERM) stops training
after the step under way and saves it first (:class:`StopAtStepEnd`), so a
run cut into pieces, such as a lent GPU's few minutes at a time, loses nothing.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch import nn
from tqdm.auto import tqdm

from metabook_learn import validation
from metabook_learn.checkpoint import checkpoint_lock, load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from metabook_learn.data.storage import atomic_output
from metabook_learn.errors import UserError
from metabook_learn.data.sinusoid import SinusoidSampler  # re-exported: train() accepts it like any sampler
from metabook_learn.episodic import is_episodic
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import (INNER_LOOP_QUERY_BN_MODES, INNER_OPTIMIZERS, STRATEGIES, InnerLoop, Params,
                                       parameters_of, set_gradients)
from metabook_learn.maml import init_learning_rates
from metabook_learn.methods import DEFAULT_ALGORITHM, LOSSES, inner_loop
from metabook_learn.methods import get as get_method
from metabook_learn.methods import names as method_names
from metabook_learn.methods import origin as method_origin
from metabook_learn.models import use_channels_last
from metabook_learn.runtime import pick_device, seed_everything

__all__ = [
    "ALGORITHMS",  # noqa: F822 (module __getattr__: read from the registry)
    "GRADIENT_ALGORITHMS",  # noqa: F822
    "EPISODIC_ALGORITHMS",  # noqa: F822
    "DOMAIN_ALGORITHMS",  # noqa: F822
    "LOSSES",
    "TrainConfig",
    "CurvePoint",
    "TrainResult",
    "SinusoidSampler",
    "inner_loop",
    "make_optimizer",
    "outer_learning_rate",
    "reptile_step_size",  # noqa: F822
    "meta_step",
    "stop_if_diverged",
    "stop_if_validation_diverged",
    "TrainingDiverged",
    "train",
]

# The names of the registered methods (metabook_learn.methods), read when asked for, so that they include methods
# registered later: every one (ALGORITHMS); the gradient-based ones, with an inner loop; the episodic learners;
# the domain-generalization methods, which train on batches of source domains.
_METHOD_GROUPS = {
    "ALGORITHMS": {},
    "GRADIENT_ALGORITHMS": dict(episodic=False, domains=False),
    "EPISODIC_ALGORITHMS": dict(episodic=True),
    "DOMAIN_ALGORITHMS": dict(domains=True),
}


def __getattr__(name: str):
    if name in _METHOD_GROUPS:
        return method_names(**_METHOD_GROUPS[name])
    if name == "reptile_step_size":  # moved to the method's own module
        from metabook_learn.reptile import reptile_step_size

        return reptile_step_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TrainConfig:
    """Everything that defines a meta-training run. The defaults are MAML's, Omniglot 5-way 1-shot.

    **The tasks.** ``dataset``: a label for results tables (``train`` reads
    tasks from its sampler, and checks ``ways``, ``shots`` and ``queries``
    against it). ``ways``, ``shots``: the N-way K-shot problem.
    ``train_shots``: support examples per class in the *training* tasks when
    they differ from ``shots`` (Reptile trains with 10 and is tested with 1);
    ``None``: ``shots``. ``train_ways``: classes per *training* task when they
    differ from ``ways`` (Prototypical Networks train 60-way on Omniglot and
    are tested 5-way); ``None``: ``ways``. Only for an episodic classifier
    whose ``ways`` attribute can change (ProtoNets, R2-D2, LR-D2): it must be
    built with ``train_ways`` classes, and ``train`` sets it to ``ways`` while
    it validates. ``queries``: query examples per class (for
    sinusoids: ``shots`` support and ``queries`` query points; ``ways`` is
    unused). ``loss``: ``"cross_entropy"`` or ``"mse"`` (regression).

    **The algorithm.** ``algorithm``: the name of a registered method
    (:func:`metabook_learn.methods.names`: the book's are maml, fomaml, anil,
    metasgd, reptile, protonet, r2d2, lrd2, cnp, np, erm and mldg). It sets
    ``first_order`` (fomaml), ``head_only`` (anil) or ``learn_lrs``
    (metasgd); the flags can also be combined by hand, e.g. ``"anil"`` with
    ``first_order=True``. ``meta_batch``: tasks per meta-step.
    ``inner_steps``, ``inner_lr``: the inner loop's SGD steps and step size α
    during training; ``eval_inner_steps``: its steps at validation and test
    time (same α). ``inner_optimizer``: ``"sgd"``, or ``"adam"`` (β1 = 0, as in
    Reptile's experiments); ``inner_batch_size``: support examples per inner
    step in training (``None``: all), see :class:`metabook_learn.inner_loop.InnerLoop`;
    ``eval_inner_batch_size``: the same at validation and test time (Reptile's
    ``--eval-batch``; ``None``: all).
    ``meta_lr``: Adam's learning rate β (every algorithm but Reptile);
    ``meta_lr_halving_every``: halve it every that many steps, as the code of
    Prototypical Networks and R2-D2 does every 2,000 episodes (``None``: constant).
    ``clip_grad_norm``: rescale the update direction of θ when its norm (over
    all parameters) exceeds this, as ``torch.nn.utils.clip_grad_norm_``
    does (the in-context learner's preset clips at 1, as Garg et al.'s GPT-2
    training does); ``None``: no clipping.
    ``outer_step_size``: Reptile's ε; ``outer_step_size_final``: anneal ε
    linearly to this value over ``steps`` (``None``: constant ε).
    ``steps``: meta-steps. ``query_bn``: ``"transductive"``, ``"inductive"``
    or (inner-loop methods) ``"per-query"`` batch norm for query sets
    (:mod:`metabook_learn.inner_loop`).
    ``mldg_beta``: MLDG's β, the weight of the meta-test loss (its α is
    ``inner_lr``, its one virtual step ``inner_steps=1``, and ``first_order``
    drops the Hessian term).

    **Bookkeeping.** ``log_every``: steps averaged into one curve point.
    ``validate_every``: steps between validations (0: never);
    ``validation_tasks``: tasks per validation. ``checkpoint_every``: steps
    between checkpoints (0: only at the end). ``seed``: seeds the global
    generators at the start of a fresh run; the command line also derives the
    network's initialization and the samplers' seeds from it.
    ``device``: ``"auto"`` (:func:`~metabook_learn.runtime.pick_device`), ``"cpu"``,
    ``"cuda"``... ``bf16``: compute the meta-gradient under bfloat16 autocast,
    on CUDA or on a CPU with bfloat16 units (AVX-512-BF16, AMX): parameters,
    optimizer and checkpoints stay float32. ``channels_last``: store the
    convolutions channels-last (:func:`metabook_learn.models.use_channels_last`):
    float32, faster on a CPU for the large batches of the episodic
    classifiers, but not exact (``benchmarks/cpu_fast_path.py`` measures
    both). ``strategy``: how tasks of a
    batch run, ``"auto"``, ``"loop"`` or ``"vmap"`` (:func:`metabook_learn.inner_loop.pick_strategy`).

    Every field is checked when the config is made (:mod:`metabook_learn.validation`):
    counts are ints of at least 1 (at least 0 where 0 means something, as
    above), rates are finite and not negative (0 freezes what they move, a
    control), names are among the choices; anything else is a ``TypeError``
    or ``ValueError`` naming the field and the value.
    """

    algorithm: str = DEFAULT_ALGORITHM
    dataset: str = "omniglot"
    ways: int = 5
    shots: int = 1
    train_shots: int | None = None
    train_ways: int | None = None
    queries: int = 1
    loss: str = "cross_entropy"
    meta_batch: int = 32
    inner_steps: int = 1
    inner_lr: float = 0.4
    inner_optimizer: str = "sgd"
    inner_batch_size: int | None = None
    eval_inner_steps: int = 3
    eval_inner_batch_size: int | None = None
    meta_lr: float = 1e-3
    meta_lr_halving_every: int | None = None
    clip_grad_norm: float | None = None
    steps: int = 60_000
    first_order: bool = False
    head_only: bool = False
    learn_lrs: bool = False
    outer_step_size: float = 1.0
    outer_step_size_final: float | None = None
    query_bn: str = "transductive"
    log_every: int = 10
    validate_every: int = 0
    validation_tasks: int = 100
    checkpoint_every: int = 0
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    strategy: str = "auto"
    mldg_beta: float = 1.0

    def __post_init__(self):
        method = get_method(self.algorithm)  # an unknown name: a ValueError that lists the registered ones
        validation.choice("loss", self.loss, LOSSES)
        validation.choice("query_bn", self.query_bn, INNER_LOOP_QUERY_BN_MODES)
        validation.choice("strategy", self.strategy, STRATEGIES)
        validation.choice("inner_optimizer", self.inner_optimizer, INNER_OPTIMIZERS)
        for name in ("ways", "shots", "queries", "meta_batch", "steps", "log_every", "validation_tasks"):
            validation.count(name, getattr(self, name))
        for name, zero in (("inner_steps", "no adaptation"), ("eval_inner_steps", "no adaptation"),
                           ("validate_every", "never"), ("checkpoint_every", "only at the end"), ("seed", "")):
            validation.count(name, getattr(self, name), minimum=0, meaning=zero and f"0: {zero}")
        validation.optional_count("meta_lr_halving_every", self.meta_lr_halving_every, none_means="a constant rate")
        validation.optional_count("train_shots", self.train_shots, none_means="shots")
        for name in ("inner_batch_size", "eval_inner_batch_size"):
            validation.optional_count(name, getattr(self, name), none_means="the whole support set")
        # A zero rate is a control (nothing moves); NaN, infinity or a negative rate is a mistake.
        for name in ("inner_lr", "meta_lr", "outer_step_size", "outer_step_size_final", "mldg_beta"):
            if getattr(self, name) is not None:
                validation.rate(name, getattr(self, name), zero_ok=True)
        if self.clip_grad_norm is not None:
            validation.rate("clip_grad_norm", self.clip_grad_norm)
        if self.train_ways is not None and (self.train_ways < 1 or not method.episodic):
            raise ValueError(f"train_ways={self.train_ways} needs a positive number and an episodic classifier "
                             f"({', '.join(method_names(episodic=True))}): a network's head fixes its number of ways")
        method.check(self)  # the method's own settings (Reptile has no head_only, MLDG one virtual step, ...)
        # The algorithm's name is the flag it stands for; set it so the config says what ran.
        for flag in method.implies:
            setattr(self, flag, True)

    @property
    def support_shots(self) -> int:
        """Support examples per class in the training tasks."""
        return self.shots if self.train_shots is None else self.train_shots

    @property
    def training_ways(self) -> int:
        """Classes per training task."""
        return self.ways if self.train_ways is None else self.train_ways

    @property
    def validation_metric(self) -> str:
        return "mse" if self.loss == "mse" else "accuracy"

    @classmethod
    def for_sampler(cls, sampler, **settings) -> "TrainConfig":
        """A config whose tasks are the ones ``sampler`` draws; ``settings``: the other fields (and overrides).

        ``ways``, ``shots`` and ``queries`` are read from the sampler's
        ``num_ways``, ``num_shots`` and ``num_queries``. A sampler without
        ``num_ways`` draws regression tasks (sine waves, linear functions):
        ``loss="mse"``, ``ways=1`` (unused) and ``dataset="regression"``
        unless ``settings`` name one. For example, the in-context chapter's::

            config = TrainConfig.for_sampler(LinearRegressionSampler(5, 20, 1), algorithm="transformer",
                                             meta_batch=64, meta_lr=1e-3, steps=10_000, clip_grad_norm=1.0)
        """
        ways = getattr(sampler, "num_ways", None)
        task_shape = dict(shots=sampler.num_shots, queries=sampler.num_queries)
        task_shape.update(dict(ways=ways) if ways is not None else dict(ways=1, loss="mse", dataset="regression"))
        return cls(**{**task_shape, **settings})


@dataclass
class CurvePoint:
    """One point of the learning curve, after ``step`` meta-steps.

    ``meta_loss``, ``meta_accuracy``: the query loss and accuracy after
    adaptation, averaged over the meta-steps since the previous point
    (``None`` for Reptile, which uses no query set, and accuracy ``None`` for
    regression). ``validation``: the mean validation score (accuracy, or MSE
    for regression) when validation ran at this step, else ``None``.
    ``training_s``: seconds spent training up to this point, validation and
    checkpoints excluded, summed over resumed segments (for plots of
    accuracy against training time; it varies from run to run).
    """

    step: int
    meta_loss: float | None
    meta_accuracy: float | None
    validation: float | None = None
    training_s: float | None = field(default=None, compare=False)  # a timing: never part of equality


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``curve``: the learning curve. ``lrs``: Meta-SGD's learned rates (``None``
    otherwise). ``eval_inner``: the inner loop validation used; pass it to
    :func:`metabook_learn.evaluation.evaluate` for the test set. ``steps_done``:
    meta-steps completed. ``resumed_from``: the step a checkpoint resumed at
    (``None`` for a fresh run). ``wall_time_s``: seconds spent training,
    summed over every resumed segment; with a checkpoint, up to its last
    save, so that loading a finished run reports its recorded time.
    """

    config: TrainConfig
    curve: list[CurvePoint]
    lrs: Params | None
    eval_inner: InnerLoop
    steps_done: int
    resumed_from: int | None
    wall_time_s: float

    def column(self, name: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one curve field, skipping points where it is ``None``: ready to plot."""
        points = [(p.step, getattr(p, name)) for p in self.curve if getattr(p, name) is not None]
        return [s for s, _ in points], [v for _, v in points]


# ── The pieces of one meta-step ──────────────────────────────────────────────


def make_optimizer(config: TrainConfig, params: Params, lrs: Params | None) -> torch.optim.Optimizer:
    """The method's outer optimizer (Reptile: SGD with step ε on φ); by default Adam(β = ``meta_lr``) over θ and
    Meta-SGD's α."""
    method = get_method(config.algorithm)
    if method.optimizer is not None:
        return method.optimizer(config, params, lrs)
    return torch.optim.Adam([*params.values(), *(lrs or {}).values()], lr=config.meta_lr)


def outer_learning_rate(config: TrainConfig, step: int) -> float:
    """The outer optimizer's learning rate at ``step`` (0-based): Reptile's ε, or Adam's β.

    β is ``meta_lr``, halved every ``meta_lr_halving_every`` steps when that is
    set. A function of the step alone, so a resumed run continues the schedule
    exactly.
    """
    method = get_method(config.algorithm)
    if method.learning_rate is not None:  # Reptile's ε, annealed
        return method.learning_rate(config, step)
    if config.meta_lr_halving_every is None:
        return config.meta_lr
    return config.meta_lr * 0.5 ** (step // config.meta_lr_halving_every)


def meta_step(
    config: TrainConfig,
    model: nn.Module,
    params: Params,
    lrs: Params | None,
    optimizer: torch.optim.Optimizer,
    tasks,
    step: int,
    carried: dict | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One update of θ (and α) from a meta-batch ``tasks``; returns its ``(meta-loss, meta-accuracy)``.

    ``carried``: the method's state from one meta-batch to the next
    (``Method.carried_state``; Reptile's inner Adam moments), updated by its step.

    The method's ``step`` gives the direction (:class:`metabook_learn.methods.Step`).
    Both are ``None`` for Reptile (it has no query set); the accuracy is
    ``None`` for regression. They stay tensors on the device, so that
    training does not wait for the GPU at every step.
    """
    method = get_method(config.algorithm)
    for group in optimizer.param_groups:
        group["lr"] = outer_learning_rate(config, step)
    # Under autocast, convolutions and matrix products run in bfloat16; everything stored stays float32.
    with torch.autocast(tasks.support_x.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        direction, lr_grads, loss, accuracy = method.step(
            config, model, params, lrs, tasks, **({} if carried is None else {"carried": carried}))
    stop_if_diverged(config, step, loss, direction, lr_grads)
    optimizer.zero_grad(set_to_none=True)
    set_gradients(params, direction)
    if config.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(list(params.values()), config.clip_grad_norm)
    if lrs is not None:
        set_gradients(lrs, lr_grads)
    optimizer.step()
    return loss, accuracy


class TrainingDiverged(UserError, RuntimeError):
    """A meta-step produced a NaN or an infinity, so training stopped before it could change the weights.

    ``step``: the meta-step (1-based) that diverged; ``quantity``: what was
    not finite (``"meta-loss"``, or the gradient of a named parameter). The
    model keeps the weights of the step before, and no checkpoint is written
    over a good one. A ``RuntimeError``; the command line prints it as one line.
    """

    def __init__(self, message: str, step: int, quantity: str):
        super().__init__(message)
        self.step, self.quantity = step, quantity


def stop_if_diverged(config: TrainConfig, step: int, loss: torch.Tensor | None, direction: Params,
                     lr_grads: Params | None = None) -> None:
    """Raise :class:`TrainingDiverged` if the meta-loss or the update direction of step ``step`` (0-based) is not finite.

    One reduction over the loss and every gradient, and so one wait for the
    GPU per step; the culprit is searched for only once something is wrong.
    """
    quantities = {"meta-loss": loss, **{f"gradient of {name}": g for name, g in direction.items()},
                  **{f"gradient of Meta-SGD's rate for {name}": g for name, g in (lr_grads or {}).items()}}
    bad = validation.non_finite(quantities)
    if bad is None:
        return
    method = get_method(config.algorithm)
    # The rates this method uses: its own outer optimizer's (Reptile's ε) or Adam's, and the inner step if it has one.
    rates = f"meta_lr={config.meta_lr}" if method.optimizer is None else f"outer_step_size={config.outer_step_size}"
    if not any("inner_lr" in fields_ for fields_ in method.unused_fields):
        rates = f"inner_lr={config.inner_lr}, {rates}"
    precision = "; train in float32 (without bf16)" if config.bf16 else ""
    raise TrainingDiverged(
        f"training diverged at step {step + 1}: the {bad} is NaN or infinite, so the weights were not updated; "
        f"lower the learning rate ({rates}){precision}, or check the data for NaN", step + 1, bad)


def stop_if_validation_diverged(config: TrainConfig, step: int, score: float) -> None:
    """Raise :class:`TrainingDiverged` if the validation score after ``step`` steps is NaN or infinite.

    The weights are finite (:func:`stop_if_diverged` saw to it), so it is the
    fine-tuning of validation, ``eval_inner_steps`` steps of ``inner_lr``,
    that diverged: every later score, and the test score, would be NaN too.
    """
    if math.isfinite(score):
        return
    raise TrainingDiverged(
        f"validation diverged after step {step}: the validation {config.validation_metric} is {score}, because "
        f"fine-tuning with inner_lr={config.inner_lr} for eval_inner_steps={config.eval_inner_steps} steps "
        "diverges; lower inner_lr or eval_inner_steps", step, f"validation {config.validation_metric}")


def _saying_what_is_kept(error: TrainingDiverged, checkpoint, saved_step: int | None) -> TrainingDiverged:
    """``error``, its message completed with the checkpoint left on disk."""
    if not checkpoint:
        return error
    kept = f"the checkpoint {checkpoint} of step {saved_step} is kept" if saved_step is not None else \
        "no checkpoint was written"
    return TrainingDiverged(f"{error}; {kept}", error.step, error.quantity)


# ── The loop ─────────────────────────────────────────────────────────────────


@dataclass
class _Running:
    """Sums of the meta-loss and meta-accuracy since the last curve point (tensors, to avoid GPU syncs)."""

    loss: torch.Tensor | float = 0.0
    accuracy: torch.Tensor | float = 0.0
    count: int = 0
    has_loss: bool = False
    has_accuracy: bool = False

    def add(self, loss, accuracy) -> None:
        self.count += 1
        if loss is not None:
            self.loss, self.has_loss = self.loss + loss.detach().float(), True
        if accuracy is not None:
            self.accuracy, self.has_accuracy = self.accuracy + accuracy.detach().float(), True

    def point(self, step: int) -> CurvePoint:
        def mean(total, present):
            return float(total) / self.count if present and self.count else None

        return CurvePoint(step, mean(self.loss, self.has_loss), mean(self.accuracy, self.has_accuracy))

    def state(self) -> dict:
        return {"loss": float(self.loss), "accuracy": float(self.accuracy), "count": self.count,
                "has_loss": self.has_loss, "has_accuracy": self.has_accuracy}


def _check_tasks(config: TrainConfig, sampler, which: str) -> None:
    """Fail early when a sampler draws tasks of another shape than the config describes."""
    training = which == "train_sampler"
    shots = config.support_shots if training else config.shots
    ways = config.training_ways if training else config.ways
    expected = {"num_ways": ways, "num_shots": shots, "num_queries": config.queries}
    if isinstance(sampler, SinusoidSampler):
        del expected["num_ways"]  # regression tasks have no classes
    for name, value in expected.items():
        actual = getattr(sampler, name, None)
        if actual is not None and actual != value:
            raise ValueError(f"{which} draws tasks with {name}={actual}, but the config says {value}; "
                             "make the sampler and TrainConfig agree")


def _check_targets(config: TrainConfig, tasks) -> None:
    if get_method(config.algorithm).domains != hasattr(tasks, "meta_test_domains"):
        raise ValueError(f"{config.algorithm} cannot train on {type(tasks).__name__}: the domain algorithms "
                         f"({', '.join(method_names(domains=True))}) need batches of a metabook_learn.data.domains."
                         "DomainBatchSampler, and only they do")
    if tasks.query_y.is_floating_point() != (config.loss == "mse"):
        kind = "real-valued targets" if tasks.query_y.is_floating_point() else "class labels"
        raise ValueError(f"the tasks have {kind}, but loss={config.loss!r}; use loss="
                         f"{'mse' if tasks.query_y.is_floating_point() else 'cross_entropy'!r}")


def _resume_state(config: TrainConfig, checkpoint, resume: bool) -> dict | None:
    """The checkpoint to resume from, or ``None`` to start afresh."""
    if not (resume and checkpoint):
        return None
    try:
        state = load_checkpoint(checkpoint)
    except FileNotFoundError:
        return None  # nothing saved yet: the same call starts a run, then resumes it after an interruption
    # A checkpoint written before a field existed ran with that field's default.
    ours = asdict(config)
    theirs = {**{f.name: f.default for f in fields(TrainConfig)}, **state["config"]}
    differences = [f"{k}: {theirs[k]!r} there, {v!r} here" for k, v in ours.items()
                   if k not in ("checkpoint_every", "steps") and theirs[k] != v]
    if differences:
        raise ValueError(f"checkpoint {checkpoint} was written by a run with another configuration "
                         f"({'; '.join(differences)}); resume with the same configuration, or start a "
                         "new run with another checkpoint path")
    if config.steps != theirs["steps"]:
        # More (or fewer) steps continue the same run, unless the schedule itself depends on the length of the run.
        if config.steps < state["step"]:
            raise ValueError(f"checkpoint {checkpoint} has done {state['step']} steps already; to continue it, "
                             f"ask for at least that many (steps={config.steps})")
        if config.outer_step_size_final is not None:
            raise ValueError(f"checkpoint {checkpoint} anneals Reptile's step size over its {theirs['steps']} "
                             f"steps, so steps={config.steps} would change its schedule: run it to its end, "
                             "or start a new run")
    return state


class StopAtStepEnd:
    """While training: SIGINT or SIGTERM only note that a stop was asked for, and the loop stops after the step.

    A signal's default action would stop the run anywhere, between the
    optimizer's updates of two tensors included, where no checkpoint can be
    taken. ``signal``: the name of the signal received (``None`` until then).
    A second signal stops at once. Python lets only the main thread handle
    signals, so in any other thread this changes nothing.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.signal, self.previous = None, {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self.note) for number in self.HANDLED}
        return self

    def note(self, number, frame):
        if self.signal is not None:
            raise KeyboardInterrupt(f"{signal.Signals(number).name} twice: stopped at once")
        self.signal = signal.Signals(number).name

    def __exit__(self, *exception):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


def train(
    config: TrainConfig,
    model: nn.Module,
    train_sampler,
    val_sampler=None,
    checkpoint=None,
    resume: bool = False,
    progress: bool = True,
    curve_file=None,
) -> TrainResult:
    """Meta-train ``model`` in place with ``config.algorithm``; returns the learning curve.

    ``train_sampler``, ``val_sampler``: objects with ``sample(T)`` returning
    a ``TaskBatch`` or ``SinusoidTasks`` (an ``NWayKShotSampler``, a
    :class:`~metabook_learn.data.sinusoid.SinusoidSampler`), and ``state_dict()`` / ``load_state_dict()``
    for checkpoints. ``checkpoint``: a file path; written every
    ``config.checkpoint_every`` steps and at the end, atomically.
    ``resume=True``: continue from that file when it exists (its
    configuration must equal ``config``, ``checkpoint_every`` aside, and
    ``steps``, which may grow to extend a finished run unless Reptile's step
    size anneals over it), start afresh when it does not. Interrupted by SIGINT (Ctrl-C, a kernel
    interrupt) or SIGTERM (``timeout``), training finishes the step under
    way, writes the checkpoint and raises ``KeyboardInterrupt``, so a resumed
    run loses nothing (a second signal stops at once). ``progress``: show a tqdm progress bar; pass
    ``False`` in notebooks whose outputs are compared (the bar prints timings).
    ``curve_file``: a path; every point of the learning curve is appended to
    it as one line of JSON as soon as it is made, so an interrupted run keeps
    its curve (on resume, the file is rewritten with the checkpoint's points first).

    What can go wrong stops with one clear error: a network the inner loop
    cannot adapt (batch norm with running statistics, ANIL without ``head.``
    parameters, fewer outputs than ways) is a ``ValueError`` before any step;
    a meta-loss or gradient that is NaN or infinite raises
    :class:`TrainingDiverged` before the weights move, and so does a NaN
    validation score, the last checkpoint written staying as it was; another run training into the same
    ``checkpoint`` raises :class:`metabook_learn.checkpoint.CheckpointInUse`.

    A typical chapter::

        config = TrainConfig(algorithm="maml", steps=300, meta_batch=8, queries=5)
        model = omniglot_convnet(5)
        result = train(config, model, NWayKShotSampler(train_split, 5, 1, 5), progress=False)
        test = evaluate(model, NWayKShotSampler(test_split, 5, 1, 5), result.eval_inner, lrs=result.lrs)
    """
    device = pick_device(None if config.device == "auto" else config.device, verbose=False)
    if config.validate_every and val_sampler is None:
        raise ValueError(f"validate_every={config.validate_every} needs a val_sampler (or set validate_every=0)")
    _check_tasks(config, train_sampler, "train_sampler")
    if val_sampler is not None:
        _check_tasks(config, val_sampler, "val_sampler")

    method = get_method(config.algorithm)
    if method.episodic != is_episodic(model):
        kind = "an episodic learner" if is_episodic(model) else "a network on inputs"
        raise ValueError(f"algorithm {config.algorithm!r} cannot train {type(model).__name__}, which is {kind}; "
                         f"episodic learners train with one of {', '.join(method_names(episodic=True))}, networks "
                         f"with one of {', '.join(method_names(episodic=False))}")
    if config.train_ways is not None and getattr(model, "ways", None) != config.train_ways:
        raise ValueError(f"train_ways={config.train_ways}, but {type(model).__name__} classifies "
                         f"{getattr(model, 'ways', 'a fixed number of')} ways: build the episodic classifier with "
                         f"ways={config.train_ways} (train() switches it to ways={config.ways} to validate)")
    if not is_episodic(model):
        validation.network(model, head_only=config.head_only, ways=getattr(train_sampler, "num_ways", None))
    model.to(device)
    if config.channels_last:
        use_channels_last(model)
    params = parameters_of(model)
    lrs = init_learning_rates(params, inner_loop(config)) if config.learn_lrs else None
    optimizer = make_optimizer(config, params, lrs)
    carried = method.carried_state(config, params) if method.carried_state is not None else None
    eval_inner = inner_loop(config, evaluation=True)

    state = _resume_state(config, checkpoint, resume)
    if state is None:
        seed_everything(config.seed)
        start, curve, running, wall_before = 0, [], _Running(), 0.0
        # Validation rewinds to this state every time: the same validation tasks at every point.
        val_start = val_sampler.state_dict() if val_sampler is not None else None
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if lrs is not None:
            with torch.no_grad():
                for name, rate in lrs.items():
                    rate.copy_(state["lrs"][name])
        train_sampler.load_state_dict(state["train_sampler"])
        if carried is not None and state.get("carried") is not None:  # older checkpoints start it afresh
            carried.update(pytree.tree_map(lambda x: x.to(device) if torch.is_tensor(x) else x, state["carried"]))
        val_start = state["val_start"]
        restore_rng_states(state["rng"])
        start, wall_before = state["step"], state["wall_time_s"]
        curve = [CurvePoint(**point) for point in state["curve"]]
        running = _Running(**state["running"])

    def validate(done: int) -> float:
        val_sampler.load_state_dict(val_start)
        if config.train_ways is not None:
            model.ways = config.ways  # validate at the test ways with the same weights (checked above)
        try:
            score = evaluate(model, val_sampler, eval_inner, config.validation_tasks, lrs,
                             strategy=config.strategy, method=method).mean
        finally:
            if config.train_ways is not None:
                model.ways = config.train_ways
        stop_if_validation_diverged(config, done, score)
        return score

    def save(step: int, elapsed: float) -> None:
        save_checkpoint(checkpoint, {
            "step": step,
            "config": asdict(config),
            # What evaluate rebuilds: the method, where it came from, and the network it trained.
            "method": {"name": method.name, "origin": method_origin(method.name),
                       "network": type(model).__qualname__},
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lrs": None if lrs is None else {name: rate.detach() for name, rate in lrs.items()},
            "carried": carried,
            "train_sampler": train_sampler.state_dict(),
            "val_start": val_start,
            "rng": rng_states(),
            "curve": [asdict(point) for point in curve],
            "running": running.state(),
            "wall_time_s": elapsed,
        })

    began = time.perf_counter()
    # The run's wall time is the one its last checkpoint records, so that a finished run loaded again (to be
    # scored again) reports the same time as when it finished.
    wall_time = wall_before
    # Training time excludes validation and checkpoints; it continues from the last point on resume.
    trained_before = (curve[-1].training_s or 0.0) if curve else 0.0
    not_training = 0.0
    saved_step = start if state is not None else None  # the step of the checkpoint on disk
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=config.algorithm, unit="step")
    # The lock: a second run writing into the same checkpoint would interleave its steps with this one's.
    with checkpoint_lock(checkpoint), bar, StopAtStepEnd() as stop:
        if curve_file is not None:
            with atomic_output(Path(curve_file)) as temporary:  # the points the run has, then one line per new point
                temporary.write_text("".join(json.dumps(asdict(point)) + "\n" for point in curve))
        for step in range(start, config.steps):
            tasks = train_sampler.sample(config.meta_batch).to(device)
            if step == start:
                _check_targets(config, tasks)
            try:
                running.add(*meta_step(config, model, params, lrs, optimizer, tasks, step, carried))
            except TrainingDiverged as error:
                raise _saying_what_is_kept(error, checkpoint, saved_step) from None
            done = step + 1
            validating = val_sampler is not None and config.validate_every and (
                done % config.validate_every == 0 or done == config.steps)
            if done % config.log_every == 0 or validating or done == config.steps:
                point = running.point(done)  # reads the losses: waits for the GPU to finish
                point.training_s = trained_before + time.perf_counter() - began - not_training
                running = _Running()
                if validating:
                    validation_began = time.perf_counter()
                    try:
                        point.validation = validate(done)
                    except TrainingDiverged as error:
                        raise _saying_what_is_kept(error, checkpoint, saved_step) from None
                    not_training += time.perf_counter() - validation_began
                curve.append(point)
                if curve_file is not None:
                    with open(curve_file, "a") as log:
                        log.write(json.dumps(asdict(point)) + "\n")
                bar.set_postfix({k: f"{v:.3f}" for k, v in asdict(point).items()
                                 if k not in ("step", "training_s") and v is not None})
            bar.update(1)
            if checkpoint and ((config.checkpoint_every and done % config.checkpoint_every == 0)
                               or done == config.steps or stop.signal):
                saving_began = time.perf_counter()
                wall_time = wall_before + saving_began - began
                save(done, wall_time)
                saved_step = done
                not_training += time.perf_counter() - saving_began
            if stop.signal and done < config.steps:
                raise KeyboardInterrupt(f"{stop.signal}: stopped after step {done} of {config.steps}"
                                        + (f"; resume=True continues from {checkpoint}" if checkpoint else ""))
    return TrainResult(
        config=config,
        curve=curve,
        lrs=None if lrs is None else {name: rate.detach() for name, rate in lrs.items()},
        eval_inner=eval_inner,
        steps_done=config.steps,
        resumed_from=None if state is None else start,
        wall_time_s=wall_time if checkpoint else wall_before + time.perf_counter() - began,
    )
