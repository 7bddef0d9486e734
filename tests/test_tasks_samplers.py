"""Episodes and their samplers: shapes, labels, distinct draws, seeds, rotations, errors.

The data sets here are tiny and synthetic. Every image stores its own index in
two pixels, so a test can tell exactly which stored image a sampled one is.
"""
import math
from collections import Counter

import pytest
import torch

from metabook_learn.data import (
    EpisodeComposition,
    MetaDatasetSampler,
    NWayKShotSampler,
    Task,
    TaskBatch,
    meta_dataset_statistics,
    stack_tasks,
)
from metabook_learn.data.classes import ClassImages
from metabook_learn.data.samplers import meta_dataset_shots


# ── Fixtures: images that say which image they are ───────────────────────────


def encoded_images(num_images: int, channels: int = 1, side: int = 4) -> torch.Tensor:
    """uint8 [num_images, channels, side, side]: image i holds i in pixels (0, 0) and (0, 1).

    The other pixels differ from each other, so any quarter turn changes an image.
    """
    pattern = (torch.arange(channels * side * side) % 250 + 2).view(channels, side, side)
    images = pattern.repeat(num_images, 1, 1, 1)
    index = torch.arange(num_images)
    images[:, 0, 0, 0] = index % 256
    images[:, 0, 0, 1] = index // 256
    return images.to(torch.uint8)


def decode(image: torch.Tensor, quarter_turns: int) -> int:
    """The stored index of a sampled float image [C, H, W] of a class turned by ``quarter_turns``."""
    upright = torch.rot90(image, -quarter_turns, dims=(-2, -1))
    low, high = (round(float(v) * 255) for v in upright[0, 0, :2])
    return low + 256 * high


def make_data(sizes, channels: int = 1, side: int = 4) -> ClassImages:
    images = encoded_images(sum(sizes), channels, side)
    return ClassImages.from_sizes(images, sizes, [f"class{c}" for c in range(len(sizes))])


@pytest.fixture
def ragged():
    """12 classes of 6 to 17 images."""
    return make_data(list(range(6, 18)))


@pytest.fixture
def rotated():
    """6 classes of 5 to 10 images, each in 4 rotations: 24 classes sharing image blocks."""
    return make_data([5, 6, 7, 8, 9, 10]).with_rotations()


def drawn_indices(data: ClassImages, task: Task, images: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Stored indices of ``images``, checking each lies in the block of its label's class."""
    indices = []
    for image, label in zip(images, labels.tolist()):
        c = int(task.classes[label])
        index = decode(image, int(data.rotations[c]))
        start, size = int(data.starts[c]), int(data.sizes[c])
        assert start <= index < start + size, "an image came from outside its class"
        assert torch.equal(image, torch.rot90(data.images[index], int(data.rotations[c]), dims=(-2, -1)).float() / 255)
        indices.append(index)
    return indices


def check_task(data: ClassImages, task: Task) -> None:
    """Distinct classes, images from the right class, no image twice within a class, support and query disjoint."""
    assert len(set(task.classes.tolist())) == task.num_ways
    support = drawn_indices(data, task, task.support_x, task.support_y)
    query = drawn_indices(data, task, task.query_x, task.query_y)
    for label in range(task.num_ways):
        s = [i for i, y in zip(support, task.support_y.tolist()) if y == label]
        q = [i for i, y in zip(query, task.query_y.tolist()) if y == label]
        assert len(set(s)) == len(s) and len(set(q)) == len(q)
        assert not set(s) & set(q), "support and query share an image"


# ── N-way K-shot ──────────────────────────────────────────────────────────────


def test_batch_shapes_and_dtypes():
    data = make_data([8] * 10, channels=3, side=5)
    batch = NWayKShotSampler(data, num_ways=4, num_shots=2, num_queries=3).sample(6)
    assert isinstance(batch, TaskBatch) and len(batch) == 6
    assert batch.support_x.shape == (6, 8, 3, 5, 5) and batch.support_x.dtype == torch.float32
    assert batch.query_x.shape == (6, 12, 3, 5, 5) and batch.query_x.dtype == torch.float32
    assert batch.support_y.shape == (6, 8) and batch.support_y.dtype == torch.int64
    assert batch.query_y.shape == (6, 12) and batch.query_y.dtype == torch.int64
    assert batch.classes.shape == (6, 4) and batch.classes.dtype == torch.int64
    assert (batch.num_ways, batch.num_shots, batch.num_queries) == (4, 2, 3)
    assert 0.0 <= float(batch.support_x.min()) and float(batch.support_x.max()) <= 1.0


def test_labels_zero_to_n_minus_one_with_k_and_q_each(ragged):
    batch = NWayKShotSampler(ragged, num_ways=5, num_shots=3, num_queries=2, seed=1).sample(8)
    for task in batch:
        assert Counter(task.support_y.tolist()) == {label: 3 for label in range(5)}
        assert Counter(task.query_y.tolist()) == {label: 2 for label in range(5)}
        # Class by class: support_x.view(N, K, ...)[i] are the examples of label i.
        assert torch.equal(task.support_y.view(5, 3), torch.arange(5).unsqueeze(1).expand(5, 3))


def test_classes_distinct_and_images_distinct_and_disjoint(ragged):
    # 5 shots + 1 query = 6 images: the smallest class is used up entirely.
    batch = NWayKShotSampler(ragged, num_ways=12, num_shots=5, num_queries=1, seed=2).sample(20)
    for task in batch:
        check_task(ragged, task)


def test_same_seed_same_episodes_other_seed_other_episodes(ragged):
    def draw(seed):
        return NWayKShotSampler(ragged, num_ways=3, num_shots=2, num_queries=2, seed=seed).sample(5)

    a, b, c = draw(7), draw(7), draw(8)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(a.classes, b.classes)
    assert not torch.equal(a.support_x, c.support_x)


def test_state_dict_resumes_the_stream(ragged):
    sampler = NWayKShotSampler(ragged, num_ways=3, num_shots=1, num_queries=2, seed=3)
    sampler.sample(4)
    checkpoint = sampler.state_dict()
    expected = sampler.sample(4)
    resumed = NWayKShotSampler(ragged, num_ways=3, num_shots=1, num_queries=2, seed=99)
    resumed.load_state_dict(checkpoint)
    got = resumed.sample(4)
    assert torch.equal(got.support_x, expected.support_x) and torch.equal(got.query_x, expected.query_x)


def test_rotated_classes_are_rotated_copies_of_the_stored_images(rotated):
    batch = NWayKShotSampler(rotated, num_ways=6, num_shots=2, num_queries=3, seed=4).sample(30)
    seen_turns = set()
    for task in batch:
        check_task(rotated, task)  # compares every image with torch.rot90 of the stored one
        seen_turns |= set(rotated.rotations[task.classes].tolist())
    assert seen_turns == {0, 1, 2, 3}
    # The check above is not vacuous: a quarter turn changes these images.
    image = rotated.images[0]
    assert all(not torch.equal(torch.rot90(image, k, dims=(-2, -1)), image) for k in (1, 2, 3))


def test_classes_and_images_are_picked_uniformly():
    data = make_data([4] * 10)
    draws, ways = 2000, 3
    batch = NWayKShotSampler(data, num_ways=ways, num_shots=1, num_queries=1, seed=5).sample(draws)
    counts = torch.bincount(batch.classes.flatten(), minlength=10).float()
    p = ways / 10
    expected, sigma = draws * p, math.sqrt(draws * p * (1 - p))
    assert bool((counts - expected).abs().max() < 5 * sigma), counts
    # Within a class, each of its 4 images is the support example about a quarter of the time.
    first_support = batch.support_x[:, 0, 0, 0, 0].mul(255).round().long() % 4
    image_counts = torch.bincount(first_support, minlength=4).float()
    p = 1 / 4
    assert bool((image_counts - draws * p).abs().max() < 5 * math.sqrt(draws * p * (1 - p))), image_counts
    # Labels are assigned at random: class 0 is not always label 0.
    label_of_class_0 = (batch.classes == 0).float().argmax(dim=1)[(batch.classes == 0).any(dim=1)]
    assert len(set(label_of_class_0.tolist())) == ways


def test_task_batch_indexing_stacking_and_to(ragged):
    batch = NWayKShotSampler(ragged, num_ways=3, num_shots=2, num_queries=1).sample(4)
    task = batch[1]
    assert isinstance(task, Task) and task.support_x.shape == (6, 1, 4, 4) and task.num_ways == 3
    assert torch.equal(task.query_x, batch.query_x[1])
    assert isinstance(batch[1:3], TaskBatch) and len(batch[1:3]) == 2
    restacked = stack_tasks(list(batch))
    assert all(torch.equal(getattr(restacked, f), getattr(batch, f)) for f in ("support_x", "query_y", "classes"))
    moved = batch.to("cpu")
    assert moved.support_x.device.type == "cpu" and task.to("cpu").classes.device.type == "cpu"


def test_stack_tasks_refuses_different_shapes(ragged):
    a = NWayKShotSampler(ragged, num_ways=3, num_shots=2, num_queries=1).sample(1)[0]
    b = NWayKShotSampler(ragged, num_ways=2, num_shots=3, num_queries=1).sample(1)[0]
    with pytest.raises(ValueError, match="same ways, shots and queries"):
        stack_tasks([a, b])


# ── Errors ────────────────────────────────────────────────────────────────────


def test_more_ways_than_classes(ragged):
    with pytest.raises(ValueError, match="num_ways=13, but the data set has only 12 classes"):
        NWayKShotSampler(ragged, num_ways=13, num_shots=1, num_queries=1)


def test_shots_plus_queries_above_the_smallest_class(ragged):
    with pytest.raises(ValueError, match=r"needs 7 images per class, but class 0 \('class0'\) has only 6"):
        NWayKShotSampler(ragged, num_ways=5, num_shots=5, num_queries=2)


@pytest.mark.parametrize("name", ["num_ways", "num_shots", "num_queries"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_counts(ragged, name, value):
    counts = {"num_ways": 2, "num_shots": 1, "num_queries": 1, name: value}
    with pytest.raises(ValueError, match=f"{name} must be at least 1, got {value}"):
        NWayKShotSampler(ragged, **counts)


def test_bad_types(ragged):
    with pytest.raises(TypeError, match="data must be a ClassImages"):
        NWayKShotSampler(ragged.images, num_ways=2, num_shots=1, num_queries=1)
    with pytest.raises(TypeError, match="num_shots must be an int, got float"):
        NWayKShotSampler(ragged, num_ways=2, num_shots=1.0, num_queries=1)
    with pytest.raises(TypeError, match="num_tasks must be an int"):
        NWayKShotSampler(ragged, num_ways=2, num_shots=1, num_queries=1).sample("4")
    with pytest.raises(ValueError, match="must be uint8"):  # checked by ClassImages itself
        ClassImages.from_sizes(torch.zeros(4, 1, 4, 4), [2, 2], ["a", "b"])


def test_quarter_turns_need_square_images():
    data = ClassImages.from_sizes(torch.zeros(4, 1, 3, 5, dtype=torch.uint8), [2, 2], ["a", "b"])
    with pytest.raises(ValueError, match="need square images"):
        NWayKShotSampler(data.with_rotations(), num_ways=2, num_shots=1, num_queries=1)
    # Half turns keep the shape, so they are fine.
    batch = NWayKShotSampler(data.with_rotations((0, 2)), num_ways=2, num_shots=1, num_queries=1).sample(2)
    assert batch.support_x.shape == (2, 2, 1, 3, 5)


# ── Meta-Dataset episodes ─────────────────────────────────────────────────────


@pytest.fixture
def varied():
    """60 classes of 2 to 61 images: some too small for 10 queries, some large."""
    return make_data(list(range(2, 62)))


def test_meta_dataset_episodes_respect_the_formula(varied):
    sampler = MetaDatasetSampler(varied, seed=0)
    for _ in range(40):
        task = sampler.sample()
        n = task.num_ways
        sizes = varied.sizes[task.classes]
        shots = torch.bincount(task.support_y, minlength=n)
        queries = torch.bincount(task.query_y, minlength=n)
        q = int(queries[0])
        assert 5 <= n <= min(50, varied.num_classes)
        assert bool((queries == q).all()) and q == min(10, int((sizes // 2).min())) and 1 <= q <= 10
        assert len(task.support_y) <= 500
        assert bool((shots >= 1).all()) and bool((shots <= sizes - q).all())
        assert task.support_x.shape == (int(shots.sum()), 1, 4, 4) and task.query_x.shape == (n * q, 1, 4, 4)
        assert torch.equal(task.support_y, torch.sort(task.support_y).values)  # class by class
        check_task(varied, task)


def test_meta_dataset_support_budget_is_capped_at_500():
    data = make_data([300] * 60, side=2)
    stats = meta_dataset_statistics(MetaDatasetSampler(data, seed=1), 200)
    # The budget |S| often hits 500 here; rounding the shots down leaves sum_c k_c between |S| - N and |S|.
    assert 450 <= int(stats["support_size"].max()) <= 500
    assert bool((stats["queries_per_class"] == 10).all())
    assert bool((stats["support_size"] >= stats["ways"]).all())


def test_meta_dataset_shots_follow_the_paper_formula():
    images_per_class = torch.tensor([20, 40, 300, 7, 12])
    q = 3
    generator = torch.Generator().manual_seed(11)
    replay = torch.Generator().manual_seed(11)
    shots = meta_dataset_shots(images_per_class, q, generator)
    # The same random numbers, in the same order, through the formula written out class by class.
    beta = 1.0 - float(torch.rand((), generator=replay))
    alpha = (math.log(0.5) + (math.log(2) - math.log(0.5)) * torch.rand(5, generator=replay)).tolist()
    sizes = images_per_class.tolist()
    budget = min(500, sum(math.ceil(beta * min(100, size - q)) for size in sizes))
    weights = [math.exp(a) * size for a, size in zip(alpha, sizes)]
    expected = [
        min(math.floor(w / sum(weights) * (budget - 5)) + 1, size - q) for w, size in zip(weights, sizes)
    ]
    assert shots.tolist() == expected


def test_meta_dataset_way_histogram_spans_its_range(varied):
    stats = meta_dataset_statistics(MetaDatasetSampler(varied, seed=2), 1000)
    assert set(stats["ways"].tolist()) == set(range(5, 51))
    assert len(stats["shots"]) == int(stats["ways"].sum())
    assert int(stats["support_size"].sum()) == int(stats["shots"].sum())
    small = make_data([4] * 8)  # fewer than 50 classes: the way range ends at 8
    assert set(meta_dataset_statistics(MetaDatasetSampler(small, seed=0), 200)["ways"].tolist()) == {5, 6, 7, 8}


def test_meta_dataset_fixed_ways_shots_queries(varied):
    composition = MetaDatasetSampler(varied, seed=3, num_ways=7, num_shots=1).sample_composition()
    assert isinstance(composition, EpisodeComposition)
    assert composition.num_ways == 7 and composition.shots.tolist() == [1] * 7
    smallest = int(varied.sizes[composition.classes].min())
    assert composition.num_queries == min(10, smallest - 1)
    sampler = MetaDatasetSampler(make_data(list(range(6, 30))), seed=4, num_queries=5)
    for _ in range(20):
        task = sampler.sample()
        assert Counter(task.query_y.tolist()) == {label: 5 for label in range(task.num_ways)}


def test_meta_dataset_seed_and_state(varied):
    a, b = MetaDatasetSampler(varied, seed=5), MetaDatasetSampler(varied, seed=5)
    ta, tb = a.sample(), b.sample()
    assert torch.equal(ta.support_x, tb.support_x) and torch.equal(ta.classes, tb.classes)
    assert not torch.equal(MetaDatasetSampler(varied, seed=6).sample().classes, ta.classes)
    checkpoint = a.state_dict()
    expected = a.sample()
    c = MetaDatasetSampler(varied, seed=0)
    c.load_state_dict(checkpoint)
    got = c.sample()
    assert torch.equal(got.support_x, expected.support_x) and torch.equal(got.query_y, expected.query_y)


def test_meta_dataset_rotated_classes(rotated):
    sampler = MetaDatasetSampler(rotated, seed=7)
    for _ in range(10):
        check_task(rotated, sampler.sample())


def test_meta_dataset_errors(varied):
    with pytest.raises(ValueError, match="min_ways=5, but the data set has only 4 classes"):
        MetaDatasetSampler(make_data([5] * 4))
    with pytest.raises(ValueError, match="num_ways=61, but the data set has only 60 classes"):
        MetaDatasetSampler(varied, num_ways=61)
    with pytest.raises(ValueError, match=r"needs 2 images per class, but class 2 \('class2'\) has only 1"):
        MetaDatasetSampler(make_data([3, 3, 1, 3, 3, 3]))
    with pytest.raises(ValueError, match="num_shots must be at least 1, got 0"):
        MetaDatasetSampler(varied, num_shots=0)
    with pytest.raises(TypeError, match="data must be a ClassImages"):
        MetaDatasetSampler([1, 2, 3])


# ── On the GPU ────────────────────────────────────────────────────────────────


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sampling_on_cuda(rotated):
    data = rotated.to("cuda")
    batch = NWayKShotSampler(data, num_ways=5, num_shots=2, num_queries=3, seed=0).sample(8)
    assert batch.support_x.device.type == "cuda" and batch.support_y.device.type == "cuda"
    again = NWayKShotSampler(data, num_ways=5, num_shots=2, num_queries=3, seed=0).sample(8)
    assert torch.equal(batch.support_x, again.support_x)
    for task in batch.to("cpu"):
        check_task(rotated, task)
    task = MetaDatasetSampler(data, seed=0).sample()
    assert task.support_x.device.type == "cuda"
    check_task(rotated, task.to("cpu"))
