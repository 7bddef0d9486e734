"""Black-box meta-learning: a transformer that learns a task from the examples in its input.

MAML adapts with gradient steps, a prototypical network averages embeddings,
a neural process pools a context set. A *black-box* (or model-based)
meta-learner makes no such assumption: a sequence model reads a task's
examples as its input and predicts the query's label, and meta-training is
ordinary training on many such sequences (Santoro et al., 2016; Mishra et al.,
2018; Duan et al., 2016). In a transformer this is *in-context learning*
(Brown et al., 2020; Garg et al., 2022).

**The sequence.** Each example is one token that carries the input and its
label side by side (the "concatenated" layout of von Oswald et al., 2023;
Garg et al. interleave separate x and y tokens instead)::

    context token i:   e_i = [x_i, y_i, 1]          i = 1 … C
    query token:       e_q = [x_q, 0,   0]          (its label is zeroed; the last entry says "no label")

The concatenated layout keeps each label in the token of its own input, so
the model needs no positional encoding to pair them, and without positional
encodings nothing but the mask below tells the model where a token is.
``y`` is the target ``[y_dim]`` for regression and a one-hot vector
``[ways]`` for classification (SNAIL's way of reading labels); images are
first embedded by a convolutional network.

**The mask.** Attention is causal over the context: context token i attends
to tokens 1 … i. Every query token attends to all C context tokens and to
itself, never to another query, so each query is predicted independently of
the others. To learn from every context size at once (Garg et al. train on
every prefix of a sequence), the sequence can also hold a *prefix query* for
each context example: a token ``[x_i, 0, 0]`` that attends to context tokens
1 … i−1 and itself and so predicts y_i from the i−1 examples before it::

    L = C (context) + C (prefix queries) + Q (queries) tokens
    allowed[a, b] = b ≤ a                      a, b context tokens
                  = b < i  or  b = a            a the prefix query of example i, b a context token
                  = True   or  b = a            a a query, b a context token

Because the context is causal, prefix query i computes *exactly* what a
query would compute with the first i−1 examples as the whole context: one
pass gives the error at every context size k = 0 … C−1, and C for the
queries. The loss is the mean over all of these predictions.

**The layer** (pre-norm, as in GPT-2, which Garg et al. use)::

    h ← h + Attention(LN(h)),   Attention = softmax(Q Kᵀ / √d_head + mask) V,  per head
    h ← h + MLP(LN(h))           MLP = W₂ GELU(W₁ ·), 4× wide
    prediction = W_out LN(h)     at the query (and prefix-query) tokens

**Linear self-attention and one step of gradient descent** (von Oswald et
al., 2023). Without the softmax, a layer on tokens ``e_i = [x_i, y_i]`` adds
to the query token::

    e_q ← e_q + Σ_{i=1}^{C} (W_V e_i) (W_K e_i)ᵀ (W_Q e_q)

With ``W_K = W_Q = [[I, 0], [0, 0]]`` (they read x) and ``W_V`` that maps
``e_i`` to ``[0, η y_i]``, the label entry of the query becomes
``η Σ_i y_i x_iᵀ x_q``, which is the prediction ``w₁ᵀ x_q`` after one
gradient step from ``w₀ = 0`` with rate η on ``½ Σ_i (wᵀ x_i − y_i)²``
(its gradient at 0 is ``−Σ_i y_i x_i``). :func:`gradient_step_attention`
builds these weights.

**Baselines for in-context linear regression**, ``xs [T, k, d]``,
``ys [T, k, 1]``, ``xq [T, Q, d]`` → predictions ``[T, Q, 1]``:
:func:`least_squares` (minimum norm), :func:`ridge` (the posterior mean for a
N(0, τ² I) prior and noise σ² when λ = σ²/τ²), :func:`gradient_descent`,
:func:`nearest_neighbours`; :class:`LinearRegressionSampler` draws the tasks.

Both models are episodic learners (:mod:`metabook_learn.episodic`):
``forward(support_x, support_y, query_x, query_y)`` returns
``(loss, query predictions)``; they also accept a batch of tasks (leading
dimension T) directly (``reads_task_batches``), so that
:func:`metabook_learn.training.train` (``algorithm="transformer"``, on any
sampler here: :class:`LinearRegressionSampler` too) runs a meta-batch in one
call: Adam on the mean loss over the batch of sequences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metabook_learn import validation
from metabook_learn.episodic import (NO_INNER_LOOP, check_episodic_config, check_query_bn, embed_episode,
                                     episodic_outputs, episodic_step)
from metabook_learn.data.samplers import ShuffledOrder
from metabook_learn.methods import Method, Preset, register
from metabook_learn.models import IMAGE_DATA_SETS, embedding_network

__all__ = [
    "attention_mask",
    "InContextTransformer",
    "LinearSelfAttention",
    "LinearAttentionRegressor",
    "gradient_step_attention",
    "best_step_size",
    "LinearTasks",
    "LinearRegressionSampler",
    "least_squares",
    "ridge",
    "gradient_descent",
    "nearest_neighbours",
    "regression_baselines",
    "errors_by_context_size",
    "ShuffledOrder",
    "TRANSFORMER",
]


# ── The mask ─────────────────────────────────────────────────────────────────


def attention_mask(num_context: int, num_queries: int, prefixes: bool, device=None) -> torch.Tensor:
    """Which token may attend to which: ``allowed [L, L]`` (bool), ``L = C + (C if prefixes) + Q``.

    Rows are the attending tokens, columns the attended ones, in the order
    context, prefix queries, queries (module docstring). Every row allows
    at least the token itself, so no softmax row is empty.
    """
    c, p = num_context, num_context if prefixes else 0
    length = c + p + num_queries
    row = torch.arange(length, device=device)[:, None]
    col = torch.arange(length, device=device)[None, :]
    is_context_col = col < c
    context_rows = (row < c) & (col <= row)                                   # causal over the context
    prefix_rows = (row >= c) & (row < c + p) & is_context_col & (col < row - c)  # examples before example row−c
    query_rows = (row >= c + p) & is_context_col                               # the whole context
    return context_rows | prefix_rows | query_rows | (row == col)


# ── The transformer ──────────────────────────────────────────────────────────


class SelfAttention(nn.Module):
    """Multi-head softmax attention under a mask: ``h [..., L, W]``, ``allowed [L, L]`` → ``[..., L, W]``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        *batch, length, width = h.shape
        q, k, v = self.qkv(h).view(*batch, length, 3, self.heads, width // self.heads).unbind(-3)  # [..., L, H, D]
        scores = torch.einsum("...ahd,...bhd->...hab", q, k) / math.sqrt(width // self.heads)       # [..., H, L, L]
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        return self.out(torch.einsum("...hab,...bhd->...ahd", weights, v).reshape(*batch, length, width))


class Block(nn.Module):
    """One pre-norm transformer layer: h + Attention(LN(h)), then h + MLP(LN(h))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(self.norm1(h), allowed)
        return h + self.mlp(self.norm2(h))


class InContextTransformer(nn.Module):
    """A causal transformer that reads ``(x₁, y₁, …, x_C, y_C, x_q)`` and predicts ``y_q`` (an episodic learner).

    Regression (``ways=None``): inputs ``[..., x_dim]``, targets ``[..., y_dim]``,
    predictions ``[..., y_dim]``, mean squared error. Classification
    (``ways=N``): labels ``[...]`` in ``0 … N−1`` are read as one-hot vectors
    and the outputs are logits ``[..., N]``, cross-entropy. ``embedding``: a
    network that maps one task's images ``[n, C, H, W]`` to features
    ``[n, x_dim]`` (e.g. :func:`metabook_learn.protonets.omniglot_embedding`); the
    support and query images of a task are embedded in one batch. Train a
    classifier on support sets in random order (:class:`~metabook_learn.data.samplers.ShuffledOrder`):
    ``NWayKShotSampler`` lists them label by label, and the causal model
    would learn to read a label off its position.

    ``prefix_loss``: also predict every context example from the ones before
    it, and average the loss over those predictions too (Garg et al.'s
    objective over all prefixes). The returned predictions are the queries'
    only, so :func:`metabook_learn.evaluation.evaluate` scores unseen points.
    Defaults are small (width 64, 4 layers, 4 heads); Garg et al. use a GPT-2
    of width 256, 12 layers, 8 heads. ``query_bn``: how an embedding with batch
    norm normalizes an episode, ``"transductive"`` (the statistics of all its
    images, as the book's runs train and test) or ``"inductive"`` (those of
    the support images only; the embedding must accept ``stats_rows``).
    """

    episodic = True

    def __init__(self, x_dim: int, y_dim: int = 1, ways: int | None = None, width: int = 64, depth: int = 4,
                 heads: int = 4, embedding: nn.Module | None = None, prefix_loss: bool = True,
                 query_bn: str = "transductive"):
        super().__init__()
        self.query_bn = check_query_bn(embedding, query_bn)
        validation.count("x_dim", x_dim)
        validation.count("depth", depth)
        self.ways = None if ways is None else validation.count("ways", ways, minimum=2)
        self.label_dim = y_dim if ways is None else ways
        self.embedding = embedding
        self.prefix_loss = prefix_loss
        self.read_in = nn.Linear(x_dim + self.label_dim + 1, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, self.label_dim)

    @property
    def reads_task_batches(self) -> bool:
        """Whether training calls the model once on a whole meta-batch (:mod:`metabook_learn.episodic`).

        ``forward`` takes ``[T, ...]`` either way and returns the mean loss over
        the tasks. Measured on 2 busy CPU cores
        (``benchmarks/results/in_context_step_cpu.txt``): one call is 3-5x faster
        than the per-task loop on the chapter's sequences of vectors, but half as
        fast on images, which it embeds with ``vmap`` task by task (batch norm
        must see one task): those go through the loop.
        """
        return self.embedding is None

    def features(self, x: torch.Tensor, num_support: int) -> torch.Tensor:
        """The inputs as vectors: ``x`` itself, or the embedding of images ``[..., n, C, H, W]`` → ``[..., n, F]``,
        each task's ``n`` images (its ``num_support`` support images first) in one batch (``query_bn``)."""
        if self.embedding is None:
            return x

        def embed(images):
            return embed_episode(self.embedding, images, num_support, self.query_bn)

        if x.dim() == 5:  # a batch of tasks: embed each task on its own (batch norm sees one task)
            return torch.func.vmap(embed)(x)
        return embed(x)

    def encode_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Targets as they enter a token: ``y [..., C, y_dim]`` itself, or labels ``[..., C]`` one-hot ``[..., C, N]``."""
        if self.ways is None:
            return y
        # A comparison rather than F.one_hot, so that it runs under torch.func.vmap.
        return (y[..., None] == torch.arange(self.ways, device=y.device)).to(torch.get_default_dtype())

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                prefixes: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(prefix predictions [..., C, out] or None, query predictions [..., Q, out])``.

        ``support_x [..., C, x_dim]`` (or images), ``support_y`` targets or
        labels, ``query_x [..., Q, x_dim]``. Prefix prediction i uses the
        examples before i only.
        """
        num_context, num_queries = support_x.shape[-1 - self._x_rank()], query_x.shape[-1 - self._x_rank()]
        features = self.features(torch.cat([support_x, query_x], dim=-1 - self._x_rank()), num_context)
        context_x, query_features = features[..., :num_context, :], features[..., num_context:, :]
        labels = self.encode_labels(support_y).to(context_x.dtype)
        ones = torch.ones_like(context_x[..., :1])
        context = torch.cat([context_x, labels, ones], dim=-1)                          # e_i = [x_i, y_i, 1]
        unlabelled = [query_features]
        if prefixes:
            unlabelled.insert(0, context_x)
        unlabelled = torch.cat(unlabelled, dim=-2)
        blank = torch.zeros(*unlabelled.shape[:-1], self.label_dim + 1, dtype=unlabelled.dtype,
                            device=unlabelled.device)
        tokens = torch.cat([context, torch.cat([unlabelled, blank], dim=-1)], dim=-2)  # [..., L, x_dim + out + 1]
        allowed = attention_mask(num_context, num_queries, prefixes, tokens.device)
        h = self.read_in(tokens)
        for block in self.blocks:
            h = block(h, allowed)
        outputs = self.read_out(self.norm(h[..., num_context:, :]))                    # the unlabelled tokens
        if prefixes:
            return outputs[..., :num_context, :], outputs[..., num_context:, :]
        return None, outputs

    def _x_rank(self) -> int:
        """How many trailing dimensions one input has: 1 for vectors, 3 for images."""
        return 1 if self.embedding is None else 3

    def loss(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error (regression) or cross-entropy (classification), averaged over every prediction."""
        if self.ways is None:
            return F.mse_loss(predictions, targets)
        return F.cross_entropy(predictions.reshape(-1, self.ways), targets.reshape(-1))

    def forward(self, support_x, support_y, query_x, query_y):
        """One episode (or a batch of them): ``(loss, query predictions [..., Q, out])``."""
        prefix_outputs, query_outputs = self.predict(support_x, support_y, query_x, prefixes=self.prefix_loss)
        if prefix_outputs is None:
            return self.loss(query_outputs, query_y), query_outputs
        predictions = torch.cat([prefix_outputs, query_outputs], dim=-2)
        return self.loss(predictions, torch.cat([support_y, query_y], dim=-1 if self.ways else -2)), query_outputs


# ── Linear self-attention: one layer as one gradient step ────────────────────


class LinearSelfAttention(nn.Module):
    """``e_q ← e_q + Σ_i (W_V e_i)(W_K e_i)ᵀ(W_Q e_q)``, i over the context tokens (no softmax, no mask needed).

    ``context [..., C, D]``, ``queries [..., Q, D]`` → ``[..., Q, D]``. The
    sum over the context makes every output invariant to the order of the
    context. von Oswald et al. also have a projection ``P`` after the sum;
    it is folded into ``W_V`` here.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.key = nn.Linear(dim, dim, bias=False)
        self.query = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)

    def forward(self, context: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        keys, values = self.key(context), self.value(context)      # [..., C, D]
        scores = self.query(queries) @ keys.transpose(-1, -2)      # (W_K e_i)ᵀ (W_Q e_q): [..., Q, C]
        return queries + scores @ values


class LinearAttentionRegressor(nn.Module):
    """One :class:`LinearSelfAttention` layer on tokens ``[x, y]`` that reads the prediction from the query's y entry.

    Tokens: context ``[x_i, y_i]``, query ``[x_q, 0]``; prediction = the
    last entry of the query's output. An episodic learner for regression with
    ``y_dim = 1``: ``forward`` returns ``(mean squared error, predictions [..., Q, 1])``.
    """

    episodic = True
    reads_task_batches = True

    def __init__(self, x_dim: int):
        super().__init__()
        self.attention = LinearSelfAttention(validation.count("x_dim", x_dim) + 1)

    def predict(self, support_x, support_y, query_x) -> torch.Tensor:
        context = torch.cat([support_x, support_y], dim=-1)
        queries = torch.cat([query_x, torch.zeros_like(query_x[..., :1])], dim=-1)
        return self.attention(context, queries)[..., -1:]

    def forward(self, support_x, support_y, query_x, query_y):
        predictions = self.predict(support_x, support_y, query_x)
        return F.mse_loss(predictions, query_y), predictions


def gradient_step_attention(x_dim: int, lr: float, dtype=torch.float64) -> LinearAttentionRegressor:
    """One GD step from w = 0 with rate ``lr`` as a linear attention layer: von Oswald et al.'s construction, simplified.

    Their Proposition 1 updates every token (context labels become residuals, so
    K layers stack into K steps); this layer writes only to the query, which is
    all one step needs.

    ``W_K = W_Q = [[I_d, 0], [0, 0]]`` (keys and queries are the inputs x),
    ``W_V = [[0, 0], [0, lr]]`` (the value of token i is ``[0, lr·y_i]``), so
    the query's y entry becomes ``lr Σ_i y_i x_iᵀ x_q = w₁ᵀ x_q`` with
    ``w₁ = 0 − lr ∇_w ½Σ_i (wᵀx_i − y_i)² |_{w=0} = lr Σ_i y_i x_i``.
    """
    model = LinearAttentionRegressor(x_dim).to(dtype)
    reads_x = torch.zeros(x_dim + 1, x_dim + 1, dtype=dtype)
    reads_x[:x_dim, :x_dim] = torch.eye(x_dim, dtype=dtype)
    writes_y = torch.zeros(x_dim + 1, x_dim + 1, dtype=dtype)
    writes_y[x_dim, x_dim] = lr
    with torch.no_grad():
        model.attention.key.weight.copy_(reads_x)
        model.attention.query.weight.copy_(reads_x)
        model.attention.value.weight.copy_(writes_y)
    return model


def best_step_size(tasks) -> float:
    """The rate η whose one GD step from w = 0 has the least query MSE over ``tasks``, in closed form.

    The step's prediction is η ŷ₁ with ŷ₁ = Σ_i y_i x_iᵀ x_q (rate 1), linear
    in η, so the best η is a one-dimensional least-squares fit:
    η* = Σ ŷ₁ y / Σ ŷ₁², summed over every query of every task.
    """
    unit_step = tasks.query_x @ (tasks.support_x.transpose(-1, -2) @ tasks.support_y)  # ŷ₁ [T, Q, 1]
    return float((unit_step * tasks.query_y).sum() / unit_step.pow(2).sum())


# ── Linear-regression tasks and the baselines ────────────────────────────────


@dataclass
class LinearTasks:
    """A batch of linear-regression tasks y = wᵀx + ε.

    ``support_x [T, K, d]``, ``support_y [T, K, 1]``, ``query_x [T, Q, d]``,
    ``query_y [T, Q, 1]``, ``weights [T, d]`` (the true w of each task).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    weights: torch.Tensor

    def to(self, device) -> "LinearTasks":
        return LinearTasks(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class LinearRegressionSampler:
    """Tasks of Garg et al. (2022): x ~ N(0, s² I_d), w ~ N(0, τ² I_d), y = wᵀx + ε, ε ~ N(0, σ²).

    ``noise_std`` σ (0: noiseless, as in Garg et al.), ``weight_std`` τ,
    ``input_scale`` s (1 in training; other values test out of distribution).
    ``sample(T)`` draws T tasks with ``num_shots`` support and
    ``num_queries`` query points from the sampler's own generator.
    """

    def __init__(self, dim: int, num_shots: int, num_queries: int = 1, noise_std: float = 0.0,
                 weight_std: float = 1.0, input_scale: float = 1.0, seed: int = 0):
        self.dim = validation.count("dim", dim)
        self.num_shots = validation.count("num_shots", num_shots, minimum=0)
        self.num_queries = validation.count("num_queries", num_queries)
        if not (noise_std >= 0 and weight_std > 0 and input_scale > 0):
            raise ValueError(f"need noise_std >= 0, weight_std > 0 and input_scale > 0, got {noise_std}, "
                             f"{weight_std} and {input_scale}")
        self.noise_std, self.weight_std, self.input_scale = float(noise_std), float(weight_std), float(input_scale)
        self.generator = torch.Generator().manual_seed(validation.count("seed", seed, minimum=0))

    def sample(self, num_tasks: int) -> LinearTasks:
        num_tasks = validation.count("num_tasks", num_tasks)
        g, k = self.generator, self.num_shots
        w = self.weight_std * torch.randn(num_tasks, self.dim, generator=g)
        x = self.input_scale * torch.randn(num_tasks, k + self.num_queries, self.dim, generator=g)
        y = (x @ w[:, :, None]) + self.noise_std * torch.randn(num_tasks, k + self.num_queries, 1, generator=g)
        return LinearTasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:], w)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def _no_context(xs: torch.Tensor, xq: torch.Tensor) -> torch.Tensor | None:
    """The prediction 0 (the prior mean of y) when there are no examples, else None."""
    return xq.new_zeros(*xq.shape[:-1], 1) if xs.shape[-2] == 0 else None


def least_squares(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares: ŵ = X⁺ y (the pseudo-inverse), prediction ŵᵀ x_q.

    ``xs [T, k, d]``, ``ys [T, k, 1]``, ``xq [T, Q, d]`` → ``[T, Q, 1]``. For
    k < d there are many exact fits and X⁺y is the one of least norm.
    """
    empty = _no_context(xs, xq)
    return empty if empty is not None else xq @ (torch.linalg.pinv(xs) @ ys)


def ridge(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression ŵ = (XᵀX + λI)⁻¹ Xᵀy; with λ = σ²/τ² it is the posterior mean of w ~ N(0, τ²I).

    Shapes as :func:`least_squares`; ``lam`` > 0.
    """
    if not lam > 0:
        raise ValueError(f"lam must be > 0 (use least_squares for lam = 0), got {lam}")
    empty = _no_context(xs, xq)
    if empty is not None:
        return empty
    gram = xs.transpose(-1, -2) @ xs + lam * torch.eye(xs.shape[-1], dtype=xs.dtype, device=xs.device)
    return xq @ torch.linalg.solve(gram, xs.transpose(-1, -2) @ ys)


def gradient_descent(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, steps: int,
                     lr: float | None = None) -> torch.Tensor:
    """``steps`` steps of gradient descent on ½ Σ_i (wᵀx_i − y_i)² from w = 0; prediction wᵀx_q.

    ``lr``: the step size; ``None`` takes 1/L per task, L = the largest
    eigenvalue of XᵀX (the gradient's Lipschitz constant), the textbook safe
    step. Shapes as :func:`least_squares`.
    """
    validation.count("steps", steps, minimum=0)
    empty = _no_context(xs, xq)
    if empty is not None:
        return empty
    gram = xs.transpose(-1, -2) @ xs                                   # [T, d, d]
    rate = (1 / torch.linalg.eigvalsh(gram)[..., -1]).clamp(max=1e6)[:, None, None] if lr is None else lr
    w = xs.new_zeros(*xs.shape[:-2], xs.shape[-1], 1)
    for _ in range(steps):
        w = w - rate * (xs.transpose(-1, -2) @ (xs @ w - ys))          # ∇ = Xᵀ(Xw − y)
    return xq @ w


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, neighbours: int = 3) -> torch.Tensor:
    """The mean label of the ``neighbours`` nearest examples (Euclidean), or of all of them when there are fewer.

    Garg et al. use 3 neighbours. Shapes as :func:`least_squares`.
    """
    empty = _no_context(xs, xq)
    if empty is not None:
        return empty
    nearest = torch.cdist(xq, xs).topk(min(neighbours, xs.shape[-2]), dim=-1, largest=False).indices  # [T, Q, n]
    labels = ys[..., 0].gather(-1, nearest.flatten(-2)).view(nearest.shape)  # ys[t, nearest[t, q, j]]
    return labels.mean(-1, keepdim=True)


def regression_baselines(noise_std: float, weight_std: float = 1.0, gd_steps=(1, 10),
                         neighbours: int = 3) -> dict:
    """The baselines of in-context linear regression by name: ``{name: predict(xs, ys, xq)}``.

    Least squares; ridge with the Bayes-optimal λ = σ²/τ² when there is noise
    (noiseless, the Bayes-optimal predictor is least squares itself, the
    limit λ → 0); gradient descent from w = 0 with step 1/L for each number
    of steps in ``gd_steps``; the mean of the ``neighbours`` nearest labels.
    """
    baselines = {"least squares": least_squares}
    if noise_std > 0:
        lam = noise_std ** 2 / weight_std ** 2
        baselines[f"ridge (λ = {lam:g})"] = lambda xs, ys, xq: ridge(xs, ys, xq, lam)
    for steps in gd_steps:
        baselines[f"GD, {steps} step{'s' if steps > 1 else ''}"] = (
            lambda xs, ys, xq, steps=steps: gradient_descent(xs, ys, xq, steps))
    baselines[f"{neighbours}-nearest neighbours"] = lambda xs, ys, xq: nearest_neighbours(xs, ys, xq, neighbours)
    return baselines


def errors_by_context_size(predict, tasks, normalize: bool = True) -> torch.Tensor:
    """Garg et al.'s curve: each task's squared error on example k+1 after seeing examples 1 … k, ``[T, K]``.

    ``predict(xs [T, k, d], ys [T, k, 1], xq [T, 1, d]) → [T, 1, 1]`` (a
    baseline above, or ``lambda *a: model.predict(*a)[1]`` for a model);
    ``tasks``: ``support_x [T, K, d]``, ``support_y [T, K, 1]``. Column k is
    the error with k examples, k = 0 … K−1. ``normalize``: divide by d, as
    Garg et al. report it (then predicting 0 scores about E[y²]/d = τ² s², 1 by default).
    """
    xs, ys = tasks.support_x, tasks.support_y
    with torch.no_grad():
        errors = [(predict(xs[:, :k], ys[:, :k], xs[:, k:k + 1]) - ys[:, k:k + 1]).pow(2)[:, 0, 0]
                  for k in range(xs.shape[1])]
    return torch.stack(errors, dim=1) / (xs.shape[-1] if normalize else 1)


# ── The sequence model as a metabook method (metabook_learn.methods) ───────────────


def build_transformer(config, ways: int) -> InContextTransformer:
    """The chapter's in-context learner: width 64, 4 layers, 4 heads.

    Sine waves: it reads the points themselves (``ways`` is unused). Images: it
    reads MAML's conv body's features of each image (the same body as the
    other methods) with the one-hot labels of the support set, ``ways`` classes.
    """
    if config.dataset == "sinusoid":
        return InContextTransformer(1, width=64, depth=4, heads=4)
    body = embedding_network(config.dataset)
    return InContextTransformer(body.num_features, ways=ways, width=64, depth=4, heads=4, embedding=body,
                                query_bn=config.query_bn)


_SINE_SOURCE = ("the book's choice (no paper trains a transformer on MAML's sine waves): "
                "scripts/full_scale_in_context.py's settings, its gradient clipping at 1 included")
_IMAGE_SOURCE = ("the book's choice (SNAIL, Mishra et al. 2018, is the closest published model): "
                 "scripts/full_scale_in_context.py's Omniglot settings")
TRANSFORMER = register(Method(
    name="transformer",
    description="in-context learning: a causal transformer reads the support set and predicts the queries",
    build=build_transformer,
    step=episodic_step,
    outputs=episodic_outputs,
    check=check_episodic_config,
    episodic=True,
    shuffled_support=True,  # NWayKShotSampler lists support sets label by label: the position would give the label
    data_sets=("sinusoid", *IMAGE_DATA_SETS),
    data_hint="reads sine waves, or images with their labels",
    unused_fields=NO_INNER_LOOP,
    presets={("sinusoid", ""): Preset(dict(shots=20, queries=20, meta_batch=64, meta_lr=1e-3, steps=10_000,
                                           clip_grad_norm=1.0), _SINE_SOURCE),
             **{(data, ""): Preset(dict(queries=15, meta_batch=32, meta_lr=1e-3, steps=6_000, clip_grad_norm=1.0),
                                   _IMAGE_SOURCE) for data in IMAGE_DATA_SETS}},
), origin=__name__)
