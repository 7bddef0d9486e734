"""Where computations run and how they are made repeatable.

Every chapter starts with the same two lines::

    device = metabook_learn.pick_device()
    metabook_learn.seed_everything(0)

so that a notebook uses the GPU when Colab gives it one and gives identical
numbers on the CPU run after run.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["pick_device", "seed_everything"]


def pick_device(prefer: str | None = None, verbose: bool = True) -> torch.device:
    """Return the device to compute on: CUDA when available, else the CPU.

    ``prefer`` (or the environment variable ``METABOOK_DEVICE``) forces a choice,
    for example ``"cpu"`` to reproduce the CI numbers on a machine with a GPU.
    """
    choice = prefer or os.environ.get("METABOOK_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {choice!r} was asked for, but torch sees no CUDA GPU; "
                "unset METABOOK_DEVICE or pass prefer='cpu'"
            )
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if verbose:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"metabook computes on: {device.type} ({name})")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    Fixed seeds give bit-identical results on the CPU. On a GPU some kernels are
    nondeterministic, so expect agreement to a few decimals there.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
