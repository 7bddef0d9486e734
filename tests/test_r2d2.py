"""R2-D2 and LR-D2 (metabook_learn.r2d2): closed-form heads checked against direct solves, definitions and finite differences."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from meta_fixtures import loop_and_vmap_episode_gradients
from metabook_learn.data.classes import ClassImages
from metabook_learn.data.samplers import NWayKShotSampler
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import parameters_of
from metabook_learn.models import ConvNet
from metabook_learn.r2d2 import (
    LRD2,
    R2D2,
    logistic_newton,
    ridge_dual,
    ridge_primal,
    ridge_solution,
    uses_dual,
)
from metabook_learn.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("no_data_environment")

WAYS = 3


def data(S, D, N=WAYS, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(S, D, generator=g, dtype=torch.float64)
    Y = torch.randn(S, N, generator=g, dtype=torch.float64)
    return X, Y


def embedding(seed=0, filters=4):
    """A tiny ConvNet body: ``filters`` features (with R2-D2's bias column, one more)."""
    torch.manual_seed(seed)
    return ConvNet(None, in_channels=1, filters=filters, downsample="stride", image_size=8, blocks=2).double()


def tasks(num_tasks=3, shots=2, queries=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = lambda n: torch.arange(WAYS).repeat_interleave(n).repeat(num_tasks, 1)  # noqa: E731
    return type("Tasks", (), dict(
        support_x=torch.randn(num_tasks, WAYS * shots, 1, 8, 8, generator=g, dtype=torch.float64),
        support_y=labels(shots),
        query_x=torch.randn(num_tasks, WAYS * queries, 1, 8, 8, generator=g, dtype=torch.float64),
        query_y=labels(queries),
    ))


# ── Ridge regression ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("S,D", [(5, 12), (20, 6)])
def test_primal_is_the_direct_solution_of_the_normal_equations(S, D):
    X, Y = data(S, D)
    lam = 0.7
    W = ridge_primal(X, Y, lam)
    # The normal equations hold, and an independent route agrees: least squares on [X; √λ I] W = [Y; 0] (QR).
    torch.testing.assert_close((X.T @ X + lam * torch.eye(D, dtype=X.dtype)) @ W, X.T @ Y, rtol=0, atol=1e-12)
    stacked = torch.cat([X, math.sqrt(lam) * torch.eye(D, dtype=X.dtype)])
    lstsq = torch.linalg.lstsq(stacked, torch.cat([Y, torch.zeros(D, WAYS, dtype=X.dtype)]), driver="gelsd").solution
    torch.testing.assert_close(W, lstsq, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("S,D", [(5, 12), (12, 5), (7, 7)])
def test_woodbury_dual_equals_primal_and_ridge_solution_picks_the_smaller_system(S, D):
    X, Y = data(S, D, seed=3)
    for lam in (1e-3, 1.0, 50.0):
        torch.testing.assert_close(ridge_dual(X, Y, lam), ridge_primal(X, Y, lam), rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(ridge_solution(X, Y, torch.tensor(lam, dtype=X.dtype)), ridge_primal(X, Y, lam),
                                   rtol=1e-9, atol=1e-11)
    assert uses_dual(S, D) == (S <= D)


def test_gradients_through_both_solves_match_finite_differences():
    for S, D in ((4, 7), (7, 4)):
        X, Y = data(S, D, seed=5)
        lam = torch.tensor(0.3, dtype=torch.float64)
        for solve in (ridge_primal, ridge_dual):
            inputs = (X.clone().requires_grad_(), Y.clone().requires_grad_(), lam.clone().requires_grad_())
            assert torch.autograd.gradcheck(solve, inputs)


def test_ridge_solution_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"X \[S, D\] and Y \[S, N\]"):
        ridge_solution(torch.zeros(4, 3), torch.zeros(5, 2), 1.0)


# ── Logistic regression by Newton steps ──────────────────────────────────────


def test_newton_steps_reach_the_minimum_of_the_regularised_logistic_loss():
    X, _ = data(6, 10, seed=7)
    Y = (torch.arange(6)[:, None] % 3 == torch.arange(3)).double()
    lam = 0.5
    W = logistic_newton(X, Y, lam, steps=25).requires_grad_()
    # The definition: the gradient of Σ BCE + (λ/2)‖w‖² vanishes at the minimiser, for every column.
    objective = F.binary_cross_entropy_with_logits(X @ W, Y, reduction="sum") + lam / 2 * W.pow(2).sum()
    (gradient,) = torch.autograd.grad(objective, W)
    assert gradient.abs().max() < 1e-10


def test_one_newton_step_is_the_primal_weighted_ridge_regression():
    X, _ = data(5, 8, seed=8)
    Y = (torch.arange(5)[:, None] % 2 == torch.arange(2)).double()
    lam = 2.0
    # From w = 0: μ = 1/2, s = 1/4, z = (y − 1/2)/s; the step is (XᵀSX + λI)⁻¹ XᵀS z.
    s = torch.full((5,), 0.25, dtype=X.dtype)
    z = (Y - 0.5) / 0.25
    primal = torch.linalg.solve(X.T @ (s[:, None] * X) + lam * torch.eye(8, dtype=X.dtype), X.T @ (s[:, None] * z))
    torch.testing.assert_close(logistic_newton(X, Y, lam, steps=1), primal, rtol=1e-10, atol=1e-12)


def test_gradients_through_newton_steps_match_finite_differences():
    X, _ = data(5, 6, seed=9)
    Y = (torch.arange(5)[:, None] % 3 == torch.arange(3)).double()
    lam = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X, lam: logistic_newton(X, Y, lam, steps=3),
                                    (X.clone().requires_grad_(), lam))


# ── The episodic learners ────────────────────────────────────────────────────


# Support sets of 6: 4 filters + bias = 5 features -> the primal solve; 8 filters -> the Woodbury one.
@pytest.mark.parametrize("make", [
    lambda: R2D2(embedding(), WAYS, lam=0.5, scale=3.0),
    lambda: R2D2(embedding(filters=8), WAYS, lam=0.5, scale=3.0),
    lambda: R2D2(embedding(filters=8), WAYS, lam=0.5, scale=3.0, query_bn="inductive"),
    lambda: LRD2(embedding(), WAYS, lam=0.5, steps=2),
], ids=["r2d2-primal", "r2d2-woodbury", "r2d2-inductive", "lrd2"])
def test_episode_gradient_vmap_equals_loop_and_finite_differences(make):
    model, batch = make().double(), tasks()
    params = parameters_of(model)
    loop, vmap = loop_and_vmap_episode_gradients(model, batch, rtol=1e-9)
    assert loop.outputs.shape == (3, WAYS * 3, WAYS)

    # Finite differences of one episode's loss, w.r.t. λ, the head's scale and the first convolution.
    names = [n for n in ("log_lam", "scale", "embedding.body.0.conv.weight") if n in params]

    def loss(*tensors):
        chosen = {**{n: p.detach() for n, p in params.items()}, **dict(zip(names, tensors))}
        return functional_call(model, chosen, (batch.support_x[0], batch.support_y[0],
                                               batch.query_x[0], batch.query_y[0]))[0]

    assert torch.autograd.gradcheck(loss, tuple(params[n].detach().clone().requires_grad_() for n in names))


def test_r2d2_head_is_the_ridge_solution_on_scaled_features_with_a_bias_column():
    model = R2D2(embedding(), WAYS, lam=0.5, scale=2.0, bias=0.1).double()
    batch = tasks(1)
    loss, logits = model(batch.support_x[0], batch.support_y[0], batch.query_x[0], batch.query_y[0])
    features = model.embedding(torch.cat([batch.support_x[0], batch.query_x[0]]))  # one batch: transductive
    zs, zq = features[:WAYS * 2], features[WAYS * 2:]
    X = torch.cat([zs, torch.ones(len(zs), 1, dtype=zs.dtype)], 1) / math.sqrt(len(zs))
    Y = F.one_hot(batch.support_y[0], WAYS).double() / math.sqrt(len(zs))
    W = ridge_primal(X, Y, 0.5)
    expected = 2.0 * torch.cat([zq, torch.ones(len(zq), 1, dtype=zq.dtype)], 1) @ W + 0.1
    torch.testing.assert_close(logits, expected, rtol=1e-7, atol=1e-9)  # the same solve, other rounding
    torch.testing.assert_close(loss, F.cross_entropy(expected, batch.query_y[0]))


@pytest.mark.parametrize("cls", [R2D2, LRD2])
def test_the_head_is_solved_in_float32_under_bfloat16_autocast(cls):
    torch.manual_seed(0)
    model = cls(ConvNet(None, in_channels=1, filters=8, downsample="stride", image_size=8, blocks=2), WAYS)
    batch = tasks(1)
    episode = [t[0].float() if t.is_floating_point() else t[0] for t in
               (batch.support_x, batch.support_y, batch.query_x, batch.query_y)]
    _, full = model(*episode)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training's bf16=True does this on CUDA
        _, mixed = model(*episode)
    assert mixed.dtype == torch.float32  # without the guard, autocast runs the head's products in bfloat16
    # Only the network ran in bfloat16 (about 3 significant digits), so the logits barely move.
    torch.testing.assert_close(mixed, full, rtol=0.05, atol=0.05)


def test_inductive_query_predictions_do_not_depend_on_the_other_queries():
    model = R2D2(embedding(), WAYS, query_bn="inductive").double()
    batch = tasks(1)
    sx, sy, qx, qy = batch.support_x[0], batch.support_y[0], batch.query_x[0], batch.query_y[0]
    _, together = model(sx, sy, qx, qy)
    _, alone = model(sx, sy, qx[:1], qy[:1])
    torch.testing.assert_close(alone[0], together[0], rtol=1e-9, atol=1e-12)


def test_fixed_lambda_is_not_a_parameter_and_bad_settings_fail_clearly():
    assert "log_lam" not in dict(R2D2(embedding(), WAYS, lam=50.0, learn_lambda=False).named_parameters())
    assert float(R2D2(embedding(), WAYS, lam=50.0, learn_lambda=False).lam) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="query_bn"):
        R2D2(embedding(), WAYS, query_bn="batch")
    with pytest.raises(ValueError, match="positive"):
        R2D2(embedding(), WAYS, lam=0.0)
    with pytest.raises(ValueError, match="ways"):
        LRD2(embedding(), 1)
    with pytest.raises(ValueError, match="Newton step"):
        LRD2(embedding(), WAYS, steps=0)


def nuisance_images(num_classes, per_class=8, seed=0) -> ClassImages:
    """Each class: its own random 8x8 pattern, plus one of four nuisance patterns shared by all classes.

    Pixel distances are dominated by the nuisance, so an untrained network is
    barely better than chance; a trained one learns to ignore the nuisance,
    which carries over to new classes (unlike the class patterns themselves).
    """
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 1, 1, 8, 8, generator=g) - 0.5
    nuisances = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(123)) - 0.5
    which = torch.randint(0, 4, (num_classes, per_class), generator=g)
    noise = torch.randn(num_classes, per_class, 1, 8, 8, generator=g)
    x = 0.5 + 0.4 * patterns + 0.6 * nuisances[which] + 0.1 * noise
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).flatten(0, 1)
    return ClassImages.from_sizes(images, [per_class] * num_classes, [f"c{i}" for i in range(num_classes)])


@pytest.mark.parametrize("algorithm", ["r2d2", "lrd2"])
def test_training_improves_held_out_tasks(algorithm):
    torch.manual_seed(0)
    body = ConvNet(None, in_channels=1, filters=16, downsample="stride", image_size=8, blocks=2)
    model = R2D2(body, WAYS) if algorithm == "r2d2" else LRD2(body, WAYS, steps=2)
    train_classes, test_classes = nuisance_images(200, seed=0), nuisance_images(50, seed=1)

    def held_out():
        return evaluate(model, NWayKShotSampler(test_classes, WAYS, 1, 3, seed=5), None, num_tasks=100)

    before = held_out()
    config = TrainConfig(algorithm=algorithm, ways=WAYS, shots=1, queries=3, meta_batch=4, steps=40,
                         meta_lr=1e-2, device="cpu", strategy="loop")
    result = train(config, model, NWayKShotSampler(train_classes, WAYS, 1, 3, seed=0), progress=False)
    after = held_out()
    # Measured: query loss 0.97 -> 0.59 (R2-D2) and 0.99 -> 0.72 (LR-D2), accuracy 0.54 -> 0.75 and 0.71.
    assert after.query_loss < 0.85 * before.query_loss
    assert after.mean > before.mean + 0.1 and after.mean - after.ci95 > 1 / WAYS
    assert after.query_bn == "transductive" and after.inner_steps == 0
    assert result.curve[-1].meta_loss < result.curve[0].meta_loss


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(tmp_path, real_mirror, real_cache, load_script):
    """scripts/full_scale_closed_form.py --smoke: every run's pipeline (CIFAR-FS on a format fixture), on the CPU."""
    import json

    script = load_script("full_scale_closed_form")
    output = tmp_path / "r2d2.json"
    assert script.main(["--smoke", "--output", str(output), "--device", "cpu", "--no-progress",
                        "--cache", str(real_cache), "--mirror", str(real_mirror)]) == 0
    results = json.loads(output.read_text())
    assert results["smoke"] is True and set(results["runs"]) == {run.name for run in script.RUNS}
    for run in results["runs"].values():
        assert run["test"]["metric"] == "accuracy" and run["test"] == run["tests"]["transductive"]
        assert run["provenance"]["torch"] == torch.__version__
        omniglot = run["setting"].startswith("omniglot")  # the Omniglot runs take the CPU fast path
        assert run["config"]["bf16"] == run["config"]["channels_last"] == omniglot
        # the protocol that pretrained.evaluate re-draws the test tasks from, and how the run differs from the paper
        ways, shots = (int(part.split("-")[0]) for part in run["setting"].split()[1:3])
        assert run["test"]["protocol"] == {**run["test"]["protocol"], "split": "test", "seed": 0, "ways": ways,
                                           "shots": shots, "query_bn": "transductive"}
        assert len(run["test"]["per_task"]) == run["test"]["num_tasks"]
        assert ("bfloat16" in run["deviations_from_paper"]) == omniglot and "λ learned" in run["deviations_from_paper"]
