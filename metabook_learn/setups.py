"""The network and the task samplers of each data set, by name: what the command line and the shipped models build.

:func:`build_model` makes ``config.algorithm``'s network for ``config.dataset``
(the method's ``build``, :mod:`metabook_learn.methods`: MAML's convolutional network,
its body as the embedding of an episodic classifier, MAML's sine-wave MLP, a
neural process), and
:func:`make_sampler` the tasks of one split of that data set. Both read
only a :class:`metabook_learn.training.TrainConfig`, so a checkpoint's
configuration rebuilds exactly the network and the tasks it was trained on.
"""
from __future__ import annotations

import torch

from metabook_learn.methods import get as get_method
from metabook_learn.models import CONVNETS  # noqa: F401 (re-exported: it lived here)
from metabook_learn.training import TrainConfig

__all__ = ["CONVNETS", "build_model", "make_sampler"]


def build_model(config: TrainConfig, ways: int) -> torch.nn.Module:
    """``config.algorithm``'s network for its data set and ``ways``-way tasks (initialized from the global generator).

    The method's ``build`` (:class:`metabook_learn.methods.Method`). Gradient-based
    algorithms: MAML's network with ``ways`` outputs (sinusoids: its
    1-40-40-1 MLP). ProtoNets, R2-D2, LR-D2: MAML's conv body without its head
    as the embedding, and the defaults of :mod:`metabook_learn.protonets` and
    :mod:`metabook_learn.r2d2` (λ learned from 1, α from 10; LR-D2: 5 Newton steps).
    Neural processes: the defaults of :mod:`metabook_learn.neural_processes`.
    """
    method = get_method(config.algorithm)
    if method.build is None:
        raise ValueError(f"{config.algorithm} has no network of its own to build: build one and pass it to "
                         "metabook_learn.train")
    return method.build(config, ways)


def _load_split(data: str, split: str, cache, mirror):
    from metabook_learn.data import load_cifar_fs, load_mini_imagenet, load_omniglot

    if data == "omniglot":
        return load_omniglot(split, cache=cache, mirror=mirror)
    if data == "mini-imagenet":
        return load_mini_imagenet(split, cache=cache, mirror=mirror)
    return load_cifar_fs(split, cache=cache, mirror=mirror)


_SINUSOID_SEED_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def make_sampler(config: TrainConfig, split: str, seed: int, device, cache=None, mirror=None, training: bool = False):
    """A sampler of ``config``'s tasks from one split (``"train"``, ``"val"`` or ``"test"``), on ``device``.

    ``training``: the training tasks (``train_ways``, ``train_shots``; for a
    neural process, a context of 0 to ``train_shots`` points, drawn anew for
    every batch) rather than the validation and test tasks (``ways``, ``shots``).
    """
    from metabook_learn.data import NWayKShotSampler, ShuffledOrder, SinusoidSampler
    from metabook_learn.neural_processes import VaryingContextSampler

    shots = config.support_shots if training else config.shots
    if config.dataset == "sinusoid":
        # Sine waves have no classes to split: each split is its own random stream instead, so
        # that test tasks are never the training tasks drawn with the same seed.
        seed += _SINUSOID_SEED_OFFSETS[split]
        if training and get_method(config.algorithm).varying_context:
            return VaryingContextSampler(shots, config.queries, min_context=0, seed=seed)
        return SinusoidSampler(shots, config.queries, seed)
    images = _load_split(config.dataset, split, cache, mirror).to(device)
    sampler = NWayKShotSampler(images, config.training_ways if training else config.ways, shots, config.queries, seed)
    # A sequence model would read a label off its position in NWayKShotSampler's class-by-class order.
    return ShuffledOrder(sampler, seed) if get_method(config.algorithm).shuffled_support else sampler
