"""Neural processes: meta-learning as amortized inference of a task.

MAML adapts to a task with gradient steps. A neural process *infers* the task
in one forward pass: an encoder ``h`` reads each context pair, a mean pools
them into one representation (so the order of the context set cannot matter),
and a decoder ``g`` turns that representation and a new input into a Gaussian
prediction. Two members of the family are here:

**Conditional neural process** (CNP; Garnelo et al., ICML 2018)::

    r_i = h(x_i, y_i)            r = (1/C) Σ_i r_i
    (μ(x), σ(x)) = g(x, r)       loss = −(1/N) Σ_{n} log N(y_n; μ(x_n), σ(x_n)²)

**Neural process** (NP; Garnelo et al., 2018, "Neural Processes"): the task is
a latent variable ``z``; the same kind of encoder gives a Gaussian over it,
``q(z | S) = N(μ_z(s), σ_z(s)²)`` with ``s`` the mean of ``h`` over a set
``S``, and the decoder reads ``(x, z)``. It is trained like a VAE, on the
evidence lower bound of the targets given the context C,

    log p(y_T | x_T, C) ≥ E_{q(z | C ∪ T)}[Σ_{n ∈ T} log p(y_n | z, x_n)] − KL(q(z | C ∪ T) ‖ p(z | C)),

in which the encoder on the context alone, ``q(z | C)``, stands in for the
intractable conditional prior ``p(z | C)``. The expectation is estimated with
one reparameterized sample ``z = μ + σ ε``, ``ε ~ N(0, I)``, and the loss is the
negative bound divided by the number of targets (so it is on the CNP's
per-point scale; DeepMind's attentive-neural-process notebook, whose "NP"
mode is this model plus a deterministic path, divides the KL the same way).

Details taken from DeepMind's reference notebooks
(github.com/google-deepmind/neural-processes): the decoder's
standard deviation is ``0.1 + 0.9 softplus(·)`` (the CNP notebook bounds it
at 0.1 "to avoid collapsing"), the latent's is
``0.1 + 0.9 sigmoid(·)``, the layers have 128 units, and the training
targets include the context points. ``include_context=True`` does the latter inside
``forward``: the loss is taken over the context *and* the query points, while
the returned predictions are for the query points only, so
:func:`metabook_learn.evaluation.evaluate` scores unseen points.

An empty context (C = 0) pools to ``r = 0``; trained with some empty contexts
(:class:`VaryingContextSampler` with ``min_context=0``), a model learns what to
predict before it has seen any point: the CNP its mean function, the NP its
prior ``q(z | ∅)``.

Both models are episodic learners (:mod:`metabook_learn.episodic`): ``forward``
takes one task, ``(context_x [C, 1], context_y [C, 1], target_x [T, 1],
target_y [T, 1])``, returns ``(loss, predictive mean [T, 1])``, and runs under
``torch.func.vmap`` (the NP's sample then differs from task to task). The
NP's returned mean, used for scoring, is deterministic: the decoder's mean at
``z`` = the mean of ``q(z | C)``. :func:`predictive` gives mean and standard
deviation for plots, averaging over samples of ``z`` for the NP.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metabook_learn.data.sinusoid import AMPLITUDE_RANGE, PHASE_RANGE, sample_sinusoid_tasks
from metabook_learn import validation
from metabook_learn.episodic import NO_INNER_LOOP, check_episodic_config, episodic_outputs, episodic_step
from metabook_learn.methods import Method, Preset, register

__all__ = [
    "mlp",
    "aggregate",
    "gaussian_nll",
    "gaussian_kl",
    "ConditionalNeuralProcess",
    "NeuralProcess",
    "predictive",
    "sample_functions",
    "interval_coverage",
    "VaryingContextSampler",
    "GridPosterior",
    "sinusoid_grid_posterior",
    "grid_predictive",
    "grid_predictive_cdf",
    "grid_predictive_quantile",
    "exact_interval_coverage",
]

MIN_SIGMA = 0.1  # the floor of every standard deviation, as in DeepMind's notebooks


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers ``sizes[0] → sizes[1] → … → sizes[-1]`` with ReLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def aggregate(r: torch.Tensor) -> torch.Tensor:
    """The mean of ``r [C, R]`` over its C points, ``[R]``; zeros when C = 0.

    A mean does not depend on the order of the points, which makes every
    prediction of a neural process invariant to permutations of the context.
    (``max(C, 1)`` is a Python number, so this also runs under ``vmap``.)
    """
    return r.sum(-2) / max(r.shape[-2], 1)


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """−log N(y; mean, sigma²), summed over the output dimension and averaged over points: a scalar.

    ``y, mean, sigma``: ``[N, D]``.
    """
    log_density = -0.5 * math.log(2 * math.pi) - sigma.log() - 0.5 * ((y - mean) / sigma) ** 2
    return -log_density.sum(-1).mean()


def gaussian_kl(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, sigma_q²) ‖ N(mu_p, sigma_p²)) of diagonal Gaussians, summed over the last dimension.

    Per dimension: log(σ_p/σ_q) + (σ_q² + (μ_q − μ_p)²) / (2 σ_p²) − 1/2, which is ≥ 0
    and = 0 exactly when the two Gaussians are equal.
    """
    return (sigma_p.log() - sigma_q.log()
            + (sigma_q ** 2 + (mu_q - mu_p) ** 2) / (2 * sigma_p ** 2) - 0.5).sum(-1)


def _check_shapes(context_x, context_y, target_x, target_y=None) -> None:
    if context_x.dim() != 2 or target_x.dim() != 2:
        raise ValueError(f"a neural process takes one task: context_x [C, x_dim] and target_x [T, x_dim], got "
                         f"{tuple(context_x.shape)} and {tuple(target_x.shape)} (for a batch of tasks, use "
                         "metabook_learn.episodic or torch.func.vmap)")
    if context_y.shape[:-1] != context_x.shape[:-1] or (
            target_y is not None and target_y.shape[:-1] != target_x.shape[:-1]):
        raise ValueError("each y needs the same number of points as its x: y is [points, y_dim], e.g. [C, 1]")


class _Decoder(nn.Module):
    """g(x, c) → (mean, σ) with σ = 0.1 + 0.9 softplus(·): ``x [N, x_dim]``, ``c [R]`` → ``[N, y_dim]`` twice."""

    def __init__(self, x_dim: int, c_dim: int, y_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = mlp([x_dim + c_dim, *hidden, 2 * y_dim])

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        inputs = torch.cat([x, c.expand(x.shape[0], c.shape[-1])], dim=-1)
        mean, raw = self.net(inputs).chunk(2, dim=-1)
        return mean, MIN_SIGMA + (1 - MIN_SIGMA) * F.softplus(raw)


class ConditionalNeuralProcess(nn.Module):
    """A CNP (Garnelo et al., 2018a): encoder h, mean aggregation, Gaussian decoder g(x, r).

    Default sizes are those of DeepMind's CNP notebook: h is 4 layers of 128
    units (``encoder=(128, 128, 128, 128)``, the last one is r), g has two
    hidden layers of 128 (``decoder=(128, 128)``).
    """

    episodic = True

    def __init__(self, x_dim: int = 1, y_dim: int = 1, encoder: Sequence[int] = (128, 128, 128, 128),
                 decoder: Sequence[int] = (128, 128), include_context: bool = True):
        super().__init__()
        self.encoder = mlp([x_dim + y_dim, *encoder])
        self.decoder = _Decoder(x_dim, encoder[-1], y_dim, decoder)
        self.include_context = include_context

    def represent(self, context_x: torch.Tensor, context_y: torch.Tensor) -> torch.Tensor:
        """r = mean_i h(x_i, y_i): ``[C, x_dim]``, ``[C, y_dim]`` → ``[R]``."""
        return aggregate(self.encoder(torch.cat([context_x, context_y], dim=-1)))

    def predict(self, context_x, context_y, target_x):
        """The predictive Gaussian at ``target_x [T, x_dim]``: ``(mean, σ)``, each ``[T, y_dim]``."""
        _check_shapes(context_x, context_y, target_x)
        return self.decoder(target_x, self.represent(context_x, context_y))

    def forward(self, context_x, context_y, target_x, target_y):
        """One episode: ``(loss, mean [T, y_dim])``; the loss is the Gaussian NLL per target point."""
        _check_shapes(context_x, context_y, target_x, target_y)
        r = self.represent(context_x, context_y)
        if self.include_context:  # predict every point, the context too (as the CNP objective and code do)
            x, y = torch.cat([context_x, target_x]), torch.cat([context_y, target_y])
        else:
            x, y = target_x, target_y
        mean, sigma = self.decoder(x, r)
        return gaussian_nll(y, mean, sigma), mean[x.shape[0] - target_x.shape[0]:]


class NeuralProcess(nn.Module):
    """A latent-variable NP (Garnelo et al., 2018b): q(z | S) from a mean-pooled encoder, decoder g(x, z).

    The decoder sees only ``x`` and ``z``, as in the paper (no deterministic
    path). Defaults follow the latent path of DeepMind's attentive-neural-process
    notebook: h is 4 layers of 128, then one ReLU layer of 128 and two linear
    heads give μ_z and σ_z = 0.1 + 0.9 sigmoid(·) for a 128-dimensional ``z``;
    g has two hidden layers of 128.
    """

    episodic = True

    def __init__(self, x_dim: int = 1, y_dim: int = 1, encoder: Sequence[int] = (128, 128, 128, 128),
                 latent: int = 128, decoder: Sequence[int] = (128, 128), include_context: bool = True):
        super().__init__()
        self.encoder = mlp([x_dim + y_dim, *encoder])
        width = (encoder[-1] + latent) // 2
        self.latent_hidden = nn.Linear(encoder[-1], width)
        self.latent_mean = nn.Linear(width, latent)
        self.latent_scale = nn.Linear(width, latent)
        self.decoder = _Decoder(x_dim, latent, y_dim, decoder)
        self.include_context = include_context

    def latent(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | {(x_i, y_i)}) = N(μ_z, σ_z²): ``[N, x_dim]``, ``[N, y_dim]`` → ``(μ_z, σ_z)``, each ``[latent]``."""
        s = torch.relu(self.latent_hidden(aggregate(self.encoder(torch.cat([x, y], dim=-1)))))
        return self.latent_mean(s), MIN_SIGMA + (1 - MIN_SIGMA) * torch.sigmoid(self.latent_scale(s))

    def decode(self, z: torch.Tensor, target_x: torch.Tensor):
        """p(y | z, x) = N(mean, σ²) at ``target_x [T, x_dim]`` for one ``z [latent]``: ``(mean, σ)``."""
        return self.decoder(target_x, z)

    def predict(self, context_x, context_y, target_x):
        """The decoder's Gaussian at z = the mean of q(z | C): ``(mean, σ)``, each ``[T, y_dim]``.

        This σ is the decoder's alone; the uncertainty about ``z`` is left out
        (:func:`predictive` includes it).
        """
        _check_shapes(context_x, context_y, target_x)
        return self.decode(self.latent(context_x, context_y)[0], target_x)

    def elbo_terms(self, context_x, context_y, target_x, target_y, noise: torch.Tensor | None = None):
        """``(nll, kl, n)``: the one-sample Gaussian NLL summed over the n target points, and
        KL(q(z | C ∪ T) ‖ q(z | C)). ``noise``: the ε of z = μ + σ ε (default: drawn)."""
        if self.include_context:
            x, y = torch.cat([context_x, target_x]), torch.cat([context_y, target_y])
        else:
            x, y = target_x, target_y
        mu_prior, sigma_prior = self.latent(context_x, context_y)          # q(z | C), the conditional prior
        mu_post, sigma_post = self.latent(torch.cat([context_x, target_x]),  # q(z | C ∪ T), the posterior
                                          torch.cat([context_y, target_y]))
        eps = torch.randn_like(mu_post) if noise is None else noise
        mean, sigma = self.decode(mu_post + sigma_post * eps, x)             # reparameterized sample of z
        nll = gaussian_nll(y, mean, sigma) * x.shape[0]
        return nll, gaussian_kl(mu_post, sigma_post, mu_prior, sigma_prior), x.shape[0]

    def forward(self, context_x, context_y, target_x, target_y):
        """One episode: ``(negative ELBO per target point, mean [T, y_dim] at z = mean of q(z | C))``."""
        _check_shapes(context_x, context_y, target_x, target_y)
        nll, kl, n = self.elbo_terms(context_x, context_y, target_x, target_y)
        return (nll + kl) / n, self.predict(context_x, context_y, target_x)[0]


@torch.no_grad()
def sample_functions(model: NeuralProcess, context_x, context_y, target_x, num_samples: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Decoder means for ``num_samples`` draws z ~ q(z | C): ``[num_samples, T, y_dim]``.

    Each draw is one whole function consistent with the context: what the
    latent variable adds to a CNP, whose predictions are independent per point.
    """
    return _decode_samples(model, context_x, context_y, target_x, num_samples, generator)[0]


def _decode_samples(model: NeuralProcess, context_x, context_y, target_x, num_samples: int, generator):
    """The decoder's ``(means, σs)``, each ``[num_samples, T, y_dim]``, for draws z ~ q(z | C)."""
    mu, sigma = model.latent(context_x, context_y)
    # ε is drawn on the CPU (where a seeded generator lives) and moved: the same draws on any device.
    eps = torch.randn((num_samples, mu.shape[-1]), generator=generator, dtype=mu.dtype).to(mu.device)
    return torch.func.vmap(lambda e: model.decode(mu + sigma * e, target_x))(eps)


@torch.no_grad()
def predictive(model: nn.Module, context_x, context_y, target_x, num_samples: int = 64,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive mean and standard deviation at ``target_x [T, x_dim]``, each ``[T, y_dim]``, for plots.

    CNP: the decoder's Gaussian. NP: the moments of the mixture over
    ``num_samples`` draws z ~ q(z | C) (pass a seeded ``generator`` for
    reproducible plots): mean = E[μ], variance = E[σ²] + Var[μ], so the
    spread of the sampled functions counts as uncertainty.
    """
    if not isinstance(model, NeuralProcess):
        return model.predict(context_x, context_y, target_x)
    means, sigmas = _decode_samples(model, context_x, context_y, target_x, num_samples, generator)
    variance = (sigmas ** 2).mean(0) + means.var(0, correction=0)
    return means.mean(0), variance.sqrt()


@torch.no_grad()
def interval_coverage(model: nn.Module, tasks, num_samples: int = 64,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Per task, the fraction of query points inside the predictive mean ± 2σ (:func:`predictive`): ``[T]``.

    ``tasks``: ``support_x [T, C, 1]`` … ``query_y [T, Q, 1]`` (e.g. ``SinusoidTasks``). An
    honest Gaussian predictive covers about 95% (``math.erf(2 / math.sqrt(2))`` = 0.954);
    much less means overconfident, much more underconfident.
    """
    inside = []
    for t in range(tasks.query_x.shape[0]):
        mean, std = predictive(model, tasks.support_x[t], tasks.support_y[t], tasks.query_x[t], num_samples, generator)
        inside.append(((tasks.query_y[t] - mean).abs() <= 2 * std).float().mean())
    return torch.stack(inside)


# ── The exact Bayesian answer for the sine family, on a grid: what the neural processes approximate ──


@dataclass
class GridPosterior:
    """p(A, φ | C) for the sine family ``y = A sin(x − φ) + ε``, ``ε ~ N(0, noise²)``, on a grid.

    ``amplitude, phase, weight``: ``float64 [G]``, the grid points kept and their
    posterior probabilities (summing to 1); ``noise``: the observation noise s
    that the likelihood assumes.
    """

    amplitude: torch.Tensor
    phase: torch.Tensor
    weight: torch.Tensor
    noise: float

    def functions(self, x: torch.Tensor) -> torch.Tensor:
        """``A_g sin(x − φ_g)`` for every grid point g at ``x [T, 1]`` (or ``[T]``): ``float64 [G, T]``.

        Computed as ``A cos φ · sin x − A sin φ · cos x``: one matrix product, no sine per (g, x) pair.
        """
        x = x.reshape(-1).to(torch.float64)
        coefficients = torch.stack([self.amplitude * torch.cos(self.phase), -self.amplitude * torch.sin(self.phase)], 1)
        return coefficients @ torch.stack([torch.sin(x), torch.cos(x)])


def sinusoid_grid_posterior(context_x: torch.Tensor, context_y: torch.Tensor, noise: float,
                            points_per_axis: int = 200, drop_below: float = 40.0) -> GridPosterior:
    """Bayes' rule on a grid: the posterior over (A, φ) given one task's context ``[C, 1]``, ``[C, 1]``.

    The prior is the task family's, uniform on ``AMPLITUDE_RANGE`` × ``PHASE_RANGE``,
    represented by the midpoints of a ``points_per_axis`` × ``points_per_axis`` grid of
    equal cells. The likelihood is Gaussian with standard deviation ``noise``:

        log w_g = −Σ_i (y_i − A_g sin(x_i − φ_g))² / (2 s²) + const,   w = softmax(log w)

    (with C = 0 the weights are uniform: the prior). Points whose log weight is more
    than ``drop_below`` below the largest are dropped; together they hold less than
    ``G e^(−drop_below)`` of the probability. Computed in float64.
    """
    noise = _positive("noise", noise, "the observation noise s of the likelihood, e.g. 0.1")
    points_per_axis = validation.count("points_per_axis", points_per_axis)
    _check_shapes(context_x, context_y, context_x)
    n = points_per_axis
    midpoints = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    amplitudes = AMPLITUDE_RANGE[0] + (AMPLITUDE_RANGE[1] - AMPLITUDE_RANGE[0]) * midpoints
    phases = PHASE_RANGE[0] + (PHASE_RANGE[1] - PHASE_RANGE[0]) * midpoints
    amplitude, phase = (t.flatten() for t in torch.meshgrid(amplitudes, phases, indexing="ij"))
    grid = GridPosterior(amplitude, phase, torch.full_like(amplitude, 1.0 / n ** 2), noise)
    if context_x.shape[0] == 0:
        return grid
    residual = context_y.reshape(1, -1).to(torch.float64) - grid.functions(context_x)   # [G, C]
    log_w = -(residual ** 2).sum(-1) / (2 * noise ** 2)
    keep = log_w > log_w.max() - drop_below
    return GridPosterior(amplitude[keep], phase[keep], torch.softmax(log_w[keep], 0), noise)


def _positive(name: str, value, meaning: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0 ({meaning}), got {value}")
    return value


def grid_predictive(posterior: GridPosterior, target_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of p(y | x, C) at ``target_x [T, 1]``: each ``float64 [T, 1]``.

    The predictive is the mixture Σ_g w_g N(A_g sin(x − φ_g), s²): its mean is the
    Bayes-optimal prediction under squared error, its variance
    Σ_g w_g f_g(x)² − mean² + s².
    """
    f = posterior.functions(target_x)                                    # [G, T]
    mean = posterior.weight @ f
    variance = posterior.weight @ f ** 2 - mean ** 2 + posterior.noise ** 2
    return mean.view(-1, 1), variance.clamp_min(posterior.noise ** 2).sqrt().view(-1, 1)


def grid_predictive_cdf(posterior: GridPosterior, target_x: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
    """P(Y ≤ y | x, C) = Σ_g w_g Φ((y − A_g sin(x − φ_g)) / s) at ``target_x, target_y [T, 1]``: ``float64 [T, 1]``.

    y lies inside the central interval of probability p exactly when this value lies in
    [(1 − p)/2, (1 + p)/2]; over tasks drawn from the prior (with the assumed noise), it is
    uniform on [0, 1], which is what calibration means.
    """
    z = (target_y.reshape(1, -1).to(torch.float64) - posterior.functions(target_x)) / posterior.noise
    return (posterior.weight @ (0.5 * torch.special.erfc(-z / math.sqrt(2)))).view(-1, 1)


def grid_predictive_quantile(posterior: GridPosterior, target_x: torch.Tensor, probability: float,
                             iterations: int = 50) -> torch.Tensor:
    """The ``probability`` quantile of p(y | x, C) at ``target_x [T, 1]``, by bisection on the CDF: ``[T, 1]``."""
    probability = validation.probability("probability", probability)
    f = posterior.functions(target_x)
    low = (f.min(0).values - 10 * posterior.noise).view(-1, 1)
    high = (f.max(0).values + 10 * posterior.noise).view(-1, 1)
    for _ in range(iterations):
        middle = (low + high) / 2
        below = grid_predictive_cdf(posterior, target_x, middle) < probability
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def exact_interval_coverage(tasks, noise: float, points_per_axis: int = 200,
                            level: float = math.erf(2 / math.sqrt(2))) -> dict[str, torch.Tensor]:
    """Per task, the fraction of query points inside the exact posterior predictive's intervals.

    ``tasks``: sine-wave tasks (``support_x [T, C, 1]`` … ``query_y [T, Q, 1]``). Returns
    ``float64 [T]`` tensors: ``"two_sigma"``, inside the predictive mean ± 2 standard
    deviations (the rule :func:`interval_coverage` applies to the models), ``"central"``,
    inside the central interval of probability ``level`` (95.45%, the Gaussian ±2σ's), and
    ``"mse"``, the squared error of the predictive mean, averaged over the query points.
    """
    level = validation.probability("level", level)
    results: dict[str, list[torch.Tensor]] = {"two_sigma": [], "central": [], "mse": []}
    for t in range(tasks.query_x.shape[0]):
        posterior = sinusoid_grid_posterior(tasks.support_x[t], tasks.support_y[t], noise, points_per_axis)
        x, y = tasks.query_x[t], tasks.query_y[t].to(torch.float64)
        mean, std = grid_predictive(posterior, x)
        cdf = grid_predictive_cdf(posterior, x, y)
        results["two_sigma"].append(((y - mean).abs() <= 2 * std).double().mean())
        results["central"].append(((cdf >= (1 - level) / 2) & (cdf <= (1 + level) / 2)).double().mean())
        results["mse"].append(((y - mean) ** 2).mean())
    return {name: torch.stack(values) for name, values in results.items()}


class VaryingContextSampler:
    """Sinusoid tasks with a context size drawn anew for every batch, as neural processes are trained.

    ``sample(T)`` draws C uniformly from ``min_context … max_context`` and T
    sine waves (:func:`~metabook_learn.data.sinusoid.sample_sinusoid_tasks`) with C support
    (context) and ``num_targets`` query points each; all tasks of a batch
    share C so that they stack. DeepMind's CNP notebook draws the context size
    the same way (from 3 to 9 there, on Gaussian-process curves). ``state_dict``
    / ``load_state_dict`` resume the stream. It has no ``num_shots``, since
    the context size varies; ``num_queries`` is ``num_targets``.
    """

    def __init__(self, max_context: int = 20, num_targets: int = 20, min_context: int = 0, seed: int = 0):
        min_context = validation.count("min_context", min_context, minimum=0)
        max_context = validation.count("max_context", max_context, minimum=min_context, meaning="min_context")
        num_targets = validation.count("num_targets", num_targets)
        self.min_context, self.max_context, self.num_queries = min_context, max_context, num_targets
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, num_tasks: int):
        size = int(torch.randint(self.min_context, self.max_context + 1, (), generator=self.generator))
        return sample_sinusoid_tasks(num_tasks, size, self.num_queries, self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ── The conditional and latent neural processes as metabook methods (metabook_learn.methods) ──


def build_cnp(config, ways: int) -> ConditionalNeuralProcess:
    """DeepMind's CNP with 128-unit networks (``ways`` is unused: sine waves have no classes)."""
    return ConditionalNeuralProcess()


def build_np(config, ways: int) -> NeuralProcess:
    """DeepMind's latent NP with 128-unit networks (``ways`` is unused)."""
    return NeuralProcess()


PRESETS = {
    ("sinusoid", ""): Preset(
        dict(shots=10, train_shots=20, queries=20, meta_batch=64, meta_lr=5e-4, steps=50_000),
        "the book's choice, as scripts/full_scale_neural_processes.py (the CNP and NP papers have no sine-wave "
        "experiment): training contexts of 0 to --train-shots points, DeepMind's 128-unit networks. DeepMind's "
        "notebooks (deepmind/neural-processes) train on Gaussian-process curves with Adam 1e-4: the CNP on batches "
        "of 64 with 3 to 9 context points for 200,000 iterations, the NP (attentive_neural_process.ipynb, uniform "
        "attention, with a deterministic path) on batches of 16 with 3 to 49 for 100,000"),
}


def _method(name: str, description: str, build) -> Method:
    return Method(
        name=name, description=description, build=build, step=episodic_step, outputs=episodic_outputs,
        check=check_episodic_config, episodic=True, varying_context=True, data_sets=("sinusoid",),
        data_hint="is a regression model of sine waves", unused_fields=NO_INNER_LOOP, presets=PRESETS,
    )


CNP = register(_method("cnp", "conditional neural process (Garnelo et al., 2018a): encode the context, decode "
                       "each target", build_cnp), origin=__name__)
NP = register(_method("np", "latent neural process (Garnelo et al., 2018b): a global latent variable, trained "
                      "on the ELBO", build_np), origin=__name__)
