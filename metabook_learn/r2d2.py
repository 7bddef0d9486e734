"""R2-D2 and LR-D2: a linear head fitted in closed form inside every episode (Bertinetto et al., ICLR 2019).

MAML adapts a network to a task with gradient steps. R2-D2 ("ridge
regression differentiable discriminator") adapts only a linear head, and
fits it *exactly*: the support set's embeddings ``X [S, D]`` and one-hot
labels ``Y [S, N]`` give the ridge-regression weights

    W = argmin ‖X W − Y‖² + λ ‖W‖² = (XᵀX + λ I_D)⁻¹ Xᵀ Y        (primal: a D×D system)
                                   = Xᵀ (X Xᵀ + λ I_S)⁻¹ Y        (dual, by the Woodbury identity: S×S)

and the query logits are ``α · X_query W + β``. In a few-shot episode there
are far fewer support examples than features (5-way 1-shot: S = 5 against
65 features here, MAML's 64 and a constant; several thousand in the paper),
so the dual system is tiny;
:func:`ridge_solution` picks whichever of the two systems is smaller. The
solve is an ordinary differentiable operation: its backward pass is one more
solve with the same matrix, so the cross-entropy on the query set trains the
embedding network *through* the fitted head.

What is learned besides the embedding network: the output scale α and bias
β (the paper calibrates the regression outputs for the cross-entropy with
them) and the regulariser λ, all three meta-parameters of the base learner
in the paper. λ is kept positive by learning ``log λ`` (the authors' code
offers the same as ``λ = base ** l``; its released configuration keeps λ
fixed at 50, which ``learn_lambda=False`` reproduces).

Details taken from the authors' code (github.com/bertinetto/r2d2,
``fewshots/models/r2d2.py``): a column of ones is appended to the features,
so the head has a bias, regularised like the weights; support features and
targets are divided by √S before the solve, so λ weighs against the *mean*
squared error and one λ serves every number of shots; the dual form is used
whenever S ≤ D + 1.

LR-D2 replaces ridge regression by L2-regularised logistic regression,
fitted by a few Newton (IRLS) steps, each one a weighted ridge regression in
the same dual form (:func:`logistic_newton`). As in the authors' code, an
N-way episode runs N one-vs-rest binary regressions, whose scores are the
logits of an N-way cross-entropy, with no extra scale or bias.

Batch norm: the embedding network normalises with batch statistics
(:class:`metabook_learn.models.TaskBatchNorm2d`), so how an episode's images are
batched matters. Both modes embed ``cat[support, query]`` in one pass, as the
authors' code does (and :mod:`metabook_learn.protonets`): ``query_bn="transductive"``
normalises with the statistics of the whole episode, ``"inductive"`` with
those of the support rows only (``stats_rows``), so that the head depends on
the support set alone and no query example influences another.

Every function here runs under ``torch.func.vmap``: the choice of form
depends only on shapes, and labels become one-hot by comparison with
``arange(ways)`` (no ``.item()``), which is why ``ways`` is an attribute.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metabook_learn.episodic import check_query_bn, embed_episode, episodic_image_classifier
from metabook_learn.methods import Method, Preset, register
from metabook_learn.models import embedding_network

__all__ = [
    "ridge_primal",
    "ridge_dual",
    "ridge_solution",
    "uses_dual",
    "logistic_newton",
    "one_hot",
    "R2D2",
    "LRD2",
    "R2D2_METHOD",
    "LRD2_METHOD",
]


# ── Ridge regression, two ways ───────────────────────────────────────────────


def ridge_primal(X: torch.Tensor, Y: torch.Tensor, lam) -> torch.Tensor:
    """``W = (XᵀX + λ I_D)⁻¹ XᵀY``: the normal equations of ridge regression, a D×D system.

    ``X``: ``[S, D]``, ``Y``: ``[S, N]``, ``lam``: a positive number or 0-dim tensor -> ``W [D, N]``.
    """
    eye = torch.eye(X.shape[-1], dtype=X.dtype, device=X.device)
    return torch.linalg.solve(X.mT @ X + lam * eye, X.mT @ Y)


def ridge_dual(X: torch.Tensor, Y: torch.Tensor, lam) -> torch.Tensor:
    """``W = Xᵀ (X Xᵀ + λ I_S)⁻¹ Y``: the same weights through an S×S system (Woodbury identity).

    ``X``: ``[S, D]``, ``Y``: ``[S, N]`` -> ``W [D, N]``. Equal to
    :func:`ridge_primal` for every λ > 0, because
    ``Xᵀ (X Xᵀ + λI) = (XᵀX + λI) Xᵀ``.
    """
    eye = torch.eye(X.shape[-2], dtype=X.dtype, device=X.device)
    return X.mT @ torch.linalg.solve(X @ X.mT + lam * eye, Y)


def uses_dual(num_examples: int, num_features: int) -> bool:
    """Whether :func:`ridge_solution` solves the S×S (dual) system: when it is not larger than the D×D one."""
    return num_examples <= num_features


def ridge_solution(X: torch.Tensor, Y: torch.Tensor, lam) -> torch.Tensor:
    """Ridge-regression weights ``W [D, N]`` for ``X [S, D]``, ``Y [S, N]``, by the smaller of the two systems.

    The choice depends on shapes only, so it is the same for every task of a
    batch and works under ``torch.func.vmap``.
    """
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"ridge_solution needs X [S, D] and Y [S, N] with the same S, got "
                         f"{tuple(X.shape)} and {tuple(Y.shape)}")
    if uses_dual(*X.shape):
        return ridge_dual(X, Y, lam)
    return ridge_primal(X, Y, lam)


# ── Logistic regression by Newton's method (IRLS), in the dual form ──────────


def logistic_newton(X: torch.Tensor, Y: torch.Tensor, lam, steps: int) -> torch.Tensor:
    """``steps`` Newton steps from ``W = 0`` on L2-regularised logistic regression, every column at once.

    Minimises, for each column ``y`` of ``Y [S, N]`` (0/1 targets),
    ``Σ_i BCE(x_i·w, y_i) + (λ/2)‖w‖²``. A Newton step is a weighted ridge
    regression on the working response ``z = η + (y − μ)/s``, with
    ``η = Xw``, ``μ = σ(η)``, ``s = μ(1 − μ)``:

        w ← (XᵀSX + λI)⁻¹ XᵀS z = Xᵀ (XXᵀ + λS⁻¹)⁻¹ z,   S = diag(s).

    Written as ``w = Xᵀa`` with ``(S XXᵀ + λI) a = s·η + y − μ`` (both sides
    of the dual system multiplied by S), which never divides by a small
    ``s``. ``X``: ``[S, D]`` -> ``W [D, N]``.
    """
    if steps < 1:
        raise ValueError(f"logistic_newton needs at least one Newton step, got steps={steps}")
    gram = X @ X.mT  # [S, S], shared by every column and every step
    eye = torch.eye(X.shape[-2], dtype=X.dtype, device=X.device)
    W = X.new_zeros(X.shape[-1], Y.shape[-1])
    for _ in range(steps):
        eta = X @ W  # [S, N]
        mu = torch.sigmoid(eta)
        s = mu * (1 - mu)
        # One S×S system per column: (diag(s_n) XXᵀ + λI) a_n = s_n·η_n + y_n − μ_n, batched over n.
        A = s.mT[:, :, None] * gram + lam * eye  # [N, S, S]
        a = torch.linalg.solve(A, (s * eta + Y - mu).mT[:, :, None])[:, :, 0]  # [N, S]
        W = X.mT @ a.mT
    return W


# ── The episodic learners ────────────────────────────────────────────────────


def one_hot(labels: torch.Tensor, ways: int, dtype: torch.dtype) -> torch.Tensor:
    """``[S]`` labels in 0..ways−1 -> ``[S, ways]`` one-hot, without ``.item()`` (so it runs under vmap)."""
    return (labels[:, None] == torch.arange(ways, device=labels.device)).to(dtype)


def _with_ones(features: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` -> ``[B, D + 1]``: a constant feature, so the linear head has a bias.

    Also at least float32: under bfloat16 autocast (``TrainConfig(bf16=True)``)
    the network's features arrive in bfloat16, too coarse for a linear solve.
    """
    features = features.to(torch.promote_types(features.dtype, torch.float32))
    return torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)


def _no_autocast(tensor: torch.Tensor):
    """A context in which the head's products and solves stay in the precision of their inputs."""
    return torch.autocast(tensor.device.type, enabled=False)


class _ClosedFormHead(nn.Module):
    """What R2-D2 and LR-D2 share: the embedding network, ``ways``, λ and the batch-norm mode."""

    episodic = True

    def __init__(self, embedding: nn.Module, ways: int, lam: float, learn_lambda: bool, query_bn: str):
        super().__init__()
        if ways < 2:
            raise ValueError(f"ways must be at least 2, got {ways}")
        if lam <= 0:
            raise ValueError(f"the regulariser lam must be positive, got {lam}")
        self.embedding = embedding
        self.ways = ways
        self.query_bn = check_query_bn(embedding, query_bn)
        log_lam = torch.tensor(math.log(lam))
        if learn_lambda:
            self.log_lam = nn.Parameter(log_lam)
        else:
            self.register_buffer("log_lam", log_lam)

    @property
    def lam(self) -> torch.Tensor:
        """λ = exp(log λ): positive whatever the optimizer does to log λ."""
        return self.log_lam.exp()

    def embed(self, support_x: torch.Tensor, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query features ``[S, D]``, ``[Q, D]``, from one pass over the episode's images."""
        num_support = support_x.shape[0]
        features = embed_episode(self.embedding, torch.cat([support_x, query_x]), num_support, self.query_bn)
        return features[:num_support], features[num_support:]


class R2D2(_ClosedFormHead):
    """R2-D2: an embedding network with a ridge-regression head solved in closed form in every episode.

    ``embedding``: ``[B, C, H, W]`` -> ``[B, D]``, e.g. ``ConvNet(None, ...)``;
    with ``query_bn="inductive"`` it must accept ``stats_rows``. ``ways``: N,
    the classes of every episode (labels 0..N−1); a plain attribute, so
    ``model.ways = 20`` runs the same weights on 20-way episodes. ``lam``: the initial λ;
    ``learn_lambda=False`` keeps it fixed. ``scale``, ``bias``: initial α, β
    (the authors' code starts α at 10 on Omniglot and CIFAR-FS, β at 0).

    ``forward(support_x [S, ...], support_y [S], query_x [Q, ...], query_y [Q])``
    -> ``(cross-entropy on the query set, logits [Q, N])``.
    """

    def __init__(self, embedding: nn.Module, ways: int, lam: float = 1.0, scale: float = 10.0, bias: float = 0.0,
                 learn_lambda: bool = True, query_bn: str = "transductive"):
        super().__init__(embedding, ways, lam, learn_lambda, query_bn)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def head(self, support_features: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """The fitted head ``W [D + 1, N]`` (last row: the bias) for features ``[S, D]`` and labels ``[S]``."""
        X = _with_ones(support_features)
        Y = one_hot(support_y, self.ways, X.dtype)
        # As in the authors' code: divide by √S, so λ weighs against the mean squared error.
        root = math.sqrt(X.shape[0])
        return ridge_solution(X / root, Y / root, self.lam)

    def forward(self, support_x, support_y, query_x, query_y):
        support_features, query_features = self.embed(support_x, query_x)
        with _no_autocast(support_features):
            W = self.head(support_features, support_y)
            logits = self.scale * (_with_ones(query_features) @ W) + self.bias  # ŷ = α X' W + β
        return F.cross_entropy(logits, query_y), logits


class LRD2(_ClosedFormHead):
    """LR-D2: the same, with one-vs-rest logistic regressions fitted by ``steps`` Newton steps.

    Class n's scores come from a binary logistic regression of "class n"
    against the rest on the support set (:func:`logistic_newton`, from zero
    weights); the N scores of a query example are its logits. ``lam``: the
    initial λ (the authors' code: 1 for 2-way episodes, 50 for the runs trained 10-way and tested
    5-way, with 1 or 5 Newton steps, ``scripts/train/experiments.sh``).
    """

    def __init__(self, embedding: nn.Module, ways: int, lam: float = 1.0, steps: int = 5,
                 learn_lambda: bool = True, query_bn: str = "transductive"):
        super().__init__(embedding, ways, lam, learn_lambda, query_bn)
        if steps < 1:
            raise ValueError(f"LR-D2 needs at least one Newton step, got steps={steps}")
        self.steps = steps

    def head(self, support_features: torch.Tensor, support_y: torch.Tensor) -> torch.Tensor:
        """The N one-vs-rest weight vectors ``W [D + 1, N]`` (last row: the bias)."""
        X = _with_ones(support_features)
        return logistic_newton(X, one_hot(support_y, self.ways, X.dtype), self.lam, self.steps)

    def forward(self, support_x, support_y, query_x, query_y):
        support_features, query_features = self.embed(support_x, query_x)
        with _no_autocast(support_features):
            logits = _with_ones(query_features) @ self.head(support_features, support_y)
        return F.cross_entropy(logits, query_y), logits


# ── R2-D2 and LR-D2 as metabook methods (metabook_learn.methods) ───────────────────


def build_r2d2(config, ways: int) -> R2D2:
    """MAML's conv body for ``config.dataset`` as the embedding; λ learned from 1, α from 10.

    The authors' scripts (bertinetto/r2d2) keep λ fixed at 50 and start α at 10 (Omniglot, CIFAR-FS) or
    1e-4 (mini-ImageNet), on their wider network (fewshots/models/load_model.py: 96, 192, 384, 512 filters).
    """
    return R2D2(embedding_network(config.dataset), ways, query_bn=config.query_bn)


def build_lrd2(config, ways: int) -> LRD2:
    """MAML's conv body for ``config.dataset`` as the embedding; λ learned from 1; 5 Newton steps."""
    return LRD2(embedding_network(config.dataset), ways, query_bn=config.query_bn)


_SOURCE = ("the R2-D2 authors' scripts (Bertinetto et al., 2019; bertinetto/r2d2, scripts/train/experiments.sh and "
           "conf/fewshots.yaml): Adam lr 5e-3, halved every 2,000 episodes (train.lr_decay 0.5 every 20 epochs of "
           "100 episodes); one episode per step; their training shots, drawn from 1 to 9 (data.shot_min 1, "
           "data.shot_max 10), are fixed here; they stop on validation, the steps are the book's")
R2D2_PRESETS = {
    ("omniglot", ""): Preset(
        dict(train_ways=60, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=20_000), _SOURCE),
    ("mini-imagenet", ""): Preset(
        dict(train_ways=16, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _SOURCE),
    ("cifar-fs", ""): Preset(
        dict(train_ways=20, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _SOURCE),
}
LRD2_PRESETS = {
    ("omniglot", ""): Preset(
        dict(train_ways=10, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=20_000),
        "LR-D2's mini-ImageNet values (the authors' scripts have no LR-D2 Omniglot run); " + _SOURCE),
    ("mini-imagenet", ""): Preset(
        dict(train_ways=10, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _SOURCE),
    ("cifar-fs", ""): Preset(
        dict(train_ways=10, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _SOURCE),
}
# Images per class in a training episode of the authors' scripts (--data.batch_size / --data.way).
EPISODE_IMAGES = {"r2d2": {"omniglot": 10, "mini-imagenet": 15, "cifar-fs": 12},
                  "lrd2": {"omniglot": 20, "mini-imagenet": 20, "cifar-fs": 20}}


def _queries_left(name: str):
    def adjust_preset(values: dict, data: str, ways: int, shots: int, train_shots: int | None) -> dict:
        """The queries are what the training shots leave of the authors' images per class in an episode."""
        values["queries"] = max(EPISODE_IMAGES[name][data] - (train_shots or shots), 1)
        return values

    return adjust_preset


def _method(name: str, description: str, build, presets) -> Method:
    images = ", ".join(f"{data} {n}" for data, n in EPISODE_IMAGES[name].items())
    return episodic_image_classifier(
        name, description, build, presets=presets, adjust_preset=_queries_left(name),
        preset_notes=f"{name}: --queries is what the training shots leave of the authors' images per class in an "
                     f"episode ({images}).",
    )


R2D2_METHOD = register(_method(
    "r2d2", "R2-D2 (Bertinetto et al., 2019): a ridge-regression head solved in closed form in every episode",
    build_r2d2, R2D2_PRESETS), origin=__name__)
LRD2_METHOD = register(_method(
    "lrd2", "LR-D2 (Bertinetto et al., 2019): one-vs-rest logistic regression heads fitted by Newton steps",
    build_lrd2, LRD2_PRESETS), origin=__name__)
