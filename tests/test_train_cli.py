"""``python -m metabook train|evaluate``, driven in-process: help, paper defaults, JSON results, one-line errors."""
import importlib.util
import json
import math
import sys

import pytest
import torch

from fixtures_data import no_data_environment, real_cache, real_mirror  # noqa: F401 (fixtures)
from metabook.cli import build_parser, main
from metabook.train_cli import DATA_SETS, config_from_args
from metabook.training import GRADIENT_ALGORITHMS as ALGORITHMS


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]


def subcommand(name: str):
    (commands,) = [a for a in build_parser()._actions if a.dest == "command"]
    return commands.choices[name]


def test_help_names_every_algorithm_and_data_set_and_explains_every_option(capsys):
    for name in ("train", "evaluate"):
        with pytest.raises(SystemExit) as exit:
            main([name, "--help"])
        assert exit.value.code == 0
        assert all(action.help for action in subcommand(name)._actions), f"an option of {name} has no help"
    text = capsys.readouterr().out
    for word in (*ALGORITHMS, *DATA_SETS, "--inner-lr", "--outer-step-size-final", "--resume", "--bf16", "--query-bn",
                 "Finn et al., 2017", "Nichol et al., 2018", "inner-lr 0.4", "meta-batch 32", "1.96 * std / sqrt"):
        assert word in text, word


def config_for(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))[0]


def test_left_out_options_take_the_papers_values():
    maml = config_for()  # MAML, Omniglot 5-way 1-shot (Finn et al., 2017, App. A.1)
    assert (maml.inner_lr, maml.inner_steps, maml.eval_inner_steps, maml.meta_batch) == (0.4, 1, 3, 32)
    assert maml.meta_lr == 1e-3
    assert (maml.ways, maml.shots, maml.queries, maml.steps, maml.query_bn) == (5, 1, 1, 60_000, "transductive")
    twenty = config_for("--ways", "20", "--algorithm", "fomaml")
    assert (twenty.inner_lr, twenty.inner_steps, twenty.eval_inner_steps, twenty.meta_batch) == (0.1, 5, 5, 16)
    assert twenty.first_order
    imagenet = config_for("--data", "mini-imagenet", "--shots", "5")
    assert (imagenet.inner_lr, imagenet.inner_steps, imagenet.eval_inner_steps, imagenet.meta_batch,
            imagenet.queries) == (0.01, 5, 10, 2, 15)
    reptile = config_for("--algorithm", "reptile")  # Nichol et al., 2018, App. A, Omniglot 5-way
    assert (reptile.train_shots, reptile.inner_steps, reptile.meta_batch, reptile.eval_inner_steps,
            reptile.outer_step_size, reptile.outer_step_size_final, reptile.steps) == (10, 5, 5, 50, 1.0, 0.0, 100_000)
    sine = config_for("--data", "sinusoid", "--meta-batch", "7")
    assert (sine.loss, sine.shots, sine.inner_lr, sine.eval_inner_steps, sine.meta_batch) == ("mse", 10, 0.01, 10, 7)


def test_train_then_evaluate_on_sinusoids_writes_json_with_the_interval_and_provenance(capsys, tmp_path):
    checkpoint = tmp_path / "sine.pt"
    code, out, err = run(capsys, "train", "--data", "sinusoid", "--steps", 20, "--meta-batch", 5, "--validate-every",
                         10, "--validation-tasks", 10, "--checkpoint", checkpoint, "--device", "cpu", "--no-progress")
    assert code == 0, err
    trained = json.loads((tmp_path / "sine.train.json").read_text())
    assert trained["config"]["inner_lr"] == 0.01 and trained["config"]["meta_batch"] == 5
    assert trained["steps_done"] == 20 and trained["final_validation"]["metric"] == "mse"
    assert [p["step"] for p in trained["curve"]] == [10, 20] and trained["batch_norm"] == "none"

    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--tasks", 30, "--output",
                         tmp_path / "test.json", "--no-progress")
    assert code == 0, err
    result = json.loads((tmp_path / "test.json").read_text())
    evaluation = result["evaluation"]
    assert evaluation["metric"] == "mse" and evaluation["num_tasks"] == 30 and evaluation["inner_steps"] == 10
    assert evaluation["ci95"] == pytest.approx(1.96 * evaluation["std"] / math.sqrt(30))
    assert f"MSE {evaluation['mean']:.3f}" in out
    for record in (trained, result):
        provenance = record["provenance"]
        assert provenance["torch"] == torch.__version__ and provenance["device"] == "cpu"
        assert provenance["device_name"] and "git_commit" in provenance and record["wall_time_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sine.pt", "sine.train.json", "test.json"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_and_evaluates_on_omniglot(capsys, tmp_path, real_mirror, real_cache, algorithm):
    folders = ["--cache", real_cache, "--mirror", real_mirror, "--device", "cpu", "--no-progress"]
    checkpoint = tmp_path / f"{algorithm}.pt"
    code, out, err = run(capsys, "train", "--algorithm", algorithm, "--steps", 2, "--meta-batch", 2,
                         "--validate-every", 2, "--validation-tasks", 2, "--checkpoint", checkpoint, *folders)
    assert code == 0, err
    trained = json.loads(checkpoint.with_suffix(".train.json").read_text())
    assert trained["batch_norm"] == "transductive" and trained["final_validation"]["metric"] == "accuracy"
    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--tasks", 4, "--inner-steps", 1, *folders)
    assert code == 0, err
    evaluation = json.loads(checkpoint.with_suffix(".test.json").read_text())["evaluation"]
    assert evaluation["metric"] == "accuracy" and 0 <= evaluation["mean"] <= 1 and evaluation["num_tasks"] == 4
    assert evaluation["query_bn"] == "transductive" and evaluation["shots"] == 1
    assert "95% CI over 4 tasks; batch norm: transductive" in out


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--algorithm", "mamll"], "unknown algorithm 'mamll'; choose one of: maml, fomaml, anil"),
    (["train", "--data", "imagenet"], "unknown data set 'imagenet'; choose one of: omniglot, sinusoid"),
    (["train", "--algorithm", "reptile", "--first-order"], "drop --first-order"),
    (["train", "--algorithm", "reptile", "--meta-lr", "0.1"], "Reptile's outer step is --outer-step-size"),
    (["train", "--outer-step-size", "0.5"], "are Reptile's epsilon; maml takes Adam steps of --meta-lr"),
    (["train", "--data", "sinusoid", "--ways", "5"], "drop --ways"),
    (["train", "--data", "sinusoid", "--steps", "0"], "steps must be at least 1"),
    (["evaluate", "--checkpoint", "{tmp}/missing.pt"], "no checkpoint at"),
])
def test_bad_requests_fail_with_one_actionable_line(capsys, tmp_path, argv, fragment):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] == "train":
        argv += ["--checkpoint", tmp_path / "run.pt"]
    assert_one_line_error(*run(capsys, *argv)[::2], fragment)
    assert not (tmp_path / "run.pt").exists()


def test_missing_data_and_gpus_and_broken_checkpoints_are_one_line_errors(capsys, tmp_path):
    empty = ["--mirror", tmp_path / "no-mirror", "--cache", tmp_path / "cache", "--checkpoint", tmp_path / "m.pt"]
    code, _, err = run(capsys, "train", "--data", "mini-imagenet", "--device", "cpu", *empty)
    assert_one_line_error(code, err, "mini-ImageNet has no official download")
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "train", "--device", "cuda", "--checkpoint", tmp_path / "c.pt")
        assert_one_line_error(code, err, "pass --device cpu")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "evaluate", "--checkpoint", tmp_path / "broken.pt")
    assert_one_line_error(code, err, "is not a readable metabook checkpoint")


def test_an_existing_run_is_resumed_only_when_asked_and_only_with_the_same_options(capsys, tmp_path):
    train = ["train", "--data", "sinusoid", "--steps", 4, "--meta-batch", 2, "--checkpoint", tmp_path / "s.pt",
             "--device", "cpu", "--no-progress"]
    assert run(capsys, *train)[0] == 0
    code, _, err = run(capsys, *train)
    assert_one_line_error(code, err, "exists; pass --resume to continue that run")
    code, _, err = run(capsys, *train, "--resume", "--meta-lr", "0.5")
    assert_one_line_error(code, err, "another configuration (meta_lr: 0.001 there, 0.5 here)")
    code, out, err = run(capsys, *train, "--resume")
    assert code == 0, err
    assert json.loads((tmp_path / "s.train.json").read_text())["resumed_from"] == 4


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(monkeypatch, tmp_path, real_mirror, real_cache,
                                                             repo_root):
    """scripts/full_scale_gradient.py --smoke: the GPU script's whole pipeline, 3 meta-steps, on the CPU."""
    spec = importlib.util.spec_from_file_location("full_scale_gradient", repo_root / "scripts/full_scale_gradient.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look their module up there
    spec.loader.exec_module(script)
    output = tmp_path / "gradient_based.json"
    assert script.main(["--smoke", "--runs", "maml-5way-1shot", "--output", str(output), "--device", "cpu",
                        "--cache", str(real_cache), "--mirror", str(real_mirror), "--no-progress"]) == 0
    run = json.loads(output.read_text())["runs"]["maml-5way-1shot"]
    assert run["test"]["num_tasks"] == 10 and run["test"]["query_bn"] == run["batch_norm"] == "transductive"
    assert run["config"]["inner_lr"] == 0.4 and run["config"]["steps"] == 3 and "98.7" in run["paper"]
    assert run["provenance"]["torch"] == torch.__version__ and run["training_wall_time_s"] > 0
    assert (tmp_path / "checkpoints" / "maml-5way-1shot.pt").is_file()
