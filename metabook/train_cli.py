"""``python -m metabook train|evaluate``: meta-train and evaluate from the command line.

``train`` meta-trains one of MAML, first-order MAML, ANIL, Meta-SGD or Reptile
on Omniglot, mini-ImageNet, CIFAR-FS or sinusoids with
:func:`metabook.training.train`, writing a checkpoint (resumable with
``--resume``) and a JSON file with the configuration, learning curve and
provenance. ``evaluate`` loads a checkpoint and reports the mean test score
over 600 tasks with its 95% confidence interval
(:func:`metabook.evaluation.evaluate`), as JSON too. Every option left out
takes the value of the paper that introduced the setting (:data:`PRESETS`).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from metabook.cli import UserError
from metabook.data.storage import CACHE_ENV, MIRROR_ENV
from metabook.training import GRADIENT_ALGORITHMS as ALGORITHMS, TrainConfig  # the CLI trains these so far

__all__ = ["add_parser", "DATA_SETS", "PRESETS", "paper_defaults", "build_model", "make_sampler"]

DATA_SETS = ("omniglot", "sinusoid", "mini-imagenet", "cifar-fs")

_MAML = "MAML (Finn et al., 2017), Sec. 5 and App. A.1; meta-lr and queries from cbfinn/maml main.py"
_REPTILE = ("Reptile (Nichol et al., 2018), App. A / openai/supervised-reptile: inner Adam (beta1 = 0), "
            "lr 0.001, on minibatches; its moments restart with every task here")

# The paper values of each setting: (algorithm family, data set, setting) -> (TrainConfig fields, source).
# "maml" stands for maml, fomaml, anil and metasgd (ANIL and Meta-SGD are run with MAML's values here).
# Two values depend on the shots and are filled in by paper_defaults: MAML's Omniglot query sets
# have as many examples per class as the support set, and its mini-ImageNet meta-batch is 4 tasks
# for 1-shot and 2 for 5-shot.
PRESETS = {
    ("maml", "omniglot", "5-way"): (
        dict(inner_lr=0.4, inner_steps=1, eval_inner_steps=3, meta_batch=32, meta_lr=1e-3, steps=60_000), _MAML),
    ("maml", "omniglot", "20-way"): (
        dict(inner_lr=0.1, inner_steps=5, eval_inner_steps=5, meta_batch=16, meta_lr=1e-3, steps=60_000), _MAML),
    ("maml", "mini-imagenet", ""): (
        dict(inner_lr=0.01, inner_steps=5, eval_inner_steps=10, meta_batch=4, meta_lr=1e-3, steps=60_000,
             queries=15), _MAML),
    ("maml", "cifar-fs", ""): (
        dict(inner_lr=0.01, inner_steps=5, eval_inner_steps=10, meta_batch=4, meta_lr=1e-3, steps=60_000,
             queries=15), "MAML's mini-ImageNet values (the MAML paper has no CIFAR-FS experiment)"),
    ("maml", "sinusoid", ""): (
        dict(shots=10, queries=10, inner_lr=0.01, inner_steps=1, eval_inner_steps=10, meta_batch=25,
             meta_lr=1e-3, steps=70_000), "MAML Sec. 5.1 (alpha 0.01, K = 10); batch 25, 10 test steps from main.py"),
    ("reptile", "omniglot", "5-way"): (
        dict(train_shots=10, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=5, inner_batch_size=10,
             eval_inner_steps=50, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=100_000), _REPTILE),
    ("reptile", "omniglot", "20-way"): (
        dict(train_shots=10, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=10, inner_batch_size=20,
             eval_inner_steps=50, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=200_000), _REPTILE),
    ("reptile", "mini-imagenet", ""): (
        dict(train_shots=15, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=8, inner_batch_size=10,
             eval_inner_steps=50, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=100_000), _REPTILE),
    ("reptile", "cifar-fs", ""): (
        dict(train_shots=15, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=8, inner_batch_size=10,
             eval_inner_steps=50, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=100_000),
        "Reptile's mini-ImageNet values (the paper has no CIFAR-FS experiment)"),
    ("reptile", "sinusoid", ""): (
        dict(shots=10, train_shots=50, queries=10, inner_lr=0.02, inner_steps=5, eval_inner_steps=32,
             meta_batch=1, outer_step_size=0.1, outer_step_size_final=0.0, steps=30_000),
        "the Reptile authors' sine-wave demo (gist joschu/f503500cda64f2ce87c8288906b09e2d), full-batch steps"),
}


def paper_defaults(algorithm: str, data: str, ways: int, shots: int) -> tuple[dict, str]:
    """The paper's TrainConfig values for this setting, and where they come from."""
    family = "reptile" if algorithm == "reptile" else "maml"
    setting = ("20-way" if ways >= 20 else "5-way") if data == "omniglot" else ""
    values, source = PRESETS[family, data, setting]
    values = dict(values)
    if family == "maml" and data == "omniglot":
        values["queries"] = shots
    if family == "maml" and data == "mini-imagenet" and shots >= 5:
        values["meta_batch"] = 2
    if data == "sinusoid":
        values["loss"] = "mse"
    return values, source


# ── Networks and tasks for each data set ─────────────────────────────────────


def build_model(data: str, ways: int) -> torch.nn.Module:
    """MAML's network for the data set, with ``ways`` outputs (freshly initialized from the global generator)."""
    from metabook.models import ConvNet, miniimagenet_convnet, omniglot_convnet, sinusoid_mlp

    if data == "omniglot":
        return omniglot_convnet(ways)
    if data == "mini-imagenet":
        return miniimagenet_convnet(ways)
    if data == "cifar-fs":
        # MAML's mini-ImageNet network on 32x32 images: 32 -> 16 -> 8 -> 4 -> 2, 32 * 2 * 2 features.
        return ConvNet(ways, in_channels=3, filters=32, downsample="maxpool", image_size=32)
    return sinusoid_mlp()


def _load_split(data: str, split: str, cache, mirror):
    from metabook.data import load_cifar_fs, load_mini_imagenet, load_omniglot

    if data == "omniglot":
        return load_omniglot(split, cache=cache, mirror=mirror)
    if data == "mini-imagenet":
        return load_mini_imagenet(split, cache=cache, mirror=mirror)
    return load_cifar_fs(split, cache=cache, mirror=mirror)


_SINUSOID_SEED_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def make_sampler(config: TrainConfig, split: str, shots: int, seed: int, device, cache=None, mirror=None):
    """A sampler of ``config``'s tasks from one split (``"train"``, ``"val"`` or ``"test"``), on ``device``."""
    from metabook.data import NWayKShotSampler
    from metabook.data import SinusoidSampler

    if config.dataset == "sinusoid":
        # Sine waves have no classes to split: each split is its own random stream instead, so
        # that test tasks are never the training tasks drawn with the same seed.
        return SinusoidSampler(shots, config.queries, seed + _SINUSOID_SEED_OFFSETS[split])
    images = _load_split(config.dataset, split, cache, mirror).to(device)
    return NWayKShotSampler(images, config.ways, shots, config.queries, seed)


# ── train ────────────────────────────────────────────────────────────────────

# Options whose default comes from PRESETS (argparse default None = "not given").
_PRESET_OPTIONS = ("shots", "train_shots", "queries", "meta_batch", "inner_steps", "inner_lr", "inner_optimizer",
                   "inner_batch_size", "eval_inner_steps", "meta_lr", "steps", "outer_step_size",
                   "outer_step_size_final")


def _check_names(algorithm: str, data: str) -> None:
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if data not in DATA_SETS:
        raise UserError(f"unknown data set {data!r}; choose one of: {', '.join(DATA_SETS)}")


def config_from_args(args) -> tuple[TrainConfig, str]:
    """The run's TrainConfig: the options given, the paper's values for the rest; and their source."""
    _check_names(args.algorithm, args.data)
    reptile = args.algorithm == "reptile"
    if reptile and args.first_order:
        raise UserError("Reptile never differentiates through its inner loop; drop --first-order")
    if reptile and args.meta_lr is not None:
        raise UserError("Reptile's outer step is --outer-step-size (epsilon), not --meta-lr")
    if not reptile and (args.outer_step_size is not None or args.outer_step_size_final is not None):
        raise UserError(f"--outer-step-size and --outer-step-size-final are Reptile's epsilon; "
                        f"{args.algorithm} takes Adam steps of --meta-lr")
    if args.data == "sinusoid" and args.ways is not None:
        raise UserError("sinusoid tasks are regression, they have no classes: drop --ways")
    ways = args.ways or 5
    shots = args.shots or (10 if args.data == "sinusoid" else 1)
    values, source = paper_defaults(args.algorithm, args.data, ways, shots)
    given = {name: getattr(args, name) for name in _PRESET_OPTIONS if getattr(args, name) is not None}
    values.update(given)
    values.setdefault("shots", shots)
    values.setdefault("queries", 15)
    config = TrainConfig(
        algorithm=args.algorithm, dataset=args.data, ways=1 if args.data == "sinusoid" else ways,
        first_order=args.first_order, query_bn=args.query_bn, log_every=args.log_every,
        validate_every=args.validate_every, validation_tasks=args.validation_tasks,
        checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device, bf16=args.bf16,
        strategy=args.strategy, **values,
    )
    return config, source


def _default_checkpoint(config: TrainConfig) -> Path:
    setting = f"{config.shots}shot" if config.dataset == "sinusoid" else f"{config.ways}way-{config.shots}shot"
    return Path("runs") / f"{config.algorithm}-{config.dataset}-{setting}.pt"


def _device(config: TrainConfig) -> torch.device:
    from metabook.runtime import pick_device

    try:
        return pick_device(None if config.device == "auto" else config.device, verbose=False)
    except RuntimeError:  # a CUDA device without a GPU
        raise UserError(f"device {config.device!r} was asked for, but torch sees no CUDA GPU; "
                        "pass --device cpu (or auto), and unset METABOOK_DEVICE if it is set") from None


def _run_train(args) -> int:
    from metabook.checkpoint import provenance, write_json
    from metabook.evaluation import batch_norm_mode
    from metabook.runtime import seed_everything
    from metabook.training import train

    config, source = config_from_args(args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else _default_checkpoint(config)
    output = Path(args.output) if args.output else checkpoint.with_suffix(".train.json")
    if checkpoint.exists() and not args.resume:
        raise UserError(f"{checkpoint} exists; pass --resume to continue that run, or choose another --checkpoint")
    device = _device(config)
    seed_everything(config.seed)  # the network's initialization
    model = build_model(config.dataset, config.ways)
    train_sampler = make_sampler(config, "train", config.support_shots, config.seed, device, args.cache, args.mirror)
    val_sampler = None
    if config.validate_every:
        val_sampler = make_sampler(config, "val", config.shots, config.seed + 1, device, args.cache, args.mirror)
    print(f"{config.algorithm} on {config.dataset}: {config.steps} meta-steps on {device.type}; "
          f"defaults from {source}", flush=True)
    began = time.perf_counter()
    if config.bf16 and device.type != "cuda":
        print(f"warning: --bf16 has no effect on {device.type}: autocast is used on CUDA only; "
              "training in float32", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="bf16=True")  # said above, in one line
        result = train(config, model, train_sampler, val_sampler, checkpoint, resume=args.resume,
                       progress=not args.no_progress)
    validations = result.column("validation")[1]
    write_json(output, {
        "command": "train",
        "config": asdict(config),
        "defaults_from": source,
        "checkpoint": str(checkpoint),
        "steps_done": result.steps_done,
        "resumed_from": result.resumed_from,
        "batch_norm": batch_norm_mode(model, config.query_bn),
        "final_validation": {"metric": config.validation_metric, "value": validations[-1]} if validations else None,
        "curve": [asdict(point) for point in result.curve],
        "wall_time_s": time.perf_counter() - began,
        "training_wall_time_s": result.wall_time_s,
        "provenance": provenance(device),
    })
    last = f"; last validation {config.validation_metric} {validations[-1]:.4f}" if validations else ""
    print(f"trained {result.steps_done} meta-steps{last}; checkpoint {checkpoint}, results {output}")
    return 0


# ── evaluate ─────────────────────────────────────────────────────────────────


def _run_evaluate(args) -> int:
    from metabook.checkpoint import load_checkpoint, provenance, write_json
    from metabook.evaluation import evaluate
    from metabook.training import inner_loop

    checkpoint = Path(args.checkpoint)
    try:
        state = load_checkpoint(checkpoint)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {checkpoint}; train one first: python -m metabook train "
                        f"--algorithm ALGORITHM --data DATA --checkpoint {checkpoint}") from None
    overrides = {"device": args.device, "query_bn": args.query_bn, "eval_inner_steps": args.inner_steps,
                 "queries": args.queries, "shots": args.shots}
    config = replace(TrainConfig(**state["config"]), **{k: v for k, v in overrides.items() if v is not None})
    device = _device(config)
    model = build_model(config.dataset, config.ways)
    model.load_state_dict(state["model"])
    model.to(device)
    lrs = None if state["lrs"] is None else {name: rate.to(device) for name, rate in state["lrs"].items()}
    sampler = make_sampler(config, args.split, config.shots, args.seed, device, args.cache, args.mirror)
    began = time.perf_counter()
    result = evaluate(model, sampler, inner_loop(config, evaluation=True), args.tasks, lrs,
                      tasks_per_batch=args.tasks_per_batch, strategy=config.strategy, progress=not args.no_progress)
    output = Path(args.output) if args.output else checkpoint.with_suffix(f".{args.split}.json")
    write_json(output, {
        "command": "evaluate",
        "checkpoint": str(checkpoint),
        "trained_steps": state["step"],
        "config": asdict(config),
        "evaluation": {"split": args.split, "ways": config.ways, "shots": config.shots,
                       "queries": config.queries, "seed": args.seed, **result.as_dict()},
        "wall_time_s": time.perf_counter() - began,
        "provenance": provenance(device),
    })
    print(f"{config.algorithm} on {config.dataset} {args.split}: {result}; results {output}")
    return 0


# ── The parsers ──────────────────────────────────────────────────────────────


def _presets_epilog() -> str:
    lines = ["Defaults when an option is left out (the papers' values):"]
    for (family, data, setting), (values, source) in PRESETS.items():
        name = "maml/fomaml/anil/metasgd" if family == "maml" else family
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in values.items())
        lines.append(f"  {name}, {data} {setting}".rstrip() + f": {shown}. Source: {source}.")
    lines.append("  MAML on Omniglot: --queries equals --shots; on mini-ImageNet: --meta-batch 2 for 5-shot. "
                 "Elsewhere --ways 5, --shots 1 (sinusoid: 10 points), --queries 15.")
    return "\n".join(lines)


def _data_options(parser) -> None:
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help=f"writable data folder (default: ${CACHE_ENV}, else ~/.cache/metabook)")
    parser.add_argument("--mirror", metavar="DIR", default=None,
                        help=f"read-only folder of upstream archives, searched before any download "
                             f"(default: ${MIRROR_ENV})")
    parser.add_argument("--device", default=None,
                        help="auto (the GPU when there is one, honouring $METABOOK_DEVICE), cpu, cuda, cuda:1, ... "
                             "(train default: auto; evaluate default: the training run's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers) -> None:
    """Register ``train`` and ``evaluate`` with the top-level command line."""
    formatter = argparse.RawDescriptionHelpFormatter
    train = subparsers.add_parser(
        "train", help="meta-train MAML, first-order MAML, ANIL, Meta-SGD or Reptile",
        description="Meta-train a network and write a resumable checkpoint and a JSON file of the run "
                    "(configuration, learning curve, provenance).",
        epilog=_presets_epilog() + "\n\nExample: python -m metabook train --algorithm maml --data omniglot "
               "--steps 2000 --validate-every 500 --checkpoint runs/maml.pt",
        formatter_class=formatter,
    )
    train.add_argument("--algorithm", default="maml", metavar="NAME",
                       help=f"{', '.join(ALGORITHMS)} (default: maml); fomaml is first-order MAML, anil adapts "
                            "only the head, metasgd learns one inner learning rate per parameter")
    train.add_argument("--data", default="omniglot", metavar="NAME",
                       help=f"{', '.join(DATA_SETS)} (default: omniglot; mini-ImageNet has no download: "
                            "see `python -m metabook data info mini-imagenet`)")
    train.add_argument("--ways", type=int, default=None, help="classes per task, N (default: 5; not for sinusoid)")
    train.add_argument("--shots", type=int, default=None,
                       help="support examples per class at test time, K (default: 1; sinusoid: 10 points)")
    train.add_argument("--train-shots", type=int, default=None,
                       help="support examples per class in training tasks (default: --shots; Reptile: 10 on "
                            "Omniglot, 15 on mini-ImageNet, as in its paper)")
    train.add_argument("--queries", type=int, default=None, help="query examples per class (default: see below)")
    train.add_argument("--meta-batch", type=int, default=None, help="tasks per meta-step")
    train.add_argument("--inner-steps", type=int, default=None, help="SGD steps on the support set while training")
    train.add_argument("--inner-lr", type=float, default=None, help="the inner step size alpha")
    train.add_argument("--inner-optimizer", choices=("sgd", "adam"), default=None,
                       help="sgd (MAML) or adam with beta1 = 0 (Reptile's experiments); default: the paper's")
    train.add_argument("--inner-batch-size", type=int, default=None,
                       help="support examples per inner step (Reptile's inner batch size); default: the paper's, "
                            "or the whole support set")
    train.add_argument("--eval-inner-steps", type=int, default=None,
                       help="SGD steps on the support set at validation and test time")
    train.add_argument("--meta-lr", type=float, default=None,
                       help="Adam's learning rate beta for the meta-update (not for Reptile)")
    train.add_argument("--steps", type=int, default=None, help="meta-steps to train for")
    train.add_argument("--first-order", action="store_true",
                       help="drop second derivatives (first-order ANIL or Meta-SGD; fomaml implies it)")
    train.add_argument("--outer-step-size", type=float, default=None,
                       help="Reptile's epsilon: phi <- phi + epsilon (mean W - phi)")
    train.add_argument("--outer-step-size-final", type=float, default=None,
                       help="anneal Reptile's epsilon linearly to this value over the run (paper: 0)")
    train.add_argument("--query-bn", default="transductive", choices=("transductive", "inductive"),
                       help="batch norm of query sets: their own statistics (transductive, MAML's code; default) "
                            "or the support set's (inductive)")
    train.add_argument("--validate-every", type=int, default=1000,
                       help="meta-steps between validations on the val split, and one at the end "
                            "(0: none; default: 1000)")
    train.add_argument("--validation-tasks", type=int, default=100, help="tasks per validation (default: 100)")
    train.add_argument("--log-every", type=int, default=10,
                       help="meta-steps averaged into one learning-curve point (default: 10)")
    train.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="checkpoint file (default: runs/ALGORITHM-DATA-NwayKshot.pt)")
    train.add_argument("--checkpoint-every", type=int, default=1000,
                       help="meta-steps between checkpoints; one is always written at the end (default: 1000)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run saved in --checkpoint (same options); starts afresh if there is none")
    train.add_argument("--output", default=None, metavar="PATH",
                       help="JSON results file (default: the checkpoint's name with .train.json)")
    train.add_argument("--seed", type=int, default=0,
                       help="seeds the initialization and the training (seed) and validation (seed + 1) tasks")
    train.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast for the meta-gradient on CUDA (ignored with a warning on the CPU)")
    train.add_argument("--strategy", default="auto", choices=("auto", "loop", "vmap"),
                       help="run a meta-batch's tasks in a Python loop or batched with vmap "
                            "(default auto: vmap on a GPU, loop on the CPU)")
    _data_options(train)
    train.set_defaults(run=_run_train, device="auto")

    evaluate = subparsers.add_parser(
        "evaluate", help="evaluate a meta-trained checkpoint on test tasks",
        description="Fine-tune a meta-trained network on each of many test tasks and report the mean query "
                    "accuracy (MSE for sinusoids) with its 95% confidence interval, 1.96 * std / sqrt(tasks), "
                    "and the batch-norm mode, as JSON. The training run's settings are used unless overridden.",
        epilog="Example: python -m metabook evaluate --checkpoint runs/maml.pt --tasks 600",
        formatter_class=formatter,
    )
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint written by train")
    evaluate.add_argument("--split", default="test", choices=("test", "val", "train"),
                          help="which classes to draw tasks from (default: test)")
    evaluate.add_argument("--tasks", type=int, default=600, help="test tasks (default: 600, as MAML)")
    evaluate.add_argument("--tasks-per-batch", type=int, default=20,
                          help="tasks drawn and adapted at a time (bounds memory; the draw depends on it; default 20)")
    evaluate.add_argument("--inner-steps", type=int, default=None,
                          help="fine-tuning steps per task (default: the run's --eval-inner-steps)")
    evaluate.add_argument("--shots", type=int, default=None, help="support examples per class (default: the run's)")
    evaluate.add_argument("--queries", type=int, default=None, help="query examples per class (default: the run's)")
    evaluate.add_argument("--query-bn", default=None, choices=("transductive", "inductive"),
                          help="batch norm of query sets (default: the run's)")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="seed of the test tasks (default 0: every run is tested on the same tasks)")
    evaluate.add_argument("--output", default=None, metavar="PATH",
                          help="JSON results file (default: the checkpoint's name with .SPLIT.json)")
    _data_options(evaluate)
    evaluate.set_defaults(run=_run_evaluate)
