"""scripts/full_scale_meta_rl.py --smoke: the whole pipeline with 2 updates per run, on the CPU."""
import json

import torch



def test_the_meta_rl_script_runs_end_to_end_in_smoke_mode(tmp_path, load_script):
    script = load_script("full_scale_meta_rl")
    output = tmp_path / "meta_rl.json"
    assert script.main(["--smoke", "--output", str(output), "--device", "cpu", "--no-progress",
                        "--runs", "rl2-n10", "maml-nav"]) == 0
    results = json.loads(output.read_text())
    assert results["smoke"] is True and set(results["runs"]) == {"rl2-n10", "maml-nav"}
    from full_scale_common import schema_problems
    for run in results["runs"].values():
        assert not schema_problems(run) and run["seeds"] == [0, 1, 2]
        assert run["provenance"]["torch"] == torch.__version__
    rl2 = results["runs"]["rl2-n10"]
    assert rl2["test"]["metric"] == "regret" and rl2["test"]["num_tasks"] == 50 and len(rl2["test"]["per_seed"]) == 3
    assert set(rl2["baselines"]) == {"random", "greedy", "ucb1", "thompson", "gittins"}
    assert rl2["config"]["iterations"] == 2
    maml = results["runs"]["maml-nav"]
    assert maml["test"]["metric"] == "return" and len(maml["curves"]["maml"]) == 4
    assert (tmp_path / "checkpoints" / "maml-nav-seed2.pt").is_file()
