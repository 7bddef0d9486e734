"""``python -m metabook train|evaluate``: meta-train and evaluate from the command line.

``train`` meta-trains one of MAML, first-order MAML, ANIL, Meta-SGD, Reptile
(gradient-based), Prototypical Networks, R2-D2, LR-D2 (episodic classifiers)
on Omniglot, mini-ImageNet or CIFAR-FS, or a gradient-based learner or a
conditional or latent neural process on sinusoids, with
:func:`metabook.training.train`, writing a checkpoint (resumable with
``--resume``) and a JSON file with the configuration, learning curve and
provenance. ``evaluate`` rebuilds the network from a checkpoint and reports
the mean test score over 600 tasks with its 95% confidence interval
(:func:`metabook.evaluation.evaluate`), as JSON too. Every option left out
takes the value of the paper that introduced the setting (:data:`PRESETS`),
or the book's where the paper has none.

The episodic classifiers may train with more classes per task than they are
tested with (``--train-ways``; ProtoNets train 60-way on Omniglot): their
weights do not depend on the number of ways, so the same network is
validated during training, and tested, at ``--ways``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from metabook.cli import UserError, count_type, rate_type
from metabook.data.storage import CACHE_ENV, MIRROR_ENV
from metabook.setups import CONVNETS, build_model, make_sampler  # noqa: F401 (CONVNETS: re-exported)
from metabook.training import DOMAIN_ALGORITHMS, EPISODIC_ALGORITHMS, GRADIENT_ALGORITHMS, TrainConfig

__all__ = ["add_parser", "ALGORITHMS", "DATA_SETS", "PRESETS", "paper_defaults", "build_model", "make_sampler"]

# The domain-generalization algorithms of metabook.training (erm, mldg) train on batches of source domains,
# not on the few-shot tasks of these data sets: their chapter runs them.
ALGORITHMS = GRADIENT_ALGORITHMS + EPISODIC_ALGORITHMS
CLASSIFIERS = ("protonet", "r2d2", "lrd2")  # episodic classifiers: any number of ways with the same weights
DATA_SETS = ("omniglot", "sinusoid", "mini-imagenet", "cifar-fs")

_MAML = ("MAML (Finn et al., 2017), Sec. 5 and App. A.1; meta-lr and queries from cbfinn/maml main.py; inner-lr is "
         "the paper's alpha times the number of ways, because the reference code's inner loss (utils.xent: cross-"
         "entropy / K, summed over the N*K support examples by tf.gradients) is N times the mean loss used here")
_REPTILE = ("Reptile (Nichol et al., 2018), App. A / the commands of openai/supervised-reptile's README: inner "
            "Adam (beta1 = 0), lr 0.001 (0.0005 for 20-way), on minibatches; its moments restart with every task "
            "here, and evaluation steps on the whole support set (their eval batch: 5 for 5-way, 10 for 20-way)")
_PROTONET = ("Prototypical Networks (Snell et al., 2017), Sec. 3.1-3.2: Adam lr 1e-3, halved every 2,000 episodes; "
             "one episode per step and 5-way validation "
             "as in jakesnell/prototypical-networks; the paper stops on validation loss, the steps are the book's")
_R2D2 = ("the R2-D2 authors' scripts (Bertinetto et al., 2019; bertinetto/r2d2): Adam lr 5e-3, halved every 2,000 "
         "episodes; one episode per step; their training shots, "
         "drawn from 1 to 9, are fixed here; they stop on validation, the steps are the book's")
_NP = ("the book's choice, as scripts/full_scale_neural_processes.py (the CNP and NP papers have no sine-wave "
       "experiment): training contexts of 0 to --train-shots points, DeepMind's 128-unit networks")

# The mini-ImageNet values, which CIFAR-FS borrows (neither paper has a CIFAR-FS experiment).
_MAML_MINI_IMAGENET = dict(inner_lr=0.05, inner_steps=5, eval_inner_steps=10, meta_batch=4, meta_lr=1e-3,
                           steps=60_000, queries=15)
_REPTILE_MINI_IMAGENET = dict(train_shots=15, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=8,
                              inner_batch_size=10, eval_inner_steps=50, meta_batch=5, outer_step_size=1.0,
                              outer_step_size_final=0.0, steps=100_000)

# The paper values of each setting: (algorithm family, data set, setting) -> (TrainConfig fields, source).
# "maml" stands for maml, fomaml, anil and metasgd (ANIL and Meta-SGD are run with MAML's values here),
# "np" for cnp and np. Some values depend on the shots and ways and are filled in by paper_defaults:
# MAML's Omniglot query sets have as many examples per class as the support set, and its mini-ImageNet
# meta-batch is 4 tasks for 1-shot and 2 for 5-shot; ProtoNets train 30-way for 1-shot and 20-way for
# 5-shot on mini-ImageNet; R2-D2's and LR-D2's training episodes have a fixed number of images per class
# (_EPISODE_IMAGES), the queries being what the shots leave.
PRESETS = {
    ("maml", "omniglot", "5-way"): (
        dict(inner_lr=2.0, inner_steps=1, eval_inner_steps=3, meta_batch=32, meta_lr=1e-3, steps=60_000), _MAML),
    ("maml", "omniglot", "20-way"): (
        dict(inner_lr=2.0, inner_steps=5, eval_inner_steps=5, meta_batch=16, meta_lr=1e-3, steps=60_000), _MAML),
    ("maml", "mini-imagenet", ""): (_MAML_MINI_IMAGENET, _MAML),
    ("maml", "cifar-fs", ""): (
        _MAML_MINI_IMAGENET, "MAML's mini-ImageNet values (the MAML paper has no CIFAR-FS experiment)"),
    ("maml", "sinusoid", ""): (
        dict(shots=10, queries=10, inner_lr=0.01, inner_steps=1, eval_inner_steps=10, meta_batch=25,
             meta_lr=1e-3, steps=70_000), "MAML Sec. 5.1 (alpha 0.01, K = 10); batch 25, 10 test steps from main.py"),
    ("reptile", "omniglot", "5-way"): (
        dict(train_shots=10, queries=1, inner_optimizer="adam", inner_lr=1e-3, inner_steps=5, inner_batch_size=10,
             eval_inner_steps=50, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=100_000), _REPTILE),
    ("reptile", "omniglot", "20-way"): (
        dict(train_shots=10, queries=1, inner_optimizer="adam", inner_lr=5e-4, inner_steps=10, inner_batch_size=20,
             eval_inner_steps=50, meta_batch=5,
             outer_step_size=1.0, outer_step_size_final=0.0, steps=200_000), _REPTILE),
    ("reptile", "mini-imagenet", ""): (_REPTILE_MINI_IMAGENET, _REPTILE),
    ("reptile", "cifar-fs", ""): (
        _REPTILE_MINI_IMAGENET, "Reptile's mini-ImageNet values (the paper has no CIFAR-FS experiment)"),
    ("reptile", "sinusoid", ""): (
        dict(shots=10, train_shots=50, queries=10, inner_lr=0.02, inner_steps=5, eval_inner_steps=32,
             meta_batch=1, outer_step_size=0.1, outer_step_size_final=0.0, steps=30_000),
        "the Reptile authors' sine-wave demo (gist joschu/f503500cda64f2ce87c8288906b09e2d), full-batch steps"),
    ("protonet", "omniglot", ""): (
        dict(train_ways=60, queries=5, meta_batch=1, meta_lr=1e-3, meta_lr_halving_every=2_000, steps=20_000), _PROTONET),
    ("protonet", "mini-imagenet", ""): (
        dict(train_ways=30, queries=15, meta_batch=1, meta_lr=1e-3, meta_lr_halving_every=2_000, steps=20_000), _PROTONET),
    ("protonet", "cifar-fs", ""): (
        dict(train_ways=30, queries=15, meta_batch=1, meta_lr=1e-3, meta_lr_halving_every=2_000, steps=20_000),
        "ProtoNets' mini-ImageNet values (the paper has no CIFAR-FS experiment)"),
    ("r2d2", "omniglot", ""): (dict(train_ways=60, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=20_000), _R2D2),
    ("r2d2", "mini-imagenet", ""): (dict(train_ways=16, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _R2D2),
    ("r2d2", "cifar-fs", ""): (dict(train_ways=20, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _R2D2),
    ("lrd2", "omniglot", ""): (
        dict(train_ways=10, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=20_000),
        "LR-D2's mini-ImageNet values (the authors' scripts have no LR-D2 Omniglot run); " + _R2D2),
    ("lrd2", "mini-imagenet", ""): (dict(train_ways=10, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _R2D2),
    ("lrd2", "cifar-fs", ""): (dict(train_ways=10, meta_batch=1, meta_lr=5e-3, meta_lr_halving_every=2_000, steps=30_000), _R2D2),
    ("np", "sinusoid", ""): (
        dict(shots=10, train_shots=20, queries=20, meta_batch=64, meta_lr=5e-4, steps=50_000), _NP),
}
# Images per class in an R2-D2 / LR-D2 training episode of the authors' scripts (--data.batch_size / --data.way).
_EPISODE_IMAGES = {("r2d2", "omniglot"): 10, ("r2d2", "mini-imagenet"): 15, ("r2d2", "cifar-fs"): 12,
                   ("lrd2", "omniglot"): 20, ("lrd2", "mini-imagenet"): 20, ("lrd2", "cifar-fs"): 20}
_FAMILIES = {"reptile": "reptile", "protonet": "protonet", "r2d2": "r2d2", "lrd2": "lrd2", "cnp": "np", "np": "np"}
_FAMILY_NAMES = {"maml": "maml/fomaml/anil/metasgd", "np": "cnp/np"}


def paper_defaults(algorithm: str, data: str, ways: int, shots: int,
                   train_shots: int | None = None) -> tuple[dict, str]:
    """The paper's TrainConfig values for this setting, and where they come from.

    ``train_shots``: the training shots when they are given (R2-D2's queries depend on them).
    """
    family = _FAMILIES.get(algorithm, "maml")
    setting = ("20-way" if ways >= 20 else "5-way") if family in ("maml", "reptile") and data == "omniglot" else ""
    values, source = PRESETS[family, data, setting]
    values = dict(values)
    if family == "maml" and data == "omniglot":
        values["queries"] = shots
    if family == "maml" and data == "mini-imagenet" and shots >= 5:
        values["meta_batch"] = 2
    if family == "protonet" and data != "omniglot" and shots >= 5:
        values["train_ways"] = 20
    if (family, data) in _EPISODE_IMAGES:
        values["queries"] = max(_EPISODE_IMAGES[family, data] - (train_shots or shots), 1)
    if "train_ways" in values:
        values["train_ways"] = max(values["train_ways"], ways)  # never fewer classes than the tests have
    if data == "sinusoid":
        values["loss"] = "mse"
    return values, source


# ── train ────────────────────────────────────────────────────────────────────

# Options whose default comes from PRESETS (argparse default None = "not given").
_PRESET_OPTIONS = ("shots", "train_shots", "train_ways", "queries", "meta_batch", "inner_steps", "inner_lr",
                   "inner_optimizer", "inner_batch_size", "eval_inner_steps", "meta_lr", "meta_lr_halving_every",
                   "steps", "outer_step_size", "outer_step_size_final")
# What a gradient-based learner's inner and outer loops take, and an episodic learner has no use for.
_LOOP_OPTIONS = ("inner_steps", "inner_lr", "inner_optimizer", "inner_batch_size", "eval_inner_steps",
                 "first_order", "outer_step_size", "outer_step_size_final")


def _flags(names) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _check_request(args) -> None:
    """One clear error for an unknown name, a data set the algorithm cannot learn, or an option it has no use for."""
    algorithm, data = args.algorithm, args.data
    if algorithm in DOMAIN_ALGORITHMS:
        raise UserError(f"{algorithm} learns from source domains, not from the few-shot tasks of these data sets: "
                        "train it with metabook.mldg (see the MLDG chapter)")
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if data not in DATA_SETS:
        raise UserError(f"unknown data set {data!r}; choose one of: {', '.join(DATA_SETS)}")
    if algorithm in ("cnp", "np") and data != "sinusoid":
        raise UserError(f"{algorithm} is a regression model of sine waves; use --data sinusoid")
    if algorithm in CLASSIFIERS and data == "sinusoid":
        raise UserError(f"{algorithm} classifies images; use --data omniglot, mini-imagenet or cifar-fs")
    if algorithm in EPISODIC_ALGORITHMS:
        given = [name for name in _LOOP_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            raise UserError(f"{algorithm} solves each task in one forward pass, with no inner loop and Adam "
                            f"steps of --meta-lr: drop {_flags(given)}")
    if args.train_ways is not None and algorithm not in CLASSIFIERS:
        raise UserError(f"--train-ways is for {', '.join(CLASSIFIERS)}, whose weights serve any number of ways; "
                        f"{algorithm} trains and tests at --ways")
    if algorithm == "reptile" and args.first_order:
        raise UserError("Reptile never differentiates through its inner loop; drop --first-order")
    if algorithm == "reptile" and (args.meta_lr is not None or args.meta_lr_halving_every is not None):
        raise UserError("Reptile's outer step is --outer-step-size (epsilon, annealed with --outer-step-size-final), "
                        "not --meta-lr or --meta-lr-halving-every")
    if algorithm in GRADIENT_ALGORITHMS and algorithm != "reptile" and (
            args.outer_step_size is not None or args.outer_step_size_final is not None):
        raise UserError(f"--outer-step-size and --outer-step-size-final are Reptile's epsilon; "
                        f"{algorithm} takes Adam steps of --meta-lr")
    if data == "sinusoid" and args.ways is not None:
        raise UserError("sinusoid tasks are regression, they have no classes: drop --ways")


def config_from_args(args) -> tuple[TrainConfig, str]:
    """The run's TrainConfig: the options given, the paper's values for the rest; and their source."""
    _check_request(args)
    # Only a value left out takes the default: an explicit 0 was refused by the parser, never read as "not given".
    ways = 5 if args.ways is None else args.ways
    shots = (10 if args.data == "sinusoid" else 1) if args.shots is None else args.shots
    values, source = paper_defaults(args.algorithm, args.data, ways, shots, args.train_shots)
    given = {name: getattr(args, name) for name in _PRESET_OPTIONS if getattr(args, name) is not None}
    values.update(given)
    values.setdefault("shots", shots)
    values.setdefault("queries", 15)
    if args.algorithm in EPISODIC_ALGORITHMS:
        values.update(inner_steps=0, eval_inner_steps=0)  # recorded so: no inner loop
    config = TrainConfig(
        algorithm=args.algorithm, dataset=args.data, ways=1 if args.data == "sinusoid" else ways,
        first_order=args.first_order, query_bn=args.query_bn, log_every=args.log_every,
        validate_every=args.validate_every, validation_tasks=args.validation_tasks,
        checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device, bf16=args.bf16,
        channels_last=args.channels_last, strategy=args.strategy, **values,
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
    from metabook.run_length import announce_run_length
    from metabook.runtime import seed_everything
    from metabook.training import train

    config, source = config_from_args(args)
    checkpoint = Path(args.checkpoint) if args.checkpoint else _default_checkpoint(config)
    output = Path(args.output) if args.output else checkpoint.with_suffix(".train.json")
    if checkpoint.exists() and not args.resume:
        raise UserError(f"{checkpoint} exists; pass --resume to continue that run, or choose another --checkpoint")
    device = _device(config)
    seed_everything(config.seed)  # the network's initialization
    model = build_model(config, config.training_ways)
    train_sampler = make_sampler(config, "train", config.seed, device, args.cache, args.mirror, training=True)
    announce_run_length(train_sampler, config.steps)  # one line after the first few steps: how long this run takes
    val_sampler = None
    if config.validate_every:
        val_sampler = make_sampler(config, "val", config.seed + 1, device, args.cache, args.mirror)
    ways = f" ({config.train_ways}-way training tasks, validated {config.ways}-way)" if config.train_ways else ""
    print(f"{config.algorithm} on {config.dataset}{ways}: {config.steps} meta-steps on {device.type}; "
          f"defaults from {source}", flush=True)
    began = time.perf_counter()
    # The curve also goes, point by point, to a JSON-lines file beside the checkpoint: an interrupted run keeps it.
    result = train(config, model, train_sampler, val_sampler, checkpoint, resume=args.resume,
                   progress=not args.no_progress, curve_file=checkpoint.with_suffix(".curve.jsonl"))
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


_TRAINED_STATE = ("step", "config", "model", "lrs")  # what evaluate reads from a checkpoint of train


def _trained_config(state: dict, checkpoint: Path) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with; one clear error for a checkpoint that train did not write."""
    missing = [key for key in _TRAINED_STATE if key not in state]
    if missing:
        raise UserError(f"{checkpoint} is a metabook checkpoint without {', '.join(missing)}: it was not written by "
                        "`python -m metabook train`; evaluate it from Python with metabook.evaluation.evaluate")
    unknown = sorted(set(state["config"]) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UserError(f"{checkpoint} was trained with options this metabook does not know ({', '.join(unknown)}), "
                        f"by metabook {state.get('metabook', 'of another version')}: evaluate it with the metabook "
                        "that wrote it, or train again")
    return TrainConfig(**state["config"])


def _run_evaluate(args) -> int:
    from metabook.checkpoint import load_checkpoint, load_weights, provenance, write_json
    from metabook.evaluation import evaluate
    from metabook.training import inner_loop

    checkpoint = Path(args.checkpoint)
    try:
        state = load_checkpoint(checkpoint)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {checkpoint}; train one first: python -m metabook train "
                        f"--algorithm ALGORITHM --data DATA --checkpoint {checkpoint}") from None
    trained = _trained_config(state, checkpoint)
    episodic = trained.algorithm in EPISODIC_ALGORITHMS
    if episodic and args.inner_steps is not None:
        raise UserError(f"{trained.algorithm} solves each task in one forward pass, with no fine-tuning steps: "
                        "drop --inner-steps")
    if args.ways is not None and args.ways != trained.ways and trained.algorithm not in CLASSIFIERS:
        what = "has no classes" if trained.dataset == "sinusoid" else f"has a {trained.ways}-output head"
        raise UserError(f"this {trained.algorithm} network {what}: drop --ways (only {', '.join(CLASSIFIERS)} "
                        "are tested at another number of ways)")
    overrides = {"device": args.device, "query_bn": args.query_bn, "eval_inner_steps": args.inner_steps,
                 "queries": args.queries, "shots": args.shots, "ways": args.ways}
    config = replace(trained, **{k: v for k, v in overrides.items() if v is not None})
    device = _device(config)
    # The weights of ProtoNets and R2-D2 do not depend on the number of ways: build for the tested one.
    model = build_model(config, config.ways)
    load_weights(model, state["model"], checkpoint)
    model.to(device)
    lrs = None if state["lrs"] is None else {name: rate.to(device) for name, rate in state["lrs"].items()}
    sampler = make_sampler(config, args.split, args.seed, device, args.cache, args.mirror)
    began = time.perf_counter()
    result = evaluate(model, sampler, None if episodic else inner_loop(config, evaluation=True), args.tasks, lrs,
                      tasks_per_batch=args.tasks_per_batch, strategy=config.strategy, progress=not args.no_progress)
    output = Path(args.output) if args.output else checkpoint.with_suffix(f".{args.split}.json")
    write_json(output, {
        "command": "evaluate",
        "checkpoint": str(checkpoint),
        "trained_steps": state["step"],
        "config": asdict(config),
        "evaluation": {"split": args.split, "ways": config.ways, "shots": config.shots,
                       "queries": config.queries, "seed": args.seed, **result.as_dict()},
        # Each task's score, in the order drawn: two checkpoints scored with the same seed and protocol saw the
        # same tasks, so their scores pair task by task (metabook.evaluation.paired_difference).
        "per_task": [round(float(score), 6) for score in result.per_task],
        "wall_time_s": time.perf_counter() - began,
        "provenance": provenance(device),
    })
    print(f"{config.algorithm} on {config.dataset} {args.split}: {result}; results {output}")
    return 0


# ── The parsers ──────────────────────────────────────────────────────────────


def _presets_epilog() -> str:
    lines = ["Defaults when an option is left out (the papers' values):"]
    for (family, data, setting), (values, source) in PRESETS.items():
        name = _FAMILY_NAMES.get(family, family)
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in values.items())
        lines.append(f"  {name}, {data} {setting}".rstrip() + f": {shown}. Source: {source}.")
    images = ", ".join(f"{algorithm} on {data} {n}" for (algorithm, data), n in _EPISODE_IMAGES.items())
    lines += [
        "  MAML on Omniglot: --queries equals --shots; on mini-ImageNet: --meta-batch 2 for 5-shot. ProtoNets on "
        "mini-ImageNet and CIFAR-FS: --train-ways 20 for 5-shot. R2-D2 and LR-D2: --queries is what the "
        f"training shots leave of the authors' images per class in an episode ({images}). --train-ways is never "
        "below --ways. Elsewhere --ways 5, --shots 1 (sinusoid: 10 points), --queries 15.",
        "  The networks: MAML's for each data set (Finn et al., 2017); ProtoNets, R2-D2 and LR-D2 embed with its "
        "conv body without the head, R2-D2 and LR-D2 learn lambda from 1 and R2-D2 its output scale from 10 "
        "(metabook.r2d2; the authors fix lambda at 50 on a wider network); LR-D2 takes 5 Newton steps.",
    ]
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
        "train", help="meta-train MAML, first-order MAML, ANIL, Meta-SGD, Reptile, Prototypical Networks, "
                      "R2-D2, LR-D2 or a (conditional) neural process",
        description="Meta-train a network and write a resumable checkpoint and a JSON file of the run "
                    "(configuration, learning curve, provenance). Gradient-based learners (maml, fomaml, anil, "
                    "metasgd, reptile) train on every data set; the episodic classifiers (protonet, r2d2, lrd2) "
                    "on the image data sets; the neural processes (cnp, np) on sinusoids.",
        epilog=_presets_epilog() + "\n\nExamples: python -m metabook train --algorithm maml --data omniglot "
               "--steps 2000 --validate-every 500 --checkpoint runs/maml.pt\n"
               "          python -m metabook train --algorithm protonet --data omniglot --ways 5 "
               "--checkpoint runs/protonet.pt   (60-way training episodes, validated 5-way)",
        formatter_class=formatter,
    )
    train.add_argument("--algorithm", default="maml", metavar="NAME",
                       help=f"{', '.join(ALGORITHMS)} (default: maml); fomaml is first-order MAML, anil adapts "
                            "only the head, metasgd learns one inner learning rate per parameter; protonet: "
                            "Prototypical Networks, r2d2 / lrd2: ridge / logistic regression heads fitted in "
                            "closed form; cnp / np: conditional / latent neural processes (sinusoids only)")
    train.add_argument("--data", default="omniglot", metavar="NAME",
                       help=f"{', '.join(DATA_SETS)} (default: omniglot; mini-ImageNet has no download: "
                            "see `python -m metabook data info mini-imagenet`)")
    train.add_argument("--ways", type=count_type("--ways"), default=None,
                       help="classes per validation and test task, N, and per training task unless --train-ways "
                            "says otherwise (default: 5; not for sinusoid)")
    train.add_argument("--train-ways", type=count_type("--train-ways"), default=None,
                       help="classes per training task, for protonet, r2d2 and lrd2 only: their weights serve "
                            "any number of ways, so the same network is validated during training, and tested, "
                            "at --ways (default: the paper's, e.g. 60 for ProtoNets on Omniglot; never below "
                            "--ways). A gradient-based network's head fixes its ways: it trains at --ways")
    train.add_argument("--shots", type=count_type("--shots"), default=None,
                       help="support examples per class at test time, K (default: 1; sinusoid: 10 points)")
    train.add_argument("--train-shots", type=count_type("--train-shots"), default=None,
                       help="support examples per class in training tasks (default: --shots; Reptile: 10 on "
                            "Omniglot, 15 on mini-ImageNet, as in its paper); cnp/np: the largest training "
                            "context, each batch drawing its size from 0 to it (default 20)")
    train.add_argument("--queries", type=count_type("--queries"), default=None,
                       help="query examples per class (default: see below)")
    train.add_argument("--meta-batch", type=count_type("--meta-batch"), default=None, help="tasks per meta-step")
    train.add_argument("--inner-steps", type=count_type("--inner-steps", 0, "0: no adaptation"), default=None,
                       help="SGD steps on the support set while training (0: none, the network is not adapted)")
    train.add_argument("--inner-lr", type=rate_type("--inner-lr"), default=None,
                       help="the inner step size alpha (finite and positive, as every rate here)")
    train.add_argument("--inner-optimizer", choices=("sgd", "adam"), default=None,
                       help="sgd (MAML) or adam with beta1 = 0 (Reptile's experiments); default: the paper's")
    train.add_argument("--inner-batch-size", type=count_type("--inner-batch-size"), default=None,
                       help="support examples per inner step (Reptile's inner batch size); default: the paper's, "
                            "or the whole support set")
    train.add_argument("--eval-inner-steps", type=count_type("--eval-inner-steps", 0, "0: no adaptation"),
                       default=None, help="SGD steps on the support set at validation and test time (0: none)")
    train.add_argument("--meta-lr-halving-every", type=count_type("--meta-lr-halving-every"), default=None,
                       metavar="STEPS",
                       help="halve --meta-lr every STEPS steps (ProtoNets and R2-D2: 2000); default: the paper's, "
                            "or a constant rate")
    train.add_argument("--meta-lr", type=rate_type("--meta-lr"), default=None,
                       help="Adam's learning rate beta for the meta-update, or for the episodic learners' "
                            "episode loss (not for Reptile)")
    train.add_argument("--steps", type=count_type("--steps"), default=None, help="meta-steps to train for")
    train.add_argument("--first-order", action="store_true",
                       help="drop second derivatives (first-order ANIL or Meta-SGD; fomaml implies it)")
    train.add_argument("--outer-step-size", type=rate_type("--outer-step-size"), default=None,
                       help="Reptile's epsilon: phi <- phi + epsilon (mean W - phi)")
    train.add_argument("--outer-step-size-final", type=rate_type("--outer-step-size-final", zero_ok=True), default=None,
                       help="anneal Reptile's epsilon linearly to this value over the run (paper: 0)")
    train.add_argument("--query-bn", default="transductive", choices=("transductive", "inductive"),
                       help="batch norm of query sets: their own statistics (transductive, MAML's code; default) "
                            "or the support set's (inductive)")
    train.add_argument("--validate-every", type=count_type("--validate-every", 0, "0: never"), default=1000,
                       help="meta-steps between validations on the val split, and one at the end "
                            "(0: none; default: 1000)")
    train.add_argument("--validation-tasks", type=count_type("--validation-tasks"), default=100,
                       help="tasks per validation (default: 100)")
    train.add_argument("--log-every", type=count_type("--log-every"), default=10,
                       help="meta-steps averaged into one learning-curve point (default: 10)")
    train.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="checkpoint file (default: runs/ALGORITHM-DATA-NwayKshot.pt)")
    train.add_argument("--checkpoint-every", type=count_type("--checkpoint-every", 0, "0: only at the end"),
                       default=1000, help="meta-steps between checkpoints; one is always written at the end "
                                          "(0: only that one; default: 1000)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run saved in --checkpoint (same options); starts afresh if there is none")
    train.add_argument("--output", default=None, metavar="PATH",
                       help="JSON results file (default: the checkpoint's name with .train.json)")
    train.add_argument("--seed", type=count_type("--seed", 0), default=0,
                       help="seeds the initialization and the training (seed) and validation (seed + 1) tasks")
    train.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast for the meta-gradient, on CUDA or on a CPU with bfloat16 units "
                            "(AVX-512-BF16/AMX); weights stay float32. benchmarks/results/cpu_fast_path.txt "
                            "measures its speed and gradient error per family")
    train.add_argument("--channels-last", action="store_true",
                       help="store the convolutions channels-last (NHWC): float32, 1.2-1.4x faster on a CPU for "
                            "the episodic classifiers' large batches, no gain for MAML's or Reptile's per-task "
                            "loops, and not bit-exact (see benchmarks/results/cpu_fast_path.txt)")
    train.add_argument("--strategy", default="auto", choices=("auto", "loop", "vmap", "stacked"),
                       help="run a meta-batch's tasks in a Python loop, batched with vmap, or (MAML's ConvNet with "
                            "MAML, FOMAML, ANIL, Meta-SGD or Reptile) stacked side by side as grouped convolutions "
                            "(default auto: vmap on a GPU, loop on the CPU)")
    _data_options(train)
    train.set_defaults(run=_run_train, device="auto")

    evaluate = subparsers.add_parser(
        "evaluate", help="evaluate a meta-trained checkpoint on test tasks",
        description="Fine-tune a meta-trained network on each of many test tasks (an episodic learner "
                    "solves each in its forward pass) and report the mean query accuracy (MSE for sinusoids) "
                    "with its 95% confidence interval, 1.96 * std / sqrt(tasks), and the batch-norm mode, as "
                    "JSON. The network is rebuilt from the checkpoint; the training run's settings are used "
                    "unless overridden.",
        epilog="Example: python -m metabook evaluate --checkpoint runs/maml.pt --tasks 600",
        formatter_class=formatter,
    )
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint written by train")
    evaluate.add_argument("--split", default="test", choices=("test", "val", "train"),
                          help="which classes to draw tasks from (default: test)")
    evaluate.add_argument("--tasks", type=count_type("--tasks"), default=600, help="test tasks (default: 600, as MAML)")
    evaluate.add_argument("--tasks-per-batch", type=count_type("--tasks-per-batch"), default=20,
                          help="tasks drawn and adapted at a time (bounds memory; the draw depends on it; default 20)")
    evaluate.add_argument("--inner-steps", type=count_type("--inner-steps", 0, "0: no adaptation"), default=None,
                          help="fine-tuning steps per task (default: the run's --eval-inner-steps; not for the "
                               "episodic learners)")
    evaluate.add_argument("--ways", type=count_type("--ways"), default=None,
                          help="classes per task (default: the run's --ways); another number only for "
                               "protonet, r2d2 and lrd2")
    evaluate.add_argument("--shots", type=count_type("--shots"), default=None,
                          help="support examples per class, or context points (default: the run's)")
    evaluate.add_argument("--queries", type=count_type("--queries"), default=None,
                          help="query examples per class (default: the run's)")
    evaluate.add_argument("--query-bn", default=None, choices=("transductive", "inductive"),
                          help="batch norm of query sets (default: the run's)")
    evaluate.add_argument("--seed", type=count_type("--seed", 0), default=0,
                          help="seed of the test tasks (default 0: every run is tested on the same tasks)")
    evaluate.add_argument("--output", default=None, metavar="PATH",
                          help="JSON results file (default: the checkpoint's name with .SPLIT.json)")
    _data_options(evaluate)
    evaluate.set_defaults(run=_run_evaluate)
