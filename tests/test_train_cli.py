"""``python -m metabook_learn train|evaluate``, driven in-process: help, paper defaults, JSON results, one-line errors."""
import json
import math

import pytest
import torch

from metabook_learn.cli import build_parser, main
from metabook_learn.run_length import format_duration
from metabook_learn.train_cli import ALGORITHMS, CLASSIFIERS, DATA_SETS, config_from_args
from metabook_learn.training import EPISODIC_ALGORITHMS, GRADIENT_ALGORITHMS

pytestmark = pytest.mark.usefixtures("no_data_environment")


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
                 "Finn et al., 2017", "Nichol et al., 2018", "inner-lr 2.0", "times the number of ways", "meta-batch 32", "1.96 * std / sqrt",
                 "--train-ways", "Snell et al., 2017", "Bertinetto et al., 2019", "train-ways 60",
                 "halved every 2,000 episodes", "--meta-lr-halving-every",
                 "cnp/np, sinusoid", "the book's choice", "validated during training, and tested, at --ways"):
        assert word in " ".join(text.split()), word  # argparse wraps the option help
    assert set(EPISODIC_ALGORITHMS) <= set(ALGORITHMS) and set(GRADIENT_ALGORITHMS) <= set(ALGORITHMS)


def config_for(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))[0]


def test_left_out_options_take_the_papers_values():
    maml = config_for()  # MAML, Omniglot 5-way 1-shot (Finn et al., 2017, App. A.1)
    # alpha 0.4 in the paper, on the reference code's loss of 5 times the mean: 2.0 on metabook's mean loss
    assert (maml.inner_lr, maml.inner_steps, maml.eval_inner_steps, maml.meta_batch) == (2.0, 1, 3, 32)
    assert maml.meta_lr == 1e-3
    assert (maml.ways, maml.shots, maml.queries, maml.steps, maml.query_bn) == (5, 1, 1, 60_000, "transductive")
    twenty = config_for("--ways", "20", "--algorithm", "fomaml")
    assert (twenty.inner_lr, twenty.inner_steps, twenty.eval_inner_steps, twenty.meta_batch) == (2.0, 5, 5, 16)
    assert twenty.first_order
    imagenet = config_for("--data", "mini-imagenet", "--shots", "5")
    assert (imagenet.inner_lr, imagenet.inner_steps, imagenet.eval_inner_steps, imagenet.meta_batch,
            imagenet.queries) == (0.05, 5, 10, 2, 15)
    reptile = config_for("--algorithm", "reptile")  # Nichol et al., 2018, App. A, Omniglot 5-way
    assert (reptile.train_shots, reptile.inner_steps, reptile.meta_batch, reptile.eval_inner_steps,
            reptile.outer_step_size, reptile.outer_step_size_final, reptile.steps) == (10, 5, 5, 50, 1.0, 0.0, 100_000)
    # openai/supervised-reptile's --eval-batch: 5 (Omniglot 5-way, the whole 1-shot support set), 10 (20-way),
    # 5 and 15 (mini-ImageNet 1- and 5-shot); training steps on minibatches of --inner-batch 10 (20 for 20-way).
    for argv, train_batch, test_batch in ((("--shots", "1"), 10, None), (("--shots", "5"), 10, 5),
                                          (("--ways", "20"), 20, 10),
                                          (("--data", "mini-imagenet", "--shots", "5"), 10, 15)):
        preset = config_for("--algorithm", "reptile", *argv)
        assert (preset.inner_batch_size, preset.eval_inner_batch_size) == (train_batch, test_batch), argv
    sine = config_for("--data", "sinusoid", "--meta-batch", "7")
    assert (sine.loss, sine.shots, sine.inner_lr, sine.eval_inner_steps, sine.meta_batch) == ("mse", 10, 0.01, 10, 7)


def test_the_episodic_learners_take_their_papers_values():
    # Snell et al. (2017), Sec. 3.1: 60-way training episodes, 5 queries per class, Adam 1e-3; tested 5-way.
    protonet = config_for("--algorithm", "protonet")
    assert (protonet.ways, protonet.train_ways, protonet.training_ways, protonet.shots, protonet.queries) == (
        5, 60, 60, 1, 5)
    assert (protonet.meta_batch, protonet.meta_lr, protonet.inner_steps, protonet.eval_inner_steps) == (1, 1e-3, 0, 0)
    # Sec. 3.2: mini-ImageNet 30-way for 1-shot, 20-way for 5-shot, 15 queries per class.
    assert config_for("--algorithm", "protonet", "--data", "mini-imagenet").train_ways == 30
    five = config_for("--algorithm", "protonet", "--data", "mini-imagenet", "--shots", "5")
    assert (five.train_ways, five.queries, five.support_shots) == (20, 15, 5)
    # The R2-D2 authors' scripts: 60-way episodes of 10 images per class on Omniglot, Adam 5e-3.
    r2d2 = config_for("--algorithm", "r2d2", "--shots", "5")
    assert (r2d2.train_ways, r2d2.shots, r2d2.queries, r2d2.meta_lr, r2d2.meta_batch) == (60, 5, 5, 5e-3, 1)
    assert config_for("--algorithm", "r2d2", "--data", "cifar-fs").train_ways == 20
    assert config_for("--algorithm", "r2d2", "--data", "mini-imagenet", "--train-shots", "3").queries == 12
    lrd2 = config_for("--algorithm", "lrd2", "--ways", "20")  # 10-way training, but never fewer than tested
    assert (lrd2.ways, lrd2.train_ways, lrd2.queries) == (20, 20, 19)
    assert config_for("--algorithm", "protonet", "--train-ways", "7").train_ways == 7
    # The book's neural-process settings (scripts/full_scale_neural_processes.py).
    for name in ("cnp", "np"):
        process = config_for("--algorithm", name, "--data", "sinusoid")
        assert (process.loss, process.shots, process.train_shots, process.queries, process.meta_batch,
                process.meta_lr, process.steps) == ("mse", 10, 20, 20, 64, 5e-4, 50_000)


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
    assert len(result["per_task"]) == 30 and sum(result["per_task"]) / 30 == pytest.approx(evaluation["mean"], abs=1e-5)
    for record in (trained, result):
        provenance = record["provenance"]
        assert provenance["torch"] == torch.__version__ and provenance["device"] == "cpu"
        assert provenance["device_name"] and "git_commit" in provenance and record["wall_time_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sine.curve.jsonl", "sine.pt", "sine.train.json",
                                                          "test.json"]


def test_train_says_how_long_the_run_takes_after_its_first_steps(capsys, tmp_path):
    """Only that the line is there and its arithmetic holds: the timing itself depends on the machine."""
    code, out, err = run(capsys, "train", "--data", "sinusoid", "--steps", 12, "--meta-batch", 2, "--validate-every",
                         0, "--checkpoint", tmp_path / "sine.pt", "--device", "cpu", "--no-progress")
    assert code == 0, err
    [line] = [line for line in out.splitlines() if "s a meta-step on this machine" in line]
    assert line.endswith("for the 12 steps of this run"), line
    assert format_duration(30_420) == "8 h 27 min" and format_duration(1_000) == "17 min" and format_duration(42) == "42 s"

    code, out, err = run(capsys, "train", "--data", "sinusoid", "--steps", 6, "--meta-batch", 2, "--validate-every",
                         0, "--checkpoint", tmp_path / "short.pt", "--device", "cpu", "--no-progress")
    assert code == 0 and "meta-step on this machine" not in out, "a run too short to time says nothing"


@pytest.mark.parametrize("algorithm", GRADIENT_ALGORITHMS)
def test_every_gradient_based_algorithm_trains_and_evaluates_on_omniglot(capsys, tmp_path, real_mirror, real_cache,
                                                                        algorithm):
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
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--ways", 20, *folders)
    assert_one_line_error(code, err, f"this {algorithm} network has a 5-output head: drop --ways")


@pytest.mark.parametrize("algorithm", CLASSIFIERS)
def test_every_episodic_classifier_trains_at_more_ways_and_is_validated_and_tested_at_others(
        capsys, tmp_path, real_mirror, real_cache, algorithm):
    folders = ["--cache", real_cache, "--mirror", real_mirror, "--device", "cpu", "--no-progress"]
    checkpoint = tmp_path / f"{algorithm}.pt"
    code, out, err = run(capsys, "train", "--algorithm", algorithm, "--train-ways", 8, "--queries", 2, "--steps", 2,
                         "--validate-every", 2, "--validation-tasks", 3, "--checkpoint", checkpoint, *folders)
    assert code == 0, err
    assert "8-way training tasks, validated 5-way" in out
    trained = json.loads(checkpoint.with_suffix(".train.json").read_text())
    assert (trained["config"]["ways"], trained["config"]["train_ways"], trained["config"]["meta_batch"]) == (5, 8, 1)
    assert trained["batch_norm"] == "transductive" and trained["final_validation"]["metric"] == "accuracy"

    # train() validated the 8-way network on 5-way tasks: the same tasks (val split, seed + 1) and weights give
    # the same score when the checkpoint is rebuilt and evaluated at 5 ways.
    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--split", "val", "--seed", 1, "--tasks", 3,
                         "--output", tmp_path / "val.json", *folders)
    assert code == 0, err
    evaluation = json.loads((tmp_path / "val.json").read_text())["evaluation"]
    assert evaluation["ways"] == 5 and evaluation["inner_steps"] == 0
    assert evaluation["mean"] == trained["final_validation"]["value"]

    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--ways", 3, "--tasks", 4,
                         "--query-bn", "inductive", *folders)
    assert code == 0, err
    evaluation = json.loads(checkpoint.with_suffix(".test.json").read_text())["evaluation"]
    assert evaluation["ways"] == 3 and evaluation["num_tasks"] == 4 and 0 <= evaluation["mean"] <= 1
    assert evaluation["query_bn"] == "inductive" and "batch norm: inductive" in out
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--inner-steps", 3, *folders)
    assert_one_line_error(code, err, f"{algorithm} solves each task in one forward pass")
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--query-bn", "per-query", *folders)
    assert_one_line_error(code, err, f"{algorithm} embeds a whole episode in one forward pass: query_bn must be one of")


def test_train_ways_need_an_episodic_classifier_built_for_them():
    from metabook_learn.models import ConvNet
    from metabook_learn.protonets import PrototypicalNetwork
    from metabook_learn.training import TrainConfig, train

    with pytest.raises(ValueError, match="train_ways=20 needs a positive number and an episodic classifier"):
        TrainConfig(algorithm="maml", train_ways=20)

    class EightWaySampler:  # train() checks the shapes before it samples anything
        num_ways, num_shots, num_queries = 8, 1, 1

    config = TrainConfig(algorithm="protonet", ways=5, train_ways=8, queries=1, device="cpu")
    model = PrototypicalNetwork(ConvNet(None, in_channels=1, filters=4, downsample="stride", image_size=28), ways=5)
    with pytest.raises(ValueError, match="classifies 5 ways: build the episodic classifier with ways=8"):
        train(config, model, EightWaySampler())


@pytest.mark.parametrize("algorithm", ["cnp", "np"])
def test_the_neural_processes_train_and_evaluate_on_sinusoids(capsys, tmp_path, algorithm):
    checkpoint = tmp_path / f"{algorithm}.pt"
    code, out, err = run(capsys, "train", "--algorithm", algorithm, "--data", "sinusoid", "--steps", 3,
                         "--meta-batch", 4, "--validate-every", 3, "--validation-tasks", 5, "--checkpoint", checkpoint,
                         "--device", "cpu", "--no-progress")
    assert code == 0, err
    trained = json.loads(checkpoint.with_suffix(".train.json").read_text())
    assert trained["final_validation"]["metric"] == "mse" and trained["batch_norm"] == "none"
    assert (trained["config"]["train_shots"], trained["config"]["shots"]) == (20, 10)
    code, out, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--tasks", 6, "--shots", 5, "--queries", 50,
                         "--no-progress")
    assert code == 0, err
    evaluation = json.loads(checkpoint.with_suffix(".test.json").read_text())["evaluation"]
    assert evaluation["metric"] == "mse" and evaluation["num_tasks"] == 6 and evaluation["mean"] > 0
    assert (evaluation["shots"], evaluation["queries"], evaluation["inner_steps"]) == (5, 50, 0)
    code, _, err = run(capsys, "evaluate", "--checkpoint", checkpoint, "--ways", 5)
    assert_one_line_error(code, err, f"this {algorithm} network has no classes: drop --ways")


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--algorithm", "mamll"], "unknown algorithm 'mamll'; choose one of: maml, fomaml, anil"),
    (["train", "--data", "imagenet"], "unknown data set 'imagenet'; choose one of: omniglot, sinusoid"),
    (["train", "--algorithm", "reptile", "--first-order"], "drop --first-order"),
    (["train", "--algorithm", "reptile", "--meta-lr", "0.1"], "Reptile's outer step is --outer-step-size"),
    (["train", "--outer-step-size", "0.5"], "are Reptile's epsilon; maml takes Adam steps of --meta-lr"),
    (["train", "--data", "sinusoid", "--ways", "5"], "drop --ways"),
    (["train", "--algorithm", "cnp"], "cnp is a regression model of sine waves; use --data sinusoid"),
    (["train", "--algorithm", "protonet", "--data", "sinusoid"], "protonet classifies images; use --data omniglot"),
    (["train", "--algorithm", "r2d2", "--inner-lr", "0.1", "--first-order"],
     "r2d2 solves each task in one forward pass, with no inner loop and Adam steps of --meta-lr: "
     "drop --inner-lr, --first-order"),
    (["train", "--algorithm", "np", "--data", "sinusoid", "--outer-step-size", "0.5"], "drop --outer-step-size"),
    (["train", "--algorithm", "protonet", "--eval-inner-steps", "3"], "drop --eval-inner-steps"),
    (["train", "--algorithm", "maml", "--train-ways", "20"], "--train-ways is for protonet, r2d2, lrd2"),
    (["train", "--algorithm", "cnp", "--data", "sinusoid", "--train-ways", "3"], "cnp trains and tests at --ways"),
    (["train", "--algorithm", "mldg"], "mldg learns from source domains, not from the few-shot tasks"),
    (["evaluate", "--checkpoint", "{tmp}/missing.pt"], "no checkpoint at"),
    (["train", "--algorithm", "protonet", "--query-bn", "per-query"],
     "protonet embeds a whole episode in one forward pass: query_bn must be one of transductive, inductive"),
    (["train", "--algorithm", "r2d2", "--eval-inner-batch-size", "5"], "drop --eval-inner-batch-size"),
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


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(tmp_path, real_mirror, real_cache, load_script):
    """scripts/full_scale_gradient.py --smoke: the GPU script's whole pipeline, 3 meta-steps, on the CPU."""
    script = load_script("full_scale_gradient")
    output = tmp_path / "gradient_based.json"
    assert script.main(["--smoke", "--runs", "maml-5way-1shot", "--output", str(output), "--device", "cpu",
                        "--cache", str(real_cache), "--mirror", str(real_mirror), "--no-progress"]) == 0
    run = json.loads(output.read_text())["runs"]["maml-5way-1shot"]
    assert run["test"]["num_tasks"] == 10 and run["test"]["query_bn"] == run["batch_norm"] == "transductive"
    assert run["config"]["inner_lr"] == 2.0 and run["config"]["steps"] == 3 and "98.7" in run["paper"]
    assert run["provenance"]["torch"] == torch.__version__ and run["training_wall_time_s"] > 0
    assert (tmp_path / "checkpoints" / "maml-5way-1shot.pt").is_file()


def test_reptiles_5_shot_row_scores_the_1_shot_network_in_both_of_its_papers_protocols(tmp_path, real_mirror, real_cache,
                                                                                        load_script):
    """The authors' 5-shot command trains as their 1-shot one: the script scores that network, it does not train."""
    script = load_script("full_scale_gradient")
    output = tmp_path / "gradient_based.json"
    common = ["--smoke", "--output", str(output), "--device", "cpu", "--cache", str(real_cache),
              "--mirror", str(real_mirror), "--no-progress"]
    with pytest.raises(SystemExit, match="train that run first"):
        script.main([*common, "--runs", "reptile-5way-5shot"])
    assert script.main([*common, "--runs", "reptile-5way-1shot", "reptile-5way-5shot"]) == 0
    runs = json.loads(output.read_text())["runs"]
    one, five = runs["reptile-5way-1shot"], runs["reptile-5way-5shot"]
    assert five["trained_as"] == "reptile-5way-1shot" and five["checkpoint"] == one["checkpoint"]
    assert five["curve"] == [] and five["training_wall_time_s"] == one["training_wall_time_s"]
    assert (five["test"]["protocol"]["shots"], five["config"]["eval_inner_batch_size"]) == (5, 5)
    assert (one["test"]["protocol"]["shots"], one["config"]["eval_inner_batch_size"]) == (1, None)
    for run, paper in ((one, "95.39"), (five, "98.90")):
        assert run["test_per_query"]["query_bn"] == "per-query" and run["paper_per_query"].startswith(paper)
        assert run["test_per_query"]["per_task"] != run["test_inductive"]["per_task"] or run["test"]["num_tasks"] < 20

    # Scored again from the finished checkpoint: the same scores, the training's provenance kept, the scoring's beside.
    trained_by = {**one["provenance"], "device_name": "the machine that trained it"}
    output.write_text(json.dumps({**json.loads(output.read_text()),
                                  "runs": {**runs, "reptile-5way-1shot": {**one, "provenance": trained_by}}}))
    assert script.main([*common, "--runs", "reptile-5way-1shot"]) == 0
    again = json.loads(output.read_text())["runs"]["reptile-5way-1shot"]
    assert again["provenance"] == trained_by and again["test"]["per_task"] == one["test"]["per_task"]
    assert again["scored_again"]["provenance"]["device_name"] == one["provenance"]["device_name"]
    assert "scored_again" not in one
    # The 5-shot row's training is the 1-shot run's: scored again, it takes that run's provenance.
    assert script.main([*common, "--runs", "reptile-5way-5shot"]) == 0
    assert json.loads(output.read_text())["runs"]["reptile-5way-5shot"]["provenance"] == trained_by


def test_each_full_scale_gradient_run_records_its_own_deviations(load_script):
    script = load_script("full_scale_gradient")
    by_name = {run.name: run for run in script.RUNS}
    assert script.deviations(by_name["maml-5way-1shot"]) == script.DEVIATIONS
    for name in ("maml-5way-1shot-alpha0.4", "fomaml-5way-1shot-alpha0.4"):
        assert script.deviations(by_name[name]).endswith(script.FIFTH_OF_THE_STEP)
    # Reptile's rows follow Reptile's code: 1,200 training characters and unrotated test classes, not MAML's split.
    reptile = script.deviations(by_name["reptile-5way-1shot"])
    assert reptile.startswith(script.REPTILE_DEVIATIONS) and "1,200 characters" in reptile
    assert "MAML's code" not in reptile and script.TEST_MOMENTS in reptile


def test_protonet_and_r2d2_presets_halve_the_learning_rate_like_their_papers_code():
    from metabook_learn.train_cli import paper_defaults

    for algorithm in ("protonet", "r2d2"):
        values, source = paper_defaults(algorithm, "omniglot", 5, 1)
        assert values["meta_lr_halving_every"] == 2_000 and "halved every 2,000 episodes" in source
    assert "meta_lr_halving_every" not in paper_defaults("maml", "omniglot", 5, 1)[0]


def test_resume_with_more_steps_extends_a_finished_run_and_the_curve_streams_to_a_file(capsys, tmp_path):
    checkpoint = tmp_path / "sine.pt"
    common = ["--data", "sinusoid", "--meta-batch", 2, "--log-every", 1, "--checkpoint", checkpoint, "--device", "cpu",
              "--no-progress"]
    code, out, err = run(capsys, "train", "--steps", 3, *common)
    assert code == 0, err
    assert len((tmp_path / "sine.curve.jsonl").read_text().splitlines()) == 3
    code, out, err = run(capsys, "train", "--steps", 5, "--resume", *common)
    assert code == 0, err
    trained = json.loads((tmp_path / "sine.train.json").read_text())
    assert trained["steps_done"] == 5 and trained["resumed_from"] == 3 and len(trained["curve"]) == 5
    assert len((tmp_path / "sine.curve.jsonl").read_text().splitlines()) == 5
