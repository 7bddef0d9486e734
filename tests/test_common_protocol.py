"""results/common_protocol.json: every shipped 5-way Omniglot model scored under one protocol, and the script that does it."""
import json
from pathlib import Path

import pytest
import torch

from metabook_learn import pretrained

ROOT = Path(__file__).resolve().parents[1]
SCORED = json.loads((ROOT / "results" / "common_protocol.json").read_text())


def test_every_shipped_omniglot_model_is_scored_as_it_ships(load_script):
    """A model shipped (or shipped again) without being scored under the common protocol fails here."""
    script = load_script("score_common_protocol")
    in_scope = [name for name in pretrained.available() if script.in_scope(name)]
    assert sorted(SCORED["models"]) == sorted(in_scope), "run scripts/score_common_protocol.py for the missing ones"
    assert SCORED["protocol"] == script.PROTOCOL
    for name, entry in SCORED["models"].items():
        assert entry["sha256"] == pretrained.load(name).results["sha256"], f"{name} was scored with other weights"
        for mode in SCORED["protocol"]["query_bn"]:
            test = entry["tests"][mode]
            assert test["query_bn"] == mode and test["num_tasks"] == len(test["per_task"]) == 600
            assert test["mean"] == pytest.approx(sum(test["per_task"]) / 600, abs=1e-6)


def test_the_script_scores_as_pretrained_evaluate_does_and_refuses_bad_names(tmp_path, load_script, real_mirror,
                                                                              real_cache, monkeypatch):
    script = load_script("score_common_protocol")
    monkeypatch.setenv("METABOOK_MIRROR", str(real_mirror))
    monkeypatch.setenv("METABOOK_DATA", str(real_cache))
    output = tmp_path / "common.json"
    assert script.main(["--models", "protonet-omniglot-1shot", "--num-tasks", "3", "--output", str(output)]) == 0
    written = json.loads(output.read_text())
    assert written["protocol"]["num_tasks"] == 3
    inductive = written["models"]["protonet-omniglot-1shot"]["tests"]["inductive"]
    direct = pretrained.evaluate("protonet-omniglot-1shot", num_tasks=3, queries=15, query_bn="inductive")
    assert inductive["per_task"] == pytest.approx(direct.per_task.tolist(), abs=1e-6)
    # A model recorded on other test tasks (the in-context transformer's sampler seed is 1) is scored on the
    # protocol's (seed 0), the same tasks as every other model's.
    assert script.main(["--models", "in-context-omniglot-5w1s", "--num-tasks", "3", "--output", str(output)]) == 0
    written = json.loads(output.read_text())["models"]["in-context-omniglot-5w1s"]["tests"]["transductive"]
    on_seed = {seed: pretrained.evaluate("in-context-omniglot-5w1s", num_tasks=3, queries=15, seed=seed).query_loss
               for seed in (0, 1)}
    assert on_seed[0] != on_seed[1] and written["query_loss"] == pytest.approx(on_seed[0], rel=1e-9)
    assert torch.get_num_threads() == 1  # as every shipped model was scored
    with pytest.raises(SystemExit):
        script.main(["--models", "no-such-model", "--output", str(output)])
    with pytest.raises(SystemExit):  # the file holds 3-task scores: 600 would mix two protocols in one file
        script.main(["--models", "protonet-omniglot-1shot", "--output", str(output)])
