"""How long one MAML meta-step takes: metabook's strategies against the usual per-task loop.

    .venv/bin/python benchmarks/meta_step.py                       # every configuration, this machine's device
    .venv/bin/python benchmarks/meta_step.py --quick --device cpu  # a smoke run on the CPU
    .venv/bin/python benchmarks/meta_step.py --output benchmarks/results/meta_step_cpu.txt

For each configuration (MAML's Omniglot and mini-ImageNet networks, 5-way
1-shot, 15 queries per class; 1 and 5 inner steps; second and first order) it

1. checks that every implementation gives the same meta-gradient as the
   per-task autograd loop, and prints the largest difference;
2. times a meta-step (median of ``--repeats`` after warm-up, the
   implementations taking turns; CUDA events on a GPU) and measures its peak
   memory (CUDA: allocated by torch; CPU: resident memory, in a fresh process);
3. prints ratios: speed-up over the per-task loop, and cost relative to the
   floor, one plain forward and backward pass over the same images.

Implementations: metabook's ``meta_gradient`` with each strategy (``loop``,
``vmap``, and ``stacked``: the tasks side by side as grouped convolutions,
:mod:`metabook_learn.stacked`; the default for the device is marked); the per-task loop with plain autograd and
``create_graph`` (the strategy of learn2learn and higher); ``higher`` itself
when installed (``pip install higher==0.2.1``; never a dependency); the floor.

Absolute times mean something only on a GPU. First of all it checks in
float64 that the implementations agree, and whether the vmap trap documented
in metabook_learn.maml (the outer gradient taken outside vmap) reproduces with this
torch.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: run as a script or loaded by path
from timing import (FLOOR, command_line, floor_gradient, header, median_ms, random_tasks,  # noqa: E402
                    report, settle, synchronize)

from metabook_learn import maml  # noqa: E402
from metabook_learn.inner_loop import InnerLoop, parameters_of, pick_strategy  # noqa: E402
from metabook_learn.models import miniimagenet_convnet, omniglot_convnet  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    make_model: Callable
    image_shape: tuple[int, int, int]
    num_tasks: int
    inner_lr: float  # MAML's: 0.4 on Omniglot, 0.01 on mini-ImageNet
    ways: int = 5
    shots: int = 1
    queries: int = 15


CONFIGS = [
    Config("Omniglot", omniglot_convnet, (1, 28, 28), num_tasks=32, inner_lr=0.4),
    Config("mini-ImageNet", miniimagenet_convnet, (3, 84, 84), num_tasks=4, inner_lr=0.01),
]


# ── The implementations: each returns the meta-gradient, name -> tensor ──────


def higher_meta_gradient(model, params, tasks, inner):
    """The same meta-step written with `higher` (Grefenstette et al., 2019), task by task."""
    import higher

    model.zero_grad(set_to_none=True)
    inner_optimizer = torch.optim.SGD(model.parameters(), lr=inner.lr)
    num_tasks = tasks.support_x.shape[0]
    first_order_grads = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in range(num_tasks):
        with higher.innerloop_ctx(
            model, inner_optimizer, copy_initial_weights=False, track_higher_grads=not inner.first_order
        ) as (fmodel, diffopt):
            for _ in range(inner.steps):
                diffopt.step(F.cross_entropy(fmodel(tasks.support_x[t]), tasks.support_y[t]))
            query_loss = F.cross_entropy(fmodel(tasks.query_x[t]), tasks.query_y[t]) / num_tasks
            if inner.first_order:
                # Without tracked steps the fast weights are cut from θ: take ∇θ' yourself.
                for n, g in zip(params, torch.autograd.grad(query_loss, list(fmodel.parameters()))):
                    first_order_grads[n] += g
            else:
                query_loss.backward()
    if inner.first_order:
        return first_order_grads
    return {n: p.grad for n, p in params.items()}


def implementations(device: torch.device) -> dict[str, Callable | None]:
    default = pick_strategy(device)
    impls = {
        f"metabook {s}" + (" (default)" if s == default else ""): (
            lambda model, params, tasks, inner, s=s: maml.meta_gradient(model, params, tasks, inner, strategy=s).params
        )
        for s in ("loop", "vmap", "stacked")
    }
    impls["per-task autograd loop"] = maml.meta_gradient_reference
    try:
        import higher  # noqa: F401

        impls["higher 0.2.1 (per-task loop)"] = higher_meta_gradient
    except ImportError:
        impls["higher (not installed)"] = None
    impls[FLOOR] = lambda model, params, tasks, inner: floor_gradient(model, params, tasks)
    return impls


# ── Measuring ─────────────────────────────────────────────────────────────────


def cuda_peak_mib(fn, device):
    """Run ``fn`` once: (its result, the most GPU memory it held beyond what was allocated before, MiB)."""
    synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    synchronize(device)
    return result, (torch.cuda.max_memory_allocated(device) - base) / 2**20


def cpu_peak_mib(config: Config, steps: int, first_order: bool, implementation: str) -> float | None:
    """Peak resident memory of one meta-step beyond what the process held before it, MiB.

    Measured in a fresh process (this file with ``--memory-child``) whose
    allocator returns every freed block over 64 KiB to the system, so that the
    resident size follows the memory in use; Linux only, else ``None``.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    spec = f"{CONFIGS.index(config)},{steps},{int(first_order)},{implementation}"
    child = subprocess.run([sys.executable, __file__, "--memory-child", spec], env=env, capture_output=True, text=True)
    try:
        return float(child.stdout.split()[-1])
    except (IndexError, ValueError):
        return None


def resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def memory_child(spec: str) -> None:
    """In the child: one warm-up step, reset the peak (Linux: 5 > /proc/self/clear_refs), one measured step."""
    index, steps, first_order, implementation = spec.split(",", 3)
    device = torch.device("cpu")
    model, params, tasks, inner = setup(CONFIGS[int(index)], int(steps), first_order == "1", device)
    fn = implementations(device)[implementation]
    fn(model, params, tasks, inner)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        base = resident_kib("VmRSS")
        fn(model, params, tasks, inner)
        print((resident_kib("VmHWM") - base) / 1024)
    except OSError:
        print("n/a")


def max_abs_diff(a: dict, b: dict) -> float:
    return max((a[n].float() - b[n].float()).abs().max().item() for n in b)


def float64_check(device) -> str:
    """In float64, every implementation's meta-gradient against the per-task autograd loop.

    Also the textbook torch.func form with the outer gradient outside vmap,
    which batch norm makes wrong (the trap documented in metabook_learn.maml).
    Float32 differences in the tables below are rounding, amplified where a
    ReLU or batch norm over 5 support images is near a kink; here, without
    that noise, the correct implementations agree to ~1e-16.
    """
    config = Config("Omniglot", omniglot_convnet, (1, 28, 28), num_tasks=4, inner_lr=0.4)
    model, _, tasks, inner = setup(config, steps=1, first_order=False, device=device)
    model = model.double()
    params = parameters_of(model)
    tasks = SimpleNamespace(**{k: v.double() if v.is_floating_point() else v for k, v in vars(tasks).items()})
    loop = maml.meta_gradient_reference(model, params, tasks, inner)

    def task_query_loss(p, sx, sy, qx, qy):
        g = torch.func.grad(lambda p: F.cross_entropy(functional_call(model, p, (sx,)), sy))(p)
        return F.cross_entropy(functional_call(model, {n: p[n] - inner.lr * g[n] for n in p}, (qx,)), qy)

    tensors = (tasks.support_x, tasks.support_y, tasks.query_x, tasks.query_y)
    batched = torch.func.vmap(task_query_loss, in_dims=(None, 0, 0, 0, 0))
    detached = {n: p.detach() for n, p in params.items()}
    diffs = {
        name: max_abs_diff(impl(model, params, tasks, inner), loop)
        for name, impl in implementations(device).items()
        if impl is not None and name != FLOOR and name != "per-task autograd loop"
    }
    diffs["grad OUTSIDE vmap (the trap)"] = max_abs_diff(torch.func.grad(lambda p: batched(p, *tensors).mean())(detached), loop)
    size = max(g.abs().max().item() for g in loop.values())
    return (
        f"float64 check (Omniglot net, 4 tasks, 1 step, second order; largest |meta-gradient| {size:.1e}), "
        "max|Δgrad| vs the per-task autograd loop:\n"
        + "\n".join(f"  {name:<30} {diff:.1e}" for name, diff in diffs.items())
    )


def setup(config: Config, steps: int, first_order: bool, device):
    torch.manual_seed(0)
    model = config.make_model(config.ways).to(device)
    inner = InnerLoop(steps=steps, lr=config.inner_lr, first_order=first_order)
    tasks = random_tasks(config.num_tasks, config.ways, config.shots, config.queries, config.image_shape, device)
    return model, parameters_of(model), tasks, inner


def run_config(config: Config, steps: int, first_order: bool, device, warmup: int, repeats: int):
    model, params, tasks, inner = setup(config, steps, first_order, device)
    order = "first order" if first_order else "second order"
    print(
        f"\n{config.name}: {config.ways}-way {config.shots}-shot, {config.queries} queries/class, "
        f"{config.num_tasks} tasks ({config.num_tasks * config.ways * (config.shots + config.queries)} images), "
        f"{steps} inner step{'s' if steps > 1 else ''}, {order}"
    )
    fns, grads, peaks = {}, {}, {}
    for name, impl in implementations(device).items():
        if impl is not None:
            fns[name] = lambda impl=impl: impl(model, params, tasks, inner)
            if device.type == "cuda":
                grads[name], peaks[name] = cuda_peak_mib(fns[name], device)  # also the first warm-up
            else:
                grads[name], peaks[name] = fns[name](), cpu_peak_mib(config, steps, first_order, name)
    times = median_ms(fns, device, warmup, repeats)
    reference = grads["per-task autograd loop"]
    loop_ms, floor_ms = times["per-task autograd loop"], times[FLOOR]
    size = max(g.abs().max().item() for g in reference.values())
    print(f"  largest |meta-gradient| entry: {size:.1e}")
    print(f"  {'implementation':<30} {'max|Δgrad|':>10} {'ms/step':>9} {'tasks/s':>8} {'peak MiB':>9} "
          f"{'vs loop':>8} {'x floor':>8}")
    for name in implementations(device):
        if name not in fns:
            print(f"  {name:<30} {'—':>10}")
            continue
        ms, peak = times[name], peaks[name]
        diff = "—" if name == FLOOR else f"{max_abs_diff(grads[name], reference):.1e}"
        peak_text = "n/a" if peak is None else f"{peak:.0f}"
        print(f"  {name:<30} {diff:>10} {ms:9.1f} {1000 * config.num_tasks / ms:8.1f} {peak_text:>9} "
              f"{loop_ms / ms:7.2f}x {ms / floor_ms:7.2f}x")


def main(argv=None) -> None:
    parser = command_line(__doc__, quick="few repeats: a smoke run on the CPU")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child)
    device = settle(args, repeats=(20, 3), warmup=(3, 0))

    with report(args.output):
        print(header("one MAML meta-step (benchmarks/meta_step.py)", device, args,
                     columns="max|Δgrad| vs the per-task autograd loop; vs loop = loop time / this time (higher is "
                             "faster); x floor = this time / one plain forward+backward over the same images"))
        print(float64_check(device))
        for config in CONFIGS:
            for steps in (1, 5):
                for first_order in (False, True):
                    run_config(config, steps, first_order, device, args.warmup, args.repeats)


if __name__ == "__main__":
    main()
