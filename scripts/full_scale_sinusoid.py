"""MAML's sine-wave experiment at full scale: MAML against joint pretraining, the numbers behind book/maml.ipynb.

    .venv/bin/python scripts/full_scale_sinusoid.py            # both runs -> results/maml_sinusoid.json
    .venv/bin/python scripts/full_scale_sinusoid.py --smoke    # a few steps, any device, temp output

Section 5.1 of Finn et al. (2017): sine waves of amplitude in [0.1, 5] and
phase in [0, π], K = 10 support points in [−5, 5], the 1-40-40-1 ReLU network.

=========  ================================================================
run        training
=========  ================================================================
maml       one inner step of 0.01, meta-batch 25, Adam 1e-3, 70,000 steps
           (the same run, and checkpoint, as scripts/full_scale_neural_processes.py's)
pretrained joint training (metabook_learn.joint_training) on the points of 25
           tasks per step, Adam 1e-3, 70,000 steps
=========  ================================================================

Both are tested on the same 600 held-out sine waves (100 query points each)
after 0, 1, 5 and 10 SGD steps on K = 5 and on K = 10 support points. The
paper's numbers (Appendix C.1, Table 2) are **5-shot** errors of the model
meta-trained with K = 10, so K = 5 is the headline. MAML fine-tunes with its
training step α = 0.01; the pretrained model, as in the paper ("using an
automatically tuned step size"), with the step size of ``STEP_SIZES`` that
gives the lowest error after 10 steps on 100 validation sine waves (another
seed than the test waves), chosen for each K. Small networks: a CPU run takes
minutes (``--device cpu``), and the results record where they ran.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metabook_learn.checkpoint import provenance
from metabook_learn.data.sinusoid import SinusoidSampler
from metabook_learn.evaluation import evaluate
from metabook_learn.inner_loop import InnerLoop
from metabook_learn.joint_training import joint_training
from metabook_learn.models import sinusoid_mlp
from metabook_learn.runtime import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when the tests load this file by path
from full_scale_common import Script, command_line, open_results, print_table, run_record, save, score  # noqa: E402
from full_scale_common import settle, train_run  # noqa: E402
from full_scale_neural_processes import run_config as neural_process_run_config  # noqa: E402

RUNS = ("maml", "pretrained")
ADAPTATION_STEPS = (0, 1, 5, 10)
TEST_SHOTS = (5, 10)
HEADLINE = "K=5, 10 steps"  # Table 2's setting: 5-shot, after 10 steps
SHOTS, TEST_QUERIES, TEST_SEED, MAML_STEP_SIZE = 10, 100, 1234, 0.01
STEP_SIZES, VALIDATION_TASKS, VALIDATION_SEED = (0.001, 0.003, 0.01, 0.02, 0.05, 0.1), 100, 4321
# Query MSE after 1, 5 and 10 steps on K = 5 points (the paper's Table 2).
PAPER = {
    "maml": "0.35 after 10 steps; 0.67 and 0.38 after 1 and 5 (Finn et al., 2017, App. C.1, Table 2: 5-shot MSE)",
    "pretrained": "2.19 after 10 steps; 2.41 and 2.23 after 1 and 5 (Finn et al., 2017, App. C.1, Table 2: "
                  "5-shot MSE, 'pretrain on all tasks', a tuned step size)",
}
SCRIPT = Script(__file__, __doc__, "maml_sinusoid.json", runs=RUNS, data=False, bf16=False,
                needs_gpu=False, smoke="3 steps and 10 test tasks per run")


def mse_after(model, shots: int, steps: int, step_size: float, num_tasks: int, seed: int):
    """Query MSE (an Evaluation) after ``steps`` SGD steps of ``step_size`` on ``shots`` points of each sine wave."""
    inner = InnerLoop(steps=steps, lr=step_size, loss=F.mse_loss, first_order=True)
    return evaluate(model, SinusoidSampler(shots, TEST_QUERIES, seed=seed), inner, num_tasks=num_tasks,
                    strategy="vmap")


def tuned_step_size(model, shots: int) -> float:
    """The step size of ``STEP_SIZES`` with the lowest MSE after 10 steps on the validation sine waves.

    A step size whose fine-tuning diverges (a NaN or infinite MSE) is never chosen; if all diverge, it says so.
    """
    errors = {lr: mse_after(model, shots, 10, lr, VALIDATION_TASKS, VALIDATION_SEED).mean for lr in STEP_SIZES}
    finite = {lr: error for lr, error in errors.items() if math.isfinite(error)}
    if not finite:
        raise FloatingPointError(f"fine-tuning diverged at every step size {STEP_SIZES} (K = {shots})")
    return min(finite, key=finite.get)


def adaptation_scores(model, args, step_sizes: dict[int, float]) -> dict:
    """Query MSE on the held-out tasks after each number of SGD steps, for each K: ``{"K=5, 1 steps": ...}``."""
    scores = {}
    for shots in TEST_SHOTS:
        for steps in ADAPTATION_STEPS:
            test = mse_after(model, shots, steps, step_sizes[shots], args.test_tasks, TEST_SEED)
            scores[f"K={shots}, {steps} steps"] = {**test.as_dict(), "step_size": step_sizes[shots]}
            print(f"  K = {shots:>2}, after {steps:>2} steps of {step_sizes[shots]}: {test}", flush=True)
    return scores


def do_run(name: str, args, device: torch.device) -> dict:
    config = neural_process_run_config("maml", args, device)
    seed_everything(config.seed)
    model = sinusoid_mlp()
    checkpoint = args.checkpoints / "sinusoid-maml.pt"
    if name == "maml":
        trained = train_run(name, config, model, SinusoidSampler(SHOTS, SHOTS, seed=config.seed), None,
                            checkpoint, args, unit="steps")
        began = time.perf_counter()
        tests = adaptation_scores(model, args, {shots: MAML_STEP_SIZE for shots in TEST_SHOTS})
        return run_record(trained, config, checkpoint, began, algorithm=name, test=tests[HEADLINE],
                          test_setting=HEADLINE, tests=tests, paper=PAPER[name])
    print(f"\n{name}: {config.steps} steps of joint training", flush=True)
    began = time.perf_counter()
    losses = joint_training(model, SinusoidSampler(SHOTS, SHOTS, seed=config.seed + 1), config.steps,
                            config.meta_batch, lr=config.meta_lr, device=device)
    trained_s = time.perf_counter() - began
    began = time.perf_counter()
    tests = adaptation_scores(model, args, {shots: tuned_step_size(model, shots) for shots in TEST_SHOTS})
    return {"algorithm": "joint training", "test": tests[HEADLINE],
            "test_setting": HEADLINE, "tests": tests, "paper": PAPER[name],
            "final_training_loss": sum(losses[-100:]) / len(losses[-100:]), "training_wall_time_s": trained_s,
            "evaluation_wall_time_s": time.perf_counter() - began,
            "config": {"steps": config.steps, "tasks_per_step": config.meta_batch, "lr": config.meta_lr,
                       "shots": SHOTS, "seed": config.seed + 1},
            "provenance": provenance(device)}


def main(argv=None) -> int:
    args = command_line(SCRIPT).parse_args(argv)
    device = settle(args, SCRIPT)
    results = open_results(args, SCRIPT, test={"shots": list(TEST_SHOTS), "queries": TEST_QUERIES,
                                               "sampler_seed": TEST_SEED, "maml_step_size": MAML_STEP_SIZE,
                                               "pretrained_step_sizes": list(STEP_SIZES),
                                               "validation": {"tasks": VALIDATION_TASKS, "seed": VALIDATION_SEED},
                                               "tasks": args.test_tasks})
    for name in RUNS:
        if name in args.runs:
            results["runs"][name] = do_run(name, args, device)
            save(results, args.output)
    print_table(["run", "K", *(f"MSE after {s} steps" for s in ADAPTATION_STEPS)],
                [[name, str(k), *(score(r["tests"][f"K={k}, {s} steps"]) for s in ADAPTATION_STEPS)]
                 for name, r in results["runs"].items() for k in TEST_SHOTS],
                args.output, text_columns=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
