"""The meta-training loop: each algorithm's update checked by hand, exact resume, atomic checkpoints, real learning."""
import os
import signal
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metabook_learn.checkpoint import load_checkpoint, save_checkpoint
from metabook_learn.data import NWayKShotSampler, load_omniglot
from metabook_learn.data.classes import ClassImages
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import InnerLoop, parameters_of, set_gradients
from metabook_learn.maml import init_learning_rates, meta_gradient
from metabook_learn.models import ConvNet, sinusoid_mlp
from metabook_learn.training import SinusoidSampler, TrainConfig, reptile_step_size, train

pytestmark = pytest.mark.usefixtures("no_data_environment")

WAYS = 3


def tiny_images(num_classes: int = 8, per_class: int = 6, seed: int = 0) -> ClassImages:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_classes * per_class, 1, 8, 8), generator=g, dtype=torch.uint8)
    return ClassImages.from_sizes(images, [per_class] * num_classes, [f"c{i}" for i in range(num_classes)])


def tiny_convnet(seed: int = 0) -> ConvNet:
    torch.manual_seed(seed)
    return ConvNet(WAYS, in_channels=1, filters=4, downsample="stride", image_size=8, blocks=2)


def tiny_config(**changes) -> TrainConfig:
    """3-way 1-shot tasks of 8x8 images, two per meta-batch: every algorithm in a fraction of a second."""
    base = TrainConfig(dataset="tiny", ways=WAYS, shots=1, queries=2, meta_batch=2, inner_lr=0.3, steps=3,
                       eval_inner_steps=1, log_every=1, device="cpu")
    return replace(base, **changes)


class InterruptAfter:
    """A sampler interrupted at its ``samples + 1``-th draw.

    ``signal=None``: the draw raises KeyboardInterrupt, like a crash in the
    middle of a step. Else the process sends itself that signal (Ctrl-C's
    SIGINT, ``timeout``'s SIGTERM) and the draw goes on.
    """

    def __init__(self, sampler, samples: int, signal=None):
        self.sampler, self.left, self.signal = sampler, samples, signal

    def sample(self, num_tasks):
        if self.left == 0:
            self.left = -1
            if self.signal is None:
                raise KeyboardInterrupt
            os.kill(os.getpid(), self.signal)
        self.left -= 1
        return self.sampler.sample(num_tasks)

    def __getattr__(self, name):  # num_ways, state_dict, ...: the wrapped sampler's
        return getattr(self.sampler, name)


# ── Each algorithm's update ──────────────────────────────────────────────────


def test_the_algorithm_name_sets_its_flags():
    assert TrainConfig(algorithm="fomaml").first_order and TrainConfig(algorithm="reptile").first_order
    assert TrainConfig(algorithm="anil").head_only and TrainConfig(algorithm="metasgd").learn_lrs
    plain = TrainConfig(algorithm="maml")
    assert not (plain.first_order or plain.head_only or plain.learn_lrs)
    assert TrainConfig(algorithm="anil", first_order=True).first_order  # flags combine: first-order ANIL
    with pytest.raises(ValueError, match="maml, fomaml, anil, metasgd, reptile, protonet"):
        TrainConfig(algorithm="protonets")
    with pytest.raises(ValueError, match="head_only and learn_lrs"):
        TrainConfig(algorithm="reptile", learn_lrs=True)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "metasgd"])
def test_a_maml_family_step_is_adam_on_the_meta_gradient(algorithm):
    config, data = tiny_config(algorithm=algorithm, steps=2, meta_lr=0.01), tiny_images()
    model = tiny_convnet()
    result = train(config, model, NWayKShotSampler(data, WAYS, 1, 2, seed=4), progress=False)

    # The same two steps by hand, on the same tasks.
    shadow = tiny_convnet()
    params = parameters_of(shadow)
    inner = InnerLoop(steps=1, lr=0.3, first_order=algorithm == "fomaml", head_only=algorithm == "anil")
    lrs = init_learning_rates(params, inner) if algorithm == "metasgd" else None
    optimizer = torch.optim.Adam([*params.values(), *(lrs or {}).values()], lr=0.01)
    sampler = NWayKShotSampler(data, WAYS, 1, 2, seed=4)
    for _ in range(2):
        g = meta_gradient(shadow, params, sampler.sample(2), inner, lrs)
        set_gradients(params, g.params)
        if lrs is not None:
            set_gradients(lrs, g.lrs)
        optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=0, atol=0)
    if algorithm == "metasgd":
        for name, rate in result.lrs.items():
            torch.testing.assert_close(rate, lrs[name], rtol=0, atol=0)
    assert result.curve[0].meta_loss is not None and result.curve[0].meta_accuracy is not None


def test_clipping_rescales_the_meta_gradient_before_adam_steps():
    """clip_grad_norm=c: Adam steps on g·min(1, c/‖g‖), ‖g‖ over all parameters; checked by hand for 2 steps."""
    clip = 1e-3  # far below the meta-gradient's norm, so every step is clipped
    config, data = tiny_config(algorithm="maml", steps=2, meta_lr=0.01, clip_grad_norm=clip), tiny_images()
    model = tiny_convnet()
    train(config, model, NWayKShotSampler(data, WAYS, 1, 2, seed=4), progress=False)

    shadow = tiny_convnet()
    params = parameters_of(shadow)
    optimizer = torch.optim.Adam(params.values(), lr=0.01)
    sampler = NWayKShotSampler(data, WAYS, 1, 2, seed=4)
    for _ in range(2):
        g = meta_gradient(shadow, params, sampler.sample(2), InnerLoop(steps=1, lr=0.3)).params
        norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
        assert norm > clip
        set_gradients(params, {n: v * (clip / (norm + 1e-6)) for n, v in g.items()})  # clip_grad_norm_'s formula
        optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        tiny_config(clip_grad_norm=0.0)


def sgd_by_hand(model, params, x, y, lr, steps):
    weights = {n: p.detach().clone() for n, p in params.items()}
    for _ in range(steps):
        weights = {n: p.requires_grad_() for n, p in weights.items()}
        grads = torch.autograd.grad(F.cross_entropy(functional_call(model, weights, (x,)), y), list(weights.values()))
        weights = {n: (p - lr * g).detach() for (n, p), g in zip(weights.items(), grads)}
    return weights


def test_reptile_moves_phi_toward_the_adapted_weights_with_annealed_epsilon():
    config = tiny_config(algorithm="reptile", train_shots=2, queries=1, steps=2, inner_steps=2,
                         outer_step_size=1.0, outer_step_size_final=0.0)
    # Nichol et al.'s schedule: epsilon = (1 - t/T) epsilon_0 + (t/T) epsilon_final.
    assert [reptile_step_size(config, t) for t in (0, 1)] == [1.0, 0.5]
    assert reptile_step_size(replace(config, outer_step_size_final=None), 1) == 1.0
    data, model = tiny_images(), tiny_convnet()
    phi = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(config, model, NWayKShotSampler(data, WAYS, 2, 1, seed=6), progress=False)
    assert result.curve[-1].meta_loss is None  # Reptile has no query loss

    sampler, shadow = NWayKShotSampler(data, WAYS, 2, 1, seed=6), tiny_convnet()
    for epsilon in (1.0, 0.5):
        tasks = sampler.sample(2)
        weights = [sgd_by_hand(shadow, phi, tasks.support_x[i], tasks.support_y[i], 0.3, 2) for i in range(2)]
        phi = {n: phi[n] + epsilon * ((weights[0][n] + weights[1][n]) / 2 - phi[n]) for n in phi}
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), phi[name])


# ── Validation, checks ───────────────────────────────────────────────────────


def test_validation_uses_the_same_tasks_every_time():
    """With a zero meta learning rate nothing changes, so every validation must give the same score."""
    config, data = tiny_config(steps=4, meta_lr=0.0, validate_every=2, validation_tasks=5), tiny_images()
    result = train(config, tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2, seed=0),
                   NWayKShotSampler(data, WAYS, 1, 2, seed=1), progress=False)
    steps, scores = result.column("validation")
    assert steps == [2, 4] and scores[0] == scores[1]
    assert result.eval_inner.steps == config.eval_inner_steps


def test_mismatched_samplers_losses_and_options_fail_early():
    data = tiny_images()
    with pytest.raises(ValueError, match="num_ways=3, but the config says 5"):
        train(tiny_config(ways=5), tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2), progress=False)
    with pytest.raises(ValueError, match="real-valued targets.*'mse'"):
        train(tiny_config(ways=1, shots=10, queries=10), sinusoid_mlp(), SinusoidSampler(), progress=False)
    with pytest.raises(ValueError, match="needs a val_sampler"):
        train(tiny_config(validate_every=1), tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2), progress=False)


def test_bf16_on_the_cpu_runs_the_step_under_autocast_close_to_float32():
    from metabook_learn.training import meta_step

    tasks = NWayKShotSampler(tiny_images(), WAYS, 1, 2, seed=0).sample(2)

    def gradient(bf16):
        model = tiny_convnet()
        params = parameters_of(model)
        sgd = torch.optim.SGD(params.values(), lr=1.0)  # θ − 1·g: the step is the meta-gradient
        before = torch.cat([p.detach().flatten() for p in params.values()])
        meta_step(tiny_config(bf16=bf16), model, params, None, sgd, tasks, 0)
        assert all(p.dtype == torch.float32 for p in params.values())
        return before - torch.cat([p.detach().flatten() for p in params.values()])

    full, half = gradient(False), gradient(True)
    assert not torch.equal(full, half), "bf16=True made no difference: autocast did not run"
    assert F.cosine_similarity(full, half, dim=0) > 0.99
    assert (full - half).norm() < 0.1 * full.norm()


def test_channels_last_stores_the_convolutions_so_and_computes_the_same_step_nearly():
    from metabook_learn.models import use_channels_last
    from metabook_learn.protonets import PrototypicalNetwork
    from metabook_learn.training import meta_step

    def protonet():
        torch.manual_seed(0)
        return PrototypicalNetwork(ConvNet(None, in_channels=1, filters=4, downsample="stride", image_size=8,
                                           blocks=2), WAYS)

    trained = protonet()
    train(tiny_config(algorithm="protonet", steps=1, channels_last=True), trained,
          NWayKShotSampler(tiny_images(), WAYS, 1, 2), progress=False)
    convolution = [m for m in trained.modules() if isinstance(m, torch.nn.Conv2d)][1].weight  # 4 input channels
    assert convolution.is_contiguous(memory_format=torch.channels_last) and not convolution.is_contiguous()

    tasks = NWayKShotSampler(tiny_images(), WAYS, 1, 2, seed=0).sample(1)
    steps = []
    for model in (protonet(), use_channels_last(protonet())):
        params = parameters_of(model)
        before = torch.cat([p.detach().flatten() for p in params.values()])
        meta_step(tiny_config(algorithm="protonet"), model, params, None,
                  torch.optim.SGD(params.values(), lr=1.0), tasks, 0)
        steps.append(before - torch.cat([p.detach().flatten() for p in params.values()]))
    # float32 both, but oneDNN's channels-last weight gradients sum in another order (see the benchmark).
    assert (steps[0] - steps[1]).norm() < 1e-2 * steps[0].norm()


# ── Checkpoints ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("algorithm", ["maml", "metasgd", "reptile", "reptile-adam"])
def test_an_interrupted_and_resumed_run_ends_with_bit_identical_parameters(tmp_path, algorithm):
    # reptile-adam: Reptile with an inner Adam, whose moments training carries from task to task: the
    # checkpoint must hold them too, or the resumed run would restart them and end elsewhere.
    adam = dict(inner_optimizer="adam", inner_lr=0.01) if algorithm == "reptile-adam" else {}
    algorithm = algorithm.removesuffix("-adam")
    config = tiny_config(algorithm=algorithm, steps=7, log_every=2, validate_every=3, validation_tasks=4,
                         checkpoint_every=3, outer_step_size_final=0.0 if algorithm == "reptile" else None, **adam)
    data = tiny_images()

    def run(checkpoint, init_seed=0, sampler_seeds=(10, 11), interrupt_after=None):
        model = tiny_convnet(init_seed)
        train_sampler = NWayKShotSampler(data, WAYS, 1, 2, seed=sampler_seeds[0])
        if interrupt_after is not None:
            train_sampler = InterruptAfter(train_sampler, interrupt_after)
        val_sampler = NWayKShotSampler(data, WAYS, 1, 2, seed=sampler_seeds[1])
        result = train(config, model, train_sampler, val_sampler, checkpoint, resume=True, progress=False)
        return model, result, torch.rand(4)  # and what the global generator draws next

    whole_model, whole, whole_next = run(tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):  # dies drawing the tasks of step 6: the last checkpoint is step 3's
        run(tmp_path / "cut.pt", interrupt_after=5)
    saved = load_checkpoint(tmp_path / "cut.pt")
    assert saved["step"] == 3 and len(saved["curve"]) == 2  # points at steps 2 and 3
    assert {"model", "optimizer", "lrs", "train_sampler", "val_start", "rng", "config", "curve"} <= saved.keys()

    # Another initialization and other sampler seeds: everything must come from the checkpoint.
    resumed_model, resumed, resumed_next = run(tmp_path / "cut.pt", init_seed=99, sampler_seeds=(77, 78))
    assert resumed.resumed_from == 3 and resumed.steps_done == 7
    for (name, p), q in zip(whole_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(p, q), name
    assert resumed.curve == whole.curve and torch.equal(resumed_next, whole_next)
    if algorithm == "metasgd":
        assert all(torch.equal(whole.lrs[n], resumed.lrs[n]) for n in whole.lrs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pt", "whole.pt"]  # no temporary files left

    # A finished run resumes to its end at once; another configuration refuses to resume it.
    again = train(config, tiny_convnet(5), NWayKShotSampler(data, WAYS, 1, 2), NWayKShotSampler(data, WAYS, 1, 2),
                  tmp_path / "whole.pt", resume=True, progress=False)
    assert again.curve == whole.curve
    with pytest.raises(ValueError, match=r"another configuration \(meta_lr: 0.001 there, 0.5 here\)"):
        train(replace(config, meta_lr=0.5), tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2),
              NWayKShotSampler(data, WAYS, 1, 2), tmp_path / "whole.pt", resume=True, progress=False)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.ones(3)})

    def save_half_then_fail(obj, destination):
        with open(destination, "wb") as file:
            file.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"step": 2, "weights": torch.zeros(3)})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


# ── Learning is real ─────────────────────────────────────────────────────────


def test_maml_on_sinusoids_adapts_better_than_it_starts():
    config = TrainConfig(algorithm="maml", dataset="sinusoid", ways=1, shots=10, queries=10, loss="mse",
                         meta_batch=10, inner_lr=0.01, eval_inner_steps=10, steps=500, meta_lr=3e-3,
                         log_every=50, device="cpu", strategy="vmap")  # vmap: faster than the loop here
    torch.manual_seed(0)
    model = sinusoid_mlp()
    untrained = evaluate(model, SinusoidSampler(seed=9), InnerLoop(steps=10, lr=0.01, loss=F.mse_loss), 100)
    result = train(config, model, SinusoidSampler(seed=0), progress=False)
    before = evaluate(model, SinusoidSampler(seed=9), replace(result.eval_inner, steps=0), 100)
    after = evaluate(model, SinusoidSampler(seed=9), result.eval_inner, 100)
    assert after.mean < 0.5 * before.mean  # adaptation helps after meta-training (about 3.4 -> 1.0)...
    assert after.mean < 0.8 * untrained.mean  # ...and more than it does from a random initialization


def test_maml_on_omniglot_beats_chance_on_held_out_characters(real_mirror, real_cache):
    """5-way 1-shot MAML, shrunk to fit a CI budget (~15 s on one core): 200 meta-steps of 4 tasks.

    Differences from the paper, all for speed: 32 filters instead of 64; 5 query examples per class
    instead of 1, so that a meta-batch of 4 tasks gives a usable meta-gradient; meta-lr 3e-3.
    """
    train_split = load_omniglot("train", cache=real_cache, mirror=real_mirror)
    test_split = load_omniglot("test", cache=real_cache, mirror=real_mirror)
    config = TrainConfig(algorithm="maml", ways=5, shots=1, queries=5, meta_batch=4, steps=200, meta_lr=3e-3,
                         inner_lr=0.4, inner_steps=1, eval_inner_steps=3, log_every=50, device="cpu")
    torch.manual_seed(0)
    model = ConvNet(5, in_channels=1, filters=32, downsample="stride", image_size=28)
    result = train(config, model, NWayKShotSampler(train_split, 5, 1, 5, seed=0), progress=False)
    test = evaluate(model, NWayKShotSampler(test_split, 5, 1, 5, seed=0), result.eval_inner, num_tasks=100)
    assert test.mean - test.ci95 > 0.5, test  # chance is 0.2; this run gets about 0.84
    assert result.curve[-1].meta_accuracy > result.curve[0].meta_accuracy


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_the_resumed_run_is_exact(tmp_path, stop_signal):
    """Ctrl-C or `timeout` in the middle of step 5: the step finishes, step 5 is saved, nothing is lost."""
    config = tiny_config(steps=7, log_every=2, checkpoint_every=3)
    data = tiny_images()

    def run(checkpoint, interrupt_after=None):
        model = tiny_convnet(0)
        sampler = NWayKShotSampler(data, WAYS, 1, 2, seed=10)
        if interrupt_after is not None:
            sampler = InterruptAfter(sampler, interrupt_after, stop_signal)
        return model, train(config, model, sampler, None, checkpoint, resume=True, progress=False)

    whole_model, whole = run(tmp_path / "whole.pt")
    previous_handler = signal.getsignal(stop_signal)
    with pytest.raises(KeyboardInterrupt, match=f"{stop_signal.name}: stopped after step 5 of 7"):
        run(tmp_path / "cut.pt", interrupt_after=4)
    assert signal.getsignal(stop_signal) is previous_handler  # train() put the handler back
    assert load_checkpoint(tmp_path / "cut.pt")["step"] == 5  # not a multiple of checkpoint_every: the stop's own
    resumed_model, resumed = run(tmp_path / "cut.pt")
    assert resumed.resumed_from == 5
    for (name, p), q in zip(whole_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(p, q), name
    assert resumed.curve == whole.curve


def test_the_curve_records_training_time_that_grows_and_survives_a_resume(tmp_path):
    config = TrainConfig(algorithm="fomaml", dataset="sinusoid", loss="mse", shots=5, queries=5, meta_batch=2,
                         inner_lr=0.01, steps=6, log_every=2, checkpoint_every=2, device="cpu")
    with pytest.raises(KeyboardInterrupt):  # dies at step 5: the checkpoint of step 4 holds two points
        train(config, sinusoid_mlp(), InterruptAfter(SinusoidSampler(5, 5, seed=0), 4),
              checkpoint=tmp_path / "run.pt", progress=False)
    saved = [point["training_s"] for point in load_checkpoint(tmp_path / "run.pt")["curve"]]
    resumed = train(config, sinusoid_mlp(), SinusoidSampler(5, 5, seed=0), checkpoint=tmp_path / "run.pt",
                    resume=True, progress=False)
    times = [p.training_s for p in resumed.curve]
    assert times[:2] == saved and len(times) == 3
    assert all(t > 0 for t in times) and times == sorted(times)


def test_the_curve_file_keeps_every_point_of_an_interrupted_run_and_is_rewritten_on_resume(tmp_path):
    import json

    config = TrainConfig(algorithm="fomaml", dataset="sinusoid", loss="mse", shots=5, queries=5, meta_batch=2,
                         inner_lr=0.01, steps=6, log_every=1, checkpoint_every=2, device="cpu")
    log = tmp_path / "run.curve.jsonl"
    with pytest.raises(KeyboardInterrupt):  # dies at step 4: points 1-3 were made, the checkpoint holds 1-2
        train(config, sinusoid_mlp(), InterruptAfter(SinusoidSampler(5, 5, seed=0), 3),
              checkpoint=tmp_path / "run.pt", progress=False, curve_file=log)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    resumed = train(config, sinusoid_mlp(), SinusoidSampler(5, 5, seed=0), checkpoint=tmp_path / "run.pt",
                    resume=True, progress=False, curve_file=log)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [asdict(point) for point in resumed.curve] and [p["step"] for p in lines] == [1, 2, 3, 4, 5, 6]


def test_more_steps_extend_a_finished_run_exactly_unless_a_schedule_depends_on_them(tmp_path):
    config = tiny_config(steps=6, checkpoint_every=3)
    data = tiny_images()

    def run(steps, checkpoint):
        model = tiny_convnet()
        train(replace(config, steps=steps), model, NWayKShotSampler(data, WAYS, 1, 2, seed=3), checkpoint=checkpoint,
              resume=True, progress=False)
        return model

    straight = run(6, tmp_path / "straight.pt")
    run(4, tmp_path / "short.pt")
    extended = run(6, tmp_path / "short.pt")  # the finished 4-step run, continued to 6
    for p, q in zip(straight.parameters(), extended.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="has done 6 steps already"):
        run(5, tmp_path / "short.pt")

    annealed = tiny_config(algorithm="reptile", steps=2, outer_step_size_final=0.0)
    train(annealed, tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2), checkpoint=tmp_path / "reptile.pt",
          progress=False)
    with pytest.raises(ValueError, match="anneals Reptile's step size over its 2 steps"):
        train(replace(annealed, steps=4), tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2),
              checkpoint=tmp_path / "reptile.pt", resume=True, progress=False)


def test_a_checkpoint_from_before_a_configuration_field_existed_resumes_with_its_default(tmp_path):
    data = tiny_images()
    train(tiny_config(steps=2), tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2), checkpoint=tmp_path / "old.pt",
          progress=False)
    state = load_checkpoint(tmp_path / "old.pt")
    del state["config"]["channels_last"]  # as written before the CPU fast path
    save_checkpoint(tmp_path / "old.pt", {k: v for k, v in state.items() if k != "format"})
    result = train(tiny_config(steps=3), tiny_convnet(), NWayKShotSampler(data, WAYS, 1, 2),
                   checkpoint=tmp_path / "old.pt", resume=True, progress=False)
    assert result.resumed_from == 2


def test_the_meta_learning_rate_halves_on_schedule_and_adam_uses_it():
    from metabook_learn.training import make_optimizer, meta_step, outer_learning_rate

    config = tiny_config(algorithm="protonet", meta_lr=0.01, meta_lr_halving_every=2)
    assert [outer_learning_rate(config, t) for t in range(5)] == [0.01, 0.01, 0.005, 0.005, 0.0025]
    assert outer_learning_rate(replace(config, meta_lr_halving_every=None), 99) == 0.01
    assert outer_learning_rate(tiny_config(algorithm="reptile", outer_step_size=1.0), 3) == 1.0
    with pytest.raises(ValueError, match="meta_lr_halving_every"):
        tiny_config(meta_lr_halving_every=0)

    # What the optimizer really stepped with at step 4: MAML's update there is Adam's at a quarter of the rate.
    maml = tiny_config(algorithm="maml", meta_lr=0.01, meta_lr_halving_every=2)
    model, data = tiny_convnet(), tiny_images()
    params = parameters_of(model)
    optimizer = make_optimizer(maml, params, None)
    meta_step(maml, model, params, None, optimizer, NWayKShotSampler(data, WAYS, 1, 2, seed=3).sample(2), step=4)
    assert [group["lr"] for group in optimizer.param_groups] == [0.0025]


def test_the_config_for_a_sampler_reads_its_task_shape():
    from metabook_learn.data import ShuffledOrder
    from metabook_learn.in_context import LinearRegressionSampler

    sine = TrainConfig.for_sampler(SinusoidSampler(5, 7))
    assert (sine.shots, sine.queries, sine.loss, sine.dataset) == (5, 7, "mse", "regression")
    linear = TrainConfig.for_sampler(LinearRegressionSampler(3, 4, 2), algorithm="transformer", dataset="linear")
    assert (linear.shots, linear.queries, linear.loss, linear.dataset) == (4, 2, "mse", "linear")
    images = TrainConfig.for_sampler(ShuffledOrder(NWayKShotSampler(tiny_images(), 4, 2, 3)), algorithm="transformer",
                                     meta_batch=2)
    assert (images.ways, images.shots, images.queries, images.loss, images.meta_batch) == (4, 2, 3, "cross_entropy", 2)
