"""The one evaluation routine: per-task scores by hand, the 95% interval by hand, determinism, batch-norm mode."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabook_learn.data import NWayKShotSampler
from metabook_learn.data.classes import ClassImages
from metabook_learn.evaluation import TEST_TASKS, confidence_interval, evaluate, per_task_scores
from metabook_learn.inner_loop import InnerLoop
from metabook_learn.models import ConvNet, sinusoid_mlp
from metabook_learn.data import SinusoidSampler

WAYS = 3


def tiny_images(num_classes: int = 8, per_class: int = 6, seed: int = 0) -> ClassImages:
    """Random 8x8 grey images, ``per_class`` of each class: enough for 3-way tasks."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_classes * per_class, 1, 8, 8), generator=g, dtype=torch.uint8)
    return ClassImages.from_sizes(images, [per_class] * num_classes, [f"c{i}" for i in range(num_classes)])


def tiny_convnet() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(WAYS, in_channels=1, filters=4, downsample="stride", image_size=8, blocks=2)


def adapt_by_hand(model, task, lr: float, steps: int):
    """Plain SGD with autograd on one task's support set, then its query logits (transductive batch norm)."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(steps):
        params = {n: p.requires_grad_() for n, p in params.items()}
        loss = F.cross_entropy(functional_call(model, params, (task.support_x,)), task.support_y)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {n: (p - lr * g).detach() for (n, p), g in zip(params.items(), grads)}
    return functional_call(model, params, (task.query_x,))


def test_confidence_interval_is_1_96_std_over_root_n_computed_by_hand():
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5])
    mean = (1 + 0 + 1 + 1 + 0.5) / 5  # 0.7
    variance = sum((s - mean) ** 2 for s in (1, 0, 1, 1, 0.5)) / 5  # divisor n, as np.std
    assert confidence_interval(scores) == pytest.approx((mean, 1.96 * math.sqrt(variance) / math.sqrt(5),
                                                          math.sqrt(variance)), rel=1e-12)
    assert confidence_interval(torch.full((600,), 0.8))[1] == 0.0  # no spread, no interval


def test_per_task_scores_are_accuracy_for_labels_and_mse_for_targets():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])  # [T=2, Q=2, N=2]
    labels = torch.tensor([[0, 1], [0, 1]])
    assert per_task_scores(logits, labels).tolist() == [1.0, 0.5]
    predictions, targets = torch.tensor([[[1.0], [2.0]]]), torch.tensor([[[0.0], [0.0]]])
    assert per_task_scores(predictions, targets).tolist() == [2.5]  # (1 + 4) / 2


def test_evaluate_matches_fine_tuning_each_task_by_hand():
    model, data = tiny_convnet(), tiny_images()
    inner = InnerLoop(steps=2, lr=0.3)
    result = evaluate(model, NWayKShotSampler(data, WAYS, 1, 2, seed=5), inner, num_tasks=7, tasks_per_batch=3)

    tasks, sampler = [], NWayKShotSampler(data, WAYS, 1, 2, seed=5)
    for count in (3, 3, 1):  # the same draws: 7 tasks, 3 at a time
        tasks.extend(sampler.sample(count))
    by_hand = torch.tensor([(adapt_by_hand(model, t, 0.3, 2).argmax(-1) == t.query_y).float().mean().item()
                            for t in tasks], dtype=torch.float64)
    torch.testing.assert_close(result.per_task, by_hand)
    mean, ci95, std = by_hand.mean().item(), 1.96 * by_hand.std(correction=0).item() / math.sqrt(7), \
        by_hand.std(correction=0).item()
    assert (result.mean, result.ci95, result.std) == pytest.approx((mean, ci95, std), rel=1e-12)
    assert result.metric == "accuracy" and result.num_tasks == 7 and result.query_bn == "transductive"
    assert (result.inner_steps, result.inner_lr, result.tasks_per_batch) == (2, 0.3, 3)


def test_evaluation_is_deterministic_and_leaves_the_network_unchanged():
    model, data = tiny_convnet(), tiny_images()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inner = InnerLoop(steps=1, lr=0.5)
    first = evaluate(model, NWayKShotSampler(data, WAYS, 1, 2, seed=1), inner, num_tasks=10)
    torch.manual_seed(123)  # the global generator plays no part
    second = evaluate(model, NWayKShotSampler(data, WAYS, 1, 2, seed=1), inner, num_tasks=10)
    assert torch.equal(first.per_task, second.per_task) and first.as_dict() == second.as_dict()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])
    other_tasks = evaluate(model, NWayKShotSampler(data, WAYS, 1, 2, seed=2), inner, num_tasks=10)
    assert not torch.equal(first.per_task, other_tasks.per_task)


def test_the_result_says_which_batch_norm_mode_was_used():
    model, data = tiny_convnet(), tiny_images()
    modes = {bn: evaluate(model, NWayKShotSampler(data, WAYS, 1, 2, seed=3), InnerLoop(steps=1, lr=0.5, query_bn=bn),
                          num_tasks=6) for bn in ("transductive", "inductive")}
    assert {bn: r.query_bn for bn, r in modes.items()} == {"transductive": "transductive", "inductive": "inductive"}
    assert "batch norm: inductive" in str(modes["inductive"]) and "95% CI over 6 tasks" in str(modes["inductive"])
    # A network without batch norm has no mode to report.
    sine = evaluate(sinusoid_mlp(), SinusoidSampler(seed=0), InnerLoop(steps=0, loss=F.mse_loss), num_tasks=4)
    assert sine.query_bn == "none"


def test_regression_reports_the_mean_squared_error():
    torch.manual_seed(0)
    model = sinusoid_mlp()
    result = evaluate(model, SinusoidSampler(5, 7, seed=4), InnerLoop(steps=0, loss=F.mse_loss), num_tasks=9,
                      tasks_per_batch=4)
    first_draw = SinusoidSampler(5, 7, seed=4).sample(4)  # the first 4 tasks, checked by hand
    with torch.no_grad():
        by_hand = ((model(first_draw.query_x) - first_draw.query_y) ** 2).flatten(1).mean(1).double()
    torch.testing.assert_close(result.per_task[:4], by_hand)
    assert result.metric == "mse" and result.mean == pytest.approx(result.query_loss, rel=1e-6)
    assert "MSE" in str(result)
    assert TEST_TASKS == 600 and evaluate.__defaults__[0] == 600  # MAML's number of test tasks by default


# ── Statistics over training seeds ───────────────────────────────────────────


def test_t_quantiles_match_the_printed_tables():
    from metabook_learn.evaluation import t_quantile

    # Two-sided 95% critical values of Student's t (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2).
    for df, value in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (1000, 1.962)):
        assert t_quantile(0.975, df) == pytest.approx(value, abs=2e-3)


def test_over_seeds_is_the_mean_with_a_t_interval():
    from metabook_learn.evaluation import over_seeds

    summary = over_seeds([0.97, 0.98, 0.99])
    assert summary.mean == pytest.approx(0.98) and summary.seeds == 3
    assert summary.half_width == pytest.approx(4.303 * 0.01 / 3 ** 0.5, rel=1e-3)  # s = 0.01, t(2) = 4.303
    assert math.isnan(over_seeds([0.5]).half_width)


def test_paired_differences_remove_the_tasks_difficulty():
    from metabook_learn.evaluation import over_seeds, paired_difference

    g = torch.Generator().manual_seed(0)
    difficulty = torch.rand(600, generator=g)  # shared by both methods: the same tasks
    a = difficulty + 0.02 + 0.01 * torch.randn(3, 600, generator=g)
    b = difficulty + 0.01 * torch.randn(3, 600, generator=g)
    paired = paired_difference(a, b)
    assert paired.mean == pytest.approx(0.02, abs=0.003) and paired.half_width < 0.01
    assert paired.mean - paired.half_width > 0  # a is better, beyond the spread of seeds
    # Per-seed means give the same differences; the per-task form is only a convenience.
    assert paired.values == pytest.approx(paired_difference(a.mean(1), b.mean(1)).values)
    assert over_seeds(a.mean(1)).mean - over_seeds(b.mean(1)).mean == pytest.approx(paired.mean)
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(a, b[:2])


def test_test_time_minibatch_shuffles_come_from_the_evaluations_own_generator():
    """Reptile's test: each task's support set shuffled for its minibatches, the same however the global
    generator stands, which evaluation neither reads nor advances."""
    model, data = tiny_convnet(), tiny_images()
    inner = InnerLoop(steps=3, lr=0.1, optimizer="adam", batch_size=2)  # 2-shot: 6 support rows, minibatches of 2
    torch.manual_seed(0)
    first = evaluate(model, NWayKShotSampler(data, WAYS, 2, 2, seed=1), inner, num_tasks=8, tasks_per_batch=4)
    state = torch.get_rng_state()
    second = evaluate(model, NWayKShotSampler(data, WAYS, 2, 2, seed=1), inner, num_tasks=8, tasks_per_batch=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.per_task, second.per_task)
    # The shuffles matter: another generator seed deals other minibatches and scores differently.
    other = evaluate(model, NWayKShotSampler(data, WAYS, 2, 2, seed=1),
                     InnerLoop(steps=3, lr=0.1, optimizer="adam", batch_size=2,
                               generator=torch.Generator().manual_seed(1)), num_tasks=8, tasks_per_batch=4)
    assert first.query_loss != other.query_loss
