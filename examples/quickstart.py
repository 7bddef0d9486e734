"""Five minutes with metabook: meta-train MAML on sine waves, test it, plot it. A laptop CPU is enough.

    python examples/quickstart.py            # under a minute on one CPU core; writes quickstart.png

Each task is a sine wave y = A sin(x - phi), with 10 points to learn from (MAML, Finn et al. 2017,
Sec. 5.1). MAML learns the starting weights of a small network such that a few gradient steps on
those 10 points fit a wave it has never seen. The test compares those starting weights with the
random ones the network began from, fine-tuned the same way on the same held-out waves.
"""
from __future__ import annotations

import argparse
import copy

import matplotlib

matplotlib.use("Agg")  # draw into a file: no window, works on a server or in CI
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import metabook_learn
from metabook_learn.data import SinusoidSampler, sample_sinusoid_tasks
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import InnerLoop, adapt, parameters_of
from metabook_learn.models import sinusoid_mlp
from metabook_learn.training import TrainConfig, train

FINE_TUNING = InnerLoop(steps=10, lr=0.01, loss=F.mse_loss, first_order=True)  # at test time, for both networks


def main(steps: int = 2000, test_tasks: int = 200, output: str = "quickstart.png") -> None:
    metabook_learn.seed_everything(0)
    model = sinusoid_mlp()                   # 1 -> 40 -> 40 -> 1, ReLU: MAML's sine-wave network
    untrained = copy.deepcopy(model)         # the same random starting weights, never meta-trained

    # 1. Meta-train: every step draws 10 waves, takes one gradient step on each wave's 10 support
    #    points, and updates the starting weights so that the step fits each wave's 10 query points.
    config = TrainConfig(algorithm="maml", dataset="sinusoid", loss="mse", shots=10, queries=10, meta_batch=10,
                         inner_steps=1, inner_lr=0.01, eval_inner_steps=10, meta_lr=1e-3, steps=steps,
                         log_every=50, device="cpu", strategy="vmap")  # vmap: all 10 waves at once, faster here
    result = train(config, model, SinusoidSampler(num_shots=10, num_queries=10, seed=0))

    # 2. Test on waves never seen in training (another seed): 10 SGD steps on 10 points, then the
    #    mean squared error on 100 other points of each wave, with a 95% confidence interval.
    print(f"query MSE over {test_tasks} held-out sine waves after 10 gradient steps on 10 points (± 95% CI):")
    for name, network in (("MAML's starting weights", model), ("random starting weights", untrained)):
        score = evaluate(network, SinusoidSampler(num_shots=10, num_queries=100, seed=1234), FINE_TUNING, test_tasks)
        print(f"  {name:<24} {score.mean:.3f} ± {score.ci95:.3f}")

    # 3. Plot the learning curve, and one held-out wave fitted from 10 points.
    wave = sample_sinusoid_tasks(1, num_support=10, num_query=0, generator=torch.Generator().manual_seed(11))
    grid = torch.linspace(-5, 5, 200).view(1, -1, 1)
    wave.query_x, wave.query_y = grid, wave(grid)  # score the fit along the whole interval
    figure, (curve_axes, wave_axes) = plt.subplots(1, 2, figsize=(10, 3.5))
    curve_axes.plot(*result.column("meta_loss"))
    curve_axes.set(xlabel="meta-step", ylabel="query MSE after 1 step", yscale="log", title="meta-training")
    wave_axes.plot(grid[0, :, 0], wave.query_y[0, :, 0], color="black", lw=2, label="true wave")
    for name, network, colour in (("MAML", model, "tab:green"), ("random start", untrained, "tab:purple")):
        fitted = adapt(network, parameters_of(network), wave, FINE_TUNING, strategy="loop").query_outputs
        wave_axes.plot(grid[0, :, 0], fitted[0, :, 0].detach(), color=colour, label=f"{name}, 10 steps")
    wave_axes.scatter(wave.support_x[0, :, 0], wave.support_y[0, :, 0], color="red", zorder=3, label="10 points")
    wave_axes.set(xlabel="x", ylabel="y", title="a held-out wave")
    wave_axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"trained {result.steps_done} meta-steps in {result.wall_time_s:.0f} s; plot: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="meta-steps (default: 2000)")
    parser.add_argument("--output", default="quickstart.png", help="the PNG to write (default: quickstart.png)")
    arguments = parser.parse_args()
    main(arguments.steps, output=arguments.output)
