"""The results page's table: read from results files of the full-scale scripts' schema."""
import json

from metabook.report import UNAVAILABLE, markdown_table, result_rows


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
    assert row.protocol == "600 tasks, 1 queries/class, transductive BN, 3 test steps"
    assert row.curve == [(2.0, 0.9)] and row.training_minutes == 10.0


def test_the_table_shows_the_score_its_interval_the_paper_and_the_data_sets_not_run(tmp_path):
    write_results(tmp_path, "gradient_based.json")
    table = markdown_table(result_rows(tmp_path))
    assert "| maml | maml-5way-1shot | Omniglot 5-way 1-shot | 98.00 ± 0.40% | 98.7 ± 0.4 (Finn et al., 2017) |" in table
    for data in UNAVAILABLE:
        assert f"| {data} | not run |" in table
