"""What the full-scale scripts share: their command line, their results file, their summary.

Each ``scripts/full_scale_*.py`` keeps only its experiment: which runs there
are, how one run trains and is scored, and what the paper reports. This
module does the rest the same way for all of them:

* the options every script has (``--smoke``, ``--output``, ``--checkpoints``,
  ``--device``, ``--seed``, ``--cache``, ``--mirror``, ``--no-progress``, ...)
  and their defaults, which depend on ``--smoke`` (:func:`command_line`,
  :func:`settle`);
* the results file: :func:`open_results` keeps the runs already in it (an
  earlier call may have made other runs) and :func:`save` rewrites it
  atomically with :func:`metabook_learn.checkpoint.write_json` after every run, so
  that an interruption keeps the finished runs;
* what every run records (:func:`train_run`, :func:`run_record`: wall times,
  checkpoint, configuration and :func:`metabook_learn.checkpoint.provenance`) and
  the table printed at the end (:func:`print_table`).

Every results file has one schema, which the chapters' results cells and
``book/comparison.ipynb`` read::

    {"script": "scripts/full_scale_....py",
     "smoke": false,                     # true: written by --smoke, the numbers mean nothing
     ...,                                # fields of the whole experiment (settings, protocol, ...)
     "runs": {"<run>": {
         "test": {"metric": "accuracy", "mean": 0.987, "ci95": 0.004, "query_bn": "transductive", ...},
         "paper": "98.7 ± 0.4 (Finn et al., 2017, Table 1)",  # or why no published number compares
         "provenance": {"device_name": "NVIDIA H100 ...", "torch": ..., "git_commit": ..., ...},
         "training_wall_time_s": ..., "evaluation_wall_time_s": ..., "checkpoint": ..., "config": {...},
         ...}}}                          # the experiment's own details

``test`` is the run's headline score, in the form of
:meth:`metabook_learn.evaluation.Evaluation.as_dict` (``metric`` is ``"accuracy"``,
a fraction, or ``"mse"``; the meta-RL runs score ``"regret"`` or ``"return"``
with a t-interval over training seeds; ``mean`` and the half-width ``ci95`` of its 95%
confidence interval are in the metric's units). A run scored in several ways
(batch-norm modes, test settings, context sizes) keeps them all under
``tests`` and says which one is the headline in ``test_setting``.

The scripts are run as ``python scripts/full_scale_X.py`` and loaded by file
path in the tests; either way they import this module after putting their
own folder on ``sys.path``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from numbers import Real
from pathlib import Path

import torch

from metabook_learn.checkpoint import device_name, provenance, write_json
from metabook_learn.runtime import pick_device
from metabook_learn.training import TrainConfig, TrainResult, train

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("accuracy", "mse", "regret", "return")  # regret, return: the meta-RL runs


@dataclass(frozen=True)
class Script:
    """What one script's shared options and results file are: the rest of this module is the same for all.

    ``runs``: the names ``--runs`` chooses from (empty: the script has its own
    options for that). ``test_tasks``: the default of ``--test-tasks``, full
    and with ``--smoke`` (``None``: no such option). ``data``: whether it
    loads data sets (``--cache``, ``--mirror``); ``bf16``, ``seed``: whether
    it has those options. ``cpu_time``: how long its full runs would take on a
    CPU, for the warning a script that needs a GPU gives without one
    (``needs_gpu=False``: none).
    """

    file: str  # the script's __file__
    doc: str  # its docstring: --help shows the first paragraph, and all of it below the options
    results: str  # its results file's name, under results/
    smoke: str  # what --smoke does, for --help
    runs: tuple[str, ...] = ()
    test_tasks: tuple[int, int] | None = (600, 10)
    checkpoints: str = "runs/full_scale"
    data: bool = True
    bf16: bool = True
    seed: bool = True
    cpu_time: str = "days"
    needs_gpu: bool = True

    @property
    def name(self) -> str:
        """``scripts/full_scale_X.py``: how the results file names the script that wrote it."""
        return f"scripts/{Path(self.file).name}"


# ── The command line ─────────────────────────────────────────────────────────


def command_line(script: Script) -> argparse.ArgumentParser:
    """The options every script has; the script adds its own before parsing, then calls :func:`settle`."""
    parser = argparse.ArgumentParser(description=script.doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=script.doc)
    option = parser.add_argument
    if script.runs:
        option("--runs", nargs="+", default=list(script.runs), choices=script.runs, metavar="RUN",
               help="which runs (default: all of " + ", ".join(script.runs) + ")")
    option("--smoke", action="store_true", help=f"{script.smoke}, on any device, written to a temp folder")
    option("--output", type=Path, default=None,
           help=f"results file (default: results/{script.results}; with --smoke, a new temporary folder)")
    option("--checkpoints", type=Path, default=None,
           help=f"checkpoint folder (default: {script.checkpoints}; with --smoke, beside the output)")
    if script.test_tasks:
        full, smoke = script.test_tasks
        option("--test-tasks", type=int, default=None,
               help=f"test tasks behind each score (default {full}; with --smoke {smoke})")
    option("--device", default=None, help="cuda or cpu (default: the GPU when there is one)")
    if script.bf16:
        option("--bf16", action="store_true", help="bfloat16 autocast for the gradients (default: float32)")
    if script.seed:
        option("--seed", type=int, default=0, help="initialization and training-task seed (default 0)")
    if script.data:
        option("--cache", default=None, help="data cache folder (default: $METABOOK_DATA)")
        option("--mirror", default=None, help="read-only data mirror (default: $METABOOK_MIRROR)")
    option("--no-progress", action="store_true", help="no progress bars")
    return parser


def settle(args: argparse.Namespace, script: Script) -> torch.device:
    """Fill in the defaults that depend on ``--smoke``; return the device, warning when it is not a GPU."""
    if args.smoke and args.output is None:
        args.output = Path(tempfile.mkdtemp(prefix="metabook-smoke-")) / script.results
    args.output = args.output or ROOT / "results" / script.results
    args.checkpoints = args.checkpoints or (args.output.parent / "checkpoints" if args.smoke
                                            else Path(script.checkpoints))
    if script.test_tasks:
        args.test_tasks = args.test_tasks or script.test_tasks[args.smoke]
    device = pick_device(args.device)
    if device.type != "cuda" and not args.smoke and script.needs_gpu:
        print(f"warning: no GPU; the full-scale runs would take {script.cpu_time} on a CPU "
              "(use --smoke to test the script)", file=sys.stderr)
    return device


# ── The results file ─────────────────────────────────────────────────────────


def schema_problems(run: dict) -> list[str]:
    """What ``run`` lacks of the schema every results file follows (module docstring); empty when nothing."""
    problems = []
    test = run.get("test")
    if not isinstance(test, dict):
        problems.append("no 'test' score")
    else:
        if test.get("metric") not in METRICS:
            problems.append(f"'test' has metric {test.get('metric')!r}, not one of {METRICS}")
        problems += [f"'test' has no number {key!r}" for key in ("mean", "ci95")
                     if not isinstance(test.get(key), Real)]
    if not isinstance(run.get("paper"), str):
        problems.append("no 'paper' text")
    if not isinstance(run.get("provenance"), dict) or "device_name" not in run["provenance"]:
        problems.append("no 'provenance' with a 'device_name'")
    return problems


def open_results(args: argparse.Namespace, script: Script, **fields) -> dict:
    """The results file's content, with this call's ``script``, ``smoke`` and ``fields``.

    The runs already in the file are kept: they come from earlier calls with
    other runs, and this call adds or replaces its own. A file whose runs do
    not follow the schema (an older script's) stops the script at once, with
    the reason, rather than after hours of training.
    """
    results = json.loads(args.output.read_text()) if args.output.is_file() else {"runs": {}}
    for name, run in results["runs"].items():
        problems = schema_problems(run)
        if problems:
            raise SystemExit(f"{args.output} holds run {name!r} in another format ({'; '.join(problems)}); "
                             "write to another --output")
    results.update(script=script.name, smoke=args.smoke, **fields)
    return results


def save(results: dict, output: Path) -> None:
    """Rewrite the results file atomically: call it after every run, so that an interruption keeps the finished ones."""
    for name, run in results["runs"].items():
        problems = schema_problems(run)
        if problems:
            raise ValueError(f"run {name!r} does not follow the results schema: {'; '.join(problems)}")
    write_json(output, results)


# ── One run ──────────────────────────────────────────────────────────────────


def train_run(label: str, config: TrainConfig, model: torch.nn.Module, sampler, val_sampler, checkpoint: Path,
              args: argparse.Namespace, unit: str = "meta-steps") -> TrainResult:
    """:func:`metabook_learn.training.train`, resuming from ``checkpoint`` (a finished run only loads its weights)."""
    print(f"\n{label}: {config.steps} {unit} on {device_name(config.device)}", flush=True)
    return train(config, model, sampler, val_sampler, checkpoint, resume=True, progress=not args.no_progress)


def test_record(evaluation, split: str, seed: int, ways: int, shots: int, queries: int) -> dict:
    """A run's ``test`` entry: the score (:meth:`metabook_learn.evaluation.Evaluation.as_dict`), the exact protocol that
    re-draws its test tasks (``metabook_learn.pretrained.evaluate`` reads it), and the per-task scores, for paired
    comparisons of methods on the same tasks."""
    return {**evaluation.as_dict(),
            "protocol": {"split": split, "seed": seed, "num_tasks": evaluation.num_tasks, "ways": ways,
                         "shots": shots, "queries": queries, "query_bn": evaluation.query_bn,
                         "inner_steps": evaluation.inner_steps, "tasks_per_batch": evaluation.tasks_per_batch},
            "per_task": [round(float(score), 6) for score in evaluation.per_task]}


SCORED_AGAIN = ("scored again from the finished checkpoint, nothing trained: 'provenance' and "
                "'training_wall_time_s' are the training's, this block the scoring's")


def run_record(trained: TrainResult, config: TrainConfig, checkpoint: Path, evaluation_began: float,
               previous: dict | None = None, **fields) -> dict:
    """A run's entry in the results file: its own ``fields`` (``test``, ``paper``, ...), then what every run records.

    ``evaluation_began``: ``time.perf_counter()`` when scoring began. ``previous``: the run's entry already in the
    results file. A finished run only scored again (its checkpoint loaded, no step trained) keeps the training's
    ``provenance`` from it and records this scoring's in ``scored_again``, so a re-scored row never claims that the
    machine and commit that scored it trained it.
    """
    record = {
        **fields,
        # The learning curve's validation points, with training time: the results page plots them.
        "curve": [asdict(point) for point in trained.curve if point.validation is not None],
        "training_wall_time_s": trained.wall_time_s,
        "evaluation_wall_time_s": time.perf_counter() - evaluation_began,
        "checkpoint": str(checkpoint),
        "config": asdict(config),
        "provenance": provenance(config.device),
    }
    scored_only = trained.resumed_from is not None and trained.resumed_from == trained.steps_done
    if scored_only and previous and "provenance" in previous:
        record["scored_again"] = {"note": SCORED_AGAIN, "provenance": record["provenance"],
                                  "evaluation_wall_time_s": record["evaluation_wall_time_s"]}
        record["provenance"] = previous["provenance"]
    return record


# ── The summary ──────────────────────────────────────────────────────────────


def score(test: dict) -> str:
    """A score and its 95% CI half-width: ``98.70 ± 0.40`` (accuracy, in %) or ``0.123 ± 0.004`` (MSE)."""
    if test["metric"] == "accuracy":
        return f"{100 * test['mean']:.2f} ± {100 * test['ci95']:.2f}"
    return f"{test['mean']:.3f} ± {test['ci95']:.3f}"


def paper_number(run: dict) -> str:
    """The published number alone, without its source: ``98.7 ± 0.4``."""
    return run["paper"].split(" (")[0]


def print_table(header: list[str], rows: list[list[str]], output: Path, title: str | None = None,
                notes: list[str] = (), text_columns: int = 1) -> None:
    """The summary at the end of a script: a table (the first ``text_columns`` left-aligned, the numbers right),
    notes under it, and where the results file is."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(cell.ljust(width) if i < text_columns else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    print("\n" + "\n".join([*([title] if title else []), line(header), *map(line, rows), *notes]))
    print(f"results: {output}")
