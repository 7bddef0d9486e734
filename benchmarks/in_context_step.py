"""How long one meta-step of the in-context transformer takes: the whole batch in one call against task by task.

    .venv/bin/python benchmarks/in_context_step.py                        # every setting, this machine's device
    .venv/bin/python benchmarks/in_context_step.py --quick --device cpu   # a smoke run
    .venv/bin/python benchmarks/in_context_step.py --output benchmarks/results/in_context_step_cpu.txt

An in-context learner (:class:`metabook_learn.in_context.InContextTransformer`)
reads a batch of sequences ``[T, L, ...]`` as easily as one, and says so
(``reads_task_batches``); :func:`metabook_learn.episodic.episode_gradient` then
calls it once on the whole meta-batch under ``strategy="auto"`` ("batched").
This benchmark measures what that choice is worth (the transformer reads task
batches only for sequences of vectors, because of what it measured on
images), on the settings of
``scripts/full_scale_in_context.py`` (width 64, 4 layers, 4 heads; the
sequences of the linear-regression and sine-wave runs, and 5-way 1-shot
Omniglot episodes read through MAML's conv body). For each setting it

1. checks, in float64, that the batched gradient equals the per-task loop's
   and vmap's (the mean over tasks of each episode's gradient);
2. times a meta-step's gradient (median of ``--repeats`` after warm-up, the
   implementations taking turns) and prints each one's speed-up over the loop.

Absolute times mean something only on an idle machine; read the ratios.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: run as a script or loaded by path
from timing import command_line, header, median_ms, random_tasks, report, settle  # noqa: E402

from metabook_learn.data.sinusoid import SinusoidSampler  # noqa: E402
from metabook_learn.episodic import episode_gradient, task_episode_gradient  # noqa: E402
from metabook_learn.inner_loop import DIFFERENTIATE, task_tensors  # noqa: E402
from metabook_learn.in_context import InContextTransformer, LinearRegressionSampler  # noqa: E402
from metabook_learn.protonets import omniglot_embedding  # noqa: E402

STRATEGIES = {"one call (batched)": "batched", "per-task loop": "loop", "vmap": "vmap"}


@dataclass(frozen=True)
class Setting:
    name: str
    make_model: Callable[[], torch.nn.Module]
    make_tasks: Callable[[int, torch.device], object]  # (number of tasks, device) -> a task batch
    num_tasks: int


def transformer(x_dim: int, ways: int | None = None, images: bool = False) -> Callable[[], torch.nn.Module]:
    """A maker of fresh models (each with a fresh embedding: the float64 check converts its own model)."""
    return lambda: InContextTransformer(x_dim, ways=ways, width=64, depth=4, heads=4,
                                        embedding=omniglot_embedding() if images else None)


SETTINGS = [
    Setting("linear regression, d = 5, 20 examples + 1 query", transformer(5),
            lambda n, device: LinearRegressionSampler(5, 20, 1, seed=0).sample(n).to(device), 64),
    Setting("sine waves, 20 examples + 20 queries", transformer(1),
            lambda n, device: SinusoidSampler(20, 20, seed=0).sample(n).to(device), 64),
    Setting("Omniglot 5-way 1-shot, 15 queries/class", transformer(64, ways=5, images=True),
            lambda n, device: random_tasks(n, 5, 1, 15, (1, 28, 28), device), 32),
]


def gradient_of(model: torch.nn.Module, tasks, strategy: str) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    if strategy == "batched":  # what strategy "auto" runs for a model that reads task batches
        params = {name: p.detach() for name, p in params.items()}
        return task_episode_gradient(model, DIFFERENTIATE["loop"], params, *task_tensors(tasks))[0]
    return episode_gradient(model, params, tasks, strategy).params


def check(setting: Setting) -> None:
    """The largest difference of each strategy's gradient from the per-task loop's, in float64."""
    torch.manual_seed(0)
    model = setting.make_model().double()
    tasks = setting.make_tasks(4, torch.device("cpu"))
    for key in ("support_x", "support_y", "query_x", "query_y"):
        value = getattr(tasks, key)
        if value.is_floating_point():
            setattr(tasks, key, value.double())
    reference = gradient_of(model, tasks, "loop")
    scale = max(g.abs().max().item() for g in reference.values())
    for label, strategy in STRATEGIES.items():
        grads = gradient_of(model, tasks, strategy)
        error = max((grads[name] - reference[name]).abs().max().item() for name in reference)
        print(f"  {label:<19} max|Δgrad| {error:.1e}  (largest gradient entry {scale:.1e})")


def main(argv=None) -> int:
    parser = command_line(__doc__, quick="2 timed steps, 4 tasks per setting")
    args = parser.parse_args(argv)
    device = settle(args, repeats=(10, 2), warmup=(2, 1))
    with report(args.output):
        print(header("one meta-step of the in-context transformer (benchmarks/in_context_step.py)", device, args,
                     "ms/step: median time of one meta-batch's gradient; vs loop: loop time / this time"))
        for setting in SETTINGS:
            num_tasks = 4 if args.quick else setting.num_tasks
            print(f"\n{setting.name}, {num_tasks} tasks")
            check(setting)
            torch.manual_seed(0)
            model = setting.make_model().to(device)
            tasks = setting.make_tasks(num_tasks, device)
            times = median_ms({label: (lambda s=strategy: gradient_of(model, tasks, s))
                               for label, strategy in STRATEGIES.items()}, device, args.warmup, args.repeats)
            for label, ms in times.items():
                print(f"  {label:<19} {ms:9.1f} ms/step  {times['per-task loop'] / ms:5.2f}x vs loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
