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
pretrained joint training (metabook.joint_training) on the points of 25
           tasks per step, Adam 1e-3, 70,000 steps
=========  ================================================================

Both are tested on the same 600 held-out sine waves (100 query points each)
after 0, 1, 5 and 10 SGD steps of 0.01 on K = 10 support points, as in the
chapter. The paper fine-tunes its pretrained model with a step of 0.02 at
K = 10; here both models use 0.01. Small networks: a CPU run takes minutes
(``--device cpu``), and the results record where they ran.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metabook.checkpoint import provenance
from metabook.data.sinusoid import SinusoidSampler
from metabook.evaluation import evaluate
from metabook.inner_loop import InnerLoop
from metabook.joint_training import joint_training
from metabook.models import sinusoid_mlp
from metabook.runtime import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/, also when the tests load this file by path
from full_scale_common import Script, command_line, open_results, print_table, run_record, save, score  # noqa: E402
from full_scale_common import settle, train_run  # noqa: E402
from full_scale_neural_processes import run_config as neural_process_run_config  # noqa: E402

RUNS = ("maml", "pretrained")
ADAPTATION_STEPS = (0, 1, 5, 10)
HEADLINE_STEPS = 10
SHOTS, TEST_QUERIES, TEST_SEED, STEP_SIZE = 10, 100, 1234, 0.01
# As book/maml.ipynb quotes them: query MSE after 1, 5 and 10 steps at K = 10.
PAPER = {
    "maml": "0.35 after 10 steps; 0.67 and 0.38 after 1 and 5 (Finn et al., 2017, appendix, as quoted in book/maml.ipynb)",
    "pretrained": "2.19 after 10 steps; 2.41 and 2.23 after 1 and 5 (Finn et al., 2017, appendix, step 0.02)",
}
SCRIPT = Script(__file__, __doc__, "maml_sinusoid.json", runs=RUNS, data=False, bf16=False,
                needs_gpu=False, smoke="3 steps and 10 test tasks per run")


def adaptation_scores(model, args) -> dict:
    """Query MSE on the held-out tasks after each number of SGD steps on their support points."""
    scores = {}
    for steps in ADAPTATION_STEPS:
        inner = InnerLoop(steps=steps, lr=STEP_SIZE, loss=F.mse_loss, first_order=True)
        test = evaluate(model, SinusoidSampler(SHOTS, TEST_QUERIES, seed=TEST_SEED), inner,
                        num_tasks=args.test_tasks, strategy="vmap")
        scores[str(steps)] = test.as_dict()
        print(f"  after {steps} steps: {test}", flush=True)
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
        tests = adaptation_scores(model, args)
        return run_record(trained, config, checkpoint, began, algorithm=name, test=tests[str(HEADLINE_STEPS)],
                          test_setting=f"{HEADLINE_STEPS} steps", tests=tests, paper=PAPER[name])
    print(f"\n{name}: {config.steps} steps of joint training", flush=True)
    began = time.perf_counter()
    losses = joint_training(model, SinusoidSampler(SHOTS, SHOTS, seed=config.seed + 1), config.steps,
                            config.meta_batch, lr=config.meta_lr, device=device)
    trained_s = time.perf_counter() - began
    began = time.perf_counter()
    tests = adaptation_scores(model, args)
    return {"algorithm": "joint training", "test": tests[str(HEADLINE_STEPS)],
            "test_setting": f"{HEADLINE_STEPS} steps", "tests": tests, "paper": PAPER[name],
            "final_training_loss": sum(losses[-100:]) / len(losses[-100:]), "training_wall_time_s": trained_s,
            "evaluation_wall_time_s": time.perf_counter() - began,
            "config": {"steps": config.steps, "tasks_per_step": config.meta_batch, "lr": config.meta_lr,
                       "shots": SHOTS, "seed": config.seed + 1},
            "provenance": provenance(device)}


def main(argv=None) -> int:
    args = command_line(SCRIPT).parse_args(argv)
    device = settle(args, SCRIPT)
    results = open_results(args, SCRIPT, test={"shots": SHOTS, "queries": TEST_QUERIES, "sampler_seed": TEST_SEED,
                                               "step_size": STEP_SIZE, "tasks": args.test_tasks})
    for name in RUNS:
        if name in args.runs:
            results["runs"][name] = do_run(name, args, device)
            save(results, args.output)
    print_table(["run", *(f"MSE after {s} steps" for s in ADAPTATION_STEPS)],
                [[name, *(score(r["tests"][str(s)]) for s in ADAPTATION_STEPS)] for name, r in results["runs"].items()],
                args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
