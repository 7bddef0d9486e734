"""scripts/seeded_comparison.py: methods trained with several seeds, scored on the same test tasks, compared paired.

Its smoke run trains every method for 3 steps per seed; the test splits it over two output files as two
processes would, merges them, recomputes the summary, and checks that summary against the per-task scores
directly (mean of per-seed differences, t-interval with n − 1 degrees of freedom), and that the results page
turns it into one row per method with the interval over seeds.
"""
import json
import math

import pytest

from metabook_learn.report import markdown_table, result_rows


@pytest.fixture(scope="module")
def merged(tmp_path_factory, real_mirror, real_cache, load_script_for_module):
    script = load_script_for_module("seeded_comparison")
    merge = load_script_for_module("merge_results")
    folder = tmp_path_factory.mktemp("seeded")
    common = ["--smoke", "--no-progress", "--device", "cpu", "--cache", str(real_cache), "--mirror",
              str(real_mirror), "--checkpoints", str(folder / "checkpoints")]
    assert script.main([*common, "--runs", "maml", "protonet", "--output", str(folder / "a.json")]) == 0
    assert script.main([*common, "--runs", "protomaml", "--output", str(folder / "b.json")]) == 0
    results = folder / "results"
    results.mkdir()
    for name in ("a.json", "b.json"):  # as merge_results.py would, but smoke files are refused there
        data = json.loads((folder / name).read_text())
        data["smoke"] = False
        (folder / name).write_text(json.dumps(data))
        assert merge.main([str(folder / name)], folder=results) == 0
    target = results / "protomaml_comparison.json"
    assert script.main(["--summarize", "--output", str(target), "--device", "cpu"]) == 0
    return script, json.loads(target.read_text()), results


def test_every_method_has_three_seeds_scored_on_the_same_tasks(merged):
    _, results, _ = merged
    assert sorted(results["runs"]) == sorted(f"{m}-seed{s}" for m in ("maml", "protomaml", "protonet") for s in (0, 1, 2))
    same_tasks = ("split", "seed", "num_tasks", "ways", "shots", "queries", "query_bn")
    protocols = {tuple(run["test"]["protocol"][key] for key in same_tasks) for run in results["runs"].values()}
    assert len(protocols) == 1  # one test protocol: the same tasks for every run (the inner steps are the method's)
    seeds = {run["method"]: set() for run in results["runs"].values()}
    for run in results["runs"].values():
        seeds[run["method"]].add(run["config"]["seed"])
    assert all(found == {0, 1, 2} for found in seeds.values())


def test_the_paired_summary_equals_a_direct_computation(merged):
    _, results, _ = merged
    for mode in ("transductive", "inductive"):
        a = [results["runs"][f"maml-seed{s}"]["tests"][mode]["per_task"] for s in (0, 1, 2)]
        b = [results["runs"][f"protonet-seed{s}"]["tests"][mode]["per_task"] for s in (0, 1, 2)]
        differences = [sum(x - y for x, y in zip(row_a, row_b)) / len(row_a) for row_a, row_b in zip(a, b)]
        mean = sum(differences) / 3
        std = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
        paired = results["summary"]["paired"]["maml - protonet"][mode]
        assert paired["mean"] == pytest.approx(mean, abs=1e-12)
        assert paired["half_width"] == pytest.approx(4.302653 * std / math.sqrt(3), rel=1e-5)  # t(0.975, 2)


def test_the_results_page_shows_one_row_per_method_with_the_interval_over_seeds(merged):
    _, results, folder = merged
    rows = result_rows(folder)
    assert [row.method for row in rows] == ["maml", "protomaml", "protonet"]
    for row in rows:
        summary = results["summary"]["by_method"][row.method]["transductive"]
        assert (row.seeds, row.score, row.ci95) == (3, summary["mean"], summary["half_width"])
        assert row.protocol.endswith("± over 3 seeds") and "short budget" in row.differences
    assert "| protomaml | protomaml (seeds 0, 1, 2) |" in markdown_table(rows)
