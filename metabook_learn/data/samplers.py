"""Episode samplers: from a :class:`~metabook_learn.data.classes.ClassImages` data set to few-shot tasks.

Drawing an episode takes three picks, each a plain function below:

1. :func:`choose_classes` -- N distinct classes per task;
2. :func:`choose_images` -- distinct images inside each chosen class;
3. :func:`load_images` -- gather those images, rotate, and scale to [0, 1].

All three are tensor index arithmetic on whatever device the data set lives
on, for a whole meta-batch of tasks at once. Nothing loops over tasks or
images in Python, and the fixed N-way K-shot sampler never waits for the GPU
(no ``.item()``, no boolean masks), so sampling keeps up with training.

Two samplers use them:

- :class:`NWayKShotSampler`: the classic episodes of Matching Networks, MAML and
  Prototypical Networks, N ways, K shots and Q queries per class, stacked into
  a :class:`~metabook_learn.data.tasks.TaskBatch`;
- :class:`MetaDatasetSampler`: variable-way, variable-shot episodes of
  Meta-Dataset (Triantafillou et al., 2020), one :class:`~metabook_learn.data.tasks.Task` per draw.

Each sampler owns a ``torch.Generator``: the same seed gives the same episodes
(on the same device: the CPU and CUDA generators produce different streams),
and ``state_dict()`` / ``load_state_dict()`` resume the stream from a checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from metabook_learn.data.classes import ClassImages
from metabook_learn.data.tasks import Task, TaskBatch
from metabook_learn import validation

__all__ = [
    "ShuffledOrder",
    "choose_classes",
    "choose_images",
    "load_images",
    "NWayKShotSampler",
    "EpisodeComposition",
    "meta_dataset_shots",
    "MetaDatasetSampler",
    "meta_dataset_statistics",
]


# ── The three picks ───────────────────────────────────────────────────────────


def choose_classes(
    num_classes: int, num_ways: int, num_tasks: int, generator: torch.Generator, device=None
) -> torch.Tensor:
    """``num_ways`` distinct classes out of ``num_classes``, for each of ``num_tasks`` tasks.

    Returns ``int64 [num_tasks, num_ways]``. Each task gives every class a random
    key and keeps the ``num_ways`` classes with the largest keys: a uniformly
    random subset, listed in a uniformly random order. That order becomes the
    labels 0..N-1, so the label of a class changes from task to task.
    """
    keys = torch.rand(num_tasks, num_classes, generator=generator, device=device)
    return keys.topk(num_ways, dim=1).indices


def choose_images(
    class_sizes: torch.Tensor, count: int, max_class_size: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` distinct image positions inside each class, uniformly at random.

    ``class_sizes``: ``int64 [...]``, the number of images of each chosen class.
    Returns ``int64 [..., count]``, positions ``0 <= p < size`` within the class.

    Classes differ in size, so every class gets ``max_class_size`` random keys
    and the keys of positions it does not have are set to -1: they lose to every
    real key (those lie in [0, 1)), so they are never chosen while
    ``count <= size``. Positions come out in decreasing key order, a random
    order, so the first ``K`` of them can be the support set and the rest the
    query set, and any prefix is again a uniformly random subset.
    """
    slots = torch.arange(max_class_size, device=class_sizes.device)
    keys = torch.rand(*class_sizes.shape, max_class_size, generator=generator, device=class_sizes.device)
    keys = keys.masked_fill(slots >= class_sizes.unsqueeze(-1), -1.0)
    return keys.topk(count, dim=-1).indices


def load_images(
    data: ClassImages, classes: torch.Tensor, positions: torch.Tensor, rotate: bool = True
) -> torch.Tensor:
    """The images at ``positions`` within ``classes``, rotated, as ``float32`` in [0, 1].

    ``classes`` and ``positions`` are integer tensors that broadcast to one shape
    ``P`` (for example ``[T, N, 1]`` and ``[T, N, K]``). Returns
    ``float32 [*P, C, H, W]``. A class with ``data.rotations[c] = k`` shows its
    images as ``torch.rot90(image, k, dims=(-2, -1))``; quarter turns (k = 1, 3)
    need square images. ``rotate=False`` skips the rotation step for data sets
    without rotated classes.
    """
    images = data.images[data.starts[classes] + positions]  # uint8 [*P, C, H, W]
    if rotate:
        # A rotation only moves pixels. Turning the grid of pixel numbers says, for every
        # pixel of the turned image, which pixel of the original lands there; gathering
        # along that order turns each image by its class's k in one pass, with no
        # per-rotation masks (whose size the CPU would have to wait for on a GPU).
        height, width = images.shape[-2:]
        grid = torch.arange(height * width, device=images.device).view(height, width)
        pixel_order = torch.stack([torch.rot90(grid, k).flatten() for k in range(4)])  # [4, H*W]
        flat = images.flatten(-2)  # [*P, C, H*W]
        order = pixel_order[data.rotations[classes]].unsqueeze(-2)  # [..., 1, H*W], one order per class
        images = flat.gather(-1, order.expand_as(flat)).view_as(images)
    # Converting only now moves a quarter of the bytes that float32 images would.
    return images.float().div_(255)


# ── Checks shared by both samplers ────────────────────────────────────────────


def _check_data(data) -> ClassImages:
    if not isinstance(data, ClassImages):
        raise TypeError(
            f"data must be a ClassImages (uint8 images [N, C, H, W] grouped by class), got "
            f"{type(data).__name__}; build one with ClassImages.from_sizes(images, sizes, class_names) "
            "or use a loader from metabook_learn.data"
        )
    return data


def _check_class_sizes(data: ClassImages, needed: int, why: str) -> None:
    """Every class must hold ``needed`` images, since any class can be drawn."""
    smallest = int(data.sizes.argmin())
    size = int(data.sizes[smallest])
    if size < needed:
        raise ValueError(
            f"{why} needs {needed} images per class, but class {smallest} "
            f"({data.class_names[smallest]!r}) has only {size}; ask for fewer, or drop the small "
            "classes first, e.g. data.subset(torch.nonzero(data.sizes >= "
            f"{needed}).flatten())"
        )


class _SeededSampler:
    """The data set, its own random generator, and what the three picks need to know about the data."""

    def __init__(self, data: ClassImages, seed: int) -> None:
        self.data = _check_data(data)
        seed = validation.count("seed", seed, minimum=0)
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.max_class_size = int(data.sizes.max())
        used_turns = set(data.rotations.tolist())
        if not used_turns <= {0, 1, 2, 3}:
            raise ValueError(f"rotations must be quarter turns 0-3, got {sorted(used_turns)}")
        self.rotate = used_turns != {0}
        height, width = data.images.shape[-2:]
        if height != width and (1 in used_turns or 3 in used_turns):
            raise ValueError(
                f"a quarter turn of a {height}x{width} image changes its shape, so rotations of 90 or "
                "270 degrees need square images; resize the images or keep rotations at 0 and 2"
            )

    def state_dict(self) -> dict:
        """The generator's state: save it with a checkpoint to resume the same stream of episodes."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# ── Fixed N-way K-shot episodes ───────────────────────────────────────────────


class NWayKShotSampler(_SeededSampler):
    """N-way K-shot tasks with Q query examples per class, drawn a meta-batch at a time.

    Each task picks ``num_ways`` distinct classes uniformly, then
    ``num_shots + num_queries`` distinct images of each class; the first
    ``num_shots`` form the support set, the others the query set, so the two
    never share an image. ``sample(T)`` returns a :class:`~metabook_learn.data.tasks.TaskBatch` on the data
    set's device::

        sampler = NWayKShotSampler(omniglot_train, num_ways=5, num_shots=1, num_queries=15, seed=0)
        batch = sampler.sample(32)  # batch.support_x: [32, 5, 1, 28, 28]; batch.query_x: [32, 75, 1, 28, 28]
    """

    def __init__(self, data: ClassImages, num_ways: int, num_shots: int, num_queries: int, seed: int = 0) -> None:
        super().__init__(data, seed)
        self.num_ways = validation.count("num_ways", num_ways)
        self.num_shots = validation.count("num_shots", num_shots)
        self.num_queries = validation.count("num_queries", num_queries)
        if self.num_ways > data.num_classes:
            raise ValueError(
                f"num_ways={num_ways}, but the data set has only {data.num_classes} classes; "
                "ask for fewer ways or use a split with more classes"
            )
        _check_class_sizes(
            data, self.num_shots + self.num_queries, f"num_shots={num_shots} plus num_queries={num_queries}"
        )

    def sample(self, num_tasks: int) -> TaskBatch:
        """``num_tasks`` independent tasks, stacked (shapes in :class:`~metabook_learn.data.tasks.TaskBatch`)."""
        num_tasks = validation.count("num_tasks", num_tasks)
        data, ways, shots = self.data, self.num_ways, self.num_shots
        classes = choose_classes(data.num_classes, ways, num_tasks, self.generator, data.device)  # [T, N]
        positions = choose_images(
            data.sizes[classes], shots + self.num_queries, self.max_class_size, self.generator
        )  # [T, N, K+Q]
        per_image_class = classes.unsqueeze(-1)  # [T, N, 1], broadcast over the images of a class
        support_x = load_images(data, per_image_class, positions[..., :shots], self.rotate)
        query_x = load_images(data, per_image_class, positions[..., shots:], self.rotate)
        labels = torch.arange(ways, device=data.device)
        return TaskBatch(
            support_x=support_x.flatten(1, 2),  # [T, N*K, C, H, W], class by class
            support_y=labels.repeat_interleave(shots).repeat(num_tasks, 1),
            query_x=query_x.flatten(1, 2),  # [T, N*Q, C, H, W]
            query_y=labels.repeat_interleave(self.num_queries).repeat(num_tasks, 1),
            classes=classes,
        )


# ── Meta-Dataset: variable ways and shots ─────────────────────────────────────


@dataclass
class EpisodeComposition:
    """What a Meta-Dataset episode holds, decided before any image is loaded.

    ``classes``: ``int64 [N]``, the chosen classes (label ``i`` is ``classes[i]``).
    ``shots``: ``int64 [N]``, support examples of each class (``k_c``).
    ``num_queries``: query examples per class (``q``), the same for every class.
    """

    classes: torch.Tensor
    shots: torch.Tensor
    num_queries: int

    @property
    def num_ways(self) -> int:
        return len(self.classes)

    @property
    def support_size(self) -> int:
        return int(self.shots.sum())


def meta_dataset_shots(
    images_per_class: torch.Tensor,
    num_queries: int,
    generator: torch.Generator,
    max_support_size: int = 500,
    max_support_per_class: int = 100,
    log_weight_range: tuple[float, float] = (math.log(0.5), math.log(2.0)),
) -> torch.Tensor:
    """Support examples per class in a Meta-Dataset episode (Triantafillou et al., 2020, Sec. 3.2).

    ``images_per_class``: ``int64 [N]``, the sizes ``|Im(c)|`` of the chosen
    classes; ``num_queries``: ``q``. Returns ``int64 [N]``, the shots ``k_c``::

        |S| = min(500, sum_c ceil(beta * min(100, |Im(c)| - q))),   beta ~ U(0, 1]
        R_c = exp(alpha_c) |Im(c)| / sum_c' exp(alpha_c') |Im(c')|,  alpha_c ~ U[log 0.5, log 2]
        k_c = min(floor(R_c * (|S| - N)) + 1, |Im(c)| - q)

    The budget ``|S|`` is a random fraction of what the classes can offer; the
    shots share it out in proportion to class size, perturbed by up to a factor
    2 either way, so large classes tend to get more shots, as in the wild.
    Every class gets at least one shot (the ``+ 1``), none more than it has
    left after the queries, and ``sum_c k_c <= |S|``.
    """
    device = images_per_class.device
    num_ways = len(images_per_class)
    remaining = images_per_class - num_queries  # |Im(c)| - q, at least 1
    # 1 - U[0, 1) lies in (0, 1]: beta > 0 makes each class add at least one example to |S|.
    beta = 1.0 - torch.rand((), generator=generator, device=device)
    budget = torch.ceil(beta * remaining.clamp(max=max_support_per_class)).sum().clamp(max=max_support_size)
    low, high = log_weight_range
    log_weight = low + (high - low) * torch.rand(num_ways, generator=generator, device=device)  # alpha_c
    weight = torch.exp(log_weight) * images_per_class
    proportion = weight / weight.sum()  # R_c
    shots = torch.floor(proportion * (budget - num_ways)).long() + 1
    return torch.minimum(shots, remaining)


class MetaDatasetSampler(_SeededSampler):
    """Variable-way, variable-shot episodes, as in Meta-Dataset (Triantafillou et al., ICLR 2020).

    Each episode is drawn in steps (Section 3.2 and Appendix of the paper;
    checked against ``meta_dataset/data/sampling.py`` of google-research/meta-dataset):

    1. ways ``N ~ U{5, ..., min(50, C)}`` for a data set of ``C`` classes, and
       ``N`` distinct classes chosen uniformly (the paper's class hierarchies for
       ImageNet and Omniglot are not used here);
    2. queries per class ``q = min(10, min_c floor(|Im(c)| / 2))``, so that at
       least half of every class is left for the support set;
    3. shots ``k_c`` per class by :func:`meta_dataset_shots`.

    Episodes are ragged (each class has its own ``k_c``), so ``sample()``
    returns one :class:`~metabook_learn.data.tasks.Task`; its support set is ordered class by class.

    The paper's fixed variants: ``num_ways`` fixes N; ``num_shots`` fixes every
    ``k_c`` (then ``q = min(10, min_c |Im(c)| - k)``); ``num_queries`` fixes q.
    The other keywords are the paper's constants.
    """

    def __init__(
        self,
        data: ClassImages,
        seed: int = 0,
        *,
        num_ways: int | None = None,
        num_shots: int | None = None,
        num_queries: int | None = None,
        min_ways: int = 5,
        max_ways: int = 50,
        max_queries: int = 10,
        max_support_size: int = 500,
        max_support_per_class: int = 100,
        log_weight_range: tuple[float, float] = (math.log(0.5), math.log(2.0)),
    ) -> None:
        super().__init__(data, seed)
        self.num_ways = None if num_ways is None else validation.count("num_ways", num_ways)
        self.num_shots = None if num_shots is None else validation.count("num_shots", num_shots)
        self.num_queries = None if num_queries is None else validation.count("num_queries", num_queries)
        self.min_ways = validation.count("min_ways", min_ways)
        self.max_ways = validation.count("max_ways", max_ways, minimum=self.min_ways)
        self.max_queries = validation.count("max_queries", max_queries)
        self.max_support_per_class = validation.count("max_support_per_class", max_support_per_class)
        self.log_weight_range = tuple(log_weight_range)

        fewest_ways = self.num_ways or self.min_ways
        if fewest_ways > data.num_classes:
            name = "num_ways" if self.num_ways else "min_ways"
            raise ValueError(
                f"{name}={fewest_ways}, but the data set has only {data.num_classes} classes; "
                f"ask for fewer ways or use a split with more classes"
            )
        most_ways = self.num_ways or min(self.max_ways, data.num_classes)
        # One support example per class must fit in the budget.
        self.max_support_size = validation.count("max_support_size", max_support_size, minimum=most_ways)
        # The smallest class must leave at least one query and one support example.
        shots_needed = self.num_shots or 1
        queries_needed = self.num_queries or 1
        _check_class_sizes(data, shots_needed + queries_needed, "a Meta-Dataset episode with these settings")

    def sample_composition(self) -> EpisodeComposition:
        """Ways, classes, shots and queries of the next episode, without loading images."""
        data, generator = self.data, self.generator
        num_ways = self.num_ways
        if num_ways is None:
            most_ways = min(self.max_ways, data.num_classes)
            num_ways = int(torch.randint(self.min_ways, most_ways + 1, (), generator=generator, device=data.device))
        classes = choose_classes(data.num_classes, num_ways, 1, generator, data.device)[0]  # [N]
        images_per_class = data.sizes[classes]  # |Im(c)|
        smallest = int(images_per_class.min())
        if self.num_queries is not None:
            num_queries = self.num_queries
        elif self.num_shots is not None:
            num_queries = min(self.max_queries, smallest - self.num_shots)
        else:
            num_queries = min(self.max_queries, smallest // 2)
        if self.num_shots is not None:
            shots = torch.full_like(images_per_class, self.num_shots)
        else:
            shots = meta_dataset_shots(
                images_per_class, num_queries, generator,
                self.max_support_size, self.max_support_per_class, self.log_weight_range,
            )
        return EpisodeComposition(classes, shots, num_queries)

    def sample(self) -> Task:
        """The next episode: support ``[sum_c k_c, C, H, W]``, query ``[N * q, C, H, W]``."""
        return self.load(self.sample_composition())

    def load(self, composition: EpisodeComposition) -> Task:
        """Draw the images of an episode whose composition is decided."""
        data, device = self.data, self.data.device
        classes, shots, num_queries = composition.classes, composition.shots, composition.num_queries
        images_needed = int((shots + num_queries).max())
        positions = choose_images(data.sizes[classes], images_needed, self.max_class_size, self.generator)  # [N, M]
        # The first k_c positions of class c are its support set, the next q its queries.
        in_support = torch.arange(images_needed, device=device) < shots.unsqueeze(1)  # [N, M]
        query_positions = positions.gather(1, shots.unsqueeze(1) + torch.arange(num_queries, device=device))
        labels = torch.arange(composition.num_ways, device=device)
        return Task(
            support_x=load_images(data, classes.repeat_interleave(shots), positions[in_support], self.rotate),
            support_y=labels.repeat_interleave(shots),
            query_x=load_images(data, classes.unsqueeze(1), query_positions, self.rotate).flatten(0, 1),
            query_y=labels.repeat_interleave(num_queries),
            classes=classes,
        )


def meta_dataset_statistics(sampler: MetaDatasetSampler, num_episodes: int) -> dict[str, torch.Tensor]:
    """Compositions of ``num_episodes`` episodes, for histograms (no images are loaded).

    Returns CPU tensors: ``"ways"``, ``"queries_per_class"`` and
    ``"support_size"``, ``int64 [num_episodes]``; ``"shots"``, ``int64 [total ways]``,
    the ``k_c`` of every class of every episode. This advances the sampler's
    generator: give a figure a sampler of its own.
    """
    num_episodes = validation.count("num_episodes", num_episodes)
    compositions = [sampler.sample_composition() for _ in range(num_episodes)]
    return {
        "ways": torch.tensor([c.num_ways for c in compositions]),
        "queries_per_class": torch.tensor([c.num_queries for c in compositions]),
        "support_size": torch.tensor([c.support_size for c in compositions]),
        "shots": torch.cat([c.shots.cpu() for c in compositions]),
    }


class ShuffledOrder:
    """A sampler whose tasks list their support examples in a random order, a new one for every task.

    ``NWayKShotSampler`` lists an episode's support examples
    class by class, label 0 first. A permutation-invariant learner does not
    care; a causal sequence model does: the position of an example would
    tell it the label, and it could learn that shortcut instead of reading
    the labels. ``sample(T)`` draws from ``sampler`` and permutes each task's
    support set (``support_x``, ``support_y`` along dimension 1) with the
    wrapper's own generator; the query set is left as it is.
    """

    def __init__(self, sampler, seed: int = 0):
        self.sampler = sampler
        self.generator = torch.Generator().manual_seed(validation.count("seed", seed, minimum=0))

    # The wrapped sampler's sizes, read through (the training loop checks tasks against them).
    @property
    def num_ways(self):
        return getattr(self.sampler, "num_ways", None)

    @property
    def num_shots(self):
        return getattr(self.sampler, "num_shots", None)

    @property
    def num_queries(self):
        return getattr(self.sampler, "num_queries", None)

    def sample(self, num_tasks: int):
        tasks = self.sampler.sample(num_tasks)
        order = torch.rand(tasks.support_y.shape[:2], generator=self.generator).argsort(dim=1)  # [T, S]
        rows = torch.arange(order.shape[0])[:, None]
        return replace(tasks, support_x=tasks.support_x[rows, order], support_y=tasks.support_y[rows, order])

    def state_dict(self) -> dict:
        """The wrapped sampler's state and the shuffling generator's: a checkpoint resumes the same episodes."""
        return {"sampler": self.sampler.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])
