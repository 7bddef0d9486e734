"""The book's results page, from the files in ``results/``: paper against metabook for every full-scale run.

Every ``scripts/full_scale_*.py`` writes one results file with one schema
(``scripts/full_scale_common.py``): per run a headline ``test`` score (mean
and the half-width of a 95% confidence interval over test tasks), the
``paper``'s number with its source, the configuration, the provenance
(hardware, torch, commit) and the wall times. :func:`result_rows` reads them
all into :class:`ResultRow` s, :func:`markdown_table` writes the table the
results page shows, and :func:`plot_against_training_time` draws validation
accuracy against training time for every run that recorded its curve.

What a ``±`` means here: for a row of one training run (``seeds`` 1), the
95% interval of the mean over the test tasks of that run (task-sampling
noise), not the spread over training seeds. A results file of runs repeated
over seeds (``scripts/seeded_comparison.py``: a ``summary`` with
``by_method``) gives one row per method instead: the mean over its seeds and
the 95% t-interval over seeds, which includes the spread between training runs.
A file of domain-generalization runs (``scripts/full_scale_mldg.py``: a
``summary`` with ``held_out`` domains) gives one row per algorithm and held-out
domain, likewise over seeds.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResultRow", "UNAVAILABLE", "result_rows", "markdown_table", "plot_against_training_time", "run_hardware"]

# Data sets the full-scale scripts cannot run here, and why: rows that say so instead of being left out.
UNAVAILABLE = {
    "mini-ImageNet": "no download: its images come from ImageNet, whose licence forbids redistribution; "
                     "metabook's loader reads a copy you have (tested on a fixture in the real format)",
    "CIFAR-FS": "no mirror here (CIFAR-100 is a 160 MB download); the loader is tested on a fixture in the real format",
}


@dataclass
class ResultRow:
    """One full-scale run: ``score`` and ``ci95`` in the metric's units (accuracy as a fraction, or MSE)."""

    source: str  # results file
    run: str
    method: str
    setting: str
    metric: str
    score: float
    ci95: float
    paper: str
    protocol: str  # how it was scored: test tasks, queries per class, batch norm
    differences: str  # where the setup differs from the paper's
    seeds: int
    steps: int
    hardware: str
    training_minutes: float  # per training run: a row over seeds gives the mean per seed
    curve: list[tuple[float, float]]  # (training minutes, validation score), when recorded


def _protocol(test: dict, config: dict) -> str:
    queries = test.get("protocol", {}).get("queries", config.get("queries"))
    parts = [f"{test['num_tasks']} tasks"]
    if test["metric"] == "accuracy" and queries:
        parts.append(f"{queries} {'query' if queries == 1 else 'queries'}/class")
    if test.get("query_bn", "none") != "none":
        parts.append(f"{test['query_bn']} BN")
    if test.get("inner_steps"):
        parts.append(f"{test['inner_steps']} test steps")
    return ", ".join(parts)


def _curve(run: dict) -> list[tuple[float, float]]:
    return [(point["training_s"] / 60, point["validation"]) for point in run.get("curve", [])
            if point.get("validation") is not None and point.get("training_s") is not None]


def result_rows(folder: str | Path = "results") -> list[ResultRow]:
    """Every run of every ``*.json`` results file in ``folder`` (smoke-test files skipped), sorted by file and run."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        results = json.loads(path.read_text())
        if results.get("smoke") or "runs" not in results:
            continue
        if "by_method" in results.get("summary", {}):
            rows += _seeded_rows(path.name, results)
            continue
        if any("held_out" in entry for entry in results.get("summary", {}).values()):
            rows += _held_out_rows(path.name, results)
            continue
        for name, run in results["runs"].items():
            config, hardware = run["config"], run_hardware(run)
            seeds = run.get("seeds", [config.get("seed")])  # a list of seeds, or (meta-RL) their number
            seeds = seeds if isinstance(seeds, int) else len(seeds)
            # A run may also be scored as its paper's other protocol (Reptile without transduction): a row each.
            scored = [(run["test"], run["paper"], _curve(run))]
            if "test_per_query" in run:
                scored.append((run["test_per_query"], run["paper_per_query"], []))
            for test, paper, curve in scored:
                rows.append(ResultRow(
                    source=path.name, run=name,
                    method=run.get("algorithm") or config.get("algorithm") or name.split("-")[0],  # meta-RL: rl2-n10
                    setting=": ".join(filter(None, (run.get("setting"), run.get("test_setting"))))
                    or config.get("dataset", ""),
                    metric=test["metric"], score=test["mean"], ci95=test["ci95"], paper=paper,
                    # A headline over training seeds (meta-RL, in-context runs) carries its per-seed values.
                    protocol=_protocol(test, config) + (f"; ± over {len(test['per_seed'])} seeds (95% t-interval)"
                                                        if len(test.get("per_seed", [])) > 1 else ""),
                    differences=run.get("deviations_from_paper", ""),
                    seeds=seeds, steps=config.get("steps", config.get("iterations", 0)), hardware=hardware,
                    # a run over seeds records its total training time: the column is per seed everywhere
                    training_minutes=run["training_wall_time_s"] / 60 / seeds, curve=curve))
    return rows


def _hardware(where: dict) -> str:
    return where["device_name"] + (f", {where['cpu_threads']} threads" if "cpu_threads" in where else "")


def run_hardware(run: dict) -> str:
    """Where a run trained: the machine of each seed that records its own provenance (seeds trained in different
    sessions may differ), else the run's."""
    seeds = run.get("seeds")
    own = [entry["provenance"] for entry in seeds if isinstance(entry, dict) and "provenance" in entry] \
        if isinstance(seeds, list) else []
    return " and ".join(dict.fromkeys(_hardware(where) for where in own or [run["provenance"]]))


def _seeded_rows(source: str, results: dict) -> list[ResultRow]:
    """One row per method of a file of seeded runs: its mean over seeds and the t-interval over seeds."""
    rows = []
    for method, modes in results["summary"]["by_method"].items():
        runs = [run for run in results["runs"].values() if run.get("method") == method]
        headline = runs[0]["test_setting"]
        summary = modes[headline]
        test, config = runs[0]["test"], runs[0]["config"]
        rows.append(ResultRow(
            source=source, run=f"{method} (seeds {', '.join(str(run['seed']) for run in runs)})", method=method,
            setting=runs[0]["setting"], metric=test["metric"], score=summary["mean"], ci95=summary["half_width"],
            paper=runs[0]["paper"], protocol=_protocol(test, config) + f"; ± over {summary['seeds']} seeds",
            differences=results.get("deviations_from_paper", ""), seeds=summary["seeds"], steps=config["steps"],
            hardware=_hardware(runs[0]["provenance"]),
            training_minutes=sum(run["training_wall_time_s"] for run in runs) / len(runs) / 60, curve=[]))
    return rows


def _held_out_rows(source: str, results: dict) -> list[ResultRow]:
    """Domain generalization (``scripts/full_scale_mldg.py``): a row per algorithm and held-out domain, over seeds."""
    rows = []
    for method, summary in results["summary"].items():
        for domain, spread in summary["held_out"].items():
            runs = [run for run in results["runs"].values()
                    if run["algorithm"] == method and str(run["held_out"]) == domain]
            config, test = runs[0]["config"], runs[0]["test"]
            rows.append(ResultRow(
                source=source, run=f"{method}, held out {domain}", method=method, setting=config.get("dataset", ""),
                metric=test["metric"], score=spread["mean"],
                ci95=spread["half_width"] if spread["half_width"] is not None else float("nan"), paper=runs[0]["paper"],
                protocol=f"{test['num_examples']} held-out examples, no adaptation; "
                         + (f"± over {spread['seeds']} seeds (95% t-interval)" if spread["seeds"] > 1
                            else "one seed so far: no interval"),
                differences=results.get("deviations_from_paper", ""), seeds=spread["seeds"], steps=config["steps"],
                hardware=_hardware(runs[0]["provenance"]),
                training_minutes=sum(run["training_wall_time_s"] for run in runs) / len(runs) / 60, curve=[]))
    return rows


def _score(row: ResultRow) -> str:
    if math.isnan(row.ci95):  # a row over seeds with one seed so far: a t-interval needs two
        return f"{100 * row.score:.2f}% (no interval)" if row.metric == "accuracy" else f"{row.score:.3f} (no interval)"
    if row.metric == "accuracy":
        return f"{100 * row.score:.2f} ± {100 * row.ci95:.2f}%"
    return f"{row.score:.3f} ± {row.ci95:.3f} ({'MSE' if row.metric == 'mse' else row.metric})"


def markdown_table(rows: list[ResultRow], unavailable: dict[str, str] = UNAVAILABLE) -> str:
    """The results page's table: one line per run, then one per data set that cannot be run here."""
    header = ["method", "run", "setting", "metabook", "paper", "scored on", "seeds", "steps", "trained on",
              "training", "differs from the paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.method, row.run, row.setting, _score(row), row.paper, row.protocol, str(row.seeds),
                 f"{row.steps:,}", row.hardware, f"{row.training_minutes:.0f} min", row.differences or "—"]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    for data, why in unavailable.items():
        lines.append("| " + " | ".join(["every method", "—", data, "not run", "—", "—", "—", "—", "—", "—", why])
                     + " |")
    return "\n".join(lines)


def plot_against_training_time(rows: list[ResultRow], ax) -> None:
    """Validation accuracy against training minutes, one line per run that recorded its curve (matplotlib ``ax``)."""
    for row in rows:
        if row.curve and row.metric == "accuracy":
            minutes, scores = zip(*row.curve)
            ax.plot(minutes, [100 * s for s in scores], marker=".", label=row.run)
    ax.set_xlabel("training time (minutes, wall clock)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize="small")
