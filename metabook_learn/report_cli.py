"""``python -m metabook_learn report RUN...``: a table and a plot of one or several runs of the command line.

A RUN is what ``python -m metabook_learn train`` and ``evaluate`` wrote: a
checkpoint (``runs/maml.pt``), its training record (``runs/maml.train.json``)
or an evaluation (``runs/maml.test.json``); given any of them, the others
beside it are found by name. The table has one line per run: its method and
setting, steps, last validation score and, when it was evaluated, the test
score with its 95% confidence interval and how it was scored. ``--plot``
writes a PNG of the learning curves (meta-loss and validation score against
meta-steps) and the test scores with their intervals.

Two test scores are comparable only when they were measured the same way: the
report warns when the runs were evaluated under different protocols (split,
ways, shots, queries, batch-norm mode, number of tasks, seed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from metabook_learn.errors import UserError

__all__ = ["RunReport", "read_run", "protocol_differences", "add_parser"]

PROTOCOL = ("split", "ways", "shots", "queries", "query_bn", "num_tasks", "seed")


@dataclass
class RunReport:
    """What the files of one run say. ``training``, ``evaluation``: their JSON, or ``None`` when absent."""

    name: str
    training: dict | None
    evaluation: dict | None

    @property
    def config(self) -> dict:
        return (self.training or self.evaluation)["config"]

    @property
    def protocol(self) -> dict | None:
        if self.evaluation is None:
            return None
        scored = self.evaluation["evaluation"]
        return {key: scored.get(key) for key in PROTOCOL}


def _stem(path: Path) -> Path:
    """``runs/maml`` for ``runs/maml.pt``, ``runs/maml.train.json`` or ``runs/maml.test.json``."""
    name = path.name
    for suffix in (".train.json", ".pt"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    if name.endswith(".json") and name.count(".") >= 2:  # NAME.SPLIT.json, from evaluate
        return path.with_name(name.split(".")[0])
    return path.with_suffix("")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a readable JSON file of metabook ({type(error).__name__}); "
                        "give a checkpoint or the JSON that train or evaluate wrote") from None


def read_run(path: str | Path) -> RunReport:
    """The training record and the newest evaluation beside ``path`` (a checkpoint or either JSON file)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no run at {path}: give a checkpoint (.pt) or a .train.json / .test.json file")
    stem = _stem(path)
    training_path = stem.with_name(stem.name + ".train.json")
    training = _read_json(training_path) if training_path.is_file() else None
    if path.suffix == ".json" and path != training_path:
        evaluations = [path]
    else:
        evaluations = sorted(stem.parent.glob(stem.name + ".*.json"), key=lambda p: p.stat().st_mtime)
        evaluations = [p for p in evaluations if p != training_path]
    evaluation = _read_json(evaluations[-1]) if evaluations else None
    if training is None and evaluation is None:
        raise UserError(f"found neither {training_path.name} nor an evaluation beside {path}; train or evaluate "
                        "with the command line first")
    for content, what in ((training, "train"), (evaluation, "evaluate")):
        if content is not None and content.get("command") != what:
            raise UserError(f"a file of run {stem.name} was not written by 'python -m metabook_learn {what}'")
    return RunReport(stem.name, training, evaluation)


def protocol_differences(runs: list[RunReport]) -> list[str]:
    """The protocol fields on which the evaluated runs differ, each as ``"queries: 1 (a), 15 (b)"``."""
    evaluated = [run for run in runs if run.protocol is not None]
    differences = []
    for key in PROTOCOL:
        values = {run.name: run.protocol[key] for run in evaluated}
        if len(set(map(str, values.values()))) > 1:
            differences.append(f"{key}: " + ", ".join(f"{value} ({name})" for name, value in values.items()))
    return differences


def _row(run: RunReport) -> list[str]:
    config = run.config
    setting = (f"{config['dataset']} {config['shots']}-shot" if config["dataset"] == "sinusoid"
               else f"{config['dataset']} {config['ways']}-way {config['shots']}-shot")
    steps = str(run.training["steps_done"]) if run.training else "?"
    last = (run.training or {}).get("final_validation")
    validation = f"{last['value']:.4f} ({last['metric']})" if last else "—"
    if run.evaluation is None:
        test = "not evaluated"
    else:
        scored = run.evaluation["evaluation"]
        scale, unit = (100, "%") if scored["metric"] == "accuracy" else (1, " MSE")
        test = (f"{scale * scored['mean']:.2f} ± {scale * scored['ci95']:.2f}{unit} "
                f"({scored['num_tasks']} {scored['split']} tasks, {scored['queries']} queries, {scored['query_bn']})")
    return [run.name, config["algorithm"], setting, steps, validation, test]


def table(runs: list[RunReport]) -> str:
    header = ["run", "method", "setting", "steps", "last validation", "test (95% CI over tasks)"]
    rows = [header, *map(_row, runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def plot(runs: list[RunReport], output: Path) -> None:
    """Learning curves and test scores of ``runs``, as a PNG at ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_ax, validation_ax, test_ax) = plt.subplots(1, 3, figsize=(14, 4))
    for run in runs:
        curve = (run.training or {}).get("curve", [])
        losses = [(p["step"], p["meta_loss"]) for p in curve if p.get("meta_loss") is not None]
        validations = [(p["step"], p["validation"]) for p in curve if p.get("validation") is not None]
        if losses:
            loss_ax.plot(*zip(*losses), label=run.name)
        if validations:
            validation_ax.plot(*zip(*validations), marker=".", label=run.name)
    evaluated = [run for run in runs if run.evaluation is not None]
    scores = [run.evaluation["evaluation"] for run in evaluated]
    test_ax.errorbar(range(len(scores)), [s["mean"] for s in scores], yerr=[s["ci95"] for s in scores],
                     fmt="o", capsize=4)
    test_ax.set_xticks(range(len(scores)), [run.name for run in evaluated], rotation=20)
    loss_ax.set(xlabel="meta-step", ylabel="meta-loss (query loss after adaptation)", title="training")
    validation_ax.set(xlabel="meta-step", ylabel="validation score", title="validation")
    test_ax.set(ylabel="test score (95% CI over tasks)", title="test")
    for ax in (loss_ax, validation_ax):
        if ax.lines:
            ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)


def _run_report(args) -> int:
    import sys

    runs = [read_run(path) for path in args.runs]
    print(table(runs))
    differences = protocol_differences(runs)
    if differences:
        print("warning: these runs were evaluated under different protocols, so their test scores do not compare "
              "directly: " + "; ".join(differences), file=sys.stderr)
    if args.plot:
        plot(runs, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def add_parser(subparsers) -> None:
    """Register ``report`` with the command line's ``subparsers`` (:mod:`metabook_learn.cli`)."""
    report = subparsers.add_parser(
        "report", help="a table and a plot of runs of train and evaluate",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    report.add_argument("runs", nargs="+", metavar="RUN",
                        help="a checkpoint, or the .train.json / .test.json that train or evaluate wrote")
    report.add_argument("--plot", default=None, metavar="PNG",
                        help="also write learning curves and test scores to this PNG file")
    report.set_defaults(run=_run_report)
