"""How long one meta-step of R2-D2 takes, against MAML's inner loop, on the same network and tasks.

    .venv/bin/python benchmarks/closed_form.py                       # every setting, this machine's device
    .venv/bin/python benchmarks/closed_form.py --quick --device cpu  # a smoke run
    .venv/bin/python benchmarks/closed_form.py --output benchmarks/results/closed_form_cpu.txt

Every learner uses MAML's Omniglot body (``ConvNet``, 64 filters, strided
convolutions, 28x28 images): R2-D2 and LR-D2 put a head fitted in closed form
on it (:mod:`metabook_learn.r2d2`), MAML a linear head adapted by gradient steps.
For each setting (5-way 1-shot, 5-way 5-shot, 20-way 5-shot; 15 queries per
class) it

1. checks, in float64, that the implementations compute what they claim:
   R2-D2's meta-gradient with the Woodbury (dual) solve equals the one with
   the primal solve, the vmap strategy equals the loop, and MAML's
   meta-gradient equals the plain per-task autograd loop;
2. times a meta-step (meta-gradient of a batch of tasks; median of
   ``--repeats`` after warm-up, the implementations taking turns, CUDA events
   on a GPU);
3. prints ratios: speed-up of each over MAML with one inner step (MAML's
   Omniglot setting), and cost relative to the floor, one plain forward and
   backward pass over the same images.

Then it times the ridge solve alone, primal against Woodbury, for feature
widths up to the thousands of the paper's network.

Implementations: R2-D2 with the form ``ridge_solution`` picks (Woodbury when
S <= D + 1) and with the other form forced; LR-D2 with 5 Newton steps; MAML,
second order, 1 and 5 inner steps; all with metabook's default strategy for
the device, plus R2-D2 with the other strategy.

Absolute times mean something only on a GPU; on a shared CPU read the ratios.
``--output`` also writes the ratios to a ``.json`` file beside it, which the chapter
``book/closed-form-solvers.ipynb`` displays.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: run as a script or loaded by path
from timing import FLOOR, command_line, floor_gradient, header, median_ms, random_tasks, report, settle  # noqa: E402

from metabook_learn import maml  # noqa: E402
from metabook_learn.checkpoint import provenance, write_json  # noqa: E402
from metabook_learn.episodic import episode_gradient  # noqa: E402
from metabook_learn.inner_loop import InnerLoop, parameters_of, pick_strategy  # noqa: E402
from metabook_learn.models import ConvNet  # noqa: E402
from metabook_learn.r2d2 import LRD2, R2D2, ridge_dual, ridge_primal, uses_dual  # noqa: E402

FILTERS = 64  # MAML's Omniglot width: 64 features, 65 with R2-D2's bias column


@dataclass(frozen=True)
class Setting:
    ways: int
    shots: int
    queries: int = 15

    @property
    def name(self) -> str:
        return f"{self.ways}-way {self.shots}-shot"


SETTINGS = [Setting(5, 1), Setting(5, 5), Setting(20, 5)]


class ForcedForm(R2D2):
    """R2-D2 with the primal or the dual solve forced, whatever the shapes: the same weights, another cost."""

    def __init__(self, *args, form: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.solve = {"primal": ridge_primal, "dual": ridge_dual}[form]

    def head(self, support_features, support_y):
        X = torch.cat([support_features, support_features.new_ones(support_features.shape[0], 1)], 1)
        Y = (support_y[:, None] == torch.arange(self.ways, device=X.device)).to(X.dtype)
        root = X.shape[0] ** 0.5
        return self.solve(X / root, Y / root, self.lam)


def body() -> ConvNet:
    return ConvNet(None, in_channels=1, filters=FILTERS, downsample="stride", image_size=28)


def models(setting: Setting, device) -> dict[str, torch.nn.Module]:
    """Every learner, from the same initial body weights (seed 0)."""
    def seeded(make):
        torch.manual_seed(0)
        return make().to(device)

    chosen = "dual" if uses_dual(setting.ways * setting.shots, FILTERS + 1) else "primal"
    other = "primal" if chosen == "dual" else "dual"
    return {
        "r2d2": seeded(lambda: R2D2(body(), setting.ways)),
        "r2d2-other": seeded(lambda: ForcedForm(body(), setting.ways, form=other)),
        "r2d2-chosen": seeded(lambda: ForcedForm(body(), setting.ways, form=chosen)),
        "lrd2": seeded(lambda: LRD2(body(), setting.ways, steps=5)),
        "maml": seeded(lambda: ConvNet(setting.ways, in_channels=1, filters=FILTERS, downsample="stride",
                                       image_size=28)),
    }


def setting_tasks(setting: Setting, num_tasks: int, device, dtype=torch.float32):
    """Random 28x28 pixels shaped like a TaskBatch of this setting."""
    return random_tasks(num_tasks, setting.ways, setting.shots, setting.queries, (1, 28, 28), device, dtype)


def implementations(setting: Setting, device) -> dict[str, Callable]:
    """name -> function(tasks) returning a meta-gradient (name -> tensor)."""
    nets = models(setting, device)
    default = pick_strategy(device)
    other_strategy = "vmap" if default == "loop" else "loop"
    s = setting.ways * setting.shots
    form = "Woodbury S×S" if uses_dual(s, FILTERS + 1) else "primal D×D"
    other_form = "primal D×D" if form.startswith("Woodbury") else "Woodbury S×S"

    def episodic(model, strategy=default):
        params = parameters_of(model)
        return lambda tasks: episode_gradient(model, params, tasks, strategy).params

    def maml_steps(steps):
        params = parameters_of(nets["maml"])
        inner = InnerLoop(steps=steps, lr=0.4)
        return lambda tasks: maml.meta_gradient(nets["maml"], params, tasks, inner, strategy=default).params

    return {
        f"R2-D2 ({form}, {default})": episodic(nets["r2d2"]),
        f"R2-D2 ({form}, {other_strategy})": episodic(nets["r2d2"], other_strategy),
        f"R2-D2 ({other_form} forced)": episodic(nets["r2d2-other"]),
        "LR-D2 (5 Newton steps)": episodic(nets["lrd2"]),
        "MAML, 1 inner step": maml_steps(1),
        "MAML, 5 inner steps": maml_steps(5),
        FLOOR: lambda tasks: floor_gradient(nets["maml"], parameters_of(nets["maml"]), tasks),
    }


BASELINE = "MAML, 1 inner step"


def max_abs_diff(a: dict, b: dict) -> float:
    return max((a[n].double() - b[n].double()).abs().max().item() for n in b)


def float64_check(device) -> str:
    """What the timed implementations compute, checked in float64 on 2 tasks of each setting."""
    lines = ["float64 check (2 tasks, 5 queries per class), max|Δ meta-gradient| / max|meta-gradient|:"]
    for setting in SETTINGS:
        setting = Setting(setting.ways, setting.shots, queries=5)
        tasks = setting_tasks(setting, 2, device, torch.float64)
        nets = {name: net.double() for name, net in models(setting, device).items()}
        grad = {name: episode_gradient(net, parameters_of(net), tasks, "loop").params
                for name, net in nets.items() if name != "maml"}
        size = max(g.abs().max().item() for g in grad["r2d2"].values())
        vmap = episode_gradient(nets["r2d2"], parameters_of(nets["r2d2"]), tasks, "vmap").params
        params = parameters_of(nets["maml"])
        inner = InnerLoop(steps=1, lr=0.4)
        ours = maml.meta_gradient(nets["maml"], params, tasks, inner, strategy="loop").params
        reference = maml.meta_gradient_reference(nets["maml"], params, tasks, inner)
        maml_size = max(g.abs().max().item() for g in reference.values())
        lines.append(
            f"  {setting.name:<16} R2-D2 primal vs Woodbury {max_abs_diff(grad['r2d2-other'], grad['r2d2-chosen']) / size:.1e}"
            f"   R2-D2 vmap vs loop {max_abs_diff(vmap, grad['r2d2']) / size:.1e}"
            f"   MAML vs per-task autograd loop {max_abs_diff(ours, reference) / maml_size:.1e}")
    return "\n".join(lines)


def run_setting(setting: Setting, num_tasks: int, device, warmup: int, repeats: int) -> dict:
    tasks = setting_tasks(setting, num_tasks, device)
    s, q = setting.ways * setting.shots, setting.ways * setting.queries
    print(f"\n{setting.name}, {setting.queries} queries/class, {num_tasks} tasks "
          f"({num_tasks * (s + q)} images); support S = {s}, features D + 1 = {FILTERS + 1}")
    fns = {name: (lambda f=f: f(tasks)) for name, f in implementations(setting, device).items()}
    times = median_ms(fns, device, warmup, repeats)
    print(f"  {'implementation':<34} {'ms/step':>9} {'tasks/s':>8} {'vs MAML-1':>10} {'x floor':>8}")
    rows = {}
    for name, ms in times.items():
        speedup, floor = times[BASELINE] / ms, ms / times[FLOOR]
        rows[name] = {"ms": ms, "speedup_vs_maml1": speedup, "x_floor": floor}
        print(f"  {name:<34} {ms:9.1f} {1000 * num_tasks / ms:8.1f} {speedup:9.2f}x {floor:7.2f}x")
    return rows


SOLVER_SHAPES = [(5, 65), (25, 65), (100, 65), (5, 513), (25, 513), (5, 2049), (25, 2049)]


def run_solver(device, warmup: int, repeats: int) -> dict:
    """The ridge solve alone, forward and backward, primal against Woodbury, for wider features.

    MAML's body gives D + 1 = 65 features, where either system is tiny next to
    the network. The paper's network gives thousands: there the primal D×D
    system dominates, and the S×S one stays as small as the support set.
    """
    print("\nthe ridge solve alone (forward + backward, one task, N = 5 outputs):")
    print(f"  {'S':>4} {'D':>5} {'primal ms':>10} {'Woodbury ms':>12} {'primal / Woodbury':>18}")
    rows = {}
    for S, D in SOLVER_SHAPES:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(S, D, generator=g).to(device).requires_grad_()
        Y = torch.randn(S, 5, generator=g).to(device)

        def step(solve):
            return lambda: torch.autograd.grad(solve(X, Y, 1.0).square().sum(), X)

        times = median_ms({"primal": step(ridge_primal), "dual": step(ridge_dual)}, device, warmup, repeats)
        rows[f"S={S}, D={D}"] = {"primal_ms": times["primal"], "dual_ms": times["dual"],
                                  "primal_over_dual": times["primal"] / times["dual"]}
        print(f"  {S:>4} {D:>5} {times['primal']:10.2f} {times['dual']:12.2f} {times['primal'] / times['dual']:17.1f}x")
    return rows


def main(argv=None) -> None:
    parser = command_line(__doc__, quick="2 tasks, 2 repeats, no warm-up: a smoke run",
                          output="also write the report to this file, and the ratios to the same name with .json")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per meta-step (default: 32 on a GPU, 8 on a CPU)")
    args = parser.parse_args(argv)
    device = settle(args, repeats=(10, 2), warmup=(2, 0))
    args.tasks = args.tasks or (2 if args.quick else 32 if device.type == "cuda" else 8)

    results = {}
    with report(args.output):
        print(header("one meta-step of R2-D2 against MAML's inner loop (benchmarks/closed_form.py)", device, args,
                     details=f", {args.tasks} tasks per meta-step",
                     columns="vs MAML-1 = time of MAML with 1 inner step / this time (higher is faster); "
                             "x floor = this time / one plain forward+backward over the same images"))
        print(float64_check(device))
        for setting in SETTINGS:
            results[setting.name] = run_setting(setting, args.tasks, device, args.warmup, args.repeats)
        solver = run_solver(device, args.warmup, args.repeats)
    if args.output:
        where = provenance(device)
        write_json(args.output.with_suffix(".json"),
                   {"device": device.type, "device_name": where["device_name"], "tasks_per_step": args.tasks,
                    "baseline": BASELINE, "floor": FLOOR, "settings": results, "solver": solver, "provenance": where})


if __name__ == "__main__":
    main()
