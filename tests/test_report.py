"""The results page's table: read from results files of the full-scale scripts' schema."""
import json

import pytest

from metabook_learn.report import UNAVAILABLE, markdown_table, result_rows


def write_results(folder, name, smoke=False):
    run = {"algorithm": "maml", "setting": "Omniglot 5-way 1-shot", "paper": "98.7 ± 0.4 (Finn et al., 2017)",
           "test": {"metric": "accuracy", "mean": 0.98, "ci95": 0.004, "num_tasks": 600, "query_bn": "transductive",
                    "inner_steps": 3, "protocol": {"queries": 1}},
           "config": {"algorithm": "maml", "steps": 10_000, "seed": 0, "queries": 1},
           "provenance": {"device_name": "a CPU", "cpu_threads": 1},
           "training_wall_time_s": 600.0,
           "curve": [{"step": 1000, "validation": 0.9, "training_s": 120.0},
                     {"step": 2000, "validation": None, "training_s": 240.0}]}
    (folder / name).write_text(json.dumps({"script": "x", "smoke": smoke, "runs": {"maml-5way-1shot": run}}))


def test_every_run_becomes_a_row_and_smoke_files_are_skipped(tmp_path):
    write_results(tmp_path, "gradient_based.json")
    write_results(tmp_path, "smoke.json", smoke=True)
    (row,) = result_rows(tmp_path)
    assert (row.run, row.method, row.score, row.seeds, row.steps) == ("maml-5way-1shot", "maml", 0.98, 1, 10_000)
    assert row.protocol == "600 tasks, 1 query/class, transductive BN, 3 test steps"
    assert row.curve == [(2.0, 0.9)] and row.training_minutes == 10.0


def test_the_table_shows_the_score_its_interval_the_paper_and_the_data_sets_not_run(tmp_path):
    write_results(tmp_path, "gradient_based.json")
    table = markdown_table(result_rows(tmp_path))
    assert "| maml | maml-5way-1shot | Omniglot 5-way 1-shot | 98.00 ± 0.40% | 98.7 ± 0.4 (Finn et al., 2017) |" in table
    for data in UNAVAILABLE:
        assert f"| {data} | not run |" in table


def test_the_report_command_tables_and_plots_runs_and_warns_when_protocols_differ(tmp_path, capsys):
    from metabook_learn.cli import main

    common = ["--data", "sinusoid", "--steps", "4", "--meta-batch", "2", "--validate-every", "2",
              "--validation-tasks", "3", "--no-progress", "--device", "cpu"]
    for name, algorithm in (("a", "maml"), ("b", "fomaml")):
        assert main(["train", "--algorithm", algorithm, "--checkpoint", str(tmp_path / f"{name}.pt"), *common]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "a.pt"), "--tasks", "4", "--no-progress"]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "b.pt"), "--tasks", "4", "--queries", "3",
                 "--no-progress"]) == 0
    capsys.readouterr()
    plot = tmp_path / "report.png"
    assert main(["report", str(tmp_path / "a.pt"), str(tmp_path / "b.test.json"), "--plot", str(plot)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "method", "setting"]
    assert lines[1].startswith("a ") and "maml" in lines[1] and "4 test tasks, 10 queries" in lines[1]
    assert lines[2].startswith("b ") and "fomaml" in lines[2] and "3 queries" in lines[2]
    assert "different protocols" in err and "queries: 10 (a), 3 (b)" in err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_command_refuses_what_is_not_a_run_in_one_line(tmp_path, capsys):
    from metabook_learn.cli import main

    junk = tmp_path / "junk.train.json"
    junk.write_bytes(b"\x00not json")
    assert main(["report", str(junk)]) == 1
    assert main(["report", str(tmp_path / "missing.pt")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not a readable JSON file" in err[0] and "no run at" in err[1]


def test_merging_results_keeps_the_other_runs_and_refuses_smoke_files(tmp_path, load_script):
    import pytest

    merge = load_script("merge_results")
    folder, out = tmp_path / "results", tmp_path / "out"
    folder.mkdir(), out.mkdir()
    write_results(out, "a.json")
    first = json.loads((out / "a.json").read_text())
    first["script"] = "scripts/full_scale_gradient.py"
    first["runs"]["maml-5way-1shot"]["test"]["metric"] = "accuracy"
    (folder / "gradient_based.json").write_text(json.dumps(
        {"script": first["script"], "runs": {"fomaml-5way-1shot": first["runs"]["maml-5way-1shot"]}}))
    (out / "a.json").write_text(json.dumps(first))
    assert merge.main([str(out / "a.json")], folder=folder) == 0
    merged = json.loads((folder / "gradient_based.json").read_text())
    assert sorted(merged["runs"]) == ["fomaml-5way-1shot", "maml-5way-1shot"]
    first["smoke"] = True
    (out / "a.json").write_text(json.dumps(first))
    with pytest.raises(SystemExit, match="--smoke"):
        merge.main([str(out / "a.json")], folder=folder)


def test_merging_finds_every_full_scale_script_s_results_file(load_script):
    from pathlib import Path

    merge = load_script("merge_results")
    scripts = sorted(Path(merge.ROOT, "scripts").glob("full_scale_*.py")) + [Path(merge.ROOT, "scripts", "seeded_comparison.py")]
    names = {script.name: merge.results_file(f"scripts/{script.name}", Path("results")).name
             for script in scripts if script.name != "full_scale_common.py"}
    assert names["full_scale_meta_rl.py"] == "meta_rl.json" and names["seeded_comparison.py"] == "protomaml_comparison.json"
    assert all(name.endswith(".json") for name in names.values()), names


def test_a_run_scored_also_as_its_papers_other_protocol_gets_a_row_for_each(tmp_path):
    write_results(tmp_path, "gradient_based.json")
    path = tmp_path / "gradient_based.json"
    results = json.loads(path.read_text())
    run = results["runs"]["maml-5way-1shot"]
    run.update(test_per_query={**run["test"], "mean": 0.95, "query_bn": "per-query"},
               paper_per_query="95.39 ± 0.09 (without transduction)")
    path.write_text(json.dumps(results))
    transductive, per_query = result_rows(tmp_path)
    assert (transductive.score, transductive.paper) == (0.98, run["paper"])
    assert (per_query.score, per_query.paper, per_query.curve) == (0.95, "95.39 ± 0.09 (without transduction)", [])
    assert per_query.protocol == "600 tasks, 1 query/class, per-query BN, 3 test steps"


def test_a_run_whose_seeds_trained_on_different_machines_names_each(tmp_path):
    write_results(tmp_path, "in_context.json")
    path = tmp_path / "in_context.json"
    results = json.loads(path.read_text())
    run = results["runs"]["maml-5way-1shot"]
    run["seeds"] = [{"seed": 0, "provenance": {"device_name": "an Intel CPU", "cpu_threads": 1}},
                    {"seed": 1, "provenance": {"device_name": "an AMD CPU", "cpu_threads": 1}},
                    {"seed": 2, "provenance": {"device_name": "an AMD CPU", "cpu_threads": 1}}]
    path.write_text(json.dumps(results))
    (row,) = result_rows(tmp_path)
    assert row.hardware == "an Intel CPU, 1 threads and an AMD CPU, 1 threads" and row.seeds == 3


def test_meta_rl_runs_become_rows_too(tmp_path):
    run = {"test": {"metric": "regret", "num_tasks": 2000, "mean": 32.2, "ci95": 2.2, "per_seed": [31.6, 31.7, 33.2]},
           "paper": "none copied", "config": {"arms": 5, "horizon": 100, "iterations": 1500},
           "seeds": [0, 1, 2], "provenance": {"device_name": "a CPU", "cpu_threads": 1}, "training_wall_time_s": 60.0}
    maml = {**run, "test": {**run["test"], "metric": "return"}, "seeds": 3, "config": {"iterations": 500}}
    (tmp_path / "meta_rl.json").write_text(json.dumps({"script": "x", "smoke": False,
                                                       "runs": {"rl2-n100": run, "maml-nav": maml}}))
    rl2, nav = sorted(result_rows(tmp_path), key=lambda row: row.run, reverse=True)
    assert (rl2.method, rl2.seeds, rl2.steps, rl2.metric) == ("rl2", 3, 1500, "regret")
    assert (nav.method, nav.seeds, nav.steps) == ("maml", 3, 500)
    assert rl2.training_minutes == nav.training_minutes == 60.0 / 60 / 3, "the training column is per seed"
    assert "32.200 ± 2.200 (regret)" in markdown_table([rl2])


def test_domain_generalization_runs_become_one_row_per_algorithm_and_held_out_domain(tmp_path, load_script):
    """mldg.json: rows over seeds from the summary (mean, t-interval), not one row per seed."""
    script = load_script("full_scale_mldg")
    runs = {}
    for seed, (erm, mldg) in enumerate([(0.95, 0.96), (0.94, 0.97), (0.96, 0.965)]):
        for name, accuracy in (("erm", erm), ("mldg", mldg)):
            runs[f"{name}/0/seed{seed}"] = {
                "algorithm": name, "held_out": 0, "seed": seed, "paper": "none", "training_wall_time_s": 600.0,
                "test": {"metric": "accuracy", "mean": accuracy, "ci95": 0.01, "num_examples": 1000},
                "config": {"dataset": "rotated_mnist", "steps": 5000}, "provenance": {"device_name": "a CPU"}}
    results = {"script": "scripts/full_scale_mldg.py", "smoke": False, "runs": runs}
    results["summary"] = script.summarize(results)
    (tmp_path / "mldg.json").write_text(json.dumps(results))
    rows = {row.run: row for row in result_rows(tmp_path)}
    assert set(rows) == {"erm, held out 0", "mldg, held out 0"}
    mldg = rows["mldg, held out 0"]
    assert (mldg.seeds, mldg.steps, mldg.training_minutes) == (3, 5000, 10.0)
    assert mldg.score == pytest.approx(0.965) and mldg.ci95 == pytest.approx(4.302653 * 0.005 / 3 ** 0.5, rel=1e-5)
    assert "± over 3 seeds" in mldg.protocol and "96.50 ± 1.24%" in markdown_table([mldg])

    # A held-out domain with one seed so far has no t-interval: the row says so instead of printing "± nan".
    del runs["mldg/0/seed1"], runs["mldg/0/seed2"]
    results["summary"] = script.summarize(results)
    (tmp_path / "mldg.json").write_text(json.dumps(results))
    one_seed = {row.run: row for row in result_rows(tmp_path)}["mldg, held out 0"]
    assert one_seed.seeds == 1 and "one seed so far: no interval" in one_seed.protocol
    table = markdown_table([one_seed])
    assert "96.00% (no interval)" in table and "nan" not in table
