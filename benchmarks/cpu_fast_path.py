"""The CPU fast path: each family's training step in float32 NCHW, channels-last and bfloat16 autocast.

    .venv/bin/python benchmarks/cpu_fast_path.py --device cpu --threads 2 --output benchmarks/results/cpu_fast_path.txt
    .venv/bin/python benchmarks/cpu_fast_path.py --quick --device cpu     # a smoke run

For one training step of each family, with the CLI's presets on Omniglot
(``metabook_learn.train_cli.paper_defaults``) and random pixels shaped like its
tasks, it times :func:`metabook_learn.training.meta_step` (the whole step: the
meta-gradient and the optimizer's update) in four forms:

* ``nchw``: float32, the default memory layout;
* ``cl``: float32, the network stored channels-last
  (:func:`metabook_learn.models.use_channels_last`);
* ``nchw+bf16``, ``cl+bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)``
  (``TrainConfig(bf16=True)``).

and prints, for each form, the time relative to ``nchw`` (below 1: faster)
and the error of its update direction against the same step computed in
float64, ‖g − g₆₄‖ / ‖g₆₄‖. Channels-last is float32 too, but it is not
exact here: oneDNN's channels-last kernels for the weight gradient of a
convolution sum in another way, and before batch norm (whose gradient has
mean zero per channel) that sum cancels heavily, so their error can be
hundreds of times float32's usual. A few percent of gradient error is still
small beside the noise of a minibatch gradient, but whether the accuracy
holds is for a training run to show, which this benchmark does not do.

On which CPU this helps: channels-last needs oneDNN's NHWC kernels, bfloat16
needs AVX-512-BF16 or AMX (``lscpu`` lists ``avx512_bf16``, ``amx_bf16``);
without them autocast runs slower. Neither is metabook's default: both are
switches (``TrainConfig(channels_last=True, bf16=True)``, the CLI's
``--channels-last`` and ``--bf16``), for the families where this benchmark
finds them faster.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: run as a script or loaded by path
from timing import command_line, header, median_ms, random_tasks, report, settle  # noqa: E402

from metabook_learn.inner_loop import parameters_of  # noqa: E402
from metabook_learn.models import use_channels_last  # noqa: E402
from metabook_learn.setups import build_model  # noqa: E402
from metabook_learn.train_cli import paper_defaults  # noqa: E402
from metabook_learn.training import TrainConfig, make_optimizer, meta_step  # noqa: E402

FORMS = {"nchw": (False, False), "cl": (True, False), "nchw+bf16": (False, True), "cl+bf16": (True, True)}


@dataclass(frozen=True)
class Family:
    name: str
    algorithm: str
    ways: int  # the ways of a training task
    shots: int  # the shots of a training task


FAMILIES = (
    Family("MAML, Omniglot 5-way 1-shot (32 tasks, loop)", "maml", 5, 1),
    Family("first-order MAML, the same", "fomaml", 5, 1),
    Family("Reptile, Omniglot 5-way (5 tasks of 10 shots)", "reptile", 5, 10),
    Family("ProtoNets, Omniglot 60-way 1-shot episode", "protonet", 60, 1),
    Family("R2-D2, Omniglot 60-way 1-shot episode", "r2d2", 60, 1),
    Family("LR-D2, Omniglot 10-way 1-shot episode", "lrd2", 10, 1),
)


def family_config(family: Family, quick: bool) -> TrainConfig:
    values, _ = paper_defaults(family.algorithm, "omniglot", 5, 1)
    values.pop("steps", None)
    values.pop("train_ways", None)
    values.pop("train_shots", None)
    if quick:
        values["meta_batch"] = min(values["meta_batch"], 2)
    return TrainConfig(algorithm=family.algorithm, dataset="omniglot", ways=family.ways, shots=family.shots,
                       device="cpu", strategy="loop", **values)


def step_function(config: TrainConfig, base: torch.nn.Module, tasks, channels_last: bool, bf16: bool):
    """A closure that runs one training step on its own copy of the network; and one that returns the direction."""
    model = copy.deepcopy(base)
    if channels_last:
        use_channels_last(model)
    config = replace(config, bf16=bf16, channels_last=channels_last)
    params = parameters_of(model)
    optimizer = make_optimizer(config, params, None)

    def step():
        meta_step(config, model, params, None, optimizer, tasks, 0)

    def direction() -> torch.Tensor:
        fresh = copy.deepcopy(model)
        fresh_params = parameters_of(fresh)
        before = torch.cat([p.detach().flatten() for p in fresh_params.values()])
        meta_step(replace(config, algorithm="reptile") if config.algorithm == "reptile" else config, fresh,
                  fresh_params, None, torch.optim.SGD(fresh_params.values(), lr=1.0), tasks, 0)
        return before - torch.cat([p.detach().flatten() for p in fresh_params.values()])

    return step, direction


def main(argv=None) -> int:
    args = command_line(__doc__, quick="two tasks a meta-batch and two repeats: a smoke run").parse_args(argv)
    device = settle(args, repeats=(5, 2), warmup=(1, 1))
    with report(args.output):
        print(header("the CPU fast path: float32 NCHW, channels-last, bfloat16 autocast", device, args,
                     "time of one training step relative to nchw (median ms of nchw in brackets); "
                     "relative error of the update direction against float64"))
        for family in FAMILIES:
            config = family_config(family, args.quick)
            torch.manual_seed(0)
            base = build_model(config, family.ways)
            tasks = random_tasks(config.meta_batch, family.ways, config.support_shots, config.queries,
                                 (1, 28, 28), device)
            steps, directions = {}, {}
            tasks64 = type(tasks)(**{k: v.double() if v.is_floating_point() else v for k, v in vars(tasks).items()})
            torch.manual_seed(1)  # Reptile's minibatches: the same rows for every form
            exact = step_function(config, copy.deepcopy(base).double(), tasks64, False, False)[1]().float()
            for form, (channels_last, bf16) in FORMS.items():
                steps[form], direction = step_function(config, base, tasks, channels_last, bf16)
                torch.manual_seed(1)  # Reptile's minibatches: the same rows for every form
                directions[form] = direction()
            times = median_ms(steps, device, args.warmup, args.repeats)
            print(f"\n{family.name}: {config.meta_batch} task(s) of {family.ways}-way "
                  f"{config.support_shots}-shot, {config.queries} queries per class")
            for form in FORMS:
                error = float((directions[form] - exact).norm() / exact.norm())
                ratio = times[form] / times["nchw"]
                print(f"  {form:10s} time {ratio:5.2f}x" + (f" [{times[form]:7.0f} ms]" if form == "nchw" else
                                                            " " * 13) + f"  direction error {error:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
