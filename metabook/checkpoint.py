"""What a training run leaves on disk: checkpoints and result files, each written atomically.

A file is first written under a temporary name in its destination folder and
then renamed over the destination with ``os.replace``, a rename on one file
system (:mod:`metabook.files`, which the data cache uses too). Another process, or a
run that was killed half-way through saving, sees the previous complete file
or the new complete file, never a half-written one; a failed save deletes its
temporary file.

A checkpoint is a dictionary saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``: it holds only tensors and plain Python
values (numbers, strings, lists, dictionaries), so loading one never runs code.
That is why the random number generators' states are converted to tensors here
(:func:`rng_states`) instead of being pickled as they come.

Result files are JSON and carry their provenance (:func:`provenance`): the
torch version, the device, and the git commit of the code that produced them.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from metabook.files import atomic_output

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "write_json",
    "rng_states",
    "restore_rng_states",
    "provenance",
    "device_name",
]

CHECKPOINT_FORMAT = "metabook-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (tensors and plain values) to ``path`` atomically, creating its folder."""
    with atomic_output(Path(path)) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, temporary)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state saved by :func:`save_checkpoint`, with every tensor on the CPU.

    Raises ``FileNotFoundError`` when there is no file, ``ValueError`` when the
    file is not a metabook checkpoint (both are one-line errors on the
    command line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated, foreign or corrupt file: say so in one line
        raise ValueError(f"{path} is not a readable metabook checkpoint (torch.load failed with "
                         f"{type(error).__name__}); was it written by metabook's train?") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a metabook checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return state


def write_json(path: str | os.PathLike, content: dict) -> None:
    """Write ``content`` as indented JSON to ``path`` atomically, creating its folder."""
    text = json.dumps(content, indent=2) + "\n"
    with atomic_output(Path(path)) as temporary:
        temporary.write_text(text, encoding="utf-8")


# ── Random number generators ─────────────────────────────────────────────────


def rng_states() -> dict:
    """The states of Python's, NumPy's and torch's global generators (CPU and every CUDA device).

    Stored as tensors and numbers so that ``torch.load(weights_only=True)``
    can read them back. A sampler's own generator is saved by the sampler
    (``state_dict()``), not here.
    """
    version, python_state, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict) -> None:
    """Undo everything drawn from the global generators since :func:`rng_states` returned ``states``."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ── Provenance ───────────────────────────────────────────────────────────────


def device_name(device: torch.device | str) -> str:
    """A readable name: the GPU's model, or the CPU's model for ``"cpu"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _git(*args: str) -> str | None:
    """Output of a read-only git command in this package's folder; ``None`` outside a git checkout."""
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def provenance(device: torch.device | str) -> dict:
    """Where and with what a result was computed: the fields every results file carries.

    ``git_commit`` is ``None`` when metabook is not run from a git checkout (a
    pip install); ``git_dirty`` says whether the checkout had uncommitted
    changes, in which case the commit alone does not reproduce the result.
    Outside a checkout, the environment variable ``METABOOK_COMMIT``
    (``"<sha> clean"`` or ``"<sha> dirty"``) names them instead: a copy of the
    repository without ``.git``, as on a lent GPU (``scripts/gpu_session.sh``).
    """
    from metabook import __version__

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    dirty = None if status is None else bool(status)
    if commit is None and os.environ.get("METABOOK_COMMIT"):
        commit, _, state = os.environ["METABOOK_COMMIT"].strip().partition(" ")
        dirty = {"clean": False, "dirty": True}.get(state.strip())
    device = torch.device(device)
    return {
        "metabook": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
