"""The examples in examples/ run as their docstrings say and do what they claim, each checked independently.

- own_training_loop.py: a hand-written outer loop on ``meta_gradient`` meta-trains: its start beats the random
  start it began from on held-out waves.
- cosine_prototypes.py: a method of one's own, loaded from its file: its logits equal a slow per-pair
  computation of s·cos, and it trains through ``train`` and from the command line well above chance.
- evaluate_shipped_model.py: a shipped model re-scored by its recorded protocol, and used on one task by hand.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from metabook_learn import methods
from metabook_learn.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
COSINE_SPEC = f"{EXAMPLES / 'cosine_prototypes.py'}:COSINE_PROTONET"


def import_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_training_loop_meta_trains(capsys):
    loop = import_example("own_training_loop")
    trained, random_start = loop.main(steps=300, test_tasks=100)
    # Measured: 3.4 vs 5.0 after 300 steps. A loop that never applies the meta-gradient leaves them equal.
    assert trained < 0.8 * random_start
    assert "query MSE after one inner step" in capsys.readouterr().out


@pytest.fixture(scope="module")
def cosine():
    method = methods.load(COSINE_SPEC)  # registers it, as --method does
    return method, sys.modules[method.build.__module__]


def test_cosine_logits_equal_a_slow_per_pair_computation(cosine):
    _, module = cosine
    torch.manual_seed(0)
    embedding = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8))
    model = module.CosinePrototypes(_Plain(embedding), ways=3).double()
    with torch.no_grad():
        model.log_scale.fill_(math.log(7.0))
    support_x, query_x = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randn(4, 1, 4, 4, dtype=torch.float64)
    support_y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = model.logits(support_x, support_y, query_x)
    with torch.no_grad():
        z_s, z_q = embedding(support_x), embedding(query_x)
        for q in range(4):
            for k in range(3):
                centre = z_s[support_y == k].mean(0)
                expected = 7.0 * torch.dot(z_q[q], centre) / (z_q[q].norm() * centre.norm())
                torch.testing.assert_close(logits[q, k], expected)
    assert model.at_ways(5).log_scale is model.log_scale  # one temperature for every number of ways
    with pytest.raises(ValueError, match=r"support_y holds labels 0\.\.3, but the model classifies ways=3"):
        model.logits(support_x, torch.tensor([0, 0, 1, 1, 2, 3]), query_x)


class _Plain(torch.nn.Module):
    """An embedding without batch norm, for the closed-form check (transductive mode needs no stats_rows)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network(x)


def test_cosine_prototypes_trains_through_train_well_above_chance(cosine, real_mirror, real_cache, monkeypatch):
    _, module = cosine
    monkeypatch.setenv("METABOOK_DATA", str(real_cache))
    monkeypatch.setenv("METABOOK_MIRROR", str(real_mirror))
    assert module.main(steps=50, test_tasks=50) > 0.6  # chance is 0.2; measured 0.80 after 100 episodes


def test_cosine_prototypes_from_the_command_line(cosine, real_mirror, real_cache, tmp_path, capsys):
    folders = ["--cache", str(real_cache), "--mirror", str(real_mirror), "--device", "cpu", "--no-progress"]
    checkpoint = tmp_path / "cosine.pt"
    assert cli(["train", "--method", COSINE_SPEC, "--data", "omniglot", "--steps", "2", "--train-ways", "5",
                "--validate-every", "2", "--validation-tasks", "2", "--checkpoint", str(checkpoint), *folders]) == 0
    assert cli(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", "--method", COSINE_SPEC, *folders]) == 0
    assert "cosine-protonet on omniglot" in capsys.readouterr().out
    assert json.loads(checkpoint.with_suffix(".test.json").read_text())["evaluation"]["num_tasks"] == 4


@pytest.mark.parametrize("name", ["maml-omniglot-5w1s", "protonet-omniglot-1shot"])
def test_evaluate_shipped_model(name, real_mirror, real_cache, monkeypatch, capsys):
    monkeypatch.setenv("METABOOK_DATA", str(real_cache))
    monkeypatch.setenv("METABOOK_MIRROR", str(real_mirror))
    accuracy = import_example("evaluate_shipped_model").main(name, tasks=20)
    out = capsys.readouterr().out
    assert accuracy > 0.9, out  # both were recorded at 98% or more
    labels, predicted = (json.loads(found) for found in re.findall(r"(\[[0-9, ]+\])", out)[-2:])
    assert len(labels) == len(predicted) == 25 and sum(a == b for a, b in zip(labels, predicted)) >= 20, out
