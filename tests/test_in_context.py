"""metabook_learn.in_context: the causal transformer, linear attention as a gradient step, the regression baselines."""
import pytest
import torch

from metabook_learn.episodic import episode_gradient
from metabook_learn.evaluation import evaluate
from metabook_learn.training import TrainConfig, TrainingDiverged, train
from metabook_learn.in_context import (InContextTransformer, LinearAttentionRegressor, LinearRegressionSampler,
                                 attention_mask, best_step_size, errors_by_context_size, gradient_descent,
                                 gradient_step_attention, least_squares, nearest_neighbours,
                                 regression_baselines, ridge)


def small_transformer(x_dim=3, **kwargs):
    torch.manual_seed(0)
    return InContextTransformer(x_dim, width=16, depth=2, heads=2, **kwargs).double()


def fit(model, sampler, steps, meta_batch, lr):
    """Meta-train an in-context regressor with metabook's one training loop, as the chapter does."""
    config = TrainConfig.for_sampler(sampler, algorithm="transformer", meta_batch=meta_batch, meta_lr=lr,
                                     steps=steps, clip_grad_norm=1.0, log_every=1, device="cpu")
    return train(config, model, sampler, progress=False)


def linear_tasks(dim=3, shots=8, queries=4, num_tasks=5, noise_std=0.0, seed=0, dtype=torch.float64):
    tasks = LinearRegressionSampler(dim, shots, queries, noise_std=noise_std, seed=seed).sample(num_tasks)
    return [t.to(dtype) for t in (tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)]


# ── The mask ─────────────────────────────────────────────────────────────────


def test_the_mask_spelled_out_for_two_examples_and_one_query():
    c1, c2, p1, p2, q = range(5)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    for a, b in [(c1, c1), (c2, c1), (c2, c2),    # the context: causal
                 (p1, p1),                          # example 1 predicted from nothing before it
                 (p2, c1), (p2, p2),                # example 2 predicted from example 1
                 (q, c1), (q, c2), (q, q)]:         # the query: the whole context
        expected[a, b] = True
    assert torch.equal(attention_mask(2, 1, prefixes=True), expected)
    assert torch.equal(attention_mask(2, 1, prefixes=False), expected[[c1, c2, q]][:, [c1, c2, q]])


def test_a_later_example_never_changes_an_earlier_prediction():
    model = small_transformer()
    sx, sy, qx, _ = linear_tasks()
    before, _ = model.predict(sx, sy, qx, prefixes=True)
    j = 5
    sx2, sy2 = sx.clone(), sy.clone()
    sx2[:, j] += 3.0
    sy2[:, j] -= 2.0
    after, _ = model.predict(sx2, sy2, qx, prefixes=True)
    # Prediction i reads examples 0 … i−1 (and x_i): those up to j see nothing of the change …
    torch.testing.assert_close(after[:, :j], before[:, :j], rtol=0, atol=1e-12)
    # … those after j do (so the check above could fail).
    assert (after[:, j + 1:] - before[:, j + 1:]).abs().amin() > 1e-6


def test_a_prefix_prediction_is_the_prediction_from_the_examples_before_it():
    model = small_transformer()
    sx, sy, _, _ = linear_tasks()
    prefix, _ = model.predict(sx, sy, sx[:, :1], prefixes=True)
    for i in range(sx.shape[1]):
        _, alone = model.predict(sx[:, :i], sy[:, :i], sx[:, i:i + 1])
        torch.testing.assert_close(prefix[:, i:i + 1], alone, rtol=0, atol=1e-12)


def test_queries_are_predicted_independently_of_each_other():
    model = small_transformer()
    sx, sy, qx, _ = linear_tasks()
    _, outputs = model.predict(sx, sy, qx)
    order = torch.tensor([3, 1, 0, 2])
    _, permuted = model.predict(sx, sy, qx[:, order])
    torch.testing.assert_close(permuted, outputs[:, order], rtol=0, atol=1e-12)
    _, alone = model.predict(sx, sy, qx[:, 2:3])
    torch.testing.assert_close(alone, outputs[:, 2:3], rtol=0, atol=1e-12)


def test_the_order_of_the_context_matters_to_the_causal_transformer():
    """It is not permutation invariant (so the book does not claim it): reversing the context changes predictions."""
    model = small_transformer()
    sx, sy, qx, _ = linear_tasks()
    _, outputs = model.predict(sx, sy, qx)
    _, reversed_ = model.predict(sx.flip(1), sy.flip(1), qx)
    assert (outputs - reversed_).abs().max() > 1e-6


# ── The episodic interface ───────────────────────────────────────────────────


def test_the_batched_forward_gives_the_gradient_of_the_episodic_path():
    model = small_transformer()
    tasks = LinearRegressionSampler(3, 6, 2, seed=1).sample(4).to(torch.float64)
    loss, _ = model(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)
    loss.backward()
    for strategy in ("loop", "vmap", "auto"):  # auto: the whole batch in one call, as in training
        g = episode_gradient(model, dict(model.named_parameters()), tasks, strategy)
        assert g.strategy == ("batched" if strategy == "auto" else strategy)
        torch.testing.assert_close(g.loss, loss.detach())
        for name, p in model.named_parameters():
            torch.testing.assert_close(g.params[name], p.grad, msg=f"{strategy}: {name}")


def test_evaluate_scores_the_transformer_like_any_episodic_learner():
    model = small_transformer().float()
    sampler = LinearRegressionSampler(3, 6, 5, seed=2)
    result = evaluate(model, sampler, None, num_tasks=6, tasks_per_batch=6)
    tasks = LinearRegressionSampler(3, 6, 5, seed=2).sample(6)
    with torch.no_grad():
        _, outputs = model.predict(tasks.support_x, tasks.support_y, tasks.query_x)
    assert result.metric == "mse" and result.inner_steps == 0
    expected = (outputs - tasks.query_y).pow(2).flatten(1).mean(1).double()
    torch.testing.assert_close(result.per_task, expected, rtol=1e-5, atol=1e-6)


def test_classification_reads_one_hot_labels_and_returns_logits():
    torch.manual_seed(0)
    model = InContextTransformer(4, ways=3, width=16, depth=1, heads=2)
    sx, qx = torch.randn(6, 4), torch.randn(3, 4)
    sy, qy = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 0, 1])
    loss, logits = model(sx, sy, qx, qy)
    assert logits.shape == (3, 3) and loss.shape == ()
    assert torch.equal(model.encode_labels(sy), torch.eye(3)[sy])
    # The labels are read: renaming the classes of the support set changes the logits.
    _, renamed = model(sx, (sy + 1) % 3, qx, qy)
    assert (renamed - logits).abs().max() > 1e-6


def test_classification_with_an_image_embedding_under_evaluate():
    from metabook_learn.data import TaskBatch
    from metabook_learn.protonets import omniglot_embedding

    class TinyImages:
        num_ways = 2

        def __init__(self):
            self.generator = torch.Generator().manual_seed(0)

        def sample(self, count):
            images = torch.rand(count, 4, 1, 28, 28, generator=self.generator)
            labels = torch.tensor([0, 1, 0, 1]).expand(count, 4).contiguous()
            return TaskBatch(images[:, :2], labels[:, :2], images[:, 2:], labels[:, 2:],
                             torch.arange(2).expand(count, 2).contiguous())

    torch.manual_seed(0)
    model = InContextTransformer(8, ways=2, width=16, depth=1, heads=2, embedding=omniglot_embedding(filters=8))
    result = evaluate(model, TinyImages(), None, num_tasks=3)
    assert result.metric == "accuracy" and result.num_tasks == 3
    tasks = TinyImages().sample(3)
    loss, logits = model(tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)  # a batch of tasks
    assert logits.shape == (3, 2, 2) and torch.isfinite(loss)



@pytest.mark.parametrize("batched", [False, True])
def test_inductive_batch_norm_normalizes_the_images_with_the_support_sets_statistics(batched):
    """Inductive: a query's prediction does not depend on the other queries (nor on how many there are), since
    only the support images set the statistics; transductive: all images do, so changing one query moves another."""
    from metabook_learn.protonets import omniglot_embedding

    torch.manual_seed(0)
    embedding = omniglot_embedding(filters=8)
    support_x, query_x = torch.rand(4, 1, 28, 28), torch.rand(3, 1, 28, 28)
    support_y = torch.tensor([0, 1, 0, 1])
    changed = query_x.clone()
    changed[2] = torch.rand(1, 28, 28)
    predictions = {}
    for mode in ("inductive", "transductive"):
        model = InContextTransformer(8, ways=2, width=16, depth=1, heads=2, embedding=embedding, query_bn=mode)
        with torch.no_grad():
            for name, queries in (("queries", query_x), ("changed", changed), ("first two", query_x[:2])):
                arguments = (support_x, support_y, queries)
                if batched:  # a batch of one task goes through vmap
                    arguments = tuple(a.unsqueeze(0) for a in arguments)
                predictions[mode, name] = model.predict(*arguments)[1].reshape(len(queries), 2)[:2]
    assert torch.allclose(predictions["inductive", "queries"], predictions["inductive", "changed"], atol=1e-6)
    assert torch.allclose(predictions["inductive", "queries"], predictions["inductive", "first two"], atol=1e-6)
    assert not torch.allclose(predictions["transductive", "queries"], predictions["transductive", "changed"],
                              atol=1e-4)
    with pytest.raises(ValueError, match="must accept stats_rows"):
        InContextTransformer(8, ways=2, embedding=torch.nn.Flatten(), query_bn="inductive")
    with pytest.raises(ValueError, match="embeds no images"):
        InContextTransformer(8, query_bn="inductive")


# ── Linear attention as one gradient step ────────────────────────────────────


def test_the_hand_built_attention_is_one_gradient_step_to_floating_point_precision():
    sx, sy, qx, _ = linear_tasks(dim=5, shots=12, queries=7)
    eta = 0.037
    layer = gradient_step_attention(5, eta)
    with torch.no_grad():
        prediction = layer.predict(sx, sy, qx)
    # One GD step, by autograd, independently of the construction: w₁ = 0 − η ∇ ½Σ(wᵀx − y)² at w = 0.
    w0 = torch.zeros(sx.shape[0], 5, 1, dtype=torch.float64, requires_grad=True)
    (0.5 * ((sx @ w0 - sy) ** 2).sum()).backward()
    expected = qx @ (w0 - eta * w0.grad)
    torch.testing.assert_close(prediction, expected, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(gradient_descent(sx, sy, qx, steps=1, lr=eta), expected, rtol=1e-13, atol=1e-13)


def test_linear_attention_is_invariant_to_the_order_of_the_context():
    torch.manual_seed(0)
    model = LinearAttentionRegressor(4).double()
    sx, sy, qx, _ = linear_tasks(dim=4)
    order = torch.randperm(sx.shape[1])
    torch.testing.assert_close(model.predict(sx[:, order], sy[:, order], qx), model.predict(sx, sy, qx),
                               rtol=1e-12, atol=1e-12)


# ── The baselines against closed forms ───────────────────────────────────────


def test_least_squares_solves_the_normal_equations_when_k_exceeds_d():
    sx, sy, qx, _ = linear_tasks(dim=4, shots=9, noise_std=0.5)
    w = torch.linalg.solve(sx.transpose(1, 2) @ sx, sx.transpose(1, 2) @ sy)  # XᵀX w = Xᵀy
    torch.testing.assert_close(least_squares(sx, sy, qx), qx @ w)


def test_least_squares_is_the_minimum_norm_interpolant_when_k_is_below_d():
    sx, sy, qx, _ = linear_tasks(dim=6, shots=3, noise_std=0.5)
    w = sx.transpose(1, 2) @ torch.linalg.solve(sx @ sx.transpose(1, 2), sy)  # Xᵀ(XXᵀ)⁻¹y
    torch.testing.assert_close(least_squares(sx, sy, qx), qx @ w)
    torch.testing.assert_close(sx @ w, sy)  # it interpolates


def test_ridge_is_the_posterior_mean_of_the_gaussian_prior():
    sigma, tau = 0.5, 1.3
    sx, sy, qx, _ = linear_tasks(dim=4, shots=6, noise_std=sigma)
    # Posterior mean in the function-space form: E[w | X, y] = τ² Xᵀ (τ² XXᵀ + σ² I)⁻¹ y.
    kernel = tau ** 2 * sx @ sx.transpose(1, 2) + sigma ** 2 * torch.eye(6, dtype=torch.float64)
    w = tau ** 2 * sx.transpose(1, 2) @ torch.linalg.solve(kernel, sy)
    torch.testing.assert_close(ridge(sx, sy, qx, lam=sigma ** 2 / tau ** 2), qx @ w)


def test_gradient_descent_converges_to_least_squares():
    sx, sy, qx, _ = linear_tasks(dim=3, shots=10, noise_std=0.3)
    torch.testing.assert_close(gradient_descent(sx, sy, qx, steps=3000), least_squares(sx, sy, qx))


def test_nearest_neighbours_against_a_slow_loop():
    sx, sy, qx, _ = linear_tasks(dim=2, shots=7, queries=3)
    fast = nearest_neighbours(sx, sy, qx, neighbours=3)
    for t in range(sx.shape[0]):
        for q in range(qx.shape[1]):
            distances = [((sx[t, i] - qx[t, q]) ** 2).sum().item() for i in range(7)]
            nearest = sorted(range(7), key=distances.__getitem__)[:3]
            assert fast[t, q, 0].item() == pytest.approx(sum(sy[t, i, 0].item() for i in nearest) / 3)


def test_every_baseline_predicts_zero_without_examples():
    sx, sy, qx, _ = linear_tasks(shots=0)
    for predict in (least_squares, lambda *a: ridge(*a, lam=1.0), lambda *a: gradient_descent(*a, steps=3),
                    nearest_neighbours):
        assert torch.equal(predict(sx, sy, qx), torch.zeros_like(qx[..., :1]))


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="noise_std"):
        LinearRegressionSampler(3, 5, noise_std=-1.0)
    with pytest.raises(ValueError, match="lam must be > 0"):
        ridge(*linear_tasks()[:3], lam=0.0)
    with pytest.raises(ValueError, match="multiple of heads"):
        InContextTransformer(3, width=10, heads=4)


def test_training_that_diverges_stops_and_says_so():
    class Broken:
        def sample(self, count):
            tasks = LinearRegressionSampler(2, 3, 1).sample(count)
            tasks.support_y[:] = float("nan")
            return tasks

    Broken.num_shots, Broken.num_queries = 3, 1
    with pytest.raises(TrainingDiverged, match="diverged at step 1"):
        fit(small_transformer(2).float(), Broken(), steps=2, meta_batch=2, lr=1e-3)


# ── It learns: error falls with the context size (quick) ────────────────────


def test_after_a_short_training_in_context_error_falls_with_context_size():
    torch.manual_seed(0)
    d = 2
    model = InContextTransformer(d, width=32, depth=2, heads=2)
    fit(model, LinearRegressionSampler(d, 10, 1, seed=0), steps=300, meta_batch=32, lr=2e-3)
    test = LinearRegressionSampler(d, 10, 1, seed=123).sample(500)
    with torch.no_grad():
        prefix, _ = model.predict(test.support_x, test.support_y, test.support_x, prefixes=True)
    error = ((prefix - test.support_y) ** 2).mean((0, 2)) / d  # [k]: squared error / d after k examples
    # With no example the best guess is 0 (error ≈ E[y²]/d = 1); with d or more it can be far lower.
    assert error[0] > 0.7 and error[6:].max() < 0.5 * error[0], error


def test_the_best_step_size_minimizes_the_one_step_error():
    tasks = LinearRegressionSampler(3, 6, 4, seed=3).sample(50).to(torch.float64)
    eta = best_step_size(tasks)

    def error(rate):
        return (gradient_descent(tasks.support_x, tasks.support_y, tasks.query_x, 1, rate) - tasks.query_y).pow(2).mean()

    assert error(eta) < error(0.98 * eta) and error(eta) < error(1.02 * eta)


def test_errors_by_context_size_predicts_each_example_from_the_ones_before():
    tasks = LinearRegressionSampler(3, 5, 1, seed=4).sample(7).to(torch.float64)
    errors = errors_by_context_size(least_squares, tasks)
    k = 2
    expected = (least_squares(tasks.support_x[:, :k], tasks.support_y[:, :k], tasks.support_x[:, k:k + 1])
                - tasks.support_y[:, k:k + 1]).pow(2)[:, 0, 0] / 3
    torch.testing.assert_close(errors[:, k], expected)
    assert errors.shape == (7, 5) and errors[:, 4].max() < 1e-12  # noiseless: exact once k ≥ d
    assert set(regression_baselines(0.0)) == {"least squares", "GD, 1 step", "GD, 10 steps", "3-nearest neighbours"}
    assert "ridge (λ = 0.25)" in regression_baselines(0.5)


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(tmp_path, load_script):
    """scripts/full_scale_in_context.py --smoke: every run, 5 steps, a tiny transformer, on the CPU."""
    import json

    script = load_script("full_scale_in_context")
    output = tmp_path / "in_context.json"
    assert script.main(["--smoke", "--output", str(output), "--device", "cpu", "--no-progress", "--seeds", "2"]) == 0
    results = json.loads(output.read_text())
    assert set(results["runs"]) == {"noiseless", "noisy", "sinusoid", "lsa"} and results["smoke"] is True  # the default runs
    for name, run in results["runs"].items():
        assert run["test"]["metric"] == "mse" and len(run["test"]["per_seed"]) == 2, name
        assert run["config"]["steps"] == 5 and run["provenance"]["torch"] == torch.__version__
    noisy = results["runs"]["noisy"]
    assert len(noisy["seeds"][0]["curve"]["mean"]) == 20 and "ridge (λ = 0.25)" in noisy["baselines"]
    assert noisy["test"]["mean"] == pytest.approx(sum(s["curve"]["mean"][10] for s in noisy["seeds"]) / 2)
    assert set(results["runs"]["sinusoid"]["tests"]) == {"5", "10", "20"}


def test_shuffled_order_permutes_each_support_set_and_keeps_its_pairs():
    from metabook_learn.data import ShuffledOrder

    inner = LinearRegressionSampler(2, 6, 3, seed=5)
    tasks = LinearRegressionSampler(2, 6, 3, seed=5).sample(4)
    shuffled = ShuffledOrder(inner, seed=1).sample(4)
    assert torch.equal(shuffled.query_x, tasks.query_x) and torch.equal(shuffled.weights, tasks.weights)
    for t in range(4):
        # Every (x, y) pair is still there, each once, and the order changed for some task.
        before = sorted(map(tuple, torch.cat([tasks.support_x[t], tasks.support_y[t]], 1).tolist()))
        after = sorted(map(tuple, torch.cat([shuffled.support_x[t], shuffled.support_y[t]], 1).tolist()))
        assert before == after
    assert not torch.equal(shuffled.support_x, tasks.support_x)


def test_the_full_scale_script_runs_omniglot_in_smoke_mode(tmp_path, load_script, real_mirror, real_cache):
    """The Omniglot run of scripts/full_scale_in_context.py, 5 steps of a tiny model, on real data."""
    import json

    script = load_script("full_scale_in_context")
    output = tmp_path / "in_context.json"
    assert script.main(["--smoke", "--runs", "omniglot", "--output", str(output), "--device", "cpu", "--no-progress",
                        "--mirror", str(real_mirror), "--cache", str(real_cache)]) == 0
    run = json.loads(output.read_text())["runs"]["omniglot"]
    assert run["test"]["metric"] == "accuracy" and run["seeds"][0]["test"]["num_tasks"] == 4
    assert 0 <= run["test"]["mean"] <= 1 and run["config"]["filters"] == 8
    # One seed: the headline interval is the test tasks' (a t-interval needs two seeds or more), and says so.
    assert run["test"]["ci95"] == run["seeds"][0]["test"]["ci95"] and "one training run" in run["test"]["over"]
    assert run["test"]["protocol"]["queries"] == 15 and run["config"]["bf16"] and run["config"]["channels_last"]
    # A second call with two seeds keeps seed 0 as recorded (its checkpoint removed: it cannot be trained again)
    # and trains seed 1; the headline becomes the mean over both with a t-interval.
    for checkpoint in (tmp_path / "checkpoints").glob("*.pt"):
        checkpoint.unlink()
    assert script.main(["--smoke", "--runs", "omniglot", "--seeds", "2", "--output", str(output), "--device", "cpu",
                        "--no-progress", "--mirror", str(real_mirror), "--cache", str(real_cache)]) == 0
    both = json.loads(output.read_text())["runs"]["omniglot"]
    assert both["seeds"][0] == run["seeds"][0] and [s["seed"] for s in both["seeds"]] == [0, 1]
    assert not (tmp_path / "checkpoints" / "in-context-omniglot-seed0.pt").exists(), "seed 0 was not trained again"
    assert both["test"]["per_seed"] == [s["test"]["mean"] for s in both["seeds"]] and "seeds" in both["test"]["over"]
    assert both["training_wall_time_s"] == pytest.approx(sum(s["training_wall_time_s"] for s in both["seeds"]))


def test_the_transformer_trains_and_evaluates_through_the_command_line(tmp_path, capsys):
    from metabook_learn.cli import main

    checkpoint = tmp_path / "icl.pt"
    assert main(["train", "--algorithm", "transformer", "--data", "sinusoid", "--steps", "3", "--meta-batch", "2",
                 "--checkpoint", str(checkpoint), "--device", "cpu", "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", "--no-progress"]) == 0
    assert "transformer on sinusoid test: MSE" in capsys.readouterr().out


def test_the_samplers_of_a_sequence_model_shuffle_support_sets_and_resume_exactly(real_mirror, real_cache):
    from metabook_learn.data import NWayKShotSampler, ShuffledOrder
    from metabook_learn.setups import make_sampler
    from metabook_learn.training import TrainConfig

    def sampler(algorithm):
        config = TrainConfig(algorithm=algorithm, dataset="omniglot", device="cpu")
        return make_sampler(config, "val", 3, "cpu", real_cache, real_mirror, training=True)

    assert isinstance(sampler("transformer"), ShuffledOrder) and isinstance(sampler("protonet"), NWayKShotSampler)
    shuffled = sampler("transformer")
    shuffled.sample(2)
    state = shuffled.state_dict()
    expected = shuffled.sample(3)
    again = sampler("transformer")
    again.load_state_dict(state)
    resumed = again.sample(3)
    assert torch.equal(resumed.support_x, expected.support_x) and torch.equal(resumed.support_y, expected.support_y)
    assert not all(torch.equal(row, row.sort().values) for row in expected.support_y)  # not class by class


def test_the_transformer_reads_images_from_the_command_line_and_resumes_bit_for_bit(tmp_path, capsys, real_mirror,
                                                                                    real_cache):
    from metabook_learn.cli import main

    folders = ["--cache", str(real_cache), "--mirror", str(real_mirror), "--device", "cpu", "--no-progress"]
    common = ["train", "--algorithm", "transformer", "--data", "omniglot", "--meta-batch", "2", "--queries", "2",
              "--validate-every", "0", *folders]
    assert main([*common, "--steps", "4", "--checkpoint", str(tmp_path / "straight.pt")]) == 0
    assert main([*common, "--steps", "2", "--checkpoint", str(tmp_path / "cut.pt")]) == 0
    assert main([*common, "--steps", "4", "--checkpoint", str(tmp_path / "cut.pt"), "--resume"]) == 0
    straight, cut = (torch.load(tmp_path / name, weights_only=True)["model"] for name in ("straight.pt", "cut.pt"))
    for name, weights in straight.items():
        assert torch.equal(weights, cut[name]), name
    assert main(["evaluate", "--checkpoint", str(tmp_path / "straight.pt"), "--tasks", "4", *folders]) == 0
    assert "transformer on omniglot test: accuracy" in capsys.readouterr().out


def test_an_omniglot_record_of_the_older_format_is_kept_with_its_run_time(load_script):
    """results/in_context.json's seed 0 predates per-seed times: with one seed the run's time is that seed's."""
    script = load_script("full_scale_in_context")
    values = script.settings("omniglot", False)
    old = {"config": values, "training_wall_time_s": 5031.0, "provenance": {"git_commit": "658bee4"},
           "seeds": [{"seed": 0, "test": {"mean": 0.98}}]}
    kept = script.scored_seeds(old, values)
    assert kept[0]["training_wall_time_s"] == 5031.0 and kept[0]["provenance"]["git_commit"] == "658bee4"
    assert script.scored_seeds(old, {**values, "steps": 1}) == {}, "other settings: nothing is kept"
    with pytest.raises(SystemExit, match="several seeds without per-seed training times"):
        script.scored_seeds({**old, "seeds": [{"seed": 0}, {"seed": 1}]}, values)
