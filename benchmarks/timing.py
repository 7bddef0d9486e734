"""How the benchmarks time a meta-step and report it: the rules every benchmark under ``benchmarks/`` shares.

* **Timing** (:func:`median_ms`): the median of ``repeats`` calls after
  ``warmup`` untimed ones, the implementations taking turns, so that a load
  that comes and goes (a shared machine) slows them all alike; CUDA events on
  a GPU (:func:`time_ms`).
* **Inputs and the floor**: random pixels shaped like a task batch
  (:func:`random_tasks`; the time does not depend on the images) and the
  least a meta-step can cost, one plain forward and backward pass over all
  its images (:func:`floor_gradient`).
* **The command line** (:func:`command_line`, :func:`settle`): ``--device``,
  ``--repeats``, ``--warmup``, ``--quick``, ``--threads``, ``--output``.
* **The report** (:func:`header`, :func:`report`): what ran where
  (:func:`metabook_learn.checkpoint.provenance`), the load average, and a copy of
  everything printed in ``--output``, written atomically at the end.

The benchmarks import it as ``from timing import ...`` after putting their
own folder on ``sys.path`` (they are run as ``python benchmarks/X.py``).
"""
from __future__ import annotations

import argparse
import datetime
import io
import os
import statistics
import sys
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from metabook_learn.checkpoint import device_name, provenance
from metabook_learn.files import atomic_output

FLOOR = "floor: plain fwd+bwd"


# ── Timing ───────────────────────────────────────────────────────────────────


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable, device: torch.device) -> float:
    """Wall time of one call in milliseconds (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def median_ms(fns: dict[str, Callable], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median time of each function. They take turns, so a load that comes and goes
    (a shared machine) slows them all alike instead of whichever ran at that moment."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_ms(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


# ── Inputs and the floor ─────────────────────────────────────────────────────


def random_tasks(num_tasks: int, ways: int, shots: int, queries: int, image_shape: tuple[int, ...], device,
                 dtype: torch.dtype = torch.float32) -> SimpleNamespace:
    """Random pixels shaped like a TaskBatch (``support_x [T, N·K, *image_shape]``, ``support_y [T, N·K]``,
    ``query_x [T, N·Q, *image_shape]``, ``query_y [T, N·Q]``): the timing does not depend on the images."""
    g = torch.Generator().manual_seed(0)
    tasks = SimpleNamespace(
        support_x=torch.rand(num_tasks, ways * shots, *image_shape, generator=g, dtype=dtype),
        support_y=torch.arange(ways).repeat_interleave(shots).repeat(num_tasks, 1),
        query_x=torch.rand(num_tasks, ways * queries, *image_shape, generator=g, dtype=dtype),
        query_y=torch.arange(ways).repeat_interleave(queries).repeat(num_tasks, 1),
    )
    return SimpleNamespace(**{key: value.to(device) for key, value in vars(tasks).items()})


def floor_gradient(model: torch.nn.Module, params: dict[str, torch.Tensor], tasks) -> dict[str, torch.Tensor]:
    """One plain forward and backward over all the meta-batch's images: the least a meta-step can cost."""
    images = torch.cat([tasks.support_x, tasks.query_x], dim=1).flatten(0, 1)
    labels = torch.cat([tasks.support_y, tasks.query_y], dim=1).flatten()
    return dict(zip(params, torch.autograd.grad(F.cross_entropy(model(images), labels), list(params.values()))))


# ── The command line ─────────────────────────────────────────────────────────


def command_line(doc: str, quick: str, output: str = "also write the report to this file") -> argparse.ArgumentParser:
    """The options every benchmark has; ``quick`` and ``output`` say what ``--quick`` and ``--output`` do."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=None, help="timed meta-steps per implementation")
    parser.add_argument("--warmup", type=int, default=None, help="untimed meta-steps before timing")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None, help=output)
    return parser


def settle(args: argparse.Namespace, repeats: tuple[int, int], warmup: tuple[int, int]) -> torch.device:
    """The device and torch's threads; ``repeats`` and ``warmup`` default to ``(full, quick)`` by ``--quick``."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or repeats[args.quick]
    args.warmup = args.warmup if args.warmup is not None else warmup[args.quick]
    return device


# ── The report ───────────────────────────────────────────────────────────────


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def header(title: str, device: torch.device, args: argparse.Namespace, columns: str, details: str = "") -> str:
    """The report's first lines: what was measured (``title``), where, with what code, how loaded the machine was.

    ``details`` goes at the end of the arguments line; ``columns`` says what the tables' columns mean.
    """
    where = provenance(device)
    commit = (where["git_commit"] or "unknown")[:7] + (" with uncommitted changes" if where["git_dirty"] else "")
    date = datetime.datetime.fromisoformat(where["date"])
    return "\n".join([
        f"metabook benchmark: {title}",
        f"date: {date:%Y-%m-%d %H:%M UTC}",
        f"device: {device.type}; GPU: {where['device_name'] if device.type == 'cuda' else 'none'}; "
        f"CPU: {device_name('cpu')}, {where['cpu_threads']} torch threads",
        f"torch {where['torch']}, Python {where['python']}, metabook {where['metabook']}, git HEAD {commit}",
        f"arguments: {' '.join(sys.argv[1:]) or '(none)'}; warm-up {args.warmup}, median of {args.repeats}{details}",
        f"load average at start: {load_average()} (other processes on a shared machine distort CPU timings)",
        f"columns: {columns}",
    ])


@contextmanager
def report(output: Path | None) -> Iterator[None]:
    """Print as usual inside the block and, with ``output``, also save all of it there (atomically) at its end."""
    buffer = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text):
            sys.__stdout__.write(text)
            sys.__stdout__.flush()
            return buffer.write(text)

    with redirect_stdout(Tee()):
        yield
        print(f"\nload average at the end: {load_average()}")
    if output:
        with atomic_output(output) as temporary:
            temporary.write_text(buffer.getvalue(), encoding="utf-8")
