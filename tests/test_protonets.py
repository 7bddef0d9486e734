"""Prototypical Networks (metabook_learn.protonets), each piece against an independent computation."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from meta_fixtures import WAYS, loop_and_vmap_episode_gradients, random_tasks
from metabook_learn.data import ClassImages, NWayKShotSampler
from metabook_learn.data.omniglot_runs import OneShotRun
from metabook_learn.evaluation import evaluate
from metabook_learn.models import ConvNet
from metabook_learn.protonets import (PrototypicalNetwork, omniglot_embedding, one_shot_classifier, prototype_logits,
                                prototypes, squared_distances)
from metabook_learn.training import TrainConfig, train


def tiny_protonet(query_bn="transductive", ways=WAYS, filters=4):
    torch.manual_seed(0)
    embedding = ConvNet(None, in_channels=1, filters=filters, downsample="stride", image_size=8, blocks=2).double()
    return PrototypicalNetwork(embedding, ways, query_bn)


def one_task(tasks, t=0):
    return tasks.support_x[t], tasks.support_y[t], tasks.query_x[t], tasks.query_y[t]


def test_prototypes_are_the_class_means_of_a_slow_loop():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 0, 1, 2, 2, 0, 3, 1, 3, 3, 3])  # unequal shots, shuffled order
    embeddings = torch.randn(len(labels), 6, generator=g, dtype=torch.float64)
    expected = torch.zeros(4, 6, dtype=torch.float64)
    for k in range(4):
        members = [embeddings[i] for i in range(len(labels)) if labels[i] == k]
        expected[k] = sum(members) / len(members)
    torch.testing.assert_close(prototypes(embeddings, labels, 4), expected, rtol=0, atol=1e-15)


def test_squared_distances_and_logits_match_their_definition():
    g = torch.Generator().manual_seed(1)
    queries, centres = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g,
                                                                                       dtype=torch.float64)
    expected = torch.tensor([[sum((queries[i, d] - centres[k, d]) ** 2 for d in range(5)) for k in range(3)]
                             for i in range(7)], dtype=torch.float64)
    torch.testing.assert_close(squared_distances(queries, centres), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(prototype_logits(queries, centres), -expected, rtol=1e-14, atol=0)
    assert (squared_distances(centres, centres).diagonal() == 0).all()


def test_the_episode_loss_is_the_mean_negative_log_probability_of_eq_2():
    model = tiny_protonet()
    support_x, support_y, query_x, query_y = one_task(random_tasks(1))
    loss, logits = model(support_x, support_y, query_x, query_y)
    # Directly from the paper: embed, average, p(y = k | x) ∝ exp(−‖f(x) − c_k‖²), mean of −log p(true class).
    z_support, z_query = model.embedding(torch.cat([support_x, query_x])).split([len(support_x), len(query_x)])
    c = torch.stack([z_support[support_y == k].mean(0) for k in range(WAYS)])
    total = 0.0
    for i in range(len(query_x)):
        d = torch.stack([((z_query[i] - c[k]) ** 2).sum() for k in range(WAYS)])
        total = total + (d[query_y[i]] + torch.log(torch.exp(-d).sum()))
    torch.testing.assert_close(loss, total / len(query_x), rtol=1e-12, atol=0)
    assert logits.shape == (len(query_x), WAYS)


def test_one_shot_prototypes_classify_like_nearest_neighbour_in_squared_euclidean_distance():
    g = torch.Generator().manual_seed(2)
    support, queries = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(40, 8, generator=g,
                                                                                       dtype=torch.float64)
    order = torch.randperm(5, generator=g)  # the support set in any label order
    centres = prototypes(support[order], order, 5)
    torch.testing.assert_close(centres, support, rtol=0, atol=0)  # one shot: the prototype is the example
    nearest = torch.tensor([min(range(5), key=lambda k: ((q - support[k]) ** 2).sum().item()) for q in queries])
    assert torch.equal(prototype_logits(queries, centres).argmax(1), nearest)

    # The same through the network: argmax of the logits is the nearest support embedding.
    model = tiny_protonet()
    support_x, support_y, query_x, query_y = one_task(random_tasks(1, shots=1, queries=4))
    z_support, z_query = model.embed(support_x, query_x)
    nearest = support_y[torch.cdist(z_query, z_support).argmin(1)]
    assert torch.equal(model(support_x, support_y, query_x, query_y)[1].argmax(1), nearest)


def test_squared_euclidean_prototypes_are_a_linear_classifier():
    """Snell et al., Sec. 2.4: −‖f − c_k‖² = −‖f‖² + w_k·f + b_k with w_k = 2 c_k, b_k = −‖c_k‖²."""
    g = torch.Generator().manual_seed(3)
    f, c = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    linear = f @ (2 * c).T - (c * c).sum(1)
    logits = prototype_logits(f, c)
    torch.testing.assert_close(logits, linear - (f * f).sum(1, keepdim=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits.softmax(1), linear.softmax(1), rtol=1e-12, atol=1e-14)


def test_gradients_flow_and_match_finite_differences():
    model = tiny_protonet()
    support_x, support_y, query_x, query_y = one_task(random_tasks(1))
    loss, _ = model(support_x, support_y, query_x, query_y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name

    # The head of the computation (prototypes, distances, cross-entropy) against finite differences in float64.
    def head(z_support, z_query):
        return F.cross_entropy(prototype_logits(z_query, prototypes(z_support, support_y, WAYS)), query_y)

    g = torch.Generator().manual_seed(4)
    inputs = (torch.randn(len(support_y), 5, generator=g, dtype=torch.float64, requires_grad=True),
              torch.randn(len(query_y), 5, generator=g, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(head, inputs)


@pytest.mark.parametrize("query_bn", ["transductive", "inductive"])
def test_vmap_gives_the_loop_s_episode_gradient(query_bn):
    loop, batched = loop_and_vmap_episode_gradients(tiny_protonet(query_bn), random_tasks(4))
    assert batched.strategy == "vmap" and loop.strategy == "loop"


def test_inductive_batch_norm_predicts_each_query_on_its_own():
    support_x, support_y, query_x, query_y = one_task(random_tasks(1))
    inductive, transductive = tiny_protonet("inductive"), tiny_protonet("transductive")
    together = inductive.logits(support_x, support_y, query_x)
    alone = torch.cat([inductive.logits(support_x, support_y, query_x[i:i + 1]) for i in range(len(query_x))])
    torch.testing.assert_close(alone, together, rtol=1e-12, atol=1e-12)
    # Transductively the other queries shift the batch statistics, hence every prediction.
    alone = torch.cat([transductive.logits(support_x, support_y, query_x[i:i + 1]) for i in range(len(query_x))])
    assert not torch.allclose(alone, transductive.logits(support_x, support_y, query_x))


def synthetic_characters(num_classes=24, per_class=8, seed=0):
    """uint8 8x8 images: a class's fixed random pattern (plus noise) on the left half, new noise on the right.

    The right half says nothing about the class; an untrained embedding mixes it in, a trained one learns to
    ignore it, so held-out accuracy starts low and must rise.
    """
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 1, 1, 8, 4, generator=g)
    left = 0.5 * (patterns + 0.15 * torch.randn(num_classes, per_class, 1, 8, 4, generator=g))
    right = torch.rand(num_classes, per_class, 1, 8, 4, generator=g)
    images = torch.cat([left, right], dim=-1).clamp(0, 1)
    return ClassImages.from_sizes((255 * images).round().to(torch.uint8).flatten(0, 1), [per_class] * num_classes,
                                  [f"class {c}" for c in range(num_classes)])


def test_a_tiny_training_run_improves_held_out_accuracy():
    torch.manual_seed(0)
    model = PrototypicalNetwork(ConvNet(None, in_channels=1, filters=8, downsample="stride", image_size=8, blocks=2),
                                ways=3)
    train_data, test_data = synthetic_characters(seed=0), synthetic_characters(seed=1)

    def held_out():
        return evaluate(model, NWayKShotSampler(test_data, 3, 1, 4, seed=5), None, num_tasks=40).mean

    before = held_out()
    config = TrainConfig(algorithm="protonet", ways=3, shots=1, queries=4, meta_batch=4, steps=60, meta_lr=3e-3,
                         log_every=20, device="cpu")
    result = train(config, model, NWayKShotSampler(train_data, 3, 1, 4, seed=0), progress=False)
    after = held_out()
    assert result.curve[-1].meta_loss < result.curve[0].meta_loss
    assert after > before + 0.15 and after > 0.7, (before, after)


def test_other_ways_share_the_parameters_and_mismatches_fail_clearly():
    model = tiny_protonet(ways=3)
    wider = model.at_ways(5)
    assert wider.ways == 5 and wider.embedding is model.embedding and wider.query_bn == model.query_bn
    support_x, support_y, query_x, query_y = one_task(random_tasks(1))
    with pytest.raises(ValueError, match="at_ways"):
        model.at_ways(2)(support_x, support_y, query_x, query_y)            # label 2 with 2 ways
    with pytest.raises(ValueError, match="no support examples"):
        model.at_ways(4)(support_x, support_y, query_x, query_y)            # class 3 has no prototype
    with pytest.raises(ValueError, match="at least one"):
        model.at_ways(10)(support_x, support_y, query_x, query_y)           # fewer examples than ways
    with pytest.raises(ValueError, match="query_y holds labels"):
        model(support_x, support_y, query_x, query_y + 1)
    with pytest.raises(ValueError, match="stats_rows"):
        PrototypicalNetwork(torch.nn.Flatten(), ways=3, query_bn="inductive")
    with pytest.raises(ValueError, match="query_bn"):
        PrototypicalNetwork(torch.nn.Flatten(), ways=3, query_bn="running")


def test_evaluate_reports_the_model_s_batch_norm_mode():
    data = synthetic_characters()
    for mode in ("transductive", "inductive"):
        result = evaluate(tiny_protonet(mode).float(), NWayKShotSampler(data, 3, 1, 2, seed=0), None, num_tasks=2)
        assert result.query_bn == mode and result.inner_steps == 0


def test_one_shot_classifier_for_lake_s_runs():
    torch.manual_seed(0)
    model = PrototypicalNetwork(omniglot_embedding(filters=4), ways=5)  # scores 20-way runs through at_ways
    g = torch.Generator().manual_seed(0)
    training = torch.randint(0, 256, (20, 1, 28, 28), generator=g, dtype=torch.uint8)
    order = torch.randperm(20, generator=g)
    # Each test image a copy of a training image: its nearest prototype (distance 0) is that image's class.
    for mode in ("transductive", "inductive"):
        classify = one_shot_classifier(PrototypicalNetwork(model.embedding, 5, mode))
        assert torch.equal(classify(training, training[order]), order)
    with pytest.raises(ValueError, match="image_size=28"):
        classify(torch.zeros(20, 1, 105, 105, dtype=torch.uint8), torch.zeros(20, 1, 105, 105, dtype=torch.uint8))


def test_the_embeddings_have_the_advertised_sizes():
    x = torch.rand(3, 1, 28, 28)
    assert omniglot_embedding(downsample="stride")(x).shape == (3, 64)   # MAML's body: 28 -> 14 -> 7 -> 4 -> 2, mean
    snell = omniglot_embedding(downsample="maxpool")
    assert snell(x).shape == (3, 64) and snell.num_features == 64       # Snell et al.: 28 -> 14 -> 7 -> 3 -> 1


def fake_omniglot(split="background", cache=None, mirror=None, split_file=None):
    """Random 28x28 "characters", 24 classes of 20 drawings: the script's pipeline without decoding Omniglot."""
    split = Path(split_file).name if split_file is not None else split
    g = torch.Generator().manual_seed(len(split))
    images = torch.randint(0, 256, (24 * 20, 1, 28, 28), generator=g, dtype=torch.uint8)
    return ClassImages.from_sizes(images, [20] * 24, [f"{split}/character{c:02d}" for c in range(24)])


def fake_runs(image_size=28, cache=None, mirror=None):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 20, 1, image_size, image_size), generator=g, dtype=torch.uint8)
    return [OneShotRun(f"run{r:02d}", images[r], images[r].flip(0), torch.arange(19, -1, -1)) for r in range(2)]


def test_the_full_scale_script_runs_end_to_end_in_smoke_mode(monkeypatch, tmp_path, load_script):
    """scripts/full_scale_protonets.py --smoke: the GPU script's whole pipeline, 3 episodes, on the CPU."""
    script = load_script("full_scale_protonets")
    monkeypatch.setattr(script, "load_omniglot", fake_omniglot)
    monkeypatch.setattr(script, "load_omniglot_runs", fake_runs)
    output = tmp_path / "protonets.json"
    assert script.main(["--smoke", "--output", str(output), "--device", "cpu", "--no-progress"]) == 0
    runs = json.loads(output.read_text())["runs"]
    assert set(runs) == {"protonet-vinyals", "protonet-5shot", "protonet-vinyals-bf16", "protonet-authors-split",
                         "protonet-snell-enc", "protonet-lake"}
    vinyals, lake = runs["protonet-vinyals"], runs["protonet-lake"]
    authors = runs["protonet-authors-split"]  # smoke: stand-in split files in the authors' format
    assert "authors' split files" in authors["setting"] and set(authors["split_files_sha256"]) == {
        "train.txt", "val.txt", "test.txt"}
    assert authors["test"]["protocol"]["split"] == "the authors' test.txt"
    assert "by alphabet" in vinyals["deviations_from_paper"] and "by alphabet" not in authors["deviations_from_paper"]
    for ways in (5, 20):
        for mode in ("transductive", "inductive"):
            assert vinyals["tests"][f"{ways}-way 1-shot"][mode]["query_bn"] == mode
            assert vinyals["tests"][f"{ways}-way 1-shot"][mode]["num_tasks"] == 4
    # "test" is the headline Evaluation, in the same form as the other results files.
    assert vinyals["test"] == vinyals["tests"]["5-way 1-shot"]["transductive"]
    assert lake["test"]["query_bn"] == "transductive" and "mean" in lake["test"] and "ci95" in lake["test"]
    assert "98.8" in vinyals["paper"] and vinyals["paper_by_setting"]["20-way 1-shot"] == 0.96
    assert vinyals["config"]["algorithm"] == "protonet"
    assert set(runs["protonet-5shot"]["tests"]) == {"5-way 5-shot", "20-way 5-shot"}
    assert "99.7" in runs["protonet-5shot"]["paper"]
    fast = runs["protonet-vinyals-bf16"]["config"]
    assert fast["bf16"] and fast["channels_last"] and not vinyals["config"]["bf16"]
    assert vinyals["test"]["protocol"] == {"split": "test", "seed": 0, "num_tasks": 4, "ways": 5, "shots": 1,
                                           "queries": 15, "query_bn": "transductive", "inner_steps": 0,
                                           "tasks_per_batch": 20}
    assert "max-pooling" in runs["protonet-snell-enc"]["embedding"]
    assert set(lake["lake_runs_error"]) == {"transductive", "inductive"}
    assert all(0 <= e <= 1 for e in lake["lake_runs_error"].values())
    assert lake["config"]["validate_every"] == 0 and vinyals["validation"]
    assert vinyals["provenance"]["torch"] == torch.__version__ and vinyals["training_wall_time_s"] > 0
    assert (tmp_path / "checkpoints" / "protonet-vinyals.pt").is_file()


def test_the_authors_split_run_names_the_files_it_needs(load_script, tmp_path, capsys):
    """Without the authors' split files, the run stops before training and says where to get them."""
    script = load_script("full_scale_protonets")
    common = ["--runs", "protonet-authors-split", "--device", "cpu", "--output", str(tmp_path / "out.json")]
    with pytest.raises(SystemExit):
        script.main(common)
    assert "--split-files" in capsys.readouterr().err
    (tmp_path / "train.txt").write_text("Hebrew/character01/rot000\n")
    with pytest.raises(SystemExit, match="val.txt, test.txt missing"):
        script.main(common + ["--split-files", str(tmp_path)])
    assert not (tmp_path / "out.json").exists()
