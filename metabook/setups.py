"""The network and the task samplers of each data set, by name: what the command line and the shipped models build.

:func:`build_model` makes ``config.algorithm``'s network for ``config.dataset``
(MAML's convolutional network, its body as the embedding of an episodic
classifier, MAML's sine-wave MLP, a neural process), and
:func:`make_sampler` the tasks of one split of that data set. Both read
only a :class:`metabook.training.TrainConfig`, so a checkpoint's
configuration rebuilds exactly the network and the tasks it was trained on.
"""
from __future__ import annotations

import torch

from metabook.training import GRADIENT_ALGORITHMS, TrainConfig

__all__ = ["CONVNETS", "build_model", "make_sampler"]

# MAML's networks for each image data set (metabook.models): omniglot_convnet, miniimagenet_convnet,
# and the latter on CIFAR-FS's 32x32 images (32 -> 16 -> 8 -> 4 -> 2: 32 * 2 * 2 features).
CONVNETS = {
    "omniglot": dict(in_channels=1, filters=64, downsample="stride", image_size=28),
    "mini-imagenet": dict(in_channels=3, filters=32, downsample="maxpool", image_size=84),
    "cifar-fs": dict(in_channels=3, filters=32, downsample="maxpool", image_size=32),
}


def build_model(config: TrainConfig, ways: int) -> torch.nn.Module:
    """``config.algorithm``'s network for its data set and ``ways``-way tasks (initialized from the global generator).

    Gradient-based algorithms: MAML's network with ``ways`` outputs (sinusoids: its
    1-40-40-1 MLP). ProtoNets, R2-D2, LR-D2: MAML's conv body without its head
    as the embedding, and the defaults of :mod:`metabook.protonets` and
    :mod:`metabook.r2d2` (λ learned from 1, α from 10; LR-D2: 5 Newton steps).
    Neural processes: the defaults of :mod:`metabook.neural_processes`.
    """
    from metabook.models import ConvNet, sinusoid_mlp
    from metabook.neural_processes import ConditionalNeuralProcess, NeuralProcess
    from metabook.protonets import PrototypicalNetwork
    from metabook.r2d2 import LRD2, R2D2

    if config.algorithm == "cnp":
        return ConditionalNeuralProcess()
    if config.algorithm == "np":
        return NeuralProcess()
    if config.dataset == "sinusoid":
        return sinusoid_mlp()
    if config.algorithm in GRADIENT_ALGORITHMS:
        return ConvNet(ways, **CONVNETS[config.dataset])
    embedding = ConvNet(None, **CONVNETS[config.dataset])
    learner = {"protonet": PrototypicalNetwork, "r2d2": R2D2, "lrd2": LRD2}[config.algorithm]
    return learner(embedding, ways, query_bn=config.query_bn)


def _load_split(data: str, split: str, cache, mirror):
    from metabook.data import load_cifar_fs, load_mini_imagenet, load_omniglot

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
    from metabook.data import NWayKShotSampler, SinusoidSampler
    from metabook.neural_processes import VaryingContextSampler

    shots = config.support_shots if training else config.shots
    if config.dataset == "sinusoid":
        # Sine waves have no classes to split: each split is its own random stream instead, so
        # that test tasks are never the training tasks drawn with the same seed.
        seed += _SINUSOID_SEED_OFFSETS[split]
        if training and config.algorithm in ("cnp", "np"):
            return VaryingContextSampler(shots, config.queries, min_context=0, seed=seed)
        return SinusoidSampler(shots, config.queries, seed)
    images = _load_split(config.dataset, split, cache, mirror).to(device)
    return NWayKShotSampler(images, config.training_ways if training else config.ways, shots, config.queries, seed)
