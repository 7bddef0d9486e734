"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017): classify by distance to class means.

An embedding network f_φ maps every image of an episode to a vector. Each
class's **prototype** is the mean embedding of its support examples, and a
query is classified by a softmax over its negative squared Euclidean
distances to the prototypes (the paper's equations 1 and 2)::

    c_k = 1/|S_k| Σ_{x_i ∈ S_k} f_φ(x_i)
    p(y = k | x) = exp(−‖f_φ(x) − c_k‖²) / Σ_k' exp(−‖f_φ(x) − c_k'‖²)

Meta-training minimises the cross-entropy of the query labels, episode after
episode; nothing is fine-tuned at test time. :class:`PrototypicalNetwork` is
an episodic learner (:mod:`metabook_learn.episodic`), trained with
``metabook_learn.training.train(TrainConfig(algorithm="protonet", ...), ...)`` and
scored with ``metabook_learn.evaluation.evaluate(model, sampler, None)``.

**The number of ways.** The model is told how many classes an episode has
(``ways``), because under ``torch.func.vmap`` it cannot read the labels to
count them. Snell et al. trained Omniglot with 60-way episodes and tested 5-
and 20-way ones; :meth:`PrototypicalNetwork.at_ways` gives the same network
(shared parameters) for another number of ways. Labels outside ``0..ways-1``,
or a class without support examples, raise a clear error wherever the labels
can be read (a plain call, the ``"loop"`` strategy); under vmap the check
cannot run.

**Batch norm.** ``ConvNet`` normalizes with the statistics of the batch it is
given (:mod:`metabook_learn.models`), so how an episode's images are batched
matters (``query_bn``):

* ``"transductive"`` (default): support and query images are embedded in one
  batch, as the authors' code does in training (``protonets/models/
  few_shot.py`` concatenates ``xs`` and ``xq`` before the encoder). Every
  embedding, prototypes included, then depends on the whole episode.
* ``"inductive"``: the same batch, but statistics from the support images
  only (``stats_rows``); the prototypes depend on the support set alone and
  each query is embedded on its own.

Neither is exactly the authors' test-time setting, where ``model.eval()``
makes PyTorch's batch norm use running averages collected in training;
metabook's networks keep no running averages.

**The embedding.** :func:`omniglot_embedding` builds MAML's Omniglot body
(strided convolutions, ``downsample="stride"``), the default here so that
ProtoNets and MAML are compared on the same network; ``downsample="maxpool"``
gives Snell et al.'s own encoder (four blocks of 64-filter 3x3 convolution,
batch norm, ReLU and 2x2 max-pooling: 28 -> 14 -> 7 -> 3 -> 1, a
64-dimensional embedding).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metabook_learn.episodic import check_query_bn, embed_episode, episodic_image_classifier
from metabook_learn.methods import Preset, register
from metabook_learn.models import ConvNet, embedding_network

__all__ = [
    "prototypes",
    "check_labels",
    "squared_distances",
    "prototype_logits",
    "PrototypicalNetwork",
    "omniglot_embedding",
    "one_shot_classifier",
]


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Each class's mean embedding (eq. 1): ``embeddings [S, D]``, ``labels [S]`` -> ``[ways, D]``.

    Written as a matrix product with a one-hot matrix, which runs under
    ``torch.func.vmap`` (no boolean masks, no ``F.one_hot``) and works for
    any number of shots per class.
    """
    onehot = (labels[:, None] == torch.arange(ways, device=labels.device)).to(embeddings.dtype)  # [S, N]
    return onehot.T @ embeddings / onehot.sum(0)[:, None]  # sum of each class's embeddings / its count


def squared_distances(queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``‖q_i − c_k‖²`` for every pair: ``queries [Q, D]``, ``centres [N, D]`` -> ``[Q, N]``.

    Computed from the differences, not as ``‖q‖² − 2 q·c + ‖c‖²``: the
    expansion is cheaper but can come out slightly negative by cancellation.
    """
    return (queries[:, None, :] - centres[None, :, :]).pow(2).sum(-1)


def prototype_logits(query_embeddings: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Logits ``−‖f(x) − c_k‖²``, ``[Q, N]``: their softmax is eq. 2."""
    return -squared_distances(query_embeddings, centres)


def _labels_are_readable(labels: torch.Tensor) -> bool:
    """False under ``torch.func.vmap``, where a tensor's values cannot be read in Python.

    The test is a private torch function (there is no public one); should a
    torch release drop it, the checks are skipped rather than the model broken.
    """
    is_batched = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    return is_batched is not None and not is_batched(labels)


def check_labels(support_y: torch.Tensor, query_y: torch.Tensor | None, ways: int) -> None:
    """Raise a ``ValueError`` that names the problem if an episode's labels do not fit a ``ways``-way classifier.

    ``support_y`` ``[S]``, ``query_y`` ``[Q]`` or ``None``: labels in 0..ways − 1,
    every class with a support example (else it has no prototype).
    """
    if support_y.dim() != 1:
        raise ValueError(f"support_y must be a vector of labels [S], got shape {tuple(support_y.shape)}")
    if support_y.shape[0] < ways:
        raise ValueError(f"the support set has {support_y.shape[0]} examples for ways={ways} classes: every class "
                         "needs at least one; sample tasks with as many ways as the model has, or use "
                         "model.at_ways(n)")
    for name, labels in (("support_y", support_y), ("query_y", query_y)):
        if labels is None or labels.is_floating_point() or not _labels_are_readable(labels):
            continue
        if labels.numel() and (labels.min() < 0 or labels.max() >= ways):
            raise ValueError(f"{name} holds labels {int(labels.min())}..{int(labels.max())}, but the model "
                             f"classifies ways={ways} classes (labels 0..{ways - 1}); evaluate at another "
                             "number of ways with model.at_ways(n)")
    if _labels_are_readable(support_y):
        missing = sorted(set(range(ways)) - set(support_y.tolist()))
        if missing:
            raise ValueError(f"classes {missing} have no support examples, so they have no prototype")


class PrototypicalNetwork(nn.Module):
    """An episodic learner: embed, average each class's support embeddings, classify by distance.

    ``embedding``: any network ``[B, ...] -> [B, D]``; with
    ``query_bn="inductive"`` it must accept ``stats_rows`` as ``ConvNet``
    does. ``ways``: classes per episode (labels ``0..ways-1``).
    ``query_bn``: ``"transductive"`` or ``"inductive"`` (module docstring).

    ``forward(support_x [S, ...], support_y [S], query_x [Q, ...], query_y [Q])``
    returns ``(cross-entropy of the query set, logits [Q, ways])``.
    """

    episodic = True

    def __init__(self, embedding: nn.Module, ways: int, query_bn: str = "transductive"):
        super().__init__()
        if isinstance(ways, bool) or not isinstance(ways, int) or ways < 1:
            raise ValueError(f"ways must be a positive int, got {ways!r}")
        self.embedding = embedding
        self.ways = ways
        self.query_bn = check_query_bn(embedding, query_bn)

    def embed(self, support_x: torch.Tensor, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(support embeddings [S, D], query embeddings [Q, D])``, one batch through the network."""
        num_support = support_x.shape[0]
        z = embed_episode(self.embedding, torch.cat([support_x, query_x]), num_support, self.query_bn)
        return z[:num_support], z[num_support:]

    def logits(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
               query_y: torch.Tensor | None = None) -> torch.Tensor:
        """``[Q, ways]``: ``−‖f(x_q) − c_k‖²`` for every query and class (``query_y`` only for the label check)."""
        check_labels(support_y, query_y, self.ways)
        support_z, query_z = self.embed(support_x, query_x)
        return prototype_logits(query_z, prototypes(support_z, support_y, self.ways))

    def forward(self, support_x, support_y, query_x, query_y):
        logits = self.logits(support_x, support_y, query_x, query_y)
        return F.cross_entropy(logits, query_y), logits

    def at_ways(self, ways: int) -> "PrototypicalNetwork":
        """The same network for ``ways``-way episodes: the embedding (and its parameters) is shared."""
        return PrototypicalNetwork(self.embedding, ways, self.query_bn)

    def extra_repr(self) -> str:
        return f"ways={self.ways}, query_bn={self.query_bn!r}"


def omniglot_embedding(filters: int = 64, downsample: str = "stride") -> ConvNet:
    """An embedding network for 28x28 Omniglot: ``[B, 1, 28, 28] -> [B, filters]``.

    ``"stride"``: MAML's Omniglot body (strided convolutions, features
    averaged over the last 2x2 map). ``"maxpool"``: Snell et al.'s encoder
    (2x2 max-pooling after each block; the last map is 1x1).
    """
    return ConvNet(None, in_channels=1, filters=filters, downsample=downsample, image_size=28)


def one_shot_classifier(model: PrototypicalNetwork, image_size: int = 28) -> Callable:
    """A classifier for :func:`~metabook_learn.data.omniglot_runs.score_one_shot` (Lake et al.'s 20-way runs).

    Each of a run's training images (``uint8 [N, 1, S, S]``, strokes 255 on 0,
    as ``load_omniglot`` gives them) is the one support example, hence the
    prototype, of its class; each test image goes to the nearest prototype.
    ``image_size``: the side the network was trained on; runs loaded at
    another size are refused rather than silently embedded.
    """
    device = next(model.parameters()).device

    def classify(training: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        for name, images in (("training", training), ("test", test)):
            if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (1, image_size, image_size):
                raise ValueError(f"{name} images are {images.dtype} {tuple(images.shape)}; the network was trained "
                                 f"on uint8 [n, 1, {image_size}, {image_size}] images: load the runs with "
                                 f"load_omniglot_runs(image_size={image_size})")
        ways = training.shape[0]
        # The same scaling as the episode sampler: strokes 1.0 on 0.0.
        support_x, query_x = (images.to(device).float() / 255 for images in (training, test))
        with torch.no_grad():
            logits = model.at_ways(ways).logits(support_x, torch.arange(ways, device=device), query_x)
        return logits.argmax(1).cpu()

    return classify


# ── Prototypical Networks as a metabook method (metabook_learn.methods) ────────────


def build_protonet(config, ways: int) -> PrototypicalNetwork:
    """MAML's conv body for ``config.dataset`` (without its head) as the embedding, for ``ways``-way episodes."""
    return PrototypicalNetwork(embedding_network(config.dataset), ways, query_bn=config.query_bn)


_SOURCE = ("Prototypical Networks (Snell et al., 2017), Sec. 3.1-3.2: Adam lr 1e-3, halved every 2,000 episodes; "
           "one episode per step and 5-way validation as in jakesnell/prototypical-networks; the paper stops on "
           "validation loss, the steps are the book's")
# The authors' code runs Omniglot only (its repository holds mini-ImageNet's splits but no loader).
_OMNIGLOT_SOURCE = (_SOURCE + "; scripts/train/few_shot/run_train.py: --data.way 60, --data.query 5, "
                    "--train.learning_rate 0.001, --train.decay_every 20 epochs of 100 episodes, --data.test_way 5; "
                    "its validation episodes have 15 queries per class (--data.test_query), here --queries serves "
                    "training and validation")
_MINI_IMAGENET_SOURCE = (_SOURCE + "; Sec. 3.2: 30-way training episodes for 1-shot, 20-way for 5-shot, 15 queries "
                         "per class (the authors' code has no mini-ImageNet loader)")
PRESETS = {
    ("omniglot", ""): Preset(
        dict(train_ways=60, queries=5, meta_batch=1, meta_lr=1e-3, meta_lr_halving_every=2_000, steps=20_000),
        _OMNIGLOT_SOURCE),
    ("mini-imagenet", ""): Preset(
        dict(train_ways=30, queries=15, meta_batch=1, meta_lr=1e-3, meta_lr_halving_every=2_000, steps=20_000),
        _MINI_IMAGENET_SOURCE),
    ("cifar-fs", ""): Preset(
        dict(train_ways=30, queries=15, meta_batch=1, meta_lr=1e-3, meta_lr_halving_every=2_000, steps=20_000),
        "ProtoNets' mini-ImageNet values (the paper has no CIFAR-FS experiment)"),
}


def adjust_preset(values: dict, data: str, ways: int, shots: int, train_shots: int | None) -> dict:
    """ProtoNets train 30-way for 1-shot and 20-way for 5-shot on mini-ImageNet (Sec. 3.2)."""
    if data != "omniglot" and shots >= 5:
        values["train_ways"] = 20
    return values


PROTONET = register(episodic_image_classifier(
    "protonet", "Prototypical Networks (Snell et al., 2017): classify by distance to each class's mean embedding",
    build_protonet, presets=PRESETS, adjust_preset=adjust_preset,
    preset_notes="ProtoNets on mini-ImageNet and CIFAR-FS: --train-ways 20 for 5-shot.",
), origin=__name__)
