"""Trained models shipped with metabook: the full-scale runs of ``results/``, loaded by name.

    from metabook_learn import pretrained

    pretrained.available()                        # ('maml-omniglot-5w1s', ...)
    shipped = pretrained.load("maml-omniglot-5w1s")
    shipped.model                                 # the network, trained, on the CPU, in eval mode
    shipped.config                                # the TrainConfig it was trained with
    shipped.results                               # its test score, protocol and provenance, as recorded
    test = pretrained.evaluate("maml-omniglot-5w1s")  # re-score it on the recorded test tasks

Each model is two files in ``metabook_learn/pretrained/``: ``NAME.pt``, a state dict
of tensors with the configuration (a few hundred KB: float32 weights, no
optimizer state), and its entry in ``index.json``: the file's SHA-256, the
results file and run it comes from, its test score with the exact protocol
(split, seed, tasks, ways, shots, queries, batch-norm mode, inner steps)
and the provenance of the run (hardware, torch, commit, wall time, seed).

A domain-generalization model (ERM or MLDG on Rotated MNIST) is scored on its
held-out domain instead, as it is (``protocol``: ``{"held_out": angle}``): its
file names its network (``network``: a name in ``NETWORKS`` and its
arguments), since no few-shot method builds it, and :func:`evaluate` returns
one "task" per held-out digit, scored 1 or 0.

Loading checks the SHA-256 first and then reads the file with
``torch.load(weights_only=True)``, which unpickles tensors and plain values
only, never code: a corrupted, truncated or replaced file gives one
:class:`ValueError` naming it, and nothing of it runs.
``scripts/ship_model.py`` makes the two files from a full-scale checkpoint.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from metabook_learn.checkpoint import load_weights
from metabook_learn.data.rotated_mnist import prepare_rotated_mnist
from metabook_learn.episodic import is_episodic
from metabook_learn.evaluation import Evaluation, confidence_interval, evaluate as evaluate_model
from metabook_learn.inner_loop import InnerLoop, Params
from metabook_learn.mldg import domain_logits
from metabook_learn.models import DigitConvNet
from metabook_learn.setups import build_model, make_sampler
from metabook_learn.training import TrainConfig, inner_loop

__all__ = ["FOLDER", "FORMAT", "NETWORKS", "Shipped", "available", "load", "evaluate", "file_digest", "rebuild"]

FOLDER = Path(__file__).resolve().parent / "pretrained"
FORMAT = "metabook-pretrained-1"
# The networks a shipped file may name (domain-generalization models, which no few-shot method builds): a fixed
# list, so that a file chooses among known classes and never names code of its own.
NETWORKS = {"DigitConvNet": DigitConvNet}


@dataclass
class Shipped:
    """A shipped model. ``model``: the trained network (an ``nn.Module`` on the CPU, eval mode).
    ``config``: its :class:`~metabook_learn.training.TrainConfig`. ``lrs``: Meta-SGD's learned rates, else ``None``.
    ``results``: its ``index.json`` entry (``test``: the recorded score and ``protocol``; ``provenance``; ...).
    ``eval_inner``: the inner loop it is tested with (``None`` for an episodic learner)."""

    name: str
    model: nn.Module
    config: TrainConfig
    lrs: Params | None
    results: dict
    eval_inner: InnerLoop | None


def _index() -> dict:
    path = FOLDER / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def available() -> tuple[str, ...]:
    """The names of the shipped models, sorted."""
    return tuple(sorted(_index()))


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load(name: str) -> Shipped:
    """The shipped model ``name`` (see :func:`available`), checked against its SHA-256 before it is read."""
    index = _index()
    if name not in index:
        raise ValueError(f"no shipped model named {name!r}; available: {', '.join(sorted(index)) or 'none'}")
    entry = index[name]
    path = FOLDER / entry["file"]
    if not path.is_file():
        raise ValueError(f"the weights of {name!r} are missing ({path}); reinstall metabook, or restore the file "
                         "from the repository (git checkout -- metabook_learn/pretrained)")
    if file_digest(path) != entry["sha256"]:
        raise ValueError(f"{path} does not match its SHA-256 in index.json: the file is corrupted or was "
                         "replaced; it was not loaded. Restore it from the repository (git checkout -- "
                         "metabook_learn/pretrained)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values, never code
    except Exception as error:
        raise ValueError(f"{path} could not be read as tensors ({type(error).__name__}); it was not loaded") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a shipped metabook model (expected format {FORMAT!r})")
    config, model = rebuild(state, str(path))
    return Shipped(name, model, config, state["lrs"], entry, None if state.get("network") is not None
                   or is_episodic(model) else inner_loop(config, evaluation=True))


def rebuild(state: dict, source: str) -> tuple[TrainConfig, nn.Module]:
    """The configuration and the trained network (CPU, eval mode) of a shipped file's contents ``state``.

    ``source`` names the file in errors. ``scripts/ship_model.py`` calls it before
    it writes anything, so that only weights this function rebuilds are shipped.
    """
    config = TrainConfig(**{**state["config"], "device": "cpu"})
    network = state.get("network")
    if network is not None:  # a domain-generalization model: its file names its network
        arguments = dict(network)
        build = NETWORKS.get(arguments.pop("name", None))
        if build is None:
            raise ValueError(f"{source} names the network {network.get('name')!r}, not one of "
                             f"{', '.join(NETWORKS)}; it was not loaded")
        model = build(**arguments)
    else:
        model = build_model(config, config.ways)
    load_weights(model, state["model"], source)
    return config, model.eval()


def evaluate(name: str, num_tasks: int | None = None, queries: int | None = None, query_bn: str | None = None,
             seed: int | None = None, cache=None, mirror=None, progress: bool = False) -> Evaluation:
    """Score the shipped model ``name`` on test tasks, by its recorded protocol unless told otherwise.

    ``num_tasks``, ``queries``, ``query_bn``, ``seed`` (of the test-task sampler):
    change the recorded protocol (for a comparison under one common protocol).
    With none of them the result equals the recorded ``results["test"]``, on any
    CPU with the same thread count.
    ``cache``, ``mirror``: where the data set is (``$METABOOK_DATA``, ``$METABOOK_MIRROR`` by default).
    """
    shipped = load(name)
    protocol = shipped.results["test"]["protocol"]
    if "held_out" in protocol:
        return _score_held_out_domain(shipped, num_tasks, queries, query_bn, seed, cache, mirror)
    recorded_bn = shipped.config.query_bn if protocol["query_bn"] == "none" else protocol["query_bn"]
    changes = {"queries": queries or protocol["queries"], "query_bn": query_bn or recorded_bn,
               "ways": protocol["ways"], "shots": protocol["shots"]}
    config = replace(shipped.config, **changes)
    model = shipped.model
    if hasattr(model, "query_bn") and query_bn is not None:
        model.query_bn = query_bn
    if hasattr(model, "ways"):
        model.ways = config.ways
    sampler = make_sampler(config, protocol["split"], protocol["seed"] if seed is None else seed, "cpu", cache, mirror)
    inner = None if shipped.eval_inner is None else inner_loop(config, evaluation=True)
    return evaluate_model(model, sampler, inner, num_tasks or protocol["num_tasks"], shipped.lrs,
                          tasks_per_batch=protocol["tasks_per_batch"], strategy="loop", progress=progress)


def _score_held_out_domain(shipped: Shipped, num_examples, queries, query_bn, seed, cache, mirror) -> Evaluation:
    """A domain-generalization model on its held-out domain, as it is: one "task" per digit (``num_examples``: the
    first that many; ``None``: all), scored 1 or 0, the interval as ``scripts/full_scale_mldg.py`` records it."""
    if queries is not None or query_bn is not None or seed is not None:
        raise ValueError(f"{shipped.name} classifies each held-out digit on its own: it has no query sets, batch "
                         "norm or task sampler to change; call evaluate(name) or evaluate(name, num_tasks=N)")
    angle = shipped.results["test"]["protocol"]["held_out"]
    images, labels = prepare_rotated_mnist(cache=cache, mirror=mirror).domain(angle)
    images, labels = images[:num_examples], labels[:num_examples]
    logits = domain_logits(shipped.model, images)
    scores = (logits.argmax(-1) == labels).double()
    mean, ci95, std = confidence_interval(scores)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    return Evaluation(metric="accuracy", mean=mean, ci95=ci95, std=std, num_tasks=len(labels), query_loss=loss,
                      query_bn="none", inner_steps=0, inner_lr=0.0, tasks_per_batch=len(labels), per_task=scores)
