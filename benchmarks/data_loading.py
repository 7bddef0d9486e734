"""How fast Omniglot gets ready, and how fast episodes are drawn from it.

    .venv/bin/python benchmarks/data_loading.py                     # mirror: $METABOOK_MIRROR or ../shared/data
    .venv/bin/python benchmarks/data_loading.py --device cuda       # sampling on the GPU
    .venv/bin/python benchmarks/data_loading.py --hausdorff         # also Lake's 38.8% baseline at 105x105 (slow)

1. **Loading**: the first load of all 1623 characters (unpack the archives,
   decode 32,460 PNGs, resize to 28x28, save the tensor cache) into a fresh
   temporary cache, then a second load from that cache.
2. **Sampling**: episodes per second drawn by ``NWayKShotSampler`` from the
   meta-training split (4400 classes: 1100 characters x 4 rotations), 5-way
   1-shot and 20-way 5-shot with 15 queries per class, a meta-batch of 32
   tasks per call, images returned as float32 in [0, 1] on ``--device``.
3. Optionally, the one-shot runs of Lake et al. scored with the modified
   Hausdorff distance at 105x105, which the Omniglot repository reports as
   38.8% error.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from metabook_learn.data.omniglot import load_omniglot, load_omniglot_characters
from metabook_learn.data.omniglot_runs import load_omniglot_runs, modified_hausdorff_classifier, score_one_shot
from metabook_learn.data.samplers import NWayKShotSampler

DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def episodes_per_second(data, ways: int, shots: int, queries: int, meta_batch: int, seconds: float) -> float:
    """Median rate over repeated calls to ``sample(meta_batch)``, after one warm-up call."""
    sampler = NWayKShotSampler(data, num_ways=ways, num_shots=shots, num_queries=queries, seed=0)
    sampler.sample(meta_batch)
    rates, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        if data.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        batch = sampler.sample(meta_batch)
        if data.device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(meta_batch / (time.perf_counter() - start))
    assert batch.support_x.shape == (meta_batch, ways * shots, 1, 28, 28)
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=os.environ.get("METABOOK_MIRROR", str(DEFAULT_MIRROR)),
                        help="folder of upstream archives (default: $METABOOK_MIRROR or ../shared/data)")
    parser.add_argument("--device", default="cpu", help="where sampled episodes live (cpu or cuda)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent measuring each sampler")
    parser.add_argument("--hausdorff", action="store_true", help="also score the 105x105 Hausdorff baseline")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")
    with tempfile.TemporaryDirectory(prefix="metabook-bench-") as cache:
        _, first = timed(lambda: load_omniglot_characters(cache=cache, mirror=args.mirror, allow_download=False))
        everything, second = timed(lambda: load_omniglot_characters(cache=cache, mirror=args.mirror))
        print(f"Omniglot, 1623 characters x 20 at 28x28: first load {first:.2f} s "
              f"(unpack, decode, resize, cache), second load {second:.3f} s (tensor cache)")

        train = load_omniglot("train", cache=cache, mirror=args.mirror).to(args.device)
        for ways, shots in ((5, 1), (20, 5)):
            rate = episodes_per_second(train, ways, shots, queries=15, meta_batch=32, seconds=args.seconds)
            print(f"{ways}-way {shots}-shot, 15 queries per class, meta-batch 32, {args.device}: "
                  f"{rate:,.0f} episodes/s")

        if args.hausdorff:
            runs = load_omniglot_runs(image_size=105, cache=cache, mirror=args.mirror)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # thousands of small distance matrices: threads only add hand-offs
            score, seconds = timed(lambda: score_one_shot(modified_hausdorff_classifier, runs))
            torch.set_num_threads(threads)
            print(f"one-shot runs, modified Hausdorff at 105x105: {score} in {seconds:.0f} s "
                  "(the Omniglot repository reports 38.8%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
