"""In-context learning at full scale, on the CPU: the numbers behind the chapter on black-box meta-learning.

    .venv/bin/python scripts/full_scale_in_context.py                       # every run -> results/in_context.json
    .venv/bin/python scripts/full_scale_in_context.py --runs noisy lsa      # some runs (merged into that file)
    .venv/bin/python scripts/full_scale_in_context.py --smoke               # a few steps, any device, temp output

Each run trains with :func:`metabook_learn.training.train` (``algorithm="transformer"``:
Adam on the mean loss over a batch of sequences, gradient norm clipped at 1)
for ``--seeds`` seeds (default 3) and scores every seed on the *same* test tasks:

=========  ===========================================================================================
run        training and test
=========  ===========================================================================================
noiseless  InContextTransformer (width 64, 4 layers, 4 heads) on linear functions in d = 5
           (x ~ N(0, I), w ~ N(0, I), y = wᵀx, Garg et al. 2022), sequences of 20 examples + 1 query,
           loss over every prefix; meta-batch 64, Adam 1e-3, 10,000 steps. Test: the error on example
           k+1 after k examples (squared error / d), k = 0 … 19, on 2,000 tasks, beside least squares,
           GD (1 and 10 steps) and 3-nearest neighbours on the same tasks; and with inputs scaled by 2
           (out of distribution).
noisy      the same with label noise σ = 0.5: ridge with λ = σ²/τ² = 0.25 is the Bayes-optimal baseline.
sinusoid   the same transformer on MAML's sine waves (x_dim 1), 20 examples + 20 queries per
           sequence, 10,000 steps; tested at K = 5, 10, 20 on the 600 tasks (seed 1234, 100 queries)
           of scripts/full_scale_neural_processes.py, so its numbers stand beside the CNP's, NP's and
           MAML's in results/neural_processes.json.
lsa        one linear self-attention layer on d = 5, 10 examples, noiseless, 10,000 steps, Adam 3e-3, no
           clipping; tested against one GD step with the best rate η* (von Oswald et al. 2023).
omniglot   not in the default runs (about 75 minutes per seed on one busy CPU core):
           5-way 1-shot Omniglot, the transformer reading
           MAML's Omniglot body (64 filters) with one-hot labels (as SNAIL), support sets in random
           order (ShuffledOrder), 15 queries per class, meta-batch 32, Adam 1e-3, 6,000 steps (the
           budget of the MAML and ANIL runs in results/gradient_based.json), bfloat16 autocast and
           channels-last convolutions (float32 storage, optimizer and checkpoints: seed 0 trained in
           84 min beside another run, 0.84 s a step, where benchmarks/results/in_context_step_cpu.txt
           measured 1.6 s for a float32 step on a busier machine); tested on 600 episodes of held-out
           characters (seed 1) in float32, transductive batch norm.
=========  ===========================================================================================

The settings are this book's (Garg et al. train a 12-layer GPT-2 of width 256
for 500,000 steps with a curriculum, at d = 20). Expected duration, not yet
measured end to end: a 3-layer version of the linear-regression model took
0.087 s per step on one busy CPU core, so a 4-layer run of 10,000 steps takes
about 20 minutes (the sine-wave sequences, with 20 queries, about half as
long again), and the default runs (3 seeds each) about 3 hours on the CPU,
minutes on a GPU. Every seed's training writes a checkpoint to ``--checkpoints``
(default ``runs/full_scale_in_context``) every 500 steps and resumes from it exactly, so
a run can be stopped (SIGTERM) and started again; a finished seed is only scored again.
An Omniglot seed already scored in ``--output`` (same settings) is kept as it is, not
trained again: its checkpoint is too large to commit, so more seeds are added later with
``cp results/in_context.json runs/out/ic.json`` and ``--runs omniglot --seeds 3 --output
runs/out/ic.json``, then ``scripts/merge_results.py runs/out/ic.json``. A scored seed's
network ships from its checkpoint (``scripts/ship_model.py results/in_context.json omniglot NAME
--seed S --checkpoint runs/full_scale_in_context/in-context-omniglot-seedS.pt``); seed 1's ships
as ``in-context-omniglot-5w1s``.
The headline ``test`` of each run is
the mean over seeds with its 95% t-interval (``ci95``): the error at k = 10
(twice d) for linear regression, the MSE at K = 10 for sine waves, the test
MSE for the linear-attention layer, the 5-way 1-shot accuracy for Omniglot.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from metabook_learn.checkpoint import provenance
from metabook_learn.data import NWayKShotSampler, load_omniglot
from metabook_learn.data.sinusoid import SinusoidSampler
from metabook_learn.evaluation import evaluate, over_seeds
from metabook_learn.in_context import (InContextTransformer, LinearAttentionRegressor, LinearRegressionSampler,
                                 ShuffledOrder, best_step_size, errors_by_context_size, gradient_descent,
                                 regression_baselines)
from metabook_learn.protonets import omniglot_embedding
from metabook_learn.runtime import seed_everything
from metabook_learn.training import TrainConfig, TrainResult

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when the tests load this file by path
from full_scale_common import (Script, command_line, open_results, print_table, save, score, settle,  # noqa: E402
                               train_run)

RUNS = ("noiseless", "noisy", "sinusoid", "lsa", "omniglot")
DEFAULT_RUNS = ("noiseless", "noisy", "sinusoid", "lsa")  # the CPU runs
DIM, CONTEXT, NOISE = 5, 20, 0.5
HEADLINE_K = 2 * DIM
OOD_SCALE = 2.0
CONTEXT_SIZES = (5, 10, 20)  # sine waves, as scripts/full_scale_neural_processes.py
SINE_QUERIES, SINE_SEED, LINEAR_TEST_SEED = 100, 1234, 4321
LSA_CONTEXT = 10
PAPER = {
    "noiseless": "none comparable (Garg et al., 2022, Fig. 2: d = 20, a 12-layer GPT-2; least squares is exact from k = d)",
    "noisy": "none comparable (Raventós et al., 2023: transformers trained on noisy tasks approach ridge)",
    "sinusoid": "none (no paper reports an in-context transformer on MAML's sine waves)",
    "lsa": "none comparable (von Oswald et al., 2023, Fig. 2: d = 10, trained LSA ≈ one GD step)",
    "omniglot": "98.7 ± 0.4 (MAML, Finn et al., 2017, Table 1: another method, for scale)",
}
# What each run trains, for the results page (metabook_learn.report): the method and the tasks.
DESCRIPTION = {
    "noiseless": {"algorithm": "transformer", "setting": f"linear regression in context, d = {DIM}, noiseless"},
    "noisy": {"algorithm": "transformer", "setting": f"linear regression in context, d = {DIM}, noise σ = {NOISE}"},
    "sinusoid": {"algorithm": "transformer", "setting": "sine waves (MAML's), in context"},
    "lsa": {"algorithm": "linear attention", "setting": f"linear regression in context, d = {DIM}, one layer"},
    "omniglot": {"algorithm": "transformer", "setting": "Omniglot 5-way 1-shot, in context"},
}
OMNIGLOT_TEST_SEED, OMNIGLOT_TEST_QUERIES = 1, 15
SCRIPT = Script(__file__, __doc__, "in_context.json", runs=RUNS, data=True, bf16=False, seed=False,
                checkpoints="runs/full_scale_in_context",
                test_tasks=(2000, 20), cpu_time="about 3 hours", needs_gpu=False, smoke="5 steps, a tiny transformer, 20 test tasks")


def settings(name: str, smoke: bool) -> dict:
    values = dict(width=64, depth=4, heads=4, meta_batch=64, lr=1e-3, steps=10_000, clip=1.0)
    if name == "lsa":
        values = dict(meta_batch=64, lr=3e-3, steps=10_000, clip=None)
    if name == "omniglot":
        values.update(meta_batch=32, steps=6_000, filters=64, queries=OMNIGLOT_TEST_QUERIES, bf16=True,
                      channels_last=True)
    if smoke:
        values.update(steps=5, meta_batch=4, **({} if name == "lsa" else dict(width=8, depth=1, heads=2)))
        if name == "omniglot":
            values.update(filters=8, queries=1)
    return values


def make_transformer(x_dim: int, values: dict) -> InContextTransformer:
    return InContextTransformer(x_dim, width=values["width"], depth=values["depth"], heads=values["heads"])


class WallTimes:
    """A run's training time, over every session that trained it (the checkpoints keep it), and its scoring time."""

    def __init__(self):
        self.began, self.training, self.training_here = time.perf_counter(), 0.0, 0.0

    def as_dict(self) -> dict:
        scoring = time.perf_counter() - self.began - self.training_here
        return {"training_wall_time_s": self.training, "evaluation_wall_time_s": scoring}


def meta_train(name: str, seed: int, model, sampler, values: dict, args, device, times: WallTimes) -> TrainResult:
    """Train ``model`` on ``sampler`` with the run's settings through metabook's training loop, resuming exactly
    from this seed's checkpoint; adds its training time to ``times``."""
    config = TrainConfig.for_sampler(sampler, algorithm="transformer", dataset=name, meta_batch=values["meta_batch"],
                                     meta_lr=values["lr"], steps=values["steps"], clip_grad_norm=values["clip"],
                                     log_every=min(100, values["steps"]), checkpoint_every=min(500, values["steps"]),
                                     seed=seed, device=str(device), bf16=values.get("bf16", False),
                                     channels_last=values.get("channels_last", False))
    began = time.perf_counter()
    result = train_run(f"{name}, seed {seed}", config, model, sampler, None,
                       args.checkpoints / f"in-context-{name}-seed{seed}.pt", args)
    times.training += result.wall_time_s
    times.training_here += time.perf_counter() - began
    return result


def summary(per_seed: list[float], num_tasks: int, metric: str = "mse") -> dict:
    """A run's headline in the results schema: the mean over seeds and its 95% t-interval (nan for one seed)."""
    seeds = over_seeds(per_seed)
    return {"metric": metric, "mean": seeds.mean, "ci95": seeds.half_width, "over": "seeds (95% t-interval)",
            "per_seed": seeds.values, "num_tasks": num_tasks}


def curve(errors: torch.Tensor) -> dict:
    """Per context size k: the mean error over tasks and its normal 95% half-width, from ``errors [T, K]``."""
    return {"mean": errors.mean(0).tolist(), "ci95": (1.96 * errors.std(0) / errors.shape[0] ** 0.5).tolist()}


def query_predictions(model: InContextTransformer):
    """``predict(xs, ys, xq)`` for :func:`metabook_learn.in_context.errors_by_context_size`: the model's query predictions."""
    return lambda xs, ys, xq: model.predict(xs, ys, xq)[1]


def linear_run(name: str, args, device) -> dict:
    noise = NOISE if name == "noisy" else 0.0
    values = settings(name, args.smoke)
    test = LinearRegressionSampler(DIM, CONTEXT, 1, noise_std=noise, seed=LINEAR_TEST_SEED).sample(args.test_tasks)
    shifted = LinearRegressionSampler(DIM, CONTEXT, 1, noise_std=noise, input_scale=OOD_SCALE,
                                      seed=LINEAR_TEST_SEED).sample(args.test_tasks)
    seeds, times = [], WallTimes()
    for seed in range(args.seeds):
        seed_everything(seed)
        model = make_transformer(DIM, values).to(device)
        result = meta_train(name, seed, model, LinearRegressionSampler(DIM, CONTEXT, 1, noise_std=noise, seed=seed),
                            values, args, device, times)
        predict = query_predictions(model.cpu())
        seeds.append({"seed": seed, "curve": curve(errors_by_context_size(predict, test)),
                      "ood_curve": curve(errors_by_context_size(predict, shifted)),
                      "final_training_loss": result.curve[-1].meta_loss})  # the mean over the last 100 steps
        print(f"{name}, seed {seed}: error at k={HEADLINE_K} {seeds[-1]['curve']['mean'][HEADLINE_K]:.4f}", flush=True)
    # The baselines in float64: near k = d, least squares inverts a nearly singular matrix.
    test, shifted = test.to(torch.float64), shifted.to(torch.float64)
    baselines = {label: {"curve": curve(errors_by_context_size(predict, test)),
                         "ood_curve": curve(errors_by_context_size(predict, shifted))}
                 for label, predict in regression_baselines(noise).items()}
    headline = summary([s["curve"]["mean"][HEADLINE_K] for s in seeds], args.test_tasks)
    return {"test": headline, "test_setting": f"squared error / d at k = {HEADLINE_K}", "seeds": seeds,
            "baselines": baselines, "noise_std": noise, "dim": DIM, "ood_input_scale": OOD_SCALE,
            **times.as_dict()}


def sinusoid_run(args, device) -> dict:
    values = settings("sinusoid", args.smoke)
    seeds, times = [], WallTimes()
    for seed in range(args.seeds):
        seed_everything(seed)
        model = make_transformer(1, values).to(device)
        meta_train("sinusoid", seed, model, SinusoidSampler(CONTEXT, CONTEXT, seed=seed), values, args, device, times)
        tests = {str(k): evaluate(model, SinusoidSampler(k, SINE_QUERIES, seed=SINE_SEED), None,
                                  num_tasks=args.sine_tasks).as_dict() for k in CONTEXT_SIZES}
        seeds.append({"seed": seed, "tests": tests})
        print(f"sinusoid, seed {seed}: " + ", ".join(f"K={k} {t['mean']:.4f}" for k, t in tests.items()), flush=True)
    by_k = {str(k): summary([s["tests"][str(k)]["mean"] for s in seeds], args.sine_tasks) for k in CONTEXT_SIZES}
    return {"test": by_k["10"], "test_setting": "MSE at K = 10", "tests": by_k, "seeds": seeds,
            **times.as_dict()}


def lsa_run(args, device) -> dict:
    values = settings("lsa", args.smoke)
    test = LinearRegressionSampler(DIM, LSA_CONTEXT, 1, seed=LINEAR_TEST_SEED).sample(args.test_tasks)
    eta = best_step_size(LinearRegressionSampler(DIM, LSA_CONTEXT, 1, seed=LINEAR_TEST_SEED + 1).sample(20_000))
    step = gradient_descent(test.support_x, test.support_y, test.query_x, 1, eta)
    seeds, times = [], WallTimes()
    for seed in range(args.seeds):
        seed_everything(seed)
        model = LinearAttentionRegressor(DIM).to(device)
        meta_train("lsa", seed, model, LinearRegressionSampler(DIM, LSA_CONTEXT, 1, seed=seed), values, args, device,
                   times)
        with torch.no_grad():
            prediction = model.cpu().predict(test.support_x, test.support_y, test.query_x)
        seeds.append({"seed": seed, "mse": (prediction - test.query_y).pow(2).mean().item(),
                      "relative_difference_to_gd": ((prediction - step).pow(2).mean() / step.pow(2).mean()).item()})
        print(f"lsa, seed {seed}: {seeds[-1]}", flush=True)
    return {"test": summary([s["mse"] for s in seeds], args.test_tasks), "test_setting": "query MSE, k = 10",
            "seeds": seeds, "best_step_size": eta, "gd_mse": (step - test.query_y).pow(2).mean().item(),
            **times.as_dict()}


def scored_seeds(previous: dict | None, values: dict) -> dict[int, dict]:
    """The seeds of an Omniglot record already in ``--output`` (same settings): kept, not trained again.

    A seed's checkpoint is too large to commit (2.5 MB with Adam's state), so a later
    session that adds seeds cannot resume the earlier ones; it keeps their scores
    instead, each with its own training time and provenance.
    """
    if not previous or previous.get("config") != values:
        return {}
    kept = {}
    for entry in previous["seeds"]:
        if "training_wall_time_s" not in entry:  # recorded before seeds carried their own time and provenance
            if len(previous["seeds"]) > 1:
                raise SystemExit("the Omniglot record in --output has several seeds without per-seed training "
                                 "times: write to another --output")
            entry = {**entry, "training_wall_time_s": previous["training_wall_time_s"],
                     "provenance": previous["provenance"]}
        kept[entry["seed"]] = entry
    return kept


def omniglot_run(args, device, previous: dict | None = None) -> dict:
    values = settings("omniglot", args.smoke)
    train_split = load_omniglot("train", cache=args.cache, mirror=args.mirror)
    test_split = load_omniglot("test", cache=args.cache, mirror=args.mirror)
    seeds, times = [], WallTimes()
    kept = scored_seeds(previous, values)
    for seed in range(args.seeds):
        if seed in kept:
            seeds.append(kept[seed])
            times.training += kept[seed]["training_wall_time_s"]
            print(f"omniglot, seed {seed}: kept from {args.output} ({100 * kept[seed]['test']['mean']:.2f}%)", flush=True)
            continue
        seed_everything(seed)
        model = InContextTransformer(values["filters"], ways=5, width=values["width"], depth=values["depth"],
                                     heads=values["heads"], embedding=omniglot_embedding(filters=values["filters"]))
        episodes = ShuffledOrder(NWayKShotSampler(train_split, 5, 1, values["queries"], seed=seed), seed=seed)
        trained = meta_train("omniglot", seed, model.to(device), episodes, values, args, device, times)
        test_episodes = ShuffledOrder(NWayKShotSampler(test_split, 5, 1, OMNIGLOT_TEST_QUERIES, seed=OMNIGLOT_TEST_SEED),
                                      seed=OMNIGLOT_TEST_SEED)
        test = evaluate(model, test_episodes, None, num_tasks=args.omniglot_tasks)
        seeds.append({"seed": seed, "test": test.as_dict() | {"per_task": test.per_task.tolist()},
                      "training_wall_time_s": trained.wall_time_s, "provenance": provenance(device)})
        print(f"omniglot, seed {seed}: {test}", flush=True)
    per_seed = [s["test"]["mean"] for s in seeds]
    if len(seeds) == 1:  # one training run: its interval can only be over the test episodes
        test = {"metric": "accuracy", "mean": per_seed[0], "ci95": seeds[0]["test"]["ci95"],
                "over": "test tasks (95% interval; one training run)", "per_seed": per_seed,
                "num_tasks": args.omniglot_tasks}
    else:
        test = summary(per_seed, args.omniglot_tasks, metric="accuracy")
    test["protocol"] = {"split": "test", "seed": OMNIGLOT_TEST_SEED, "num_tasks": args.omniglot_tasks, "ways": 5,
                        "shots": 1, "queries": OMNIGLOT_TEST_QUERIES,
                        **{key: seeds[0]["test"][key] for key in ("query_bn", "inner_steps", "tasks_per_batch")}}
    return {"test": test, "test_setting": "5-way 1-shot accuracy", "seeds": seeds, **times.as_dict()}


def main(argv=None) -> int:
    parser = command_line(SCRIPT)
    parser.add_argument("--seeds", type=int, default=None, help="training runs per experiment (default 3; smoke 1)")
    parser.add_argument("--sine-tasks", type=int, default=None, help="sine-wave test tasks (default 600; smoke 10)")
    parser.add_argument("--omniglot-tasks", type=int, default=None, help="Omniglot test episodes (default 600; smoke 4)")
    parser.set_defaults(runs=list(DEFAULT_RUNS))
    for action in parser._actions:  # say so in --help too
        if action.dest == "runs":
            action.help = f"which runs (default: {', '.join(DEFAULT_RUNS)}; omniglot: hours per seed on a CPU)"
    args = parser.parse_args(argv)
    device = settle(args, SCRIPT)
    args.seeds = args.seeds or (1 if args.smoke else 3)
    args.sine_tasks = args.sine_tasks or (10 if args.smoke else 600)
    args.omniglot_tasks = args.omniglot_tasks or (4 if args.smoke else 600)
    results = open_results(args, SCRIPT, test={"dim": DIM, "context": CONTEXT, "noise_std": NOISE,
                                               "linear_tasks": args.test_tasks, "linear_seed": LINEAR_TEST_SEED,
                                               "sine_tasks": args.sine_tasks, "sine_seed": SINE_SEED,
                                               "sine_queries": SINE_QUERIES, "seeds": args.seeds})
    for name in RUNS:
        if name not in args.runs:
            continue
        if name == "omniglot":  # seeds already scored in --output are kept (scored_seeds)
            record = omniglot_run(args, device, results["runs"].get("omniglot"))
        else:
            run = {"sinusoid": sinusoid_run, "lsa": lsa_run}.get(name)
            record = run(args, device) if run else linear_run(name, args, device)
        results["runs"][name] = {**record, **DESCRIPTION[name], "paper": PAPER[name],
                                 "config": settings(name, args.smoke), "provenance": provenance(device)}
        save(results, args.output)

    print_table(["run", "headline", "mean over seeds (95% t-interval)"],
                [[name, run["test_setting"], score(run["test"])] for name, run in results["runs"].items()],
                args.output, text_columns=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
