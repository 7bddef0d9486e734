"""Your own training loop on ``meta_gradient``: MAML on sine waves with a plain PyTorch optimizer, no ``train``.

    python examples/own_training_loop.py --steps 1000     # about 20 s on one CPU core

``metabook_learn.train`` does checkpoints, validation, learning-rate schedules and
divergence checks. When a course asks students to write the outer loop
themselves (or to change it), this is all MAML needs: a sampler of tasks, the
inner loop's settings, and the meta-gradient of a batch of tasks, handed to any
``torch.optim`` optimizer as the gradient of the starting weights θ:

    θ ← Adam step with ∇θ (1/T) Σ_i L_i^query(θ − α ∇θ L_i^support(θ))     (Finn et al. 2017, Algorithm 2)

The check at the end is independent of the loop: the same held-out waves,
fine-tuned from the meta-trained θ and from the random θ it started at.
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

import metabook_learn
from metabook_learn.data import SinusoidSampler
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import InnerLoop, parameters_of, set_gradients
from metabook_learn.maml import meta_gradient
from metabook_learn.models import sinusoid_mlp

INNER = InnerLoop(steps=1, lr=0.01, loss=F.mse_loss)  # one step of SGD on each wave's 10 points, second order
TEST = InnerLoop(steps=10, lr=0.01, loss=F.mse_loss, first_order=True)  # fine-tuning at test time


def main(steps: int = 1000, test_tasks: int = 200) -> tuple[float, float]:
    """Meta-train for ``steps`` and return the held-out query MSE from the trained and from the random start."""
    metabook_learn.seed_everything(0)
    model = sinusoid_mlp()
    untrained = copy.deepcopy(model)
    params = parameters_of(model)  # name -> the model's own nn.Parameter tensors: θ
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    tasks = SinusoidSampler(num_shots=10, num_queries=10, seed=0)

    for step in range(1, steps + 1):
        batch = tasks.sample(10)  # support_x [10, 10, 1], support_y [10, 10, 1], query_x, query_y likewise
        g = meta_gradient(model, params, batch, INNER)  # g.params: ∇θ of the mean query loss; g.query_loss: that loss
        optimizer.zero_grad()
        set_gradients(params, g.params)  # p.grad = ∇θ for every parameter
        optimizer.step()
        if step % max(1, steps // 10) == 0:
            print(f"step {step:5d}  query MSE after one inner step {g.query_loss.item():.3f}")

    held_out = {name: evaluate(network, SinusoidSampler(10, 100, seed=1234), TEST, test_tasks).mean
                for name, network in (("meta-trained", model), ("random", untrained))}
    print(f"held-out waves, MSE after 10 steps on 10 points: meta-trained start {held_out['meta-trained']:.3f}, "
          f"random start {held_out['random']:.3f}")
    return held_out["meta-trained"], held_out["random"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="meta-steps (default: 1000)")
    main(parser.parse_args().steps)
