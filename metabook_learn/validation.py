"""Checks of what comes in: every option and argument of the public API and the command line.

Each check is one small function that returns the value it accepts (converted
to a plain ``int`` or ``float``) or raises an error that names the option, the
value, and what to do instead. The rest of metabook calls these functions where
a value enters, so that one rule is written once:

* :func:`count` -- a whole number of at least ``minimum`` (``bool`` is not a
  number here, and an explicit 0 is never read as "use the default");
* :func:`rate` -- a finite, positive real number (learning rates, step sizes);
  ``zero_ok=True`` also accepts 0 (a step size annealed to zero);
* :func:`probability` -- a real number in [0, 1];
* :func:`choice` -- one of a few names;
* :func:`tensor` -- a ``torch.Tensor`` (a NumPy array is refused with the
  call that converts it), optionally of a given dtype kind and number of
  dimensions;
* :func:`task_tensors` -- the four tensors of a batch of tasks;
* :func:`network` -- a network the inner loop can adapt: no batch norm with
  running statistics, and ``head.`` parameters when only the head adapts;
* :func:`finite_parameters` -- no NaN or infinity in a network's weights.

The errors are the standard ones: ``TypeError`` for a value of the wrong kind,
``ValueError`` for a value of the right kind out of range. The command line
prints either as one line (``metabook_learn.cli``).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

__all__ = [
    "count",
    "optional_count",
    "rate",
    "probability",
    "choice",
    "tensor",
    "task_tensors",
    "network",
    "head_outputs",
    "non_finite",
    "finite_parameters",
]


def _shown(value) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, str) else repr(value)


def count(name: str, value, minimum: int = 1, meaning: str = "") -> int:
    """``value`` as an ``int``, if it is a whole number ``>= minimum``.

    ``meaning``: what the smallest values mean, added to the error (e.g.
    ``"0: never"``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_shown(value)}")
    if value < minimum:
        said = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be at least {minimum}{said}, got {value}; pass a number >= {minimum}")
    return int(value)


def optional_count(name: str, value, minimum: int = 1, none_means: str = "") -> int | None:
    """``None``, or :func:`count`; ``none_means`` says what ``None`` stands for in the error."""
    if value is None:
        return None
    try:
        return count(name, value, minimum)
    except ValueError:
        raise ValueError(f"{name} must be at least {minimum} or None ({none_means or 'the default'}), got {value}; "
                         f"pass a number >= {minimum}") from None


def _real(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_shown(value)}")
    return float(value)


def rate(name: str, value, zero_ok: bool = False) -> float:
    """``value`` as a ``float``, if it is finite and positive (or zero with ``zero_ok``).

    A learning rate of NaN or infinity makes every weight NaN after one step,
    and a negative one climbs the loss: both are refused here rather than
    discovered hours later.
    """
    number = _real(name, value)
    low_ok = number >= 0 if zero_ok else number > 0
    if not math.isfinite(number) or not low_ok:
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {number}; a rate of NaN, infinity or "
                         "below zero makes training diverge: use a finite value such as the paper's")
    return number


def probability(name: str, value) -> float:
    """``value`` as a ``float``, if it lies in [0, 1]."""
    number = _real(name, value)
    if not 0.0 <= number <= 1.0:  # NaN fails both comparisons
        raise ValueError(f"{name} is a probability and must lie in [0, 1], got {number}")
    return number


def choice(name: str, value, options) -> str:
    """``value``, if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")
    return value


def _kind(dtype: torch.dtype) -> str:
    return "floating" if dtype.is_floating_point else "integer" if not dtype.is_complex and dtype != torch.bool else str(dtype)


def tensor(name: str, value, dtype: torch.dtype | str | None = None, dim: int | None = None,
           shape: str = "") -> torch.Tensor:
    """``value``, if it is a ``torch.Tensor`` of ``dtype`` with ``dim`` dimensions.

    ``dtype``: a ``torch.dtype``, ``"floating"`` or ``"integer"`` (any width),
    or ``None`` (any). ``shape``: the expected shape in words, e.g.
    ``"[N, C, H, W]"``, for the error. A NumPy array is refused with the call
    that converts it: torch functions do not take arrays, and silently
    converting would hide a copy (and a float64 default) from the user.
    """
    expected = " ".join(part for part in (str(dtype).replace("torch.", "") if dtype else "", shape) if part)
    if not isinstance(value, torch.Tensor):
        if type(value).__module__ == "numpy":
            raise TypeError(f"{name} is a NumPy array ({getattr(value, 'dtype', '?')} "
                            f"{tuple(getattr(value, 'shape', ()))}); pass a torch tensor: torch.from_numpy({name})"
                            + (f", expected {expected}" if expected else ""))
        raise TypeError(f"{name} must be a torch.Tensor{' ' + expected if expected else ''}, got {type(value).__name__}")
    wrong_dtype = (dtype is not None and (
        _kind(value.dtype) != dtype if isinstance(dtype, str) else value.dtype != dtype))
    if wrong_dtype or (dim is not None and value.dim() != dim):
        raise ValueError(f"{name} must be {expected or f'{dim}-dimensional'}, got "
                         f"{str(value.dtype).replace('torch.', '')} of shape {tuple(value.shape)}")
    return value


def task_tensors(tasks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(support_x, support_y, query_x, query_y)`` of a batch of tasks, each checked to be a tensor.

    ``tasks``: any object with those four attributes, task dimension first
    (a :class:`metabook_learn.data.tasks.TaskBatch`, a ``SinusoidTasks``). The inputs must
    be floating point; the targets integer labels or floating-point values.
    """
    names = ("support_x", "support_y", "query_x", "query_y")
    missing = [name for name in names if not hasattr(tasks, name)]
    if missing:
        raise TypeError(f"tasks must have {', '.join(names)} (a TaskBatch from a sampler's sample(T)); "
                        f"{type(tasks).__name__} has no {', '.join(missing)}")
    values = [tensor(f"tasks.{name}", getattr(tasks, name)) for name in names]
    for name, value in zip(names, values):
        if name.endswith("_x") and not value.is_floating_point():
            raise ValueError(f"tasks.{name} must be floating point (images scaled to [0, 1]), got {value.dtype}; "
                             f"convert it with tasks.{name}.float() / 255")
    support_x, support_y, query_x, query_y = values
    if any(v.dim() < 2 for v in values) or len({v.shape[0] for v in values}) != 1 or (
            support_x.shape[:2] != support_y.shape[:2] or query_x.shape[:2] != query_y.shape[:2]):
        raise ValueError("tasks must hold [tasks, examples, ...] tensors with one target per example and the same "
                         f"number of tasks in each, got support_x {tuple(support_x.shape)}, support_y "
                         f"{tuple(support_y.shape)}, query_x {tuple(query_x.shape)}, query_y {tuple(query_y.shape)}")
    devices = {str(v.device) for v in values}
    if len(devices) != 1:
        raise ValueError(f"the task tensors lie on several devices ({', '.join(sorted(devices))}); "
                         "move them together with tasks.to(device)")
    return tuple(values)


def head_outputs(model: nn.Module) -> int | None:
    """The number of outputs of ``model.head`` when it is an ``nn.Linear``, else ``None``."""
    head = getattr(model, "head", None)
    return head.out_features if isinstance(head, nn.Linear) else None


def network(model: nn.Module, head_only: bool = False, ways: int | None = None) -> nn.Module:
    """``model``, if the inner loop can adapt it.

    Refuses batch norm that keeps running statistics: the inner loop would
    update them at every step of every task (mixing tasks, and changing the
    model during evaluation), and ``torch.func`` cannot mutate them at all.
    ``head_only`` (ANIL) needs parameters named ``head.…``; ``ways``: the
    classes per task, which must not exceed the head's outputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            raise ValueError(
                f"{f'module {name!r}' if name else 'the model'} is an nn.{type(module).__name__} with running "
                "statistics, which the inner "
                "loop would update at every step of every task; use metabook_learn.models.TaskBatchNorm2d (per-task "
                f"statistics, as MAML's code) or nn.{type(module).__name__}(channels, track_running_stats=False)")
    if head_only and not any(name.startswith("head.") for name, _ in model.named_parameters()):
        raise ValueError(f"head_only (ANIL) adapts the parameters named 'head.…', and {type(model).__name__} has "
                         "none; name the last layer self.head (as metabook_learn.models does), or set head_only=False")
    outputs = head_outputs(model)
    if ways is not None and outputs is not None and ways > outputs:
        raise ValueError(f"the tasks have {ways} ways, but {type(model).__name__}'s head has only {outputs} "
                         f"outputs; build the network with {ways} classes or sample {outputs}-way tasks")
    return model


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first tensor that holds a NaN or an infinity, or ``None`` when all are finite.

    One reduction and one device synchronization when every value is finite
    (the largest magnitude over all tensors: it cannot overflow, and a NaN
    anywhere makes it NaN); the culprit is looked for only when one is bad.
    """
    present = [t.detach() for t in tensors.values() if t is not None and t.numel()]
    if not present or bool(torch.stack([t.abs().amax().float() for t in present]).amax().isfinite()):
        return None
    return next(name for name, t in tensors.items()
                if t is not None and t.numel() and not bool(t.detach().isfinite().all()))


def finite_parameters(model: nn.Module, what: str = "the model") -> None:
    """Raise ``ValueError`` naming the first parameter of ``model`` that holds a NaN or an infinity."""
    bad = non_finite(dict(model.named_parameters()))
    if bad is not None:
        raise ValueError(f"{what} has non-finite weights ({bad} holds NaN or infinity): its training diverged; "
                         "retrain with a smaller learning rate, or use an earlier checkpoint")
