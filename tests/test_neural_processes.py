"""Neural processes (metabook_learn.neural_processes), checked against definitions written out independently."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from meta_fixtures import loop_and_vmap_episode_gradients
from metabook_learn.data.sinusoid import AMPLITUDE_RANGE, PHASE_RANGE, sample_sinusoid_tasks
from metabook_learn.episodic import episode_gradient, episode_outputs
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import parameters_of
from metabook_learn.neural_processes import (ConditionalNeuralProcess, NeuralProcess, VaryingContextSampler, aggregate,
                                       exact_interval_coverage, gaussian_kl, gaussian_nll, grid_predictive,
                                       grid_predictive_cdf, grid_predictive_quantile, interval_coverage, predictive,
                                       sample_functions, sinusoid_grid_posterior)
from metabook_learn.training import TrainConfig, train

SMALL = dict(encoder=(16, 16), decoder=(16,))


def small_cnp(**kwargs):
    torch.manual_seed(0)
    return ConditionalNeuralProcess(**SMALL, **kwargs).double()


def small_np(**kwargs):
    torch.manual_seed(0)
    return NeuralProcess(**SMALL, latent=8, **kwargs).double()


def tasks(n=3, context=5, targets=7, seed=0):
    t = sample_sinusoid_tasks(n, context, targets, torch.Generator().manual_seed(seed))
    for name in ("support_x", "support_y", "query_x", "query_y"):
        setattr(t, name, getattr(t, name).double())
    return t


def one_task(seed=0, context=5, targets=7):
    t = tasks(1, context, targets, seed)
    return t.support_x[0], t.support_y[0], t.query_x[0], t.query_y[0]


def test_gaussian_kl_is_the_closed_form_nonnegative_and_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    sigma_q = 0.2 + torch.rand(6, generator=g, dtype=torch.float64)
    sigma_p = 0.2 + torch.rand(6, generator=g, dtype=torch.float64)
    kl = gaussian_kl(mu_q, sigma_q, mu_p, sigma_p)
    reference = kl_divergence(Normal(mu_q, sigma_q), Normal(mu_p, sigma_p)).sum()
    torch.testing.assert_close(kl, reference, rtol=1e-12, atol=1e-12)
    # Monte Carlo: KL = E_q[log q(z) - log p(z)]
    z = mu_q + sigma_q * torch.randn(400_000, 6, generator=g, dtype=torch.float64)
    estimate = (Normal(mu_q, sigma_q).log_prob(z) - Normal(mu_p, sigma_p).log_prob(z)).sum(-1)
    assert abs(estimate.mean() - kl) < 4 * estimate.std() / math.sqrt(len(estimate))
    assert kl > 0 and gaussian_kl(mu_q, sigma_q, mu_q, sigma_q).abs() < 1e-12
    for _ in range(20):
        a, b = torch.randn(2, 4, generator=g), 0.1 + torch.rand(2, 4, generator=g)
        assert gaussian_kl(a[0], b[0], a[1], b[1]) >= 0


def test_cnp_loss_is_the_gaussian_negative_log_likelihood_of_context_and_targets():
    model = small_cnp()
    cx, cy, tx, ty = one_task()
    loss, mean = model(cx, cy, tx, ty)
    # By hand: r = mean of h over the context, Gaussian at every point of C ∪ T.
    r = model.encoder(torch.cat([cx, cy], -1)).mean(0)
    x, y = torch.cat([cx, tx]), torch.cat([cy, ty])
    out = model.decoder.net(torch.cat([x, r.expand(len(x), -1)], -1))
    mu, sigma = out[:, :1], 0.1 + 0.9 * torch.log1p(out[:, 1:].exp())
    torch.testing.assert_close(loss, -Normal(mu, sigma).log_prob(y).mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, mu[len(cx):])
    torch.testing.assert_close(gaussian_nll(y, mu, sigma), -Normal(mu, sigma).log_prob(y).mean())
    # Without the context among the targets: the NLL of the targets alone.
    model.include_context = False
    torch.testing.assert_close(model(cx, cy, tx, ty)[0], -Normal(mu, sigma).log_prob(y)[len(cx):].mean())


def test_np_loss_is_the_negative_elbo_per_point_with_the_context_encoder_as_prior():
    model = small_np()
    cx, cy, tx, ty = one_task()
    torch.manual_seed(5)
    loss, mean = model(cx, cy, tx, ty)
    torch.manual_seed(5)
    eps = torch.randn(8, dtype=torch.float64)  # the same ε as inside forward
    x, y = torch.cat([cx, tx]), torch.cat([cy, ty])
    prior = Normal(*model.latent(cx, cy))               # q(z | C)
    posterior = Normal(*model.latent(x, y))             # q(z | C ∪ T)
    z = posterior.loc + posterior.scale * eps
    likelihood = Normal(*model.decode(z, x))
    elbo = likelihood.log_prob(y).sum() - kl_divergence(posterior, prior).sum()
    torch.testing.assert_close(loss, -elbo / len(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, model.decode(prior.loc, tx)[0])  # deterministic: z = mean of q(z | C)


def test_predictions_do_not_depend_on_the_order_of_the_context():
    cx, cy, tx, ty = one_task(context=9)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    for model in (small_cnp(), small_np()):
        a, b = model.predict(cx, cy, tx), model.predict(cx[order], cy[order], tx)
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
        torch.manual_seed(3)
        loss_a, mean_a = model(cx, cy, tx, ty)
        torch.manual_seed(3)
        loss_b, mean_b = model(cx[order], cy[order], tx, ty)
        torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mean_a, mean_b, rtol=1e-12, atol=1e-12)


def test_aggregate_is_the_mean_and_an_empty_context_gives_zeros():
    r = torch.randn(5, 3)
    torch.testing.assert_close(aggregate(r), r.mean(0))
    assert torch.equal(aggregate(torch.zeros(0, 3)), torch.zeros(3))
    cx, cy, tx, ty = one_task(context=0)
    for model in (small_cnp(), small_np()):
        loss, mean = model(cx, cy, tx, ty)
        assert torch.isfinite(loss) and mean.shape == (7, 1)


def test_cnp_meta_gradient_is_the_same_with_vmap_and_the_loop():
    loop, vmap = loop_and_vmap_episode_gradients(small_cnp(), tasks(4))
    torch.testing.assert_close(vmap.loss, loop.loss, rtol=1e-12, atol=1e-12)
    assert vmap.outputs.shape == (4, 7, 1)


def test_np_runs_under_vmap_with_a_sample_per_task():
    model, batch = small_np(), tasks(4)
    params = parameters_of(model)
    g = episode_gradient(model, params, batch, "vmap")
    assert torch.isfinite(g.loss) and all(torch.isfinite(v).all() for v in g.params.values())
    assert g.outputs.shape == (4, 7, 1) and set(g.params) == set(params)
    # The returned predictions do not sample: vmap and the loop agree on them.
    outputs_loop, _ = episode_outputs(model, params, batch, "loop")
    outputs_vmap, _ = episode_outputs(model, params, batch, "vmap")
    torch.testing.assert_close(outputs_vmap, outputs_loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["cnp", "np"])
def test_a_short_training_run_lowers_the_loss(algorithm):
    torch.manual_seed(0)
    model = (ConditionalNeuralProcess if algorithm == "cnp" else NeuralProcess)(encoder=(32, 32), decoder=(32,),
                                                                              **({"latent": 16} if algorithm == "np" else {}))
    held_out = VaryingContextSampler(10, 10, min_context=10, seed=99)
    before = evaluate(model, held_out, None, num_tasks=64, tasks_per_batch=32).query_loss
    config = TrainConfig(algorithm=algorithm, dataset="sinusoid", loss="mse", shots=10, queries=10, meta_batch=16,
                         steps=150, meta_lr=3e-3, log_every=10, device="cpu", strategy="vmap")
    result = train(config, model, VaryingContextSampler(10, 10, seed=0), progress=False)
    held_out = VaryingContextSampler(10, 10, min_context=10, seed=99)
    after = evaluate(model, held_out, None, num_tasks=64, tasks_per_batch=32).query_loss
    assert after < before - 0.3, (before, after)
    assert result.curve[-1].meta_loss < result.curve[0].meta_loss


def test_predictive_uncertainty_of_the_np_adds_the_spread_of_the_latent():
    model = small_np()
    cx, cy, tx, _ = one_task()
    mean, std = predictive(model, cx, cy, tx, num_samples=500, generator=torch.Generator().manual_seed(0))
    draws = sample_functions(model, cx, cy, tx, 500, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mean, draws.mean(0))
    assert (std >= 0.1).all() and std.shape == (7, 1)
    again = predictive(model, cx, cy, tx, num_samples=500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mean) and torch.equal(again[1], std)
    cnp = small_cnp()
    for u, v in zip(predictive(cnp, cx, cy, tx), cnp.predict(cx, cy, tx)):
        assert torch.equal(u, v)


def test_varying_context_sampler_draws_sizes_in_range_and_resumes():
    sampler = VaryingContextSampler(max_context=6, num_targets=4, min_context=2, seed=0)
    sizes = {sampler.sample(3).support_x.shape[1] for _ in range(60)}
    assert sizes == set(range(2, 7))
    state = sampler.state_dict()
    a = sampler.sample(2)
    sampler.load_state_dict(state)
    b = sampler.sample(2)
    assert torch.equal(a.support_x, b.support_x) and a.query_x.shape == (2, 4, 1)
    with pytest.raises(ValueError, match="min_context"):
        VaryingContextSampler(max_context=2, min_context=3)


def test_a_batch_instead_of_one_task_fails_clearly():
    batch = tasks(2)
    with pytest.raises(ValueError, match="one task"):
        small_cnp()(batch.support_x, batch.support_y, batch.query_x, batch.query_y)


def test_interval_coverage_counts_points_inside_two_standard_deviations():
    model = small_cnp()
    batch = tasks(2, context=4, targets=50)
    coverage = interval_coverage(model, batch)
    for t in range(2):
        mean, std = model.predict(batch.support_x[t], batch.support_y[t], batch.query_x[t])
        expected = ((batch.query_y[t] - mean).abs() <= 2 * std).double().mean()
        torch.testing.assert_close(coverage[t].double(), expected)


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(tmp_path, load_script):
    """scripts/full_scale_neural_processes.py --smoke: the GPU script's whole pipeline, 3 steps, on the CPU."""
    import json

    script = load_script("full_scale_neural_processes")
    output = tmp_path / "neural_processes.json"
    assert script.main(["--smoke", "--output", str(output), "--device", "cpu", "--no-progress", "--test-tasks", "4"]) == 0
    results = json.loads(output.read_text())
    assert set(results["runs"]) == {"cnp", "np", "maml"} and results["smoke"] is True
    for name, run in results["runs"].items():
        assert set(run["tests"]) == {"5", "10", "20"} and run["tests"]["10"]["num_tasks"] == 4
        assert run["test"] == run["tests"]["10"] and run["test"]["metric"] == "mse" and isinstance(run["paper"], str)
        assert run["config"]["steps"] == 3 and run["provenance"]["torch"] == torch.__version__
        assert ("coverage_2sigma" in run["tests"]["5"]) == (name != "maml")
        assert (tmp_path / "checkpoints" / f"sinusoid-{name}.pt").is_file()


# ── The exact posterior predictive of the sine family on a grid ──

def _brute_force_predictive(context, target_x, target_y, noise, n):
    """Bayes' rule written out point by point with ``math``: the same midpoint grid, a double loop."""
    (low_a, high_a), (low_p, high_p) = AMPLITUDE_RANGE, PHASE_RANGE
    points, log_weights = [], []
    for i in range(n):
        for j in range(n):
            a = low_a + (high_a - low_a) * (i + 0.5) / n
            p = low_p + (high_p - low_p) * (j + 0.5) / n
            points.append((a, p))
            log_weights.append(sum(-(y - a * math.sin(x - p)) ** 2 / (2 * noise ** 2) for x, y in context))
    top = max(log_weights)
    weights = [math.exp(w - top) for w in log_weights]
    weights = [w / sum(weights) for w in weights]
    means, variances, cdfs = [], [], []
    for x, y in zip(target_x, target_y):
        f = [a * math.sin(x - p) for a, p in points]
        mean = sum(w * v for w, v in zip(weights, f))
        means.append(mean)
        variances.append(sum(w * v * v for w, v in zip(weights, f)) - mean ** 2 + noise ** 2)
        cdfs.append(sum(w * 0.5 * (1 + math.erf((y - v) / (noise * math.sqrt(2)))) for w, v in zip(weights, f)))
    return means, variances, cdfs


@pytest.mark.parametrize("context_size", [0, 1, 3])
def test_grid_posterior_predictive_matches_a_brute_force_double_loop(context_size):
    cx, cy, tx, ty = one_task(seed=4, context=context_size, targets=6)
    noise, n = 0.7, 9
    posterior = sinusoid_grid_posterior(cx, cy, noise, points_per_axis=n)
    mean, std = grid_predictive(posterior, tx)
    cdf = grid_predictive_cdf(posterior, tx, ty)
    means, variances, cdfs = _brute_force_predictive(list(zip(cx[:, 0].tolist(), cy[:, 0].tolist())),
                                                     tx[:, 0].tolist(), ty[:, 0].tolist(), noise, n)
    torch.testing.assert_close(mean[:, 0], torch.tensor(means, dtype=torch.float64), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(std[:, 0] ** 2, torch.tensor(variances, dtype=torch.float64), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(cdf[:, 0], torch.tensor(cdfs, dtype=torch.float64), rtol=1e-9, atol=1e-10)
    assert abs(posterior.weight.sum().item() - 1) < 1e-12


def test_grid_posterior_with_one_point_is_that_gaussian_and_quantiles_invert_the_cdf():
    cx, cy, tx, _ = one_task(seed=1, context=4, targets=5)
    posterior = sinusoid_grid_posterior(cx, cy, noise=0.3, points_per_axis=1)   # the single point A = 2.55, φ = π/2
    f = 2.55 * torch.sin(tx - math.pi / 2)
    mean, std = grid_predictive(posterior, tx)
    torch.testing.assert_close(mean, f, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, torch.full_like(f, 0.3), rtol=1e-12, atol=1e-12)
    upper = grid_predictive_quantile(posterior, tx, 0.975)
    torch.testing.assert_close(upper, f + 0.3 * math.sqrt(2) * torch.special.erfinv(torch.tensor(0.95, dtype=torch.float64)), rtol=0, atol=1e-9)
    wide = sinusoid_grid_posterior(cx[:1], cy[:1], noise=0.3, points_per_axis=20)   # a multimodal mixture
    for p in (0.1, 0.5, 0.9):
        q = grid_predictive_quantile(wide, tx, p)
        torch.testing.assert_close(grid_predictive_cdf(wide, tx, q), torch.full_like(q, p), rtol=0, atol=1e-9)


def test_with_no_context_the_grid_predictive_mean_is_the_family_average():
    x = torch.linspace(-5, 5, 11, dtype=torch.float64).view(-1, 1)
    prior = sinusoid_grid_posterior(x[:0], x[:0], noise=0.1, points_per_axis=200)
    mean, _ = grid_predictive(prior, x)
    # E[A sin(x − φ)] = E[A] · E[sin(x − φ)] = 2.55 · (−2/π) cos x for A ~ U[0.1, 5], φ ~ U[0, π]
    torch.testing.assert_close(mean, -2 / math.pi * 2.55 * torch.cos(x), rtol=0, atol=1e-4)


def test_the_exact_predictive_is_calibrated_when_its_noise_model_is_true():
    """Tasks drawn from the grid prior with the assumed noise: the central 95% interval covers 95% of new points."""
    g = torch.Generator().manual_seed(0)
    n, noise, num_tasks = 12, 0.5, 3000
    (low_a, high_a), (low_p, high_p) = AMPLITUDE_RANGE, PHASE_RANGE
    amplitude = low_a + (high_a - low_a) * (torch.randint(n, (num_tasks,), generator=g) + 0.5) / n
    phase = low_p + (high_p - low_p) * (torch.randint(n, (num_tasks,), generator=g) + 0.5) / n
    x = 10 * torch.rand(num_tasks, 3, 1, generator=g, dtype=torch.float64) - 5
    y = amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1)) + noise * torch.randn(x.shape, generator=g,
                                                                                              dtype=torch.float64)
    batch = SimpleNamespace(support_x=x[:, :2], support_y=y[:, :2], query_x=x[:, 2:], query_y=y[:, 2:])
    covered = exact_interval_coverage(batch, noise, points_per_axis=n, level=0.95)["central"].mean().item()
    assert abs(covered - 0.95) < 0.02, covered   # a binomial standard error of 0.004 over 3000 tasks


def test_grid_posterior_refuses_bad_noise_and_grid_sizes():
    cx, cy, _, _ = one_task()
    with pytest.raises(ValueError, match="noise must be a finite number > 0"):
        sinusoid_grid_posterior(cx, cy, noise=0.0)
    with pytest.raises(ValueError, match="points_per_axis"):
        sinusoid_grid_posterior(cx, cy, noise=0.1, points_per_axis=0)
