"""MLDG and its ERM baseline: special cases, finite differences, the first-order expansion, domain batches, training."""
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fixtures_data import skip_without
from metabook_learn.data.domains import DomainBatchSampler
from metabook_learn.evaluation import confidence_interval
from metabook_learn.inner_loop import InnerLoop, parameters_of, set_gradients
from metabook_learn.mldg import (domain_accuracy, domain_gradient_cosines, erm_gradient, gradient_alignment,
                                  mldg_gradient, split_domains)
from metabook_learn.models import MLP
from metabook_learn.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("no_data_environment")

NUM_DOMAINS, PER_DOMAIN = 5, 12


def tiny_net() -> MLP:
    torch.manual_seed(0)
    return MLP(3, 3, hidden=(6,)).double()


def domain_data(dtype=torch.float64, seed=0):
    """Five domains of 12 points in 3-D; the first coordinate of each point is its domain id (for the checks)."""
    g = torch.Generator().manual_seed(seed)
    domains = torch.arange(NUM_DOMAINS).repeat_interleave(PER_DOMAIN)
    x = torch.randn(len(domains), 3, generator=g, dtype=dtype)
    x[:, 0] = domains.to(dtype)
    y = torch.randint(0, 3, (len(domains),), generator=g)
    return x, y, domains


def one_split(seed=0):
    x, y, domains = domain_data()
    return DomainBatchSampler(x, y, domains, sources=[0, 1, 2, 3], batch_size=4, seed=seed).sample(1)


def objective(model, theta, batch, alpha, beta):
    """F(θ) + β G(θ − α ∇F(θ)), written out with plain autograd (independent of fine_tune and mldg_gradient)."""
    theta = {name: p.detach().requires_grad_() for name, p in theta.items()}
    f = F.cross_entropy(functional_call(model, theta, (batch.support_x[0],)), batch.support_y[0])
    grads = torch.autograd.grad(f, list(theta.values()), create_graph=True)
    adapted = {name: p - alpha * g for (name, p), g in zip(theta.items(), grads)}
    g_loss = F.cross_entropy(functional_call(model, adapted, (batch.query_x[0],)), batch.query_y[0])
    return f + beta * g_loss


def loss_gradient(model, theta, x, y):
    leaves = {n: p.detach().requires_grad_() for n, p in theta.items()}
    loss = F.cross_entropy(functional_call(model, leaves, (x,)), y)
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def assert_params_close(a, b, **tolerance):
    for name in b:
        torch.testing.assert_close(a[name], b[name], **tolerance)


# ── The gradient: special cases and an independent check ─────────────────────


@pytest.mark.parametrize("first_order", [False, True])
def test_with_beta_zero_mldg_is_erm_on_the_meta_train_domains(first_order):
    model, batch = tiny_net(), one_split()
    theta = parameters_of(model)
    g = mldg_gradient(model, theta, batch, InnerLoop(steps=1, lr=0.3, first_order=first_order), beta=0.0)
    assert_params_close(g.params, loss_gradient(model, theta, batch.support_x[0], batch.support_y[0]))


@pytest.mark.parametrize("first_order", [False, True])
def test_with_alpha_zero_the_gradient_is_that_of_f_plus_beta_g_at_theta(first_order):
    model, batch, beta = tiny_net(), one_split(), 0.7
    theta = parameters_of(model)
    g = mldg_gradient(model, theta, batch, InnerLoop(steps=1, lr=0.0, first_order=first_order), beta)
    f_grad = loss_gradient(model, theta, batch.support_x[0], batch.support_y[0])
    g_grad = loss_gradient(model, theta, batch.query_x[0], batch.query_y[0])
    assert_params_close(g.params, {n: f_grad[n] + beta * g_grad[n] for n in theta})


def test_second_order_gradient_matches_finite_differences_in_float64():
    model, batch, alpha, beta = tiny_net(), one_split(), 0.5, 1.3
    theta = {n: p.detach() for n, p in parameters_of(model).items()}
    g = mldg_gradient(model, theta, batch, InnerLoop(steps=1, lr=alpha), beta)
    generator, eps = torch.Generator().manual_seed(5), 1e-6
    for _ in range(4):  # directional derivatives along random directions
        v = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in theta.items()}
        plus = objective(model, {n: p + eps * v[n] for n, p in theta.items()}, batch, alpha, beta)
        minus = objective(model, {n: p - eps * v[n] for n, p in theta.items()}, batch, alpha, beta)
        numeric = (plus - minus) / (2 * eps)
        analytic = sum((g.params[n] * v[n]).sum() for n in theta)
        torch.testing.assert_close(analytic, numeric.detach(), rtol=1e-7, atol=1e-9)


def test_first_order_gradient_is_grad_f_plus_beta_grad_g_at_the_stepped_parameters():
    model, batch, alpha, beta = tiny_net(), one_split(), 0.5, 1.3
    theta = {n: p.detach() for n, p in parameters_of(model).items()}
    f_grad = loss_gradient(model, theta, batch.support_x[0], batch.support_y[0])
    stepped = {n: p - alpha * f_grad[n] for n, p in theta.items()}
    g_grad = loss_gradient(model, stepped, batch.query_x[0], batch.query_y[0])
    first = mldg_gradient(model, theta, batch, InnerLoop(steps=1, lr=alpha, first_order=True), beta)
    assert_params_close(first.params, {n: f_grad[n] + beta * g_grad[n] for n in theta})
    second = mldg_gradient(model, theta, batch, InnerLoop(steps=1, lr=alpha), beta)
    difference = sum((first.params[n] - second.params[n]).norm() for n in theta)
    assert difference > 1e-4, "the Hessian term should matter at alpha = 0.5"


def test_the_objective_is_f_plus_beta_g_minus_beta_alpha_grad_f_dot_grad_g_to_first_order():
    """MLDG's analysis: the remainder of the first-order expansion shrinks like alpha squared."""
    model, batch, beta = tiny_net(), one_split(), 1.0
    theta = {n: p.detach() for n, p in parameters_of(model).items()}
    f = F.cross_entropy(functional_call(model, theta, (batch.support_x[0],)), batch.support_y[0])
    g = F.cross_entropy(functional_call(model, theta, (batch.query_x[0],)), batch.query_y[0])
    f_grad = loss_gradient(model, theta, batch.support_x[0], batch.support_y[0])
    g_grad = loss_gradient(model, theta, batch.query_x[0], batch.query_y[0])
    dot = sum((f_grad[n] * g_grad[n]).sum() for n in theta)
    remainders = []
    for alpha in (1e-1, 1e-2, 1e-3):
        exact = objective(model, theta, batch, alpha, beta)
        remainders.append(abs(exact.item() - (f + beta * g - beta * alpha * dot).item()))
    assert remainders[1] < remainders[0] / 50 and remainders[2] < remainders[1] / 50, remainders


def test_loop_and_vmap_give_the_same_gradients():
    model = tiny_net()
    x, y, domains = domain_data()
    batch = DomainBatchSampler(x, y, domains, [0, 1, 2, 3], batch_size=3, seed=2).sample(3)
    theta = parameters_of(model)
    for gradient in (lambda s: mldg_gradient(model, theta, batch, InnerLoop(steps=1, lr=0.4), 0.5, strategy=s),
                     lambda s: erm_gradient(model, theta, batch, strategy=s)):
        loop, vmap = gradient("loop"), gradient("vmap")
        assert_params_close(loop.params, vmap.params)
        torch.testing.assert_close(loop.loss, vmap.loss)


def test_erm_uses_every_source_example_of_the_batch():
    model, batch = tiny_net(), one_split()
    theta = parameters_of(model)
    expected = loss_gradient(model, theta, torch.cat([batch.support_x[0], batch.query_x[0]]),
                             torch.cat([batch.support_y[0], batch.query_y[0]]))
    assert_params_close(erm_gradient(model, theta, batch).params, expected)


# ── Domain splits and the sampler ────────────────────────────────────────────


def test_domain_splits_are_disjoint_and_cover_the_sources():
    meta_train, meta_test = split_domains(6, 2, 50, torch.Generator().manual_seed(0))
    assert meta_train.shape == (50, 4) and meta_test.shape == (50, 2)
    both = torch.cat([meta_train, meta_test], dim=1).sort(dim=1).values
    assert (both == torch.arange(6)).all(), "every split holds each source exactly once"
    assert len({tuple(row.tolist()) for row in meta_test}) > 5, "the splits vary"
    with pytest.raises(ValueError, match="num_meta_test"):
        split_domains(3, 3, 1)


def test_a_domain_batch_knows_where_each_example_came_from():
    x, y, domains = domain_data()
    sources = [0, 2, 3, 4]  # domain 1 is the held-out target
    batch = DomainBatchSampler(x, y, domains, sources, batch_size=5, meta_test_domains=2, seed=1).sample(7)
    assert batch.support_x.shape == (7, 10, 3) and batch.query_x.shape == (7, 10, 3)
    for t in range(7):
        train_d, test_d = set(batch.meta_train_domains[t].tolist()), set(batch.meta_test_domains[t].tolist())
        assert train_d.isdisjoint(test_d) and train_d | test_d == set(sources)
        assert set(batch.support_domain[t].tolist()) == train_d and set(batch.query_domain[t].tolist()) == test_d
        # The first coordinate of every point is its domain: the tags are right, the target never appears.
        assert (batch.x[t, :, 0].long() == batch.domain[t]).all() and 1 not in batch.domain[t].tolist()
        for d in sources:  # B distinct examples of every source domain
            rows = batch.x[t][batch.domain[t] == d]
            assert len(rows) == 5 and len(torch.unique(rows, dim=0)) == 5


def test_the_sampler_is_seeded_and_resumes_exactly():
    x, y, domains = domain_data()
    make = lambda: DomainBatchSampler(x, y, domains, [0, 1, 2, 3], batch_size=4, seed=9)  # noqa: E731
    a, b = make(), make()
    a.sample(2)
    state = a.state_dict()
    after = a.sample(2)
    b.load_state_dict(state)
    resumed = b.sample(2)
    for field in ("support_x", "query_y", "meta_test_domains"):
        assert torch.equal(getattr(after, field), getattr(resumed, field))


def test_uint8_images_are_scaled_and_bad_arguments_are_explained():
    images = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8)
    labels, domains = torch.zeros(20, dtype=torch.long), torch.arange(4).repeat_interleave(5)
    batch = DomainBatchSampler(images, labels, domains, [0, 1, 2], batch_size=2).sample(1)
    assert batch.support_x.dtype == torch.float32 and batch.support_x.max() <= 1
    with pytest.raises(ValueError, match="fewer than batch_size"):
        DomainBatchSampler(images, labels, domains, [0, 1], batch_size=6)
    with pytest.raises(ValueError, match="meta_test_domains"):
        DomainBatchSampler(images, labels, domains, [0, 1], batch_size=2, meta_test_domains=2)
    with pytest.raises(ValueError, match="distinct"):
        DomainBatchSampler(images, labels, domains, [0, 0, 1], batch_size=2)


# ── Training through metabook_learn.training ───────────────────────────────────────


def shifted_domains(num_domains=5, per_domain=60, seed=0):
    """Two classes in 2-D separated by the line x1 = x0, each domain shifted along it: a shared rule."""
    g = torch.Generator().manual_seed(seed)
    domains = torch.arange(num_domains).repeat_interleave(per_domain)
    x = torch.randn(len(domains), 2, generator=g) + domains.float().unsqueeze(1)
    return x, (x[:, 1] > x[:, 0]).long(), domains


def test_a_training_step_is_adam_on_the_mldg_gradient():
    x, y, domains = shifted_domains()
    config = TrainConfig(algorithm="mldg", dataset="toy", steps=2, meta_batch=2, inner_lr=0.5, mldg_beta=0.8,
                         meta_lr=0.01, device="cpu", log_every=1)
    torch.manual_seed(0)
    model = MLP(2, 2, hidden=(8,))
    train(config, model, DomainBatchSampler(x, y, domains, [0, 1, 2, 3], 6, seed=3), progress=False)
    torch.manual_seed(0)
    shadow = MLP(2, 2, hidden=(8,))
    params = parameters_of(shadow)
    optimizer = torch.optim.Adam(params.values(), lr=0.01)
    sampler = DomainBatchSampler(x, y, domains, [0, 1, 2, 3], 6, seed=3)
    for _ in range(2):
        g = mldg_gradient(shadow, params, sampler.sample(2), InnerLoop(steps=1, lr=0.5), 0.8)
        set_gradients(params, g.params)
        optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ["erm", "mldg"])
def test_erm_and_mldg_learn_a_rule_that_holds_on_the_held_out_domain(algorithm):
    x, y, domains = shifted_domains()
    config = TrainConfig(algorithm=algorithm, dataset="toy", steps=150, meta_batch=1, inner_lr=0.5,
                         meta_lr=0.02, device="cpu", log_every=50)
    torch.manual_seed(0)
    model = MLP(2, 2, hidden=(16,))
    target = domains == 4
    before = domain_accuracy(model, x[target], y[target])
    result = train(config, model, DomainBatchSampler(x, y, domains, [0, 1, 2, 3], 10, seed=0), progress=False)
    after = domain_accuracy(model, x[target], y[target])
    assert after > 0.9 and after > before, (before, after)
    assert result.curve[-1].meta_accuracy is not None


def test_training_refuses_mismatched_algorithms_and_samplers():
    x, y, domains = shifted_domains()
    sampler = DomainBatchSampler(x, y, domains, [0, 1, 2, 3], 6)
    with pytest.raises(ValueError, match="DomainBatchSampler"):
        train(TrainConfig(algorithm="maml", dataset="toy", steps=1, device="cpu"), MLP(2, 2), sampler, progress=False)
    with pytest.raises(ValueError, match="inner_steps must be 1"):
        TrainConfig(algorithm="mldg", inner_steps=2)
    with pytest.raises(ValueError, match="validate_every=0"):
        TrainConfig(algorithm="erm", validate_every=10)
    with pytest.raises(ValueError, match="mldg_beta"):
        replace(TrainConfig(algorithm="mldg"), mldg_beta=-1.0)


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(tmp_path, real_mirror, real_cache, load_script):
    """scripts/full_scale_mldg.py --smoke: the GPU script's whole pipeline, 3 steps per run, on the CPU."""
    if not (real_mirror / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        skip_without(f"no MNIST test set in the mirror {real_mirror}")
    script = load_script("full_scale_mldg")
    output = tmp_path / "mldg.json"
    arguments = ["--smoke", "--held-out", "75", "--output", str(output), "--device", "cpu", "--cache", str(real_cache),
                 "--mirror", str(real_mirror), "--no-progress"]
    assert script.main(arguments) == 0
    results = json.loads(output.read_text())
    assert set(results["runs"]) == {"erm/75/seed0", "mldg/75/seed0", "mldg-fo/75/seed0"}
    run = results["runs"]["mldg-fo/75/seed0"]
    assert run["config"]["first_order"] and run["config"]["inner_lr"] == 0.5 and run["config"]["steps"] == 3
    assert run["provenance"]["torch"] == torch.__version__ and 0 <= run["test"]["mean"] <= 1
    # ci95: evaluate's interval with each held-out digit a task scored 0 or 1
    correct = round(run["test"]["mean"] * 1000)
    scores = torch.cat([torch.ones(correct), torch.zeros(1000 - correct)])
    assert run["test"]["metric"] == "accuracy" and run["test"]["num_examples"] == 1000
    assert run["test"]["ci95"] == pytest.approx(confidence_interval(scores)[1], rel=1e-12)
    assert results["summary"]["erm"]["held_out"]["75"]["seeds"] == 1
    assert (tmp_path / "checkpoints" / "mldg-75-seed0.pt").is_file()
    assert script.main(arguments) == 0, "a second call resumes from the finished checkpoints"
    # A run in --output whose checkpoint is gone is kept as recorded, not trained again.
    (tmp_path / "checkpoints" / "mldg-75-seed0.pt").unlink()
    before = json.loads(output.read_text())["runs"]["mldg/75/seed0"]
    assert script.main(arguments) == 0
    assert json.loads(output.read_text())["runs"]["mldg/75/seed0"] == before
    assert not (tmp_path / "checkpoints" / "mldg-75-seed0.pt").exists(), "it was not trained again"


def test_gradient_cosines_match_the_closed_form_gradient_of_a_linear_softmax_model():
    """For logits W x + b, ∇W of the mean cross-entropy is mean((softmax − onehot) xᵀ), ∇b mean(softmax − onehot)."""
    x, y, domains = domain_data()
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 3).double()
    sources = [0, 2, 3, 4]
    with torch.no_grad():
        by_hand = []
        for d in sources:
            xd, yd = x[domains == d], y[domains == d]
            error = torch.softmax(model(xd), -1) - F.one_hot(yd, 3).double()          # [n, 3]
            by_hand.append(torch.cat([(error.T @ xd / len(xd)).reshape(-1), error.mean(0)]))
    expected = torch.tensor([[float(a @ b / (a.norm() * b.norm())) for b in by_hand] for a in by_hand],
                            dtype=torch.float64)
    cosines = domain_gradient_cosines(model, x, y, domains, sources)
    torch.testing.assert_close(cosines, expected, rtol=1e-10, atol=1e-12)
    pairs = [expected[i, j].item() for i in range(4) for j in range(i + 1, 4)]
    assert abs(gradient_alignment(model, x, y, domains, sources) - sum(pairs) / len(pairs)) < 1e-12


def test_gradient_alignment_is_one_for_identical_domains_and_refuses_bad_sources():
    x, y, domains = domain_data()
    copies = torch.cat([x[domains == 1]] * 3), torch.cat([y[domains == 1]] * 3)
    labels = torch.arange(3).repeat_interleave(PER_DOMAIN)                       # three identical domains
    assert abs(gradient_alignment(tiny_net(), *copies, labels, [0, 1, 2]) - 1) < 1e-12
    with pytest.raises(ValueError, match="at least 2 source domains"):
        gradient_alignment(tiny_net(), x, y, domains, [0])
    with pytest.raises(ValueError, match="domain 7 has no examples"):
        gradient_alignment(tiny_net(), x, y, domains, [0, 7])


def synthetic_mldg_runs(angles=(0, 15, 30, 45, 60, 75), seeds=(0, 1, 2)) -> dict:
    """Runs in the results schema of scripts/full_scale_mldg.py, with made-up held-out accuracies."""
    g = torch.Generator().manual_seed(3)
    runs = {}
    for angle in angles:
        for name in ("erm", "mldg", "mldg-fo"):
            for seed in seeds:
                accuracy = 0.9 + 0.05 * float(torch.rand((), generator=g))
                runs[f"{name}/{angle}/seed{seed}"] = {
                    "algorithm": name, "held_out": angle, "seed": seed, "paper": "none",
                    "test": {"metric": "accuracy", "mean": accuracy, "ci95": 0.01},
                    "provenance": {"device_name": "a CPU"}}
    return runs


def test_the_mldg_summary_pairs_each_variant_with_erm_by_seed(load_script):
    """The paired differences and t-intervals of the summary, against a direct computation (t_0.975(2) = 4.303)."""
    script = load_script("full_scale_mldg")
    runs = synthetic_mldg_runs()
    summary = script.summarize({"runs": runs})
    for angle in (0, 75):
        differences = torch.tensor([runs[f"mldg/{angle}/seed{s}"]["test"]["mean"]
                                    - runs[f"erm/{angle}/seed{s}"]["test"]["mean"] for s in range(3)], dtype=torch.float64)
        paired = summary["mldg"]["minus_erm"][str(angle)]
        assert paired["mean"] == pytest.approx(float(differences.mean()), abs=1e-12)
        assert paired["half_width"] == pytest.approx(4.302653 * float(differences.std()) / 3 ** 0.5, rel=1e-5)
        erm = summary["erm"]["held_out"][str(angle)]
        values = [runs[f"erm/{angle}/seed{s}"]["test"]["mean"] for s in range(3)]
        assert erm["standard_error"] == pytest.approx(float(torch.tensor(values, dtype=torch.float64).std(unbiased=False)) / 3 ** 0.5)
    # the average over angles: per seed, then over seeds, the same three seeds for both algorithms
    per_seed = [sum(runs[f"mldg-fo/{a}/seed{s}"]["test"]["mean"] - runs[f"erm/{a}/seed{s}"]["test"]["mean"]
                    for a in range(0, 90, 15)) / 6 for s in range(3)]
    assert summary["mldg-fo"]["minus_erm"]["average"]["per_seed"] == pytest.approx(per_seed, abs=1e-12)
    assert "minus_erm" not in summary["erm"] and summary["erm"]["average_seeds"] == [0, 1, 2]
    # a seed that lacks an angle leaves the average (which needs every angle) but not that angle's cell
    del runs["mldg/75/seed2"]
    partial = script.summarize({"runs": runs})
    assert partial["mldg"]["average_seeds"] == [0, 1] and partial["mldg"]["minus_erm"]["75"]["seeds"] == 2
    assert partial["mldg"]["minus_erm"]["0"]["seeds"] == 3
    # the average is over all six angles, as DomainBed's: none while an angle is missing
    only_two = script.summarize({"runs": synthetic_mldg_runs(angles=(0, 75))})
    assert only_two["mldg"]["average"] is None and "average" not in only_two["mldg"]["minus_erm"]


def test_merging_mldg_parts_recomputes_the_summary_over_all_runs(tmp_path, load_script):
    """Two parts (held-out 0°, and the other five angles, written by two processes) merge into one summary."""
    script, merge = load_script("full_scale_mldg"), load_script("merge_results")
    runs = synthetic_mldg_runs()
    for angle in (0, 75):
        mine = {name: run for name, run in runs.items() if (run["held_out"] == 0) == (angle == 0)}
        part = {"script": "scripts/full_scale_mldg.py", "smoke": False, "runs": mine,
                "summary": script.summarize({"runs": mine})}
        (tmp_path / f"part{angle}.json").write_text(json.dumps(part))
    folder = tmp_path / "results"
    folder.mkdir()
    assert merge.main([str(tmp_path / "part0.json"), str(tmp_path / "part75.json")], folder=folder) == 0
    merged = json.loads((folder / "mldg.json").read_text())
    assert len(merged["summary"]["mldg"]["held_out"]) == 6 and merged["summary"]["mldg"]["average"]["seeds"] == 3
    assert merged["summary"] == json.loads(json.dumps(script.summarize({"runs": runs})))
