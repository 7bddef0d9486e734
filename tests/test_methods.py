"""The method protocol (metabook_learn.methods): the registry, and training, evaluation and the CLI asking it, never naming a method."""
import ast
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from metabook_learn import methods
from metabook_learn.cli import main
from metabook_learn.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
# The modules that must work for any method: they ask the registry, they never name one.
METHOD_FREE = ["metabook_learn/training.py", "metabook_learn/evaluation.py", "metabook_learn/train_cli.py"]
BOOK_METHODS = ("maml", "fomaml", "anil", "metasgd", "reptile", "protonet", "r2d2", "lrd2", "cnp", "np", "erm", "mldg",
                "transformer", "protomaml")


def code_strings(path: Path) -> list[str]:
    """Every string constant of a module's code, its docstrings left out (they explain, they do not dispatch)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_book_registers_every_method_in_order_each_from_its_own_module():
    # (other tests of this process may have registered methods of their own from files: not the package's)
    assert tuple(n for n in methods.names() if methods.origin(n).startswith("metabook_learn.")) == BOOK_METHODS
    for name in BOOK_METHODS:
        origin = methods.origin(name)
        assert origin.startswith("metabook_learn.") and origin not in ("metabook_learn.methods", "metabook_learn.training"), origin
    book_episodic = tuple(n for n in methods.names(episodic=True) if methods.origin(n).startswith("metabook_learn."))
    assert book_episodic == ("protonet", "r2d2", "lrd2", "cnp", "np", "transformer")
    assert methods.names(domains=True) == ("erm", "mldg")
    with pytest.raises(ValueError, match="unknown algorithm 'mamll'; choose one of: maml, fomaml, anil"):
        methods.get("mamll")


@pytest.mark.parametrize("path", METHOD_FREE)
def test_training_evaluation_and_the_cli_name_no_method(path):
    names = methods.names()
    quoted = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, names)))
    found = [s for s in code_strings(ROOT / path) if s in names or quoted.search(s)]
    assert not found, f"{path} names methods in its code: {found}; ask metabook_learn.methods instead"
    source = (ROOT / path).read_text()
    assert not re.search(r"\.algorithm\s*(==|!=|in\b)", source), f"{path} dispatches on config.algorithm"


def test_the_name_check_catches_a_named_method(tmp_path):
    """The test above can fail: a module with one dispatch on a name is caught, its docstring is not."""
    module = tmp_path / "dispatch.py"
    module.write_text('"""Explains maml and "reptile"."""\nif algorithm == "reptile":\n    pass\n')
    assert code_strings(module) == ["reptile"]


def test_a_method_name_taken_by_another_method_is_refused_and_a_bad_name_too():
    maml = methods.get("maml")
    impostor = methods.Method(name="maml", description="not MAML", build=None, step=lambda *a: None)
    with pytest.raises(ValueError, match="'maml' is already registered"):
        methods.register(impostor)
    assert methods.get("maml") is maml
    with pytest.raises(ValueError, match="plain word"):
        methods.Method(name="a:b", description="", build=None, step=lambda *a: None)
    with pytest.raises(ValueError, match="cannot import the method 'no_such_module:THING'"):
        methods.load("no_such_module:THING")
    with pytest.raises(ValueError, match="has no metabook_learn.methods.Method called 'nope'"):
        methods.load("metabook_learn.maml:nope")


def test_presets_are_chosen_by_ways_and_adjusted_by_the_method():
    maml = methods.get("maml")
    assert maml.preset("omniglot", 20, 1).values["meta_batch"] == 16
    assert maml.preset("omniglot", 5, 5).values["queries"] == 5  # MAML's Omniglot queries equal the shots
    assert methods.get("r2d2").preset("mini-imagenet", 5, 3).values["queries"] == 12
    assert methods.get("protonet").preset("sinusoid", 5, 1).values == {}


def sine_run(capsys, tmp_path, *extra):
    checkpoint = tmp_path / "sine.pt"
    code = main([str(a) for a in ("train", "--data", "sinusoid", "--steps", 4, "--meta-batch", 2, "--validate-every",
                                  0, "--checkpoint", checkpoint, "--device", "cpu", "--no-progress", *extra)])
    assert code == 0, capsys.readouterr().err
    return checkpoint


def test_a_checkpoint_records_its_method_and_one_without_the_record_still_evaluates(capsys, tmp_path):
    checkpoint = sine_run(capsys, tmp_path)
    state = load_checkpoint(checkpoint)
    assert state["method"] == {"name": "maml", "origin": "metabook_learn.maml", "network": "SinusoidMLP"}
    del state["method"]  # a checkpoint written before methods were recorded
    save_checkpoint(checkpoint, state)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(checkpoint.with_suffix(".test.json").read_text())["evaluation"]["num_tasks"] == 4


def test_a_checkpoint_from_before_the_import_was_renamed_still_evaluates(capsys, tmp_path):
    """Until the import became ``metabook_learn``, checkpoints recorded origins such as ``metabook.maml``."""
    checkpoint = sine_run(capsys, tmp_path)
    state = load_checkpoint(checkpoint)
    state["method"]["origin"] = "metabook.maml"
    save_checkpoint(checkpoint, state)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    state["method"]["origin"] = "metabook.reptile"  # another method's module is still refused
    save_checkpoint(checkpoint, state)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", "--no-progress"]) == 1
    assert "from metabook_learn.reptile, but 'maml' here comes from metabook_learn.maml" in capsys.readouterr().err


class PosingLearner(nn.Module):
    """An episodic learner of sine waves that is not a CNP: predicts the context's mean, scaled."""

    episodic = True

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, support_x, support_y, query_x, query_y):
        prediction = self.scale * support_y.mean() * torch.ones_like(query_y)
        return (prediction - query_y).pow(2).mean(), prediction


def test_a_network_trained_under_another_methods_name_is_refused_by_evaluate(capsys, tmp_path):
    from metabook_learn.training import SinusoidSampler, TrainConfig, train

    config = TrainConfig(algorithm="cnp", dataset="sinusoid", shots=5, queries=5, loss="mse", meta_batch=2,
                         steps=2, inner_steps=0, eval_inner_steps=0, device="cpu")
    checkpoint = tmp_path / "posing.pt"
    train(config, PosingLearner(), SinusoidSampler(5, 5, 0), checkpoint=checkpoint, progress=False)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--tasks", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "holds a PosingLearner, but the method 'cnp' builds a ConditionalNeuralProcess" in err, err
    assert not checkpoint.with_suffix(".test.json").exists()


def test_evaluate_imports_no_code_a_checkpoint_names_and_refuses_another_method(capsys, tmp_path):
    checkpoint = sine_run(capsys, tmp_path)
    state = load_checkpoint(checkpoint)
    (tmp_path / "marker.py").write_text("raise SystemExit('imported: a checkpoint chose code to run')\n")
    state["method"] = {"name": "mine", "origin": f"{tmp_path / 'marker.py'}:MINE", "network": "Y"}
    save_checkpoint(checkpoint, state)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "trained with the method 'mine' from" in err and "pass --method" in err, err
    state["method"] = {"name": "maml", "origin": "my_methods.maml", "network": "SinusoidMLP"}
    save_checkpoint(checkpoint, state)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "from my_methods.maml, but 'maml' here comes from metabook_learn.maml" in err, err


def test_an_installed_package_registers_methods_through_the_entry_point_group(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    (tmp_path / "my_methods.py").write_text(
        "from metabook_learn.maml import build_maml_network, maml_step\n"
        "from metabook_learn.methods import Method\n"
        "MINE = Method(name='mine', description='MAML under another name', build=build_maml_network, "
        "step=maml_step)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = EntryPoint(name="mine", value="my_methods:MINE", group=methods.ENTRY_POINT_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: [entry] if group == methods.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(methods, "_LOADED_PACKAGE", False)
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))
    monkeypatch.setattr(methods, "_ORIGINS", dict(methods._ORIGINS))
    assert methods.names()[-1] == "mine" and methods.origin("mine") == "my_methods:MINE"
    assert methods.names()[:len(BOOK_METHODS)] == BOOK_METHODS
