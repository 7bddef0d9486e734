"""What a meta-learning method is to metabook: a :class:`Method`, a few plain functions, and a registry of them.

Training, evaluation and the command line never name an algorithm. They look
the method up by name (:func:`get`) and call what it holds:

=====================  ====================================================================
field                  what training, evaluation and the command line use it for
=====================  ====================================================================
``name``               ``TrainConfig.algorithm``, ``--algorithm``; recorded in checkpoints
``description``        one line, for ``--help`` and tables
``build``              ``build(config, ways) -> nn.Module``: the network for the data set
``step``               ``step(config, model, params, lrs, tasks) -> Step``: one meta-batch's
                       update direction (used as a gradient) and its metrics
``outputs``            ``outputs(model, params, tasks, inner, lrs, strategy)``
                       ``-> (query outputs [T, Q, ...], mean query loss)``: evaluation
``optimizer``          ``optimizer(config, params, lrs) -> torch.optim.Optimizer``
                       (``None``: Adam of rate ``meta_lr`` over θ and Meta-SGD's α)
``carried_state``      ``carried_state(config, params) -> dict | None``: what its ``step``
                       keeps from one meta-batch to the next (Reptile: its inner Adam's
                       moments); training passes it as ``step(..., carried=state)``,
                       where ``step`` updates it, and checkpoints it (``None``: nothing)
``learning_rate``      ``learning_rate(config, step) -> float``, the outer rate at a step
                       (``None``: ``meta_lr``, halved every ``meta_lr_halving_every``)
``check``              ``check(config)``: raise ``ValueError`` for settings it cannot run
``implies``            the ``TrainConfig`` flags its name stands for (fomaml: first_order)
``episodic``           its network's forward is an episode (:mod:`metabook_learn.episodic`)
``any_ways``           its weights serve any number of ways (``train_ways``)
``shuffled_support``   it reads a support set in order, so image tasks come shuffled
                       (:class:`~metabook_learn.data.samplers.ShuffledOrder`)
``domains``            it trains on batches of source domains (:mod:`metabook_learn.mldg`)
``data_sets``          the data sets it learns from the command line, and ``data_hint``
``unused_fields``      the ``TrainConfig`` settings it has no use for, and why
``presets``            its papers' settings per data set, each with its source
=====================  ====================================================================

A method is one file: the module that writes its mathematics ends by
describing it as a ``Method`` and calling :func:`register`. The package's
methods register when the registry is first read; a method from elsewhere
registers when its module is imported, through :func:`load` (``"module:attr"``
or ``"path/to/file.py:attr"``, what ``python -m metabook_learn train --method``
takes), or through an entry point of the group ``metabook_learn.methods``. The page
"Add your own method" of the book writes ProtoMAML this way.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from metabook_learn.inner_loop import InnerLoop, Params, adapt

if TYPE_CHECKING:  # only for annotations: the configuration lives on the training floor, above the methods
    from metabook_learn.training import TrainConfig

__all__ = [
    "Method",
    "Step",
    "Preset",
    "LOSSES",
    "inner_loop",
    "adapted_outputs",
    "FEW_SHOT_DATA_SETS",
    "DEFAULT_ALGORITHM",
    "register",
    "get",
    "names",
    "all_methods",
    "load",
    "origin",
    "ENTRY_POINT_GROUP",
]

LOSSES = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}
ENTRY_POINT_GROUP = "metabook_learn.methods"
DEFAULT_ALGORITHM = "maml"  # TrainConfig's default, and the command line's
FEW_SHOT_DATA_SETS = ("omniglot", "sinusoid", "mini-imagenet", "cifar-fs")  # what the command line trains on
# The package's own methods: each of these modules registers its methods when imported, in this order.
PACKAGE_METHOD_MODULES = ("metabook_learn.maml", "metabook_learn.reptile", "metabook_learn.protonets", "metabook_learn.r2d2",
                          "metabook_learn.neural_processes", "metabook_learn.mldg", "metabook_learn.in_context",
                          "metabook_learn.protomaml")


class Step(NamedTuple):
    """One meta-step's result, as a method's ``step`` returns it.

    ``direction``: name -> tensor of each parameter's shape, stored as θ's
    gradient before the outer optimizer steps. ``lr_grads``: the same for
    Meta-SGD's rates α (``None`` without them). ``loss``, ``accuracy``: scalar
    tensors for the learning curve, or ``None`` where the method has none
    (Reptile uses no query set; regression has no accuracy).
    """

    direction: Params
    lr_grads: Params | None
    loss: torch.Tensor | None
    accuracy: torch.Tensor | None


class Preset(NamedTuple):
    """A paper's settings for one data set: ``values`` (``TrainConfig`` fields) and ``source`` (where they come from)."""

    values: Mapping
    source: str


def inner_loop(config: TrainConfig, evaluation: bool = False) -> InnerLoop:
    """The inner loop of training (``inner_steps``) or of validation and test (``eval_inner_steps``)."""
    return InnerLoop(
        steps=config.eval_inner_steps if evaluation else config.inner_steps,
        lr=config.inner_lr,
        first_order=config.first_order,
        head_only=config.head_only,
        loss=LOSSES[config.loss],
        query_bn=config.query_bn,
        optimizer=config.inner_optimizer,
        batch_size=config.eval_inner_batch_size if evaluation else config.inner_batch_size,
    )


def adapted_outputs(model: nn.Module, params: Params, tasks, inner: InnerLoop, lrs: Params | None,
                    strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation by fine-tuning: ``(query outputs [T, Q, ...], mean query loss)`` after ``inner``'s steps."""
    adaptation = adapt(model, params, tasks, inner, lrs, strategy)
    return adaptation.query_outputs, adaptation.query_loss


def _no_check(config: TrainConfig) -> None:
    """A method with no settings of its own to check."""


@dataclass(frozen=True)
class Method:
    """A meta-learning method: what training, evaluation and the command line need of it (module docstring).

    Only ``name``, ``description``, ``build`` and ``step`` are required; the
    rest default to a gradient-based method that trains with Adam on any
    data set. ``build`` may be ``None`` for a method whose network the user
    builds (MLDG's chapter builds its own).
    """

    name: str
    description: str
    build: Callable[[TrainConfig, int], nn.Module] | None
    step: Callable[..., Step]
    outputs: Callable[..., tuple[torch.Tensor, torch.Tensor]] = adapted_outputs
    optimizer: Callable[[TrainConfig, Params, Params | None], torch.optim.Optimizer] | None = None
    learning_rate: Callable[[TrainConfig, int], float] | None = None
    carried_state: Callable[[TrainConfig, Params], dict | None] | None = None
    check: Callable[[TrainConfig], None] = _no_check
    implies: tuple[str, ...] = ()
    episodic: bool = False
    any_ways: bool = False
    shuffled_support: bool = False
    domains: bool = False
    varying_context: bool = False
    data_sets: tuple[str, ...] = FEW_SHOT_DATA_SETS
    data_hint: str = ""
    unused_fields: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    presets: Mapping[tuple[str, str], Preset] = field(default_factory=dict)
    adjust_preset: Callable[[dict, str, int, int, int | None], dict] | None = None
    preset_notes: str = ""

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str) or ":" in self.name or "/" in self.name:
            raise ValueError(f"a method's name is a plain word (it names checkpoints and files), got {self.name!r}")
        if not callable(self.step):
            raise TypeError(f"method {self.name!r}: step must be a function (config, model, params, lrs, tasks) "
                            "-> Step")

    def __repr__(self) -> str:
        return f"Method({self.name!r}: {self.description})"

    def preset(self, data: str, ways: int, shots: int, train_shots: int | None = None) -> Preset:
        """This method's paper settings for ``data`` and an N-way K-shot problem, and their source.

        A preset keyed ``(data, "20-way")`` or ``(data, "5-way")`` is chosen by
        ``ways``; else the one keyed ``(data, "")``. None: no values, and a
        source that says so.
        """
        setting = "20-way" if ways >= 20 else "5-way"
        chosen = self.presets.get((data, setting)) or self.presets.get((data, ""))
        if chosen is None:
            return Preset({}, f"TrainConfig's defaults ({self.name} has no preset for {data})")
        values = dict(chosen.values)
        if self.adjust_preset is not None:
            values = self.adjust_preset(values, data, ways, shots, train_shots)
        return Preset(values, chosen.source)


# ── The registry ─────────────────────────────────────────────────────────────

_REGISTRY: dict[str, Method] = {}
_ORIGINS: dict[str, str] = {}  # name -> what load() imports to register it again (a module, or "file.py:attr")
_LOADED_PACKAGE = False


def register(method: Method, origin: str | None = None) -> Method:
    """Add ``method`` under its name; returns it, so a module can write ``M = register(Method(...))``.

    ``origin``: what imports it again (``"package.module"``, ``"module:attr"``,
    ``"path/file.py:attr"``); by default the module that defines its ``step``.
    Registering the same name again is allowed only from the same origin (a
    module imported twice); another method under a taken name is refused.
    """
    if not isinstance(method, Method):
        raise TypeError(f"register takes a metabook_learn.methods.Method, got {type(method).__name__}")
    known = _REGISTRY.get(method.name)
    if known is not None and known is not method and _same_code(known) != _same_code(method):
        raise ValueError(f"a method named {method.name!r} is already registered (from {_ORIGINS[method.name]}); "
                         "give yours another name")
    _REGISTRY[method.name] = method
    if origin is not None or method.name not in _ORIGINS:
        _ORIGINS[method.name] = origin or method.step.__module__
    return method


def _same_code(method: Method) -> tuple[str, str]:
    return method.step.__module__, method.step.__qualname__


def _load_package_methods() -> None:
    global _LOADED_PACKAGE
    if _LOADED_PACKAGE:
        return
    _LOADED_PACKAGE = True
    for module in PACKAGE_METHOD_MODULES:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    # The package's methods first, in PACKAGE_METHOD_MODULES' order, whichever module was imported first.
    rank = {module: i for i, module in enumerate(PACKAGE_METHOD_MODULES)}
    ordered = sorted(_REGISTRY.items(), key=lambda item: rank.get(_ORIGINS[item[0]], len(rank)))
    _REGISTRY.clear()
    _REGISTRY.update(ordered)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        register(entry.load(), origin=entry.value)


def names(**having) -> tuple[str, ...]:
    """Every registered method's name, in registration order; ``having``: only those whose fields equal these.

    ``names(episodic=True)``: the episodic learners' names.
    """
    _load_package_methods()
    return tuple(name for name, method in _REGISTRY.items()
                 if all(getattr(method, key) == value for key, value in having.items()))


def all_methods() -> tuple[Method, ...]:
    """Every registered method, in registration order."""
    return tuple(get(name) for name in names())


def get(name: str | Method) -> Method:
    """The method registered as ``name`` (a ``Method`` is returned as it is). Unknown: ``ValueError`` naming the known ones."""
    if isinstance(name, Method):
        return name
    _load_package_methods()
    if name not in _REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(_REGISTRY)} "
                         "(or load your own with metabook_learn.methods.load('module:attribute'))")
    return _REGISTRY[name]


def origin(name: str) -> str:
    """What :func:`load` imports to register the method ``name`` again: recorded in checkpoints."""
    get(name)
    return _ORIGINS[name]


def load(spec: str) -> Method:
    """Import a method from ``"module:attr"``, ``"path/to/file.py:attr"``, or a module that registers one.

    The attribute must be a :class:`Method`; it is registered (with ``spec``
    as its origin) and returned. ``"module"`` or ``"file.py"`` alone imports
    it and returns the one method it registered. Raises ``ValueError`` with
    what was wrong.
    """
    _load_package_methods()
    where, _, attribute = spec.partition(":")
    try:
        module = _import(where)
    except (ImportError, OSError) as error:
        raise ValueError(f"cannot import the method {spec!r}: {error}; give 'module:attribute' or "
                         "'path/to/file.py:attribute'") from None
    if attribute:
        method = getattr(module, attribute, None)
        if not isinstance(method, Method):
            raise ValueError(f"{spec!r}: {where} has no metabook_learn.methods.Method called {attribute!r}")
        return register(method, origin=spec)
    found = list({id(m): m for m in vars(module).values() if isinstance(m, Method)}.values())
    if len(found) != 1:
        raise ValueError(f"{where} defines {len(found)} methods; name one with {where}:ATTRIBUTE")
    return register(found[0], origin=spec)


def _import(where: str):
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise ImportError(f"no file {where}")
        name = "metabook_method_" + "".join(c if c.isalnum() else "_" for c in str(path))
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    return importlib.import_module(where)
