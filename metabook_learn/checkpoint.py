"""What a training run leaves on disk: checkpoints and result files, each written atomically.

A file is first written under a temporary name in its destination folder and
then renamed over the destination with ``os.replace``, a rename on one file
system (:mod:`metabook_learn.files`, which the data cache uses too). Another process, or a
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

import contextlib
import datetime
import json
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from metabook_learn.errors import UserError
from metabook_learn.files import atomic_output, file_lock, lock_holder, remove_leftovers

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "checkpoint_lock",
    "CheckpointInUse",
    "write_json",
    "rng_states",
    "restore_rng_states",
    "provenance",
    "device_name",
]

CHECKPOINT_FORMAT = "metabook-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Save ``state`` (tensors and plain values) to ``path`` atomically, creating its folder.

    The file also records its format and the metabook version that wrote it,
    so that another version's checkpoint is recognised as such.
    """
    from metabook_learn import __version__

    with atomic_output(Path(path)) as temporary:
        torch.save({"format": CHECKPOINT_FORMAT, "metabook": __version__, **state}, temporary)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state saved by :func:`save_checkpoint`, with every tensor on the CPU.

    Raises ``FileNotFoundError`` when there is no file, ``ValueError`` when the
    file is not a metabook checkpoint, is truncated, or was written in another
    format (another metabook version) (both are one-line errors on the
    command line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated, foreign or corrupt file: say so in one line
        raise ValueError(f"{path} is not a readable metabook checkpoint (torch.load failed with "
                         f"{type(error).__name__}): it is truncated, corrupt, or not written by metabook's train; "
                         "train again, or use an intact copy") from None
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a metabook checkpoint (it has no 'format' entry; expected "
                         f"{CHECKPOINT_FORMAT!r}): was it saved by plain torch.save? metabook's train writes them")
    if state["format"] != CHECKPOINT_FORMAT:
        from metabook_learn import __version__

        raise ValueError(f"{path} was written by metabook {state.get('metabook', 'of another version')} in format "
                         f"{state['format']!r}, and this metabook {__version__} reads {CHECKPOINT_FORMAT!r}; "
                         "evaluate it with the metabook version that wrote it, or train again")
    return state


def load_weights(model: torch.nn.Module, weights: dict, path: str | os.PathLike) -> None:
    """``model.load_state_dict(weights)``, with one line that says how they differ when they do not fit.

    A checkpoint of another architecture, or of a head with another number of
    ways, fails here with a ``ValueError`` naming the first differences.
    """
    ours = model.state_dict()
    missing = [name for name in ours if name not in weights]
    unexpected = [name for name in weights if name not in ours]
    reshaped = [f"{name} {tuple(weights[name].shape)} there, {tuple(value.shape)} here" for name, value in ours.items()
                if name in weights and tuple(weights[name].shape) != tuple(value.shape)]
    differences = [f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                   for what, names in (("shapes differ", reshaped), ("missing", missing), ("unexpected", unexpected))
                   if names]
    if differences:
        raise ValueError(f"the weights in {path} do not fit a {type(model).__name__} built from its configuration "
                         f"({'; '.join(differences)}); it was written for another network (another metabook "
                         "version or another number of ways?): train again, or evaluate it with the options it "
                         "was trained with")
    model.load_state_dict(weights)


class CheckpointInUse(UserError, RuntimeError):
    """Another training run is writing the same checkpoint; a ``RuntimeError``, one line on the command line."""


@contextlib.contextmanager
def checkpoint_lock(path: str | os.PathLike | None) -> Iterator[None]:
    """Refuse (:class:`CheckpointInUse`) when another process trains into ``path``; hold it during the block.

    The lock is the file ``PATH.lock`` beside the checkpoint, removed at the
    end. It is held by the operating system for the process, so a run that
    was killed leaves no lock that blocks the next one (see
    :func:`metabook_learn.data.storage.file_lock`). ``None``: no checkpoint, no lock.
    """
    if path is None:
        yield
        return
    lock = Path(f"{path}.lock")
    with file_lock(lock, wait=False) as held:
        if not held:
            raise CheckpointInUse(f"another training run ({lock_holder(lock)}) is writing {path}; two runs on one "
                                  "checkpoint would overwrite each other's steps: wait for it to finish, or pass "
                                  "another checkpoint path")
        remove_leftovers(Path(path))  # a save cut short by a killed run: never read, now deleted
        yield


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
    from metabook_learn import __version__

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
