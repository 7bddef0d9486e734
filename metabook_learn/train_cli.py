"""``python -m metabook_learn train|evaluate``: meta-train and evaluate from the command line.

``train`` meta-trains any registered method (:mod:`metabook_learn.methods`: MAML,
first-order MAML, ANIL, Meta-SGD, Reptile, Prototypical Networks, R2-D2,
LR-D2 and the neural processes, or one of your own given as ``--method
module:attr``) on the data sets it learns, Omniglot, mini-ImageNet, CIFAR-FS
or sinusoids, with :func:`metabook_learn.training.train`, writing a checkpoint (resumable with
``--resume``) and a JSON file with the configuration, learning curve and
provenance. ``evaluate`` rebuilds the network from a checkpoint and reports
the mean test score over 600 tasks with its 95% confidence interval
(:func:`metabook_learn.evaluation.evaluate`), as JSON too. Every option left out
takes the value of the paper that introduced the setting (each method's
``presets``), or the book's where the paper has none. This module names no
method: what differs between them, it asks of the method.

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

from metabook_learn.cli_options import count_type, rate_type
from metabook_learn.errors import UserError
from metabook_learn.inner_loop import INNER_LOOP_QUERY_BN_MODES
from metabook_learn.data.storage import CACHE_ENV, MIRROR_ENV
from metabook_learn.methods import DEFAULT_ALGORITHM, FEW_SHOT_DATA_SETS, Method, all_methods, inner_loop
from metabook_learn.methods import get as get_method
from metabook_learn.methods import load as load_method
from metabook_learn.methods import names as method_names
from metabook_learn.methods import origin as method_origin
from metabook_learn.setups import CONVNETS, build_model, make_sampler  # noqa: F401 (CONVNETS: re-exported)
from metabook_learn.training import TrainConfig

__all__ = ["add_parser", "ALGORITHMS", "DATA_SETS", "PRESETS",  # noqa: F822 (ALGORITHMS, PRESETS: module __getattr__)
           "paper_defaults", "build_model", "make_sampler", "resolve_method"]

DATA_SETS = FEW_SHOT_DATA_SETS


def __getattr__(name: str):
    # Read from the registry when asked for, so that they include methods registered later. The methods
    # that learn from source domains (Method.domains: erm, mldg) are trained by their chapter, not here.
    if name == "ALGORITHMS":
        return method_names(domains=False)
    if name == "CLASSIFIERS":  # any number of ways with the same weights
        return method_names(any_ways=True)
    if name == "PRESETS":
        return {(group, data, setting): preset for group, presets in _preset_groups()
                for (data, setting), preset in presets.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _preset_groups() -> list[tuple[str, dict]]:
    """``[(names, presets)]``: the methods that share one table of presets (maml/fomaml/anil/metasgd) together."""
    groups: dict[int, tuple[list[str], dict]] = {}
    for method in all_methods():
        if method.presets:
            groups.setdefault(id(method.presets), ([], method.presets))[0].append(method.name)
    return [("/".join(group), presets) for group, presets in groups.values()]


def paper_defaults(algorithm: str, data: str, ways: int, shots: int,
                   train_shots: int | None = None) -> tuple[dict, str]:
    """The paper's TrainConfig values for this setting, and where they come from (the method's ``preset``).

    ``train_shots``: the training shots when they are given (R2-D2's queries depend on them).
    """
    values, source = get_method(algorithm).preset(data, ways, shots, train_shots)
    values = dict(values)
    if "train_ways" in values:
        values["train_ways"] = max(values["train_ways"], ways)  # never fewer classes than the tests have
    if data == "sinusoid":
        values["loss"] = "mse"
    return values, source


# ── train ────────────────────────────────────────────────────────────────────

# Options whose default comes from PRESETS (argparse default None = "not given").
_PRESET_OPTIONS = ("shots", "train_shots", "train_ways", "queries", "meta_batch", "inner_steps", "inner_lr",
                   "inner_optimizer", "inner_batch_size", "eval_inner_steps", "eval_inner_batch_size", "meta_lr",
                   "meta_lr_halving_every",
                   "clip_grad_norm",
                   "steps", "outer_step_size", "outer_step_size_final")


def _flags(names) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _either(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def resolve_method(name: str) -> Method:
    """The method ``--algorithm`` / ``--method`` names: a registered name, ``module:attr`` or ``file.py:attr``."""
    try:
        if ":" in name or name.endswith(".py"):
            return load_method(name)
        return get_method(name)
    except ValueError as error:
        raise UserError(str(error)) from None


def _check_request(args, method: Method) -> None:
    """One clear error for a data set the method cannot learn, or an option it has no use for."""
    name, data = method.name, args.data
    if not method.data_sets:
        raise UserError(f"{name} {method.data_hint or 'trains on no data set of the command line'}")
    if data not in DATA_SETS:
        raise UserError(f"unknown data set {data!r}; choose one of: {', '.join(DATA_SETS)}")
    if data not in method.data_sets:
        hint = method.data_hint or "learns other data sets"
        raise UserError(f"{name} {hint}; use --data {_either(method.data_sets)}")
    for unused, reason in method.unused_fields.items():
        given = [field for field in unused if getattr(args, field, None) not in (None, False)]
        if given:
            raise UserError(f"{reason.format(name=name)}: drop {_flags(given)}")
    if args.train_ways is not None and not method.any_ways:
        raise UserError(f"--train-ways is for {', '.join(method_names(any_ways=True))}, whose weights serve any "
                        f"number of ways; {name} trains and tests at --ways")
    if data == "sinusoid" and args.ways is not None:
        raise UserError("sinusoid tasks are regression, they have no classes: drop --ways")


def config_from_args(args) -> tuple[TrainConfig, str]:
    """The run's TrainConfig: the options given, the paper's values for the rest; and their source."""
    method = resolve_method(args.method or args.algorithm)
    _check_request(args, method)
    # Only a value left out takes the default: an explicit 0 was refused by the parser, never read as "not given".
    ways = 5 if args.ways is None else args.ways
    shots = (10 if args.data == "sinusoid" else 1) if args.shots is None else args.shots
    values, source = paper_defaults(method.name, args.data, ways, shots, args.train_shots)
    given = {name: getattr(args, name) for name in _PRESET_OPTIONS if getattr(args, name) is not None}
    values.update(given)
    values.setdefault("shots", shots)
    values.setdefault("queries", 15)
    if method.episodic:
        values.update(inner_steps=0, eval_inner_steps=0)  # recorded so: no inner loop
    config = TrainConfig(
        algorithm=method.name, dataset=args.data, ways=1 if args.data == "sinusoid" else ways,
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
    from metabook_learn.runtime import pick_device

    try:
        return pick_device(None if config.device == "auto" else config.device, verbose=False)
    except RuntimeError:  # a CUDA device without a GPU
        raise UserError(f"device {config.device!r} was asked for, but torch sees no CUDA GPU; "
                        "pass --device cpu (or auto), and unset METABOOK_DEVICE if it is set") from None


def _run_train(args) -> int:
    from metabook_learn.checkpoint import provenance, write_json
    from metabook_learn.evaluation import batch_norm_mode
    from metabook_learn.run_length import announce_run_length
    from metabook_learn.runtime import seed_everything
    from metabook_learn.training import train

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
                        "`python -m metabook_learn train`; evaluate it from Python with metabook_learn.evaluation.evaluate")
    unknown = sorted(set(state["config"]) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UserError(f"{checkpoint} was trained with options this metabook does not know ({', '.join(unknown)}), "
                        f"by metabook {state.get('metabook', 'of another version')}: evaluate it with the metabook "
                        "that wrote it, or train again")
    return TrainConfig(**state["config"])


def _same_origin(here: str, recorded: str) -> bool:
    """Whether two origins name the same method; a file by its name, wherever the run kept it."""
    if ".py:" in here and ".py:" in recorded:
        (file, attribute), (file_there, attribute_there) = here.rsplit(":", 1), recorded.rsplit(":", 1)
        return Path(file).name == Path(file_there).name and attribute == attribute_there
    return here == recorded


def checkpoint_method(state: dict, checkpoint: Path, spec: str | None = None) -> Method:
    """The method a checkpoint was trained with; refuses (``UserError``) to evaluate it as another one.

    A checkpoint written before methods were recorded names it by
    ``config["algorithm"]``. A method from outside the package is imported
    only from ``spec`` (``--method``), never from what the checkpoint names,
    so that evaluating a file runs no code the file chose; ``spec`` must then
    be the method the run recorded.
    """
    record = state.get("method") or {"name": state["config"]["algorithm"], "origin": None}
    name, recorded = record["name"], record.get("origin")
    if recorded and recorded.startswith("metabook."):  # written before the import was renamed metabook_learn
        recorded = "metabook_learn." + recorded.removeprefix("metabook.")
    try:
        if spec is not None:
            resolve_method(spec)
        method = get_method(name)
        here = method_origin(name)
    except (ValueError, UserError) as error:
        how = f"pass --method {recorded} to import it" if recorded and spec is None else "its method must be importable"
        raise UserError(f"{checkpoint} was trained with the method {name!r}{f' from {recorded}' if recorded else ''}, "
                        f"which is not registered here ({error}); {how}") from None
    if recorded and not _same_origin(here, recorded):
        raise UserError(f"{checkpoint} was trained with the method {name!r} from {recorded}, but {name!r} here comes "
                        f"from {here}; evaluate it with --method {recorded}")
    return method


def _build_trained_network(config: TrainConfig, state: dict, checkpoint: Path):
    """The network of the run, built by its method and loaded with the checkpoint's weights, or a ``UserError``."""
    # The weights of ProtoNets and R2-D2 do not depend on the number of ways: build for the tested one.
    model = build_model(config, config.ways)
    network = (state.get("method") or {}).get("network")
    built = type(model).__qualname__
    if network and network != built:
        raise UserError(f"{checkpoint} holds a {network}, but the method {config.algorithm!r} builds a {built}: "
                        "the run trained its own network under that method's name; evaluate it in Python with "
                        "metabook_learn.evaluate, or register its method (metabook_learn.methods) and train with --method")
    from metabook_learn.checkpoint import load_weights

    load_weights(model, state["model"], checkpoint)
    return model


def _run_evaluate(args) -> int:
    from metabook_learn.checkpoint import load_checkpoint, provenance, write_json
    from metabook_learn.evaluation import evaluate

    checkpoint = Path(args.checkpoint)
    try:
        state = load_checkpoint(checkpoint)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {checkpoint}; train one first: python -m metabook_learn train "
                        f"--algorithm ALGORITHM --data DATA --checkpoint {checkpoint}") from None
    trained = _trained_config(state, checkpoint)
    method = checkpoint_method(state, checkpoint, args.method)
    episodic = method.episodic
    if episodic and (args.inner_steps is not None or args.inner_batch_size is not None):
        raise UserError(f"{trained.algorithm} solves each task in one forward pass, with no fine-tuning steps: "
                        "drop --inner-steps and --inner-batch-size")
    if args.ways is not None and args.ways != trained.ways and not method.any_ways:
        what = "has no classes" if trained.dataset == "sinusoid" else f"has a {trained.ways}-output head"
        raise UserError(f"this {trained.algorithm} network {what}: drop --ways (only "
                        f"{', '.join(method_names(any_ways=True))} are tested at another number of ways)")
    overrides = {"device": args.device, "query_bn": args.query_bn, "eval_inner_steps": args.inner_steps,
                 "eval_inner_batch_size": args.inner_batch_size, "queries": args.queries, "shots": args.shots,
                 "ways": args.ways}
    try:  # the method's own check (TrainConfig.__post_init__) refuses what it cannot score: ProtoNets per-query
        config = replace(trained, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        raise UserError(str(error)) from None
    device = _device(config)
    model = _build_trained_network(config, state, checkpoint)
    model.to(device)
    lrs = None if state["lrs"] is None else {name: rate.to(device) for name, rate in state["lrs"].items()}
    sampler = make_sampler(config, args.split, args.seed, device, args.cache, args.mirror)
    began = time.perf_counter()
    result = evaluate(model, sampler, None if episodic else inner_loop(config, evaluation=True), args.tasks, lrs,
                      tasks_per_batch=args.tasks_per_batch, strategy=config.strategy, progress=not args.no_progress,
                      method=method)
    output = Path(args.output) if args.output else checkpoint.with_suffix(f".{args.split}.json")
    write_json(output, {
        "command": "evaluate",
        "checkpoint": str(checkpoint),
        "trained_steps": state["step"],
        "config": asdict(config),
        "evaluation": {"split": args.split, "ways": config.ways, "shots": config.shots,
                       "queries": config.queries, "seed": args.seed, **result.as_dict()},
        # Each task's score, in the order drawn: two checkpoints scored with the same seed and protocol saw the
        # same tasks, so their scores pair task by task (metabook_learn.evaluation.paired_difference).
        "per_task": [round(float(score), 6) for score in result.per_task],
        "wall_time_s": time.perf_counter() - began,
        "provenance": provenance(device),
    })
    print(f"{config.algorithm} on {config.dataset} {args.split}: {result}; results {output}")
    return 0


# ── The parsers ──────────────────────────────────────────────────────────────


def _presets_epilog() -> str:
    lines = ["Defaults when an option is left out (the papers' values):"]
    for group, presets in _preset_groups():
        for (data, setting), (values, source) in presets.items():
            shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in values.items())
            lines.append(f"  {group}, {data} {setting}".rstrip() + f": {shown}. Source: {source}.")
    methods = [m for m in all_methods() if m.data_sets]
    notes = list(dict.fromkeys(m.preset_notes for m in methods if m.preset_notes))
    networks = {}
    for method in methods:
        if method.build is not None and method.build.__doc__:
            first_line = method.build.__doc__.strip().splitlines()[0].replace("``", "")
            networks.setdefault(first_line, []).append(method.name)
    lines += [
        "  " + " ".join(notes) + " --train-ways is never below --ways. Elsewhere --ways 5, --shots 1 (sinusoid: "
        "10 points), --queries 15.",
        "  The networks: " + "; ".join(f"{'/'.join(group)}: {doc.rstrip('.')}" for doc, group in networks.items())
        + ".",
    ]
    return "\n".join(lines)


def _methods_help() -> str:
    return "; ".join(f"{m.name}: {m.description}" for m in all_methods() if m.data_sets)


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
        "train", help=f"meta-train one of {', '.join(method_names(domains=False))}, or a method of your own",
        description="Meta-train a network and write a resumable checkpoint and a JSON file of the run "
                    "(configuration, learning curve, provenance). The methods: " + _methods_help() + ".",
        epilog=_presets_epilog() + "\n\nExamples: python -m metabook_learn train --algorithm maml --data omniglot "
               "--steps 2000 --validate-every 500 --checkpoint runs/maml.pt\n"
               "          python -m metabook_learn train --algorithm protonet --data omniglot --ways 5 "
               "--checkpoint runs/protonet.pt   (60-way training episodes, validated 5-way)\n"
               "          python -m metabook_learn train --method my_protomaml.py:PROTOMAML --data omniglot "
               "--steps 200 --checkpoint runs/my-protomaml.pt   (a method in a file of your own: see the book's "
               "\"Add your own method\")",
        formatter_class=formatter,
    )
    train.add_argument("--algorithm", default=DEFAULT_ALGORITHM, metavar="NAME",
                       help=f"{', '.join(method_names(domains=False))} (default: {DEFAULT_ALGORITHM}), or any "
                            "method registered through the entry-point group metabook_learn.methods (see the "
                            "description above)")
    train.add_argument("--method", default=None, metavar="MODULE:ATTR",
                       help="a method of your own, a metabook_learn.methods.Method: module:attribute or "
                            "path/to/file.py:attribute (it replaces --algorithm; the checkpoint records it, and "
                            "evaluate imports it again); see the book's page 'Add your own method'")
    train.add_argument("--data", default="omniglot", metavar="NAME",
                       help=f"{', '.join(DATA_SETS)} (default: omniglot; mini-ImageNet has no download: "
                            "see `python -m metabook_learn data info mini-imagenet`)")
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
    train.add_argument("--eval-inner-batch-size", type=count_type("--eval-inner-batch-size"), default=None,
                       help="support examples per inner step at validation and test time (Reptile's --eval-batch); "
                            "default: the paper's, or the whole support set")
    train.add_argument("--meta-lr-halving-every", type=count_type("--meta-lr-halving-every"), default=None,
                       metavar="STEPS",
                       help="halve --meta-lr every STEPS steps (ProtoNets and R2-D2: 2000); default: the paper's, "
                            "or a constant rate")
    train.add_argument("--clip-grad-norm", type=rate_type("--clip-grad-norm"), default=None, metavar="NORM",
                       help="rescale the update direction when its norm exceeds NORM (the in-context transformer: "
                            "1); default: the preset's, or no clipping")
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
    train.add_argument("--query-bn", default="transductive", choices=INNER_LOOP_QUERY_BN_MODES,
                       help="batch norm of query sets: their own statistics (transductive, MAML's code; default), "
                            "the support set's (inductive), or the support set's with each query example alone "
                            "(per-query, Reptile's non-transductive test; inner-loop methods only)")
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
        epilog="Example: python -m metabook_learn evaluate --checkpoint runs/maml.pt --tasks 600",
        formatter_class=formatter,
    )
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help="a checkpoint written by train")
    evaluate.add_argument("--method", default=None, metavar="MODULE:ATTR",
                          help="the method of a run trained with train --method: the same module:attribute or "
                               "path/to/file.py:attribute (evaluate imports no code that a checkpoint names)")
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
    evaluate.add_argument("--inner-batch-size", type=count_type("--inner-batch-size"), default=None,
                          help="support examples per fine-tuning step (default: the run's --eval-inner-batch-size, "
                               "or the whole support set; not for the episodic learners)")
    evaluate.add_argument("--query-bn", default=None, choices=INNER_LOOP_QUERY_BN_MODES,
                          help="batch norm of query sets (default: the run's; per-query: inner-loop methods only)")
    evaluate.add_argument("--seed", type=count_type("--seed", 0), default=0,
                          help="seed of the test tasks (default 0: every run is tested on the same tasks)")
    evaluate.add_argument("--output", default=None, metavar="PATH",
                          help="JSON results file (default: the checkpoint's name with .SPLIT.json)")
    _data_options(evaluate)
    evaluate.set_defaults(run=_run_evaluate)
