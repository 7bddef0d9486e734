"""Shipped models: each re-scores to its recorded accuracy; a corrupt, missing or foreign file is refused unread."""
import json
import pickle
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from metabook_learn import pretrained
from metabook_learn.checkpoint import save_checkpoint
from metabook_learn.models import sinusoid_mlp
from metabook_learn.training import TrainConfig


def ship(folder, name="tiny-sine", payload=None):
    """A shipped sine-wave MLP in ``folder``: its weights file and index entry, as scripts/ship_model.py writes."""
    config = TrainConfig(dataset="sinusoid", loss="mse", ways=1, shots=5, queries=5, inner_lr=0.01, device="cpu")
    torch.manual_seed(0)
    state = payload or {"format": pretrained.FORMAT, "config": asdict(config),
                        "model": sinusoid_mlp().state_dict(), "lrs": None}
    torch.save(state, folder / f"{name}.pt")
    entry = {"file": f"{name}.pt", "sha256": pretrained.file_digest(folder / f"{name}.pt"),
             "test": {"metric": "mse", "mean": 1.0, "ci95": 0.1}}
    (folder / "index.json").write_text(json.dumps({name: entry}))
    return folder / f"{name}.pt"


@pytest.fixture
def shipping(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    return tmp_path


def test_a_shipped_model_loads_with_its_configuration(shipping):
    ship(shipping)
    shipped = pretrained.load("tiny-sine")
    assert pretrained.available() == ("tiny-sine",)
    assert shipped.config.dataset == "sinusoid" and shipped.eval_inner.lr == 0.01
    torch.manual_seed(0)
    for p, q in zip(shipped.model.parameters(), sinusoid_mlp().parameters()):
        assert torch.equal(p, q)


def test_unknown_missing_and_corrupted_files_are_refused_with_one_clear_error(shipping):
    with pytest.raises(ValueError, match="no shipped model named 'nope'"):
        pretrained.load("nope")
    path = ship(shipping)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its SHA-256.*not loaded"):
        pretrained.load("tiny-sine")
    path.unlink()
    with pytest.raises(ValueError, match="weights of 'tiny-sine' are missing"):
        pretrained.load("tiny-sine")


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('code ran')",))


def test_a_file_carrying_code_is_never_run_even_with_a_matching_checksum(shipping):
    path = ship(shipping)
    path.write_bytes(pickle.dumps({"format": pretrained.FORMAT, "payload": Boom()}, protocol=2))
    entry = json.loads((shipping / "index.json").read_text())
    entry["tiny-sine"]["sha256"] = pretrained.file_digest(path)
    (shipping / "index.json").write_text(json.dumps(entry))
    with pytest.raises(ValueError, match="could not be read as tensors"):
        pretrained.load("tiny-sine")


def test_a_file_of_another_format_is_refused(shipping):
    ship(shipping, payload={"format": "something else"})
    with pytest.raises(ValueError, match="not a shipped metabook model"):
        pretrained.load("tiny-sine")


def test_a_file_naming_a_network_outside_the_known_ones_is_refused(shipping):
    config = TrainConfig(dataset="sinusoid", loss="mse", ways=1, shots=5, queries=5, inner_lr=0.01, device="cpu")
    ship(shipping, payload={"format": pretrained.FORMAT, "config": asdict(config), "model": {}, "lrs": None,
                            "network": {"name": "os.system", "command": "echo"}})
    with pytest.raises(ValueError, match="names the network 'os.system', not one of DigitConvNet"):
        pretrained.load("tiny-sine")


def test_weights_that_do_not_fit_their_network_are_refused(shipping):
    config = TrainConfig(dataset="sinusoid", loss="mse", ways=1, shots=5, queries=5, inner_lr=0.01, device="cpu")
    ship(shipping, payload={"format": pretrained.FORMAT, "config": asdict(config), "lrs": None,
                            "model": {"net.0.weight": torch.zeros(3, 1)}})
    with pytest.raises(ValueError, match="do not fit a .* built from its configuration"):
        pretrained.load("tiny-sine")


def test_ship_model_ships_one_seed_of_a_run_of_several(shipping, tmp_path_factory, load_script):
    """A run of several seeds (the in-context script's record) ships the named seed's network with that seed's
    score and provenance; a wrong seed, a missing --seed or weights that do not fit write nothing."""
    ship_model = load_script("ship_model")
    run_folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(dataset="sinusoid", loss="mse", ways=1, shots=5, queries=5, inner_lr=0.01, device="cpu",
                         steps=3, seed=1)
    torch.manual_seed(0)
    save_checkpoint(run_folder / "seed1.pt", {"step": 3, "config": asdict(config), "lrs": None,
                                              "model": sinusoid_mlp().state_dict()})
    save_checkpoint(run_folder / "foreign.pt", {"step": 3, "config": asdict(config), "lrs": None,
                                                "model": {"net.0.weight": torch.zeros(3, 1)}})
    protocol = {"split": "test", "seed": 1, "num_tasks": 2}
    seeds = [{"seed": seed, "test": {"metric": "mse", "mean": 0.1 * (seed + 1), "ci95": 0.01, "per_task": [0.1, 0.2]},
              "training_wall_time_s": 10.0 + seed, "provenance": {"device": "cpu", "seed": seed}} for seed in (0, 1)]
    results = {"script": "scripts/full_scale_x.py", "runs": {"sine": {
        "test": {"metric": "mse", "mean": 0.15, "ci95": 0.6, "protocol": protocol}, "seeds": seeds,
        "paper": "none", "config": {"steps": 3}, "training_wall_time_s": 21.0, "provenance": {}}}}
    (run_folder / "results.json").write_text(json.dumps(results))
    ship = [str(run_folder / "results.json"), "sine", "sine-seed1"]

    for argv, refusal in ((ship, "name one with --seed"),
                          (ship + ["--seed", "0", "--checkpoint", str(run_folder / "seed1.pt")], "seed 1, not 0"),
                          (ship + ["--seed", "2", "--checkpoint", str(run_folder / "seed1.pt")], "no scored seed 2"),
                          (ship + ["--seed", "1", "--checkpoint", str(run_folder / "foreign.pt")], "do not fit")):
        with pytest.raises(SystemExit, match=refusal):
            ship_model.main(argv)
        assert list(shipping.iterdir()) == [], "a refused model left files behind"

    assert ship_model.main(ship + ["--seed", "1", "--checkpoint", str(run_folder / "seed1.pt")]) == 0
    shipped = pretrained.load("sine-seed1")
    assert shipped.results["test"] == {"metric": "mse", "mean": 0.2, "ci95": 0.01, "protocol": protocol}
    assert shipped.results["source"]["seed"] == 1 and shipped.results["provenance"] == {"device": "cpu", "seed": 1}
    assert shipped.results["training_wall_time_s"] == 11.0
    torch.manual_seed(0)
    for p, q in zip(shipped.model.parameters(), sinusoid_mlp().parameters()):
        assert torch.equal(p, q)


SHIPPED = pretrained.available()


def test_the_book_ships_its_full_scale_models():
    assert "maml-omniglot-5w1s" in SHIPPED


PREFIX_TASKS = 100  # test tasks re-scored per shipped model here; the chapters re-score all of them (below)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_rescores_to_its_recorded_per_task_scores(name, real_mirror, real_cache):
    """The recorded protocol re-draws the very test tasks; one CPU thread, as when the score was recorded.

    The first 100 of the recorded tasks are scored again and compared task by task with the per-task
    scores of the run's results file: a prefix of the same stream of tasks (the recorded sampler, seed
    and batch size), scored by the same weights and code as the rest, so a match says the model
    reproduces its record. Every image chapter re-scores its method's shipped models on all their
    recorded tasks as well (checked by nbval); doing so here again would cost minutes of CI (Reptile's 50
    test steps on 600 tasks alone about two), for the same evidence.
    """
    shipped = pretrained.load(name)
    recorded = shipped.results["test"]
    source = shipped.results["source"]
    run = json.loads((Path(pretrained.__file__).parents[1] / source["results"]).read_text())["runs"][source["run"]]
    if "seed" in source:  # one seed of a run of several (the in-context transformer): that seed's record
        run = {"test": next(entry["test"] for entry in run["seeds"] if entry["seed"] == source["seed"])}
    assert run["test"]["mean"] == recorded["mean"], f"{name}'s index entry and {source['results']} disagree"
    size = (pretrained.FOLDER / f"{name}.pt").stat().st_size
    weights = [*shipped.model.state_dict().values(), *(shipped.lrs or {}).values()]
    float32_bytes = 4 * sum(tensor.numel() for tensor in weights)  # optimizer state would double or triple it
    assert size < float32_bytes + 100_000, f"{name} weighs {size} bytes for {float32_bytes}: ship float32 weights only"
    if "held_out" in recorded["protocol"]:  # a domain-generalization model: all its held-out digits, as recorded
        again = pretrained.evaluate(name, cache=real_cache, mirror=real_mirror)
        assert again.num_tasks == recorded["num_examples"] and again.mean == recorded["mean"]
        assert again.ci95 == pytest.approx(recorded["ci95"], rel=1e-12) and again.query_bn == recorded["query_bn"]
        with pytest.raises(ValueError, match="classifies each held-out digit on its own"):
            pretrained.evaluate(name, queries=15, cache=real_cache, mirror=real_mirror)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = pretrained.evaluate(name, num_tasks=PREFIX_TASKS, cache=real_cache, mirror=real_mirror)
    finally:
        torch.set_num_threads(threads)
    assert recorded["num_tasks"] >= 600 and again.query_bn == recorded["query_bn"]
    assert again.per_task.tolist() == pytest.approx(run["test"]["per_task"][:PREFIX_TASKS], abs=1e-6)
