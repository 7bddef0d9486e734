"""Joint training (MAML's pretrained baseline) learns the average task, which has a closed form for sine waves."""
import math

import pytest
import torch

from metabook_learn.data.sinusoid import AMPLITUDE_RANGE, SinusoidSampler
from metabook_learn.joint_training import joint_training
from metabook_learn.models import sinusoid_mlp


def test_joint_training_on_sine_waves_learns_their_average():
    # E[A sin(x - phi)] with A ~ U[0.1, 5], phi ~ U[0, pi]: E[A] * (-(2/pi) cos x).
    torch.manual_seed(0)
    model = sinusoid_mlp()
    losses = joint_training(model, SinusoidSampler(10, 10, seed=0), steps=2000, tasks_per_step=50, lr=3e-3)
    x = torch.linspace(-4.5, 4.5, 91).view(-1, 1)
    average = sum(AMPLITUDE_RANGE) / 2 * (-2 / math.pi) * torch.cos(x)
    with torch.no_grad():
        error = (model(x) - average).pow(2).mean().sqrt().item()
    # An untrained network is 1.16 away (root mean square); the trained one about 0.12.
    assert error < 0.3, f"joint training should learn -1.62 cos x (RMS error {error:.2f}; amplitude 1.62)"
    assert sum(losses[-100:]) < sum(losses[:100])


def test_joint_training_refuses_an_empty_run():
    with pytest.raises(ValueError, match="steps >= 1"):
        joint_training(sinusoid_mlp(), SinusoidSampler(10, 10), steps=0, tasks_per_step=5)


def test_the_full_scale_sine_wave_script_runs_in_smoke_mode(tmp_path, load_script):
    """scripts/full_scale_sinusoid.py --smoke: MAML and joint training, 3 steps, scored after 0-10 steps at K = 5, 10."""
    import json

    script = load_script("full_scale_sinusoid")
    output = tmp_path / "maml_sinusoid.json"
    assert script.main(["--smoke", "--output", str(output), "--device", "cpu", "--no-progress", "--test-tasks", "4"]) == 0
    results = json.loads(output.read_text())
    assert set(results["runs"]) == {"maml", "pretrained"} and results["smoke"] is True
    for run in results["runs"].values():
        assert set(run["tests"]) == {f"K={k}, {s} steps" for k in (5, 10) for s in (0, 1, 5, 10)}
        assert run["test"] == run["tests"]["K=5, 10 steps"]  # the paper's Table 2: 5-shot MSE
        assert run["test"]["metric"] == "mse" and run["test"]["num_tasks"] == 4
        assert run["config"]["steps"] == 3 and run["provenance"]["torch"] == torch.__version__
    assert {t["step_size"] for t in results["runs"]["pretrained"]["tests"].values()} <= set(script.STEP_SIZES)
    assert {t["step_size"] for t in results["runs"]["maml"]["tests"].values()} == {0.01}
    assert (tmp_path / "checkpoints" / "sinusoid-maml.pt").is_file()


def test_a_step_size_whose_fine_tuning_diverges_is_never_chosen(load_script, monkeypatch):
    import math
    from types import SimpleNamespace

    import pytest

    script = load_script("full_scale_sinusoid")
    sizes = script.STEP_SIZES
    # The largest step diverges; NaN compares False with everything, so a plain min() could return it.
    errors = {lr: (math.nan if lr == max(sizes) else 1.0 + lr) for lr in sizes}
    monkeypatch.setattr(script, "mse_after", lambda model, shots, steps, lr, tasks, seed: SimpleNamespace(mean=errors[lr]))
    assert script.tuned_step_size(None, 5) == min(sizes)
    errors.update({lr: math.inf for lr in sizes})
    with pytest.raises(FloatingPointError, match="diverged at every step size"):
        script.tuned_step_size(None, 5)
