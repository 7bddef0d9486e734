"""Bad inputs and faults, each with the one clear error a user sees: the cases behind ``tests/bad_inputs.md``.

Every case in :data:`CASES` does one wrong thing (a command line, a call of the
Python API, a damaged data file, a checkpoint from elsewhere) in a fresh folder.
:func:`test_bad_input` runs it and requires what the table promises: an
exception of the documented type (``TypeError``, ``ValueError``,
``RuntimeError``, ``metabook_learn.data.DataError``...) whose message holds the
case's fragment, or, on the command line, a non-zero exit status with one line
on stderr and no traceback; and no file left half-written in that folder. The
faults that need processes of their own (two runs at once, a run killed
half-way) have tests of their own below, listed in :data:`OTHER_TESTS` with the
checks that existed before this table.

``tests/bad_inputs.md`` is written from these lists: after adding a case, run
``PYTHONPATH=. python tests/test_bad_inputs.py``, which runs every case and
records the message it sees. :func:`test_the_table_and_the_tests_agree` fails
when the table and the lists part ways, or a test it names does not exist.
"""
from __future__ import annotations

import ast
import contextlib
import errno
import gzip
import io
import math
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import textwrap
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from metabook_learn.checkpoint import CheckpointInUse, checkpoint_lock, load_checkpoint, save_checkpoint
from metabook_learn.cli import main
from metabook_learn.data import ClassImages, DataError, NWayKShotSampler, SinusoidSampler, TaskBatch
from metabook_learn.data.storage import CannotWrite, cached_tensors, extract_archive, save_tensors
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import InnerLoop
from metabook_learn.maml import meta_gradient
from metabook_learn.models import ConvNet, sinusoid_mlp
from metabook_learn.training import TrainConfig, TrainingDiverged, train

from fixtures_data import write_mini_imagenet_csv, write_tar_gz, write_zip


TESTS = Path(__file__).resolve().parent
TABLE = TESTS / "bad_inputs.md"
ROOT = TESTS.parent


@dataclass(frozen=True)
class Case:
    """One bad input. ``error``: the exception type the API raises, or the exit status of a command line.
    ``fragment``: part of the message the user must see. ``run(folder)``: does the wrong thing in ``folder``."""

    id: str
    area: str
    tried: str
    error: type | int
    fragment: str
    run: Callable[[Path], object]


CASES: list[Case] = []


def case(id: str, area: str, tried: str, error, fragment: str):
    """Register the decorated ``run(folder)`` as a case."""
    def register(run):
        CASES.append(Case(id, area, tried, error, fragment, run))
        return run
    return register


def command(id: str, tried: str, status: int, fragment: str, argv: str, prepare=None, read_only: str = "") -> None:
    """A command-line case: ``python -m metabook_learn`` + ``argv`` (``{tmp}`` is the case's folder).

    ``read_only``: a function (``"tempfile.mkstemp"``) that fails as on a read-only file system meanwhile.
    """
    def run(folder: Path):
        if prepare is not None:
            prepare(folder)
        fails = mock.patch(read_only, side_effect=OSError(errno.EROFS, os.strerror(errno.EROFS))) if read_only \
            else contextlib.nullcontext()
        with fails:
            return main([part.format(tmp=folder) for part in argv.split()])
    CASES.append(Case(id, "CLI", tried, status, fragment, run))


# ── Small things to break ────────────────────────────────────────────────────


def tiny_data(classes: int = 6, per_class: int = 4, size: int = 8) -> ClassImages:
    images = torch.randint(0, 256, (classes * per_class, 1, size, size), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    return ClassImages.from_sizes(images, [per_class] * classes, [f"c{i}" for i in range(classes)])


def tiny_net(ways: int = 3) -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(ways, in_channels=1, filters=4, downsample="stride", image_size=8, blocks=2)


def tiny_tasks(ways: int = 3):
    return NWayKShotSampler(tiny_data(), ways, 1, 1, seed=0).sample(2)


def plain_net(batch_norm: nn.Module | None = None) -> nn.Module:
    """A network of the user's own: no ``head.`` names, and optionally a batch norm of torch's."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), batch_norm or nn.Identity(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def tiny_config(**changes) -> TrainConfig:
    values = dict(dataset="tiny", ways=3, shots=1, queries=1, meta_batch=2, inner_lr=0.3, steps=2, device="cpu")
    return TrainConfig(**{**values, **changes})


def sinusoid_config(**changes) -> TrainConfig:
    values = dict(dataset="sinusoid", loss="mse", shots=5, queries=5, meta_batch=2, inner_lr=0.01, steps=3,
                  device="cpu", ways=1)
    return TrainConfig(**{**values, **changes})


def write_checkpoint(path: Path, trained: TrainConfig, model: nn.Module, **changes) -> Path:
    """A checkpoint as train writes one (without optimizer and generators: evaluate does not read them)."""
    state = {"step": trained.steps, "config": asdict(trained), "model": model.state_dict(), "lrs": None, **changes}
    save_checkpoint(path, {k: v for k, v in state.items() if v is not None or k == "lrs"})
    return path


def omniglot_maml(ways: int = 5) -> TrainConfig:
    return TrainConfig(algorithm="maml", dataset="omniglot", ways=ways, queries=1, device="cpu", strategy="loop")


def omniglot_convnet(ways: int = 5) -> ConvNet:
    return ConvNet(ways, in_channels=1, filters=64, downsample="stride", image_size=28)


def random_bytes(path: Path, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def gzip_bytes(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content))
    return path


def idx(shape: tuple[int, ...], data_bytes: int | None = None) -> bytes:
    """An IDX file of unsigned bytes of ``shape``, with ``data_bytes`` bytes of data (default: all of them)."""
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
    return header + bytes(math.prod(shape) if data_bytes is None else data_bytes)


# ── The command line ─────────────────────────────────────────────────────────

command("ways-zero", "`train --ways 0`: a zero count (it trained a 5-way model and exited 0)", 2,
        "argument --ways: must be at least 1, got 0", "train --ways 0 --steps 1 --checkpoint {tmp}/run.pt")
command("inner-lr-nan", "`train --data sinusoid --inner-lr nan` (it wrote a checkpoint full of NaN and exited 0)", 2,
        "argument --inner-lr: must be a finite number > 0, got nan",
        "train --data sinusoid --inner-lr nan --steps 3 --checkpoint {tmp}/run.pt")
command("inner-lr-negative", "`train --inner-lr -0.01`: a negative learning rate", 2,
        "argument --inner-lr: must be a finite number > 0, got -0.01", "train --inner-lr -0.01")
command("meta-lr-inf", "`train --meta-lr inf`", 2, "argument --meta-lr: must be a finite number > 0, got inf",
        "train --meta-lr inf")
command("steps-text", "`train --steps abc`: not a number", 2, "argument --steps: must be a whole number, got 'abc'",
        "train --steps abc")
command("shots-fraction", "`train --shots 1.5`: a fraction where a count is due", 2,
        "argument --shots: must be a whole number, got '1.5'", "train --shots 1.5")
command("meta-batch-zero", "`train --meta-batch 0`", 2, "argument --meta-batch: must be at least 1, got 0",
        "train --meta-batch 0")
command("validate-every-negative", "`train --validate-every -1` (0 means never)", 2,
        "argument --validate-every: must be at least 0 (0: never), got -1", "train --validate-every -1")
command("inner-steps-negative", "`train --inner-steps -1` (0 means no adaptation)", 2,
        "argument --inner-steps: must be at least 0 (0: no adaptation), got -1", "train --inner-steps -1")
command("seed-negative", "`train --seed -3`", 2, "argument --seed: must be at least 0, got -3", "train --seed -3")
command("outer-final-negative", "`train --algorithm reptile --outer-step-size-final -1` (0 is the paper's)", 2,
        "argument --outer-step-size-final: must be a finite number >= 0, got -1.0",
        "train --algorithm reptile --outer-step-size-final -1")
command("evaluate-tasks-zero", "`evaluate --tasks 0`", 2, "argument --tasks: must be at least 1, got 0",
        "evaluate --checkpoint {tmp}/run.pt --tasks 0")
command("evaluate-batch-negative", "`evaluate --tasks-per-batch -5`", 2,
        "argument --tasks-per-batch: must be at least 1, got -5", "evaluate --checkpoint {tmp}/run.pt "
        "--tasks-per-batch -5")
command("diverging-run", "`train --data sinusoid --meta-lr 1e6`: training that diverges", 1,
        "training diverged at step 2: the meta-loss is NaN or infinite",
        "train --data sinusoid --meta-lr 1e6 --steps 20 --meta-batch 2 --checkpoint-every 1 --validate-every 0 "
        "--device cpu --no-progress --checkpoint {tmp}/run.pt")

command("checkpoint-read-only", "`train` with `--checkpoint` in a read-only folder", 1,
        "run.curve.jsonl (Read-only file system); the folder is not writable",
        "train --data sinusoid --steps 2 --meta-batch 2 --validate-every 0 --device cpu --no-progress "
        "--checkpoint {tmp}/run.pt", read_only="tempfile.mkstemp")
command("data-cache-read-only", "`data prepare omniglot-runs` into a read-only cache folder", 1,
        "all_runs (Read-only file system); the folder is not writable: fix its permissions or choose another "
        "(data: --cache DIR or $METABOOK_DATA",
        "data prepare omniglot-runs --cache {tmp}/cache --mirror {tmp}/mirror",
        lambda folder: write_zip(folder / "mirror" / "omniglot" / "all_runs.zip", {"run01/x.txt": b"x"}),
        read_only="tempfile.mkdtemp")
command("validation-diverges", "`train --data sinusoid --inner-lr 1.5`: one training step is fine, ten "
        "validation steps diverge (it reported \"last validation mse nan\" and exited 0)", 1,
        "validation diverged after step 10: the validation mse is nan, because fine-tuning with inner_lr=1.5 for "
        "eval_inner_steps=10 steps diverges; lower inner_lr or eval_inner_steps",
        "train --data sinusoid --inner-lr 1.5 --steps 20 --validate-every 10 --validation-tasks 10 --device cpu "
        "--no-progress --checkpoint {tmp}/run.pt")

# ── Checkpoints from elsewhere (evaluate) ────────────────────────────────────


def _real_sinusoid_checkpoint(folder: Path, **changes) -> Path:
    return write_checkpoint(folder / "run.pt", sinusoid_config(), sinusoid_mlp(), **changes)


command("checkpoint-truncated", "`evaluate` a checkpoint cut off half-way (a full disk, a copy interrupted)", 1,
        "is not a readable metabook checkpoint", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: truncate(_real_sinusoid_checkpoint(folder)))
command("checkpoint-random-bytes", "`evaluate` a file of random bytes named run.pt", 1,
        "is not a readable metabook checkpoint", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: random_bytes(folder / "run.pt"))
command("checkpoint-plain-torch", "`evaluate` a plain `torch.save(model.state_dict())` file", 1,
        "has no 'format' entry", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: torch.save(sinusoid_mlp().state_dict(), folder / "run.pt"))
command("checkpoint-other-version", "`evaluate` a checkpoint of another metabook version (another format)", 1,
        "was written by metabook 9.9.9 in format 'metabook-checkpoint-99'", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: torch.save({"format": "metabook-checkpoint-99", "metabook": "9.9.9"}, folder / "run.pt"))
command("checkpoint-unknown-option", "`evaluate` a checkpoint trained with an option this version does not know", 1,
        "options this metabook does not know (warp_drive)", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: _real_sinusoid_checkpoint(folder, config={**asdict(sinusoid_config()), "warp_drive": 9}))
command("checkpoint-without-weights", "`evaluate` a metabook checkpoint that has no weights in it", 1,
        "without model: it was not written by `python -m metabook_learn train`", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: save_checkpoint(folder / "run.pt", {"step": 1, "config": asdict(sinusoid_config()),
                                                           "lrs": None}))
command("checkpoint-other-architecture", "`evaluate` a checkpoint whose weights belong to another network", 1,
        "do not fit a ConvNet built from its configuration", "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: write_checkpoint(folder / "run.pt", omniglot_maml(), sinusoid_mlp()))
command("checkpoint-other-ways", "`evaluate` a checkpoint whose configuration says 20 ways and whose head has 5", 1,
        "shapes differ: head.weight (5, 64) there, (20, 64) here",
        "evaluate --checkpoint {tmp}/run.pt",
        lambda folder: write_checkpoint(folder / "run.pt", omniglot_maml(20), omniglot_convnet(5)))
command("evaluate-ways-20-on-5-way", "`evaluate --ways 20` on a 5-way MAML checkpoint", 1,
        "this maml network has a 5-output head: drop --ways", "evaluate --checkpoint {tmp}/run.pt --ways 20",
        lambda folder: write_checkpoint(folder / "run.pt", omniglot_maml(5), omniglot_convnet(5)))


def _checkpoint_with_nan(folder: Path) -> None:
    model = sinusoid_mlp()
    with torch.no_grad():
        next(iter(model.parameters()))[0] = float("nan")
    write_checkpoint(folder / "run.pt", sinusoid_config(), model)


command("checkpoint-nan-weights", "`evaluate` a checkpoint whose weights hold NaN", 1,
        "has non-finite weights", "evaluate --checkpoint {tmp}/run.pt --tasks 4 --no-progress --device cpu",
        _checkpoint_with_nan)


# ── The Python API: options ──────────────────────────────────────────────────


@case("config-ways-zero", "API", "`TrainConfig(ways=0)`", ValueError, "ways must be at least 1, got 0")
def _(folder):
    TrainConfig(ways=0)


@case("config-inner-lr-nan", "API", "`TrainConfig(inner_lr=float('nan'))`", ValueError,
      "inner_lr must be a finite number >= 0, got nan")
def _(folder):
    TrainConfig(inner_lr=float("nan"))


@case("config-meta-lr-negative", "API", "`TrainConfig(meta_lr=-1e-3)`", ValueError,
      "meta_lr must be a finite number >= 0, got -0.001")
def _(folder):
    TrainConfig(meta_lr=-1e-3)


@case("config-steps-float", "API", "`TrainConfig(steps=2.5)`", TypeError, "steps must be an int, got float 2.5")
def _(folder):
    TrainConfig(steps=2.5)


@case("config-bool-count", "API", "`TrainConfig(meta_batch=True)`: a bool is not a count", TypeError,
      "meta_batch must be an int, got bool True")
def _(folder):
    TrainConfig(meta_batch=True)


@case("config-strategy", "API", "`TrainConfig(strategy='gpu')`", ValueError,
      "strategy must be one of auto, loop, vmap, stacked, got 'gpu'")
def _(folder):
    TrainConfig(strategy="gpu")


@case("inner-loop-lr-negative", "API", "`InnerLoop(lr=-0.4)`: a negative inner learning rate", ValueError,
      "lr must be a finite number >= 0, got -0.4")
def _(folder):
    InnerLoop(lr=-0.4)


@case("inner-loop-steps-negative", "API", "`InnerLoop(steps=-1)`", ValueError,
      "steps must be at least 0 (0: no adaptation), got -1")
def _(folder):
    InnerLoop(steps=-1)


@case("inner-loop-batch-zero", "API", "`InnerLoop(batch_size=0)`", ValueError,
      "batch_size must be at least 1 or None (the whole support set), got 0")
def _(folder):
    InnerLoop(batch_size=0)


@case("sampler-seed-negative", "API", "`NWayKShotSampler(data, 2, 1, 1, seed=-1)`", ValueError,
      "seed must be at least 0, got -1")
def _(folder):
    NWayKShotSampler(tiny_data(), 2, 1, 1, seed=-1)


@case("sinusoid-no-queries", "API", "`SinusoidSampler(num_queries=0)`", ValueError,
      "num_queries must be at least 1, got 0")
def _(folder):
    SinusoidSampler(num_shots=5, num_queries=0)


@case("evaluate-no-tasks", "API", "`evaluate(..., num_tasks=0)`", ValueError, "num_tasks must be at least 1, got 0")
def _(folder):
    evaluate(tiny_net(), NWayKShotSampler(tiny_data(), 3, 1, 1), InnerLoop(), num_tasks=0)


@case("loader-image-size-zero", "API", "`load_omniglot('train', image_size=0)`", ValueError,
      "image_size must be at least 1, got 0")
def _(folder):
    from metabook_learn.data import load_omniglot
    load_omniglot("train", image_size=0, cache=folder / "cache", mirror=folder / "mirror")


@case("loader-per-class-zero", "API", "`load_rotated_mnist(per_class=0)`", ValueError,
      "per_class must be at least 1, got 0")
def _(folder):
    from metabook_learn.data import load_rotated_mnist
    load_rotated_mnist(per_class=0, cache=folder / "cache", mirror=folder / "mirror", allow_download=False)


# ── The Python API: tensors and NumPy arrays ─────────────────────────────────


@case("numpy-class-images", "API", "a NumPy array handed to `ClassImages.from_sizes`", TypeError,
      "images is a NumPy array (uint8 (4, 1, 8, 8)); pass a torch tensor: torch.from_numpy(images)")
def _(folder):
    ClassImages.from_sizes(np.zeros((4, 1, 8, 8), dtype=np.uint8), [2, 2], ["a", "b"])


@case("numpy-task-batch", "API", "a NumPy array handed to `TaskBatch`", TypeError,
      "support_x is a NumPy array (float32 (2, 3, 1, 8, 8)); pass a torch tensor")
def _(folder):
    tasks = tiny_tasks()
    TaskBatch(tasks.support_x.numpy(), tasks.support_y, tasks.query_x, tasks.query_y, tasks.classes)


@case("numpy-meta-gradient", "API", "tasks of NumPy arrays handed to `meta_gradient`", TypeError,
      "tasks.support_x is a NumPy array")
def _(folder):
    tasks = tiny_tasks()
    arrays = SimpleNamespace(**{name: getattr(tasks, name).numpy()
                                for name in ("support_x", "support_y", "query_x", "query_y")})
    model = tiny_net()
    meta_gradient(model, dict(model.named_parameters()), arrays, InnerLoop())


@case("uint8-images-meta-gradient", "API", "`meta_gradient` on images still in uint8", ValueError,
      "tasks.support_x must be floating point (images scaled to [0, 1]), got torch.uint8")
def _(folder):
    tasks = tiny_tasks()
    tasks.support_x = (tasks.support_x * 255).to(torch.uint8)
    model = tiny_net()
    meta_gradient(model, dict(model.named_parameters()), tasks, InnerLoop())


@case("labels-do-not-match-images", "API", "`meta_gradient` on tasks with fewer labels than support images",
      ValueError, "with one target per example")
def _(folder):
    tasks = tiny_tasks()
    tasks.support_y = tasks.support_y[:, :2]
    model = tiny_net()
    meta_gradient(model, dict(model.named_parameters()), tasks, InnerLoop())


@case("evaluate-task-batch", "API", "`evaluate(model, task_batch, ...)`: tasks where a sampler is due", TypeError,
      "sampler must draw tasks with sample(k)")
def _(folder):
    evaluate(tiny_net(), tiny_tasks(), InnerLoop())


# ── The Python API: a student's own model ────────────────────────────────────


@case("evaluate-more-ways-than-head", "API", "`evaluate` with 5-way tasks on a 3-output head (it was "
      "`IndexError: Target 5 is out of bounds`)", ValueError,
      "the tasks have 5 ways, but ConvNet's head has only 3 outputs")
def _(folder):
    evaluate(tiny_net(3), NWayKShotSampler(tiny_data(), 5, 1, 1), InnerLoop(), num_tasks=2)


@case("train-more-ways-than-head", "API", "`train` with 5-way tasks on a 3-output head", ValueError,
      "the tasks have 5 ways, but ConvNet's head has only 3 outputs")
def _(folder):
    train(tiny_config(ways=5), tiny_net(3), NWayKShotSampler(tiny_data(), 5, 1, 1), progress=False)


@case("meta-gradient-more-ways-than-head", "API", "`meta_gradient` of 5-way tasks on a 3-output head", ValueError,
      "the tasks have 5 ways, but ConvNet's head has only 3 outputs")
def _(folder):
    model = tiny_net(3)
    meta_gradient(model, dict(model.named_parameters()), tiny_tasks(5), InnerLoop())


@case("batch-norm-running-stats-train", "API", "`train` a network with `nn.BatchNorm2d` (running statistics)",
      ValueError, "use metabook_learn.models.TaskBatchNorm2d (per-task statistics, as MAML's code) or "
      "nn.BatchNorm2d(channels, track_running_stats=False)")
def _(folder):
    train(tiny_config(), plain_net(nn.BatchNorm2d(4)), NWayKShotSampler(tiny_data(), 3, 1, 1), progress=False)


@case("batch-norm-running-stats-meta-gradient", "API", "`meta_gradient` of a network with `nn.BatchNorm2d` "
      "(it was a functorch in-place error under vmap)", ValueError,
      "module '1' is an nn.BatchNorm2d with running statistics")
def _(folder):
    model = plain_net(nn.BatchNorm2d(4))
    meta_gradient(model, dict(model.named_parameters()), tiny_tasks(), InnerLoop(), strategy="vmap")


@case("anil-without-head", "API", "ANIL (`algorithm='anil'`) on a network without `head.` parameters (it was "
      "\"`inputs` argument to `grad()` cannot be empty\")", ValueError,
      "head_only (ANIL) adapts the parameters named 'head.…', and Sequential has none")
def _(folder):
    train(tiny_config(algorithm="anil"), plain_net(), NWayKShotSampler(tiny_data(), 3, 1, 1), progress=False)


@case("anil-without-head-meta-gradient", "API", "`meta_gradient` with `InnerLoop(head_only=True)` on a network "
      "without `head.` parameters", ValueError, "name the last layer self.head")
def _(folder):
    model = plain_net()
    meta_gradient(model, dict(model.named_parameters()), tiny_tasks(), InnerLoop(head_only=True))


class _GradientInForward(nn.Module):
    """An episodic learner of a student's own that takes a gradient step inside its forward, without enable_grad."""

    episodic = True

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, support_x, support_y, query_x, query_y):
        loss = ((self.scale * support_x - support_y) ** 2).mean()
        (step,) = torch.autograd.grad(loss, self.scale)
        outputs = (self.scale - 0.1 * step) * query_x
        return ((outputs - query_y) ** 2).mean(), outputs


@case("autograd-grad-in-evaluation", "API", "a method of one's own calling `torch.autograd.grad` while "
      "`evaluate` runs it (under `no_grad`)", RuntimeError, "wrap the gradient it takes in `with torch.enable_grad():`")
def _(folder):
    evaluate(_GradientInForward(), SinusoidSampler(5, 5), None, num_tasks=2, strategy="loop")


@case("evaluate-nan-weights", "API", "`evaluate` a network whose weights hold NaN", ValueError,
      "has non-finite weights (head.bias holds NaN or infinity)")
def _(folder):
    model = tiny_net()
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    evaluate(model, NWayKShotSampler(tiny_data(), 3, 1, 1), InnerLoop(), num_tasks=2)


# ── The Python API: training goes wrong ──────────────────────────────────────


@case("train-meta-lr-diverges", "API", "`train` with `meta_lr=1e6` (the meta-loss becomes NaN)", TrainingDiverged,
      "lower the learning rate (inner_lr=0.01, meta_lr=1000000.0)")
def _(folder):
    train(sinusoid_config(meta_lr=1e6, steps=20), sinusoid_mlp(), SinusoidSampler(5, 5), progress=False)


class _NaNTargets(SinusoidSampler):
    def sample(self, num_tasks):
        tasks = super().sample(num_tasks)
        tasks.query_y[0, 0] = float("nan")
        return tasks


@case("train-nan-data", "API", "`train` on tasks with a NaN target", TrainingDiverged,
      "training diverged at step 1: the meta-loss is NaN or infinite")
def _(folder):
    train(sinusoid_config(), sinusoid_mlp(), _NaNTargets(5, 5), progress=False)


@case("checkpoint-in-use", "API", "`train` into a checkpoint that another run holds", CheckpointInUse,
      "is writing")
def _(folder):
    with checkpoint_lock(folder / "run.pt"):
        train(sinusoid_config(), sinusoid_mlp(), SinusoidSampler(5, 5), checkpoint=folder / "run.pt", progress=False)


@case("cache-read-only", "API", "writing the data cache into a read-only folder", CannotWrite,
      "(Read-only file system); the folder is not writable: fix its permissions or choose another")
def _(folder):
    with mock.patch("tempfile.mkstemp", side_effect=OSError(errno.EROFS, os.strerror(errno.EROFS))):
        save_tensors({"x": torch.zeros(1)}, folder / "cache" / "x.pt")


@case("cache-disk-full", "API", "writing the data cache onto a full disk", CannotWrite,
      "(No space left on device); the disk is full: free some space")
def _(folder):
    with mock.patch("torch.save", side_effect=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))):
        save_tensors({"x": torch.zeros(1)}, folder / "cache" / "x.pt")


# ── Loaders: random bytes, truncated files, wrong formats ────────────────────


def loader(id: str, tried: str, fragment: str, load, prepare, error=DataError) -> None:
    """A loader case: ``prepare(folder)`` writes the bad file, ``load(folder)`` reads it (mirror: folder/mirror)."""
    def run(folder: Path):
        prepare(folder)
        return load(folder)
    CASES.append(Case(id, "loader", tried, error, fragment, run))


def _omniglot(folder):
    from metabook_learn.data import load_omniglot
    return load_omniglot("train", cache=folder / "cache", mirror=folder / "mirror")


def _omniglot_runs(folder):
    from metabook_learn.data import load_omniglot_runs
    return load_omniglot_runs(cache=folder / "cache", mirror=folder / "mirror", allow_download=False)


def _cifar_fs(folder):
    from metabook_learn.data import load_cifar_fs
    return load_cifar_fs("train", cache=folder / "cache", mirror=folder / "mirror", allow_download=False)


def _rotated_mnist(folder):
    from metabook_learn.data import load_rotated_mnist
    return load_rotated_mnist(cache=folder / "cache", mirror=folder / "mirror", allow_download=False)


def _mini_imagenet(folder):
    from metabook_learn.data import load_mini_imagenet
    return load_mini_imagenet("train", cache=folder / "cache", mirror=folder / "mirror")


def _mnist(folder, images: bytes, labels: bytes | None = None, raw: bool = False):
    target = folder / "mirror" / "mnist"
    if raw:
        target.mkdir(parents=True, exist_ok=True)
        (target / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    else:
        gzip_bytes(target / "t10k-images-idx3-ubyte.gz", images)
    gzip_bytes(target / "t10k-labels-idx1-ubyte.gz", labels if labels is not None else idx((10,)))


def _one_shot_runs_zip(folder, image: bytes):
    write_zip(folder / "mirror" / "omniglot" / "all_runs.zip", {
        "run01/class_labels.txt": b"run01/test/item01.png run01/training/class01.png\n",
        "run01/training/class01.png": image, "run01/test/item01.png": image})


def _csv_with_image(folder, image: bytes):
    csv_folder = folder / "mirror" / "mini-imagenet"
    write_mini_imagenet_csv(csv_folder, "train", num_classes=1, per_class=1)
    (jpeg,) = (csv_folder / "images").glob("*.jpg")
    jpeg.write_bytes(image if image else jpeg.read_bytes()[: jpeg.stat().st_size // 2])


def _mini_imagenet_pickle(folder, content: bytes):
    path = folder / "mirror" / "mini-imagenet" / "mini-imagenet-cache-train.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


_OMNIGLOT_ZIP = ("mirror", "omniglot", "images_background.zip")
_CIFAR = ("mirror", "cifar-100", "cifar-100-python.tar.gz")

loader("omniglot-random-bytes", "Omniglot: `images_background.zip` of random bytes", "is truncated or corrupt",
       _omniglot, lambda f: random_bytes(f.joinpath(*_OMNIGLOT_ZIP)))
loader("omniglot-truncated-zip", "Omniglot: `images_background.zip` cut off half-way", "is truncated or corrupt",
       _omniglot, lambda f: truncate(write_zip(f.joinpath(*_OMNIGLOT_ZIP), {"a/b.png": bytes(5000)})))
loader("omniglot-tar-as-zip", "Omniglot: a tar.gz saved as `images_background.zip` (wrong format)",
       "is truncated or corrupt", _omniglot, lambda f: write_tar_gz(f.joinpath(*_OMNIGLOT_ZIP), {"a.png": b"x"}))
loader("one-shot-runs-random-bytes", "Omniglot one-shot runs: `all_runs.zip` of random bytes",
       "is truncated or corrupt", _omniglot_runs, lambda f: random_bytes(f / "mirror" / "omniglot" / "all_runs.zip"))
loader("one-shot-runs-not-png", "Omniglot one-shot runs: a drawing that is not an image (wrong format)",
       "is not a readable image", _omniglot_runs, lambda f: _one_shot_runs_zip(f, b"this is not a PNG"))
loader("cifar-random-bytes", "CIFAR-FS: `cifar-100-python.tar.gz` of random bytes", "is truncated or corrupt",
       _cifar_fs, lambda f: random_bytes(f.joinpath(*_CIFAR)))
loader("cifar-zip-as-tar", "CIFAR-FS: a zip saved as `cifar-100-python.tar.gz` (wrong format)",
       "is truncated or corrupt", _cifar_fs, lambda f: write_zip(f.joinpath(*_CIFAR), {"a": b"x"}))
loader("cifar-batch-random-bytes", "CIFAR-FS: an archive whose `meta` file is random bytes, not a pickle",
       "is not a readable pickle", _cifar_fs,
       lambda f: write_tar_gz(f.joinpath(*_CIFAR), {"cifar-100-python/meta": bytes(range(256)) * 4}))
loader("mnist-random-bytes", "Rotated MNIST: `t10k-images-idx3-ubyte.gz` of random bytes", "is truncated or corrupt",
       _rotated_mnist, lambda f: _mnist(f, bytes(np.random.default_rng(0).integers(0, 256, 999, dtype=np.uint8)),
                                        raw=True))
loader("mnist-not-idx", "Rotated MNIST: a gzip file that is not IDX (wrong format)", "is not an IDX file",
       _rotated_mnist, lambda f: _mnist(f, b"\x89PNG not an IDX file"))
loader("mnist-truncated-idx", "Rotated MNIST: an IDX file with half its images", "the header announces shape",
       _rotated_mnist, lambda f: _mnist(f, idx((10, 28, 28), data_bytes=3920)))
loader("mnist-labels-as-images", "Rotated MNIST: the labels file where the images are due (wrong format)",
       "expected an IDX file of unsigned bytes with 3 dimensions", _rotated_mnist, lambda f: _mnist(f, idx((10,))))
loader("mini-imagenet-random-bytes", "mini-ImageNet: a `.pkl` cache of random bytes", "is not a readable pickle",
       _mini_imagenet, lambda f: _mini_imagenet_pickle(f, bytes(np.random.default_rng(0).integers(
           0, 256, 999, dtype=np.uint8))))
loader("mini-imagenet-truncated-pickle", "mini-ImageNet: a `.pkl` cache cut off half-way",
       "is not a readable pickle", _mini_imagenet,
       lambda f: _mini_imagenet_pickle(f, pickle.dumps({"image_data": np.zeros((4, 84, 84, 3), np.uint8),
                                                        "class_dict": {"a": [0, 1, 2, 3]}})[:20000]))
loader("mini-imagenet-wrong-pickle", "mini-ImageNet: a `.pkl` holding a list (wrong format)",
       "is not a mini-ImageNet cache", _mini_imagenet, lambda f: _mini_imagenet_pickle(f, pickle.dumps([1, 2, 3])))
loader("mini-imagenet-csv-header", "mini-ImageNet: a CSV split without its header line",
       "should start with the header 'filename,label'", _mini_imagenet,
       lambda f: (f / "mirror" / "mini-imagenet").mkdir(parents=True) or
       (f / "mirror" / "mini-imagenet" / "train.csv").write_text("n0000000100000001.jpg,n00000001\n"))
loader("mini-imagenet-jpeg-random-bytes", "mini-ImageNet: a JPEG of random bytes in `images/`",
       "is not a readable image", _mini_imagenet, lambda f: _csv_with_image(f, bytes(range(256)) * 8))
loader("mini-imagenet-jpeg-truncated", "mini-ImageNet: a JPEG cut off half-way", "is not a readable image",
       _mini_imagenet, lambda f: _csv_with_image(f, b""))


# ── Running the cases ────────────────────────────────────────────────────────


def observe(case: Case, folder: Path) -> tuple[object, str, str]:
    """``(what happened, the message, stderr)``: the exception's type, or the exit status of a command line."""
    if isinstance(case.error, int):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = case.run(folder)
            except SystemExit as exit:
                status = exit.code
        text = stderr.getvalue()
        return status, text.strip().splitlines()[-1] if text.strip() else "", text
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            case.run(folder)
    except Exception as error:  # noqa: BLE001 - every outcome is recorded and compared with the case
        return type(error), str(error), traceback.format_exc()
    return None, "", ""


def partial_files(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial-" in p.name or p.name.endswith(".lock")]


@pytest.mark.usefixtures("no_data_environment")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch):
    monkeypatch.setenv("METABOOK_DATA", str(tmp_path / "default-cache"))
    outcome, message, details = observe(case, tmp_path)
    if isinstance(case.error, int):
        lines = details.strip().splitlines()
        assert outcome == case.error and len(lines) == 1 and lines[0].startswith("error: "), details
        assert "Traceback" not in details
    else:
        assert isinstance(outcome, type) and issubclass(outcome, case.error), details
    assert case.fragment in message, message
    assert not partial_files(tmp_path), "something half-written was left behind"


# ── Faults with processes of their own ───────────────────────────────────────


def python(code: str, **kwargs) -> subprocess.Popen:
    """A fresh Python running ``code`` with this checkout's metabook."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_line(process: subprocess.Popen, expected: str) -> None:
    line = process.stdout.readline()
    if line.strip() != expected:
        process.kill()
        raise AssertionError(f"expected {expected!r}, got {line!r}; stderr: {process.communicate()[1]}")


@pytest.mark.usefixtures("no_data_environment")
def test_two_runs_on_one_checkpoint_refuse_and_a_killed_runs_lock_does_not_block(tmp_path, capsys):
    checkpoint = tmp_path / "run.pt"
    holder = python(f"""
        import time
        from metabook_learn.checkpoint import checkpoint_lock
        with checkpoint_lock({str(checkpoint)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)
    try:
        wait_for_line(holder, "held")
        argv = ["train", "--data", "sinusoid", "--steps", "2", "--meta-batch", "2", "--validate-every", "0",
                "--device", "cpu", "--no-progress", "--checkpoint", str(checkpoint)]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"another training run (process {holder.pid} on" in err[0], err
        assert not checkpoint.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed run's lock file is still there, but its process is gone: the next run goes ahead, and deletes
    # what a save cut short would have left.
    assert Path(f"{checkpoint}.lock").exists()
    cut_short = tmp_path / ".run.pt.partial-killed"
    cut_short.write_bytes(b"half a checkpoint")
    assert main(argv) == 0, capsys.readouterr().err
    assert load_checkpoint(checkpoint)["step"] == 2 and sorted(p.name for p in tmp_path.iterdir()) == [
        "run.curve.jsonl", "run.pt", "run.train.json"]


def test_two_processes_preparing_one_cache_build_it_once(tmp_path):
    """Both processes get the same complete cache; the second waited for the first instead of building too."""
    code = f"""
        import time, torch
        from pathlib import Path
        from metabook_learn.data.storage import cached_tensors
        def build():
            with open({str(tmp_path / 'builds.txt')!r}, "a") as log:
                log.write("built\\n")
            time.sleep(1.0)
            return {{"x": torch.arange(100_000)}}
        content = cached_tensors(Path({str(tmp_path / 'cache' / 'x.pt')!r}), build)
        print(int(content["x"].sum()))
    """
    processes = [python(code) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert [out.strip() for out, _ in outputs] == [str(sum(range(100_000)))] * 2
    assert (tmp_path / "builds.txt").read_text() == "built\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["x.pt"]  # no lock or partial file left


def test_two_processes_unpacking_one_archive_end_with_one_complete_folder(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {f"d/{i:04d}.bin": bytes([i % 256]) * 2000 for i in range(400)})
    code = f"""
        from pathlib import Path
        from metabook_learn.data.storage import extract_archive
        print(len(list(extract_archive(Path({str(archive)!r}), Path({str(tmp_path / 'out')!r})).rglob('*.bin'))))
    """
    processes = [python(code) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [out.strip() for out, _ in outputs] == ["400", "400"], outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def test_an_extraction_killed_half_way_is_never_trusted(tmp_path):
    """A process killed (SIGKILL) in the middle of unpacking leaves a hidden partial folder, never the target;
    the next run unpacks afresh and removes what the killed one left."""
    archive = write_zip(tmp_path / "a.zip", {f"d/{i:03d}.bin": bytes(1000) for i in range(50)})
    target = tmp_path / "out"
    killed = python(f"""
        import os, signal, zipfile
        from pathlib import Path
        import metabook_learn.data.storage as storage
        def half_then_die(archive, root):
            with zipfile.ZipFile(archive) as zipped:
                for name in zipped.namelist()[:25]:
                    zipped.extract(name, root)
            os.kill(os.getpid(), signal.SIGKILL)
        storage._extract_zip = half_then_die
        storage.extract_archive(Path({str(archive)!r}), Path({str(target)!r}))
    """)
    killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert leftovers and not target.exists()  # half an archive, and nothing that claims to be the result
    extract_archive(archive, target)
    assert len(list(target.rglob("*.bin"))) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_one_clear_error(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CannotWrite, match="the folder is not writable"):
            cached_tensors(folder / "x.pt", lambda: {"x": torch.zeros(1)})
    finally:
        folder.chmod(0o755)


@pytest.mark.usefixtures("no_data_environment")
def test_divergence_stops_with_the_last_finite_checkpoint_kept(tmp_path, capsys):
    checkpoint = tmp_path / "run.pt"
    argv = ["train", "--data", "sinusoid", "--meta-lr", "1e6", "--steps", "20", "--meta-batch", "2",
            "--checkpoint-every", "1", "--validate-every", "0", "--device", "cpu", "--no-progress",
            "--checkpoint", str(checkpoint)]
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    step = int(re.search(r"diverged at step (\d+)", line).group(1))
    state = load_checkpoint(checkpoint)
    assert state["step"] == step - 1 and f"the checkpoint {checkpoint} of step {step - 1} is kept" in line
    assert all(bool(torch.isfinite(w).all()) for w in state["model"].values())
    assert not (tmp_path / "run.train.json").exists()


def test_a_diverged_step_leaves_the_weights_of_the_step_before():
    config, model = sinusoid_config(meta_lr=1e6, steps=20), sinusoid_mlp()
    with pytest.raises(TrainingDiverged) as raised:
        train(config, model, SinusoidSampler(5, 5), progress=False)
    assert raised.value.step >= 2 and raised.value.quantity == "meta-loss"
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


# ── The table ────────────────────────────────────────────────────────────────

# Faults checked by the tests above, and bad inputs checked elsewhere before this table: (area, tried, what the
# user sees, test).
OTHER_TESTS = [
    ("CLI", "two `train` runs given the same `--checkpoint` at once",
     "error: another training run (process PID on HOST) is writing run.pt; two runs on one checkpoint would "
     "overwrite each other's steps: wait for it to finish, or pass another checkpoint path",
     "tests/test_bad_inputs.py::test_two_runs_on_one_checkpoint_refuse_and_a_killed_runs_lock_does_not_block"),
    ("CLI", "a run killed with SIGKILL leaves its lock file behind",
     "(nothing: the lock died with its process; the next run trains)",
     "tests/test_bad_inputs.py::test_two_runs_on_one_checkpoint_refuse_and_a_killed_runs_lock_does_not_block"),
    ("CLI", "training that diverges after a checkpoint was written",
     "error: training diverged at step N: ...; the checkpoint run.pt of step N-1 is kept (finite weights)",
     "tests/test_bad_inputs.py::test_divergence_stops_with_the_last_finite_checkpoint_kept"),
    ("API", "`train` whose meta-step diverges: what is left in the model",
     "TrainingDiverged; the model keeps the finite weights of the step before",
     "tests/test_bad_inputs.py::test_a_diverged_step_leaves_the_weights_of_the_step_before"),
    ("loader", "two processes preparing the same data cache at once",
     "(nothing: one builds, the other waits and loads the same complete file)",
     "tests/test_bad_inputs.py::test_two_processes_preparing_one_cache_build_it_once"),
    ("loader", "two processes unpacking the same archive at once", "(nothing: one complete folder)",
     "tests/test_bad_inputs.py::test_two_processes_unpacking_one_archive_end_with_one_complete_folder"),
    ("loader", "an extraction killed half-way (SIGKILL)",
     "(nothing trusted: the target never appears; the next run unpacks afresh and deletes the leftovers)",
     "tests/test_bad_inputs.py::test_an_extraction_killed_half_way_is_never_trusted"),
    ("loader", "a read-only cache folder (a real chmod 555; skipped as root)",
     "CannotWrite: cannot write ... (Permission denied); the folder is not writable: fix its permissions or "
     "choose another",
     "tests/test_bad_inputs.py::test_a_read_only_cache_folder_is_one_clear_error"),
    ("CLI", "`train --algorithm mamll` and 14 other contradictory requests",
     "error: unknown algorithm 'mamll'; choose one of: maml, fomaml, anil, ...",
     "tests/test_train_cli.py::test_bad_requests_fail_with_one_actionable_line"),
    ("CLI", "`train` into an existing checkpoint without `--resume`; `--resume` with other options",
     "error: run.pt exists; pass --resume to continue that run, or choose another --checkpoint",
     "tests/test_train_cli.py::test_an_existing_run_is_resumed_only_when_asked_and_only_with_the_same_options"),
    ("loader", "a download whose MD5 does not match", "DataError: checksum mismatch for URL: expected MD5 ...; "
     "nothing was kept", "tests/test_data_storage.py::test_checksum_mismatch_is_refused_and_nothing_is_kept"),
    ("loader", "a zip whose entries climb out of the target folder (`../`, absolute paths)",
     "DataError: refusing to unpack ...: its entry '../evil' has a '..' component",
     "tests/test_data_storage.py::test_zip_entries_escaping_the_target_are_refused"),
    ("loader", "a tar.gz with a link leading outside", "DataError: refusing to unpack ...: its entry ... is a link to",
     "tests/test_data_storage.py::test_tar_links_leading_outside_are_refused"),
    ("loader", "a pickle that would run code (mini-ImageNet)", "UnsafePickleError: ... refusing to load",
     "tests/test_data_mini_imagenet.py::test_a_pickle_that_runs_code_is_refused"),
    ("loader", "a truncated CIFAR-100 tar.gz", "DataError: ... is truncated or corrupt",
     "tests/test_data_cifar_fs.py::test_truncated_archive_is_a_clear_error"),
    ("API", "`NWayKShotSampler` with 0 or -1 ways, shots or queries",
     "ValueError: num_ways must be at least 1, got 0; pass a number >= 1",
     "tests/test_tasks_samplers.py::test_non_positive_counts"),
    ("API", "`RL2Config` with a horizon of 0, or a NaN learning rate",
     "ValueError: RL2Config.horizon must be a positive integer, got 0",
     "tests/test_rl2.py::test_rollouts_repeat_with_a_seed_and_the_hidden_state_carries_the_task"),
    ("API", "RL² training with a learning rate so large that the loss is not finite",
     "RuntimeError: RL² training diverged at iteration 1 (loss ...): lower learning_rate",
     "tests/test_rl2.py::test_rl2_training_that_diverges_stops_and_says_so"),
    ("API", "`MAMLRLConfig` with one trajectory per task, or a negative inner step",
     "ValueError: MAMLRLConfig.paths must be at least 2: the advantages are centred per task",
     "tests/test_maml_rl.py::test_a_short_meta_training_adapts_in_one_step"),
    ("API", "MAML-RL training whose outer step makes the loss non-finite",
     "RuntimeError: MAML-RL training diverged at iteration 1 (loss ...): lower outer_lr",
     "tests/test_maml_rl.py::test_training_is_reproducible_and_divergence_stops_it"),
    ("API", "an in-context transformer whose width is not a multiple of its heads; ridge with λ = 0",
     "ValueError: width (...) must be a multiple of heads (...); lam must be > 0 (use least_squares for lam = 0)",
     "tests/test_in_context.py::test_bad_settings_are_refused_with_the_reason"),
    ("API", "in-context meta-training whose loss becomes non-finite",
     "FloatingPointError: training diverged at step 1: the loss is nan; lower lr or set clip",
     "tests/test_in_context.py::test_training_that_diverges_stops_and_says_so"),
    ("API", "a bandit stepped past its horizon",
     "RuntimeError: the episode ended after horizon=2 pulls: call reset()",
     "tests/test_rl_envs.py::test_bandit_pays_one_exactly_for_the_certain_arms"),
    ("API", "pretraining (`pretrain_finetune.pretrain`) with a head of the wrong size, or weights that make the loss NaN",
     "ValueError: pretraining classifies all 4 training classes, but the network has 5 outputs; pretraining diverged at step 1",
     "tests/test_pretrain_finetune.py::test_pretraining_refuses_a_head_of_another_size_and_stops_on_divergence"),
]

HEADER = """# What was tried: bad inputs and faults, and what the user sees

Each row is one wrong thing a user can do, or one fault, and the test that checks the answer. Every bad input
ends in an exception of a documented type (`TypeError`, `ValueError`, `RuntimeError` and its subclasses
`TrainingDiverged` and `CheckpointInUse`, `FloatingPointError`, `DataError`, `CannotWrite`) or, on the command line, a non-zero exit
status (2: a bad option, 1: a request that cannot be carried out) with one line on stderr and no traceback, and
no half-written file is left behind.

Written by `PYTHONPATH=. python tests/test_bad_inputs.py`, which runs every case and records the message it
sees (`<tmp>`: the case's folder); `tests/test_bad_inputs.py::test_the_table_and_the_tests_agree` checks that
this table and the tests agree.

| # | area | what was tried | what the user sees | test |
|---|------|----------------|--------------------|------|
"""


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def case_test(case: Case) -> str:
    return f"tests/test_bad_inputs.py::test_bad_input[{case.id}]"


def render(messages: dict[str, str]) -> str:
    rows = [(c.area, c.tried, messages[c.id], case_test(c)) for c in CASES] + OTHER_TESTS
    lines = [f"| {n} | {area} | {cell(tried)} | {cell(seen)} | `{test}` |"
             for n, (area, tried, seen, test) in enumerate(rows, start=1)]
    return HEADER + "\n".join(lines) + "\n"


def seen(case: Case, folder: Path) -> str:
    outcome, message, _ = observe(case, folder)
    message = message.replace(str(folder), "<tmp>").replace(f"process {os.getpid()} on {socket.gethostname()}",
                                                            "process PID on HOST")
    if isinstance(case.error, int):
        return f"exit {outcome}: {message}"
    return f"{getattr(outcome, '__name__', outcome)}: {message}"


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    return [[part.strip() for part in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def functions_in(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}


def test_the_table_and_the_tests_agree():
    text = TABLE.read_text()
    rows = table_rows(text)
    assert len(rows) >= 40 and len({(r[1], r[2]) for r in rows}) == len(rows), "at least 40 distinct cases"
    by_test = {row[4].strip("`"): row for row in rows}
    messages = {}
    for c in CASES:
        row = by_test.get(case_test(c))
        assert row is not None, f"{c.id} is not in {TABLE.name}: run python tests/test_bad_inputs.py"
        assert cell(c.fragment) in row[3], f"{c.id}: the table's message lacks {c.fragment!r}"
        messages[c.id] = row[3].replace("\\|", "|")
    assert text == render(messages), f"{TABLE.name} is out of date: run python tests/test_bad_inputs.py"
    for row in rows:
        path, _, name = row[4].strip("`").partition("::")
        assert name.split("[")[0] in functions_in(ROOT / path), f"{row[4]} names a test that does not exist"
    assert len({c.id for c in CASES}) == len(CASES)


if __name__ == "__main__":
    import tempfile

    os.environ.pop("METABOOK_MIRROR", None)
    messages = {}
    for c in CASES:
        with tempfile.TemporaryDirectory() as folder:
            os.environ["METABOOK_DATA"] = str(Path(folder) / "default-cache")
            messages[c.id] = seen(c, Path(folder))
            print(f"{c.id}: {messages[c.id]}", file=sys.stderr)
    TABLE.write_text(render(messages))
    print(f"wrote {TABLE} ({len(CASES) + len(OTHER_TESTS)} rows)")
