"""How long a training run will take, said once its first meta-steps have been timed.

``python -m metabook_learn train`` prints one line such as::

    0.51 s a meta-step on this machine (5 steps timed): about 8 h 27 min for the 60000 steps of this run

so that nobody discovers after an hour that a command runs all night. It is
an estimate from a few steps: validation and checkpoints are not included,
and a busy machine changes it (the progress bar's ETA keeps it up to date).
"""
from __future__ import annotations

import time

from tqdm.auto import tqdm


def format_duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``8 h 27 min``: as precise as an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def announce_run_length(sampler, steps: int, timed_steps: int = 5) -> None:
    """Print how long ``steps`` meta-steps take, once ``timed_steps`` of them have run after the first.

    ``sampler``: the training sampler, whose ``sample`` the training loop
    calls once at the start of every meta-step; timing those calls measures
    whole meta-steps without a hook in the loop. The first step is not timed
    (it includes one-off work such as building the autograd graph's caches).
    Nothing is printed when the run is too short to time.
    """
    sample = sampler.sample
    calls = 0
    began = 0.0

    def timed_sample(*args, **kwargs):
        nonlocal calls, began
        calls += 1
        if calls == 2:
            began = time.perf_counter()
        elif calls == timed_steps + 2:
            per_step = (time.perf_counter() - began) / timed_steps
            tqdm.write(f"{per_step:.2g} s a meta-step on this machine ({timed_steps} steps timed): about "
                       f"{format_duration(per_step * steps)} for the {steps} steps of this run")
        return sample(*args, **kwargs)

    sampler.sample = timed_sample  # on this object only: its class, state_dict and checkpoints are unchanged
