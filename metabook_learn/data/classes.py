"""A labelled image data set held as one tensor, the form every sampler draws from.

Few-shot samplers pick classes, then images within a class. Keeping the whole
data set as one ``uint8`` tensor, each class a contiguous block, makes both
picks pure index arithmetic, on the CPU or on the GPU, with no per-image
Python work.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metabook_learn import validation

__all__ = ["ClassImages"]


@dataclass
class ClassImages:
    """Images grouped by class.

    ``images``: ``uint8 [num_images, C, H, W]``.
    ``starts``, ``sizes``: ``int64 [num_classes]``; class ``c`` owns
    ``images[starts[c] : starts[c] + sizes[c]]``. Two classes may share a block:
    that is how rotated copies of a class exist without storing images twice.
    ``class_names``: one readable name per class (for Omniglot
    ``"Alphabet/characterNN"``), so that splits can be documented and checked.
    ``rotations``: ``int64 [num_classes]``, quarter turns (0-3) applied to a
    class's images when they are sampled. Rotated copies of a class are classes
    of their own in the Omniglot protocol of MAML and Prototypical Networks.
    """

    images: torch.Tensor
    starts: torch.Tensor
    sizes: torch.Tensor
    class_names: list[str]
    rotations: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        validation.tensor("images", self.images, torch.uint8, dim=4, shape="[N, C, H, W]")
        for name in ("starts", "sizes", "rotations"):
            if getattr(self, name) is not None:
                validation.tensor(name, getattr(self, name), "integer", dim=1, shape="[num_classes]")
        num_classes = len(self.class_names)
        if num_classes < 1:
            raise ValueError("a data set needs at least one class")
        if self.starts.shape != (num_classes,) or self.sizes.shape != (num_classes,):
            raise ValueError(f"starts and sizes must have one entry per class ({num_classes})")
        if bool((self.starts < 0).any()) or bool((self.starts + self.sizes > self.images.shape[0]).any()):
            raise ValueError("a class's block of images runs outside the image tensor")
        if self.rotations is None:
            self.rotations = torch.zeros(num_classes, dtype=torch.int64, device=self.starts.device)
        elif self.rotations.shape != (num_classes,):
            raise ValueError(f"rotations must have one entry per class ({num_classes})")

    @classmethod
    def from_sizes(cls, images: torch.Tensor, sizes, class_names: list[str]) -> "ClassImages":
        """Images already sorted by class, ``sizes[c]`` of them for class ``c``."""
        validation.tensor("images", images, torch.uint8, dim=4, shape="[N, C, H, W]")
        sizes = torch.as_tensor(sizes, dtype=torch.int64)
        starts = torch.cumsum(sizes, 0) - sizes
        return cls(images, starts, sizes, list(class_names))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "ClassImages":
        """The same data set on ``device`` (for example the GPU, so sampling never waits on the host)."""
        return ClassImages(
            self.images.to(device), self.starts.to(device), self.sizes.to(device),
            list(self.class_names), self.rotations.to(device),
        )

    def subset(self, classes) -> "ClassImages":
        """Only the given classes (indices), in that order, re-numbered from 0; images are shared."""
        classes = torch.as_tensor(classes, dtype=torch.int64, device=self.starts.device)
        return ClassImages(
            self.images, self.starts[classes], self.sizes[classes],
            [self.class_names[c] for c in classes.tolist()], self.rotations[classes],
        )

    def with_rotations(self, quarter_turns=(0, 1, 2, 3)) -> "ClassImages":
        """Each class once per entry of ``quarter_turns``, as separate classes; images are shared.

        Class ``c`` turned by the ``i``-th entry ``k`` becomes class
        ``i * num_classes + c``, named ``"<name>/rot<90 k>"``.
        """
        turns = torch.as_tensor(list(quarter_turns), dtype=torch.int64, device=self.starts.device)
        repeat = len(turns)
        return ClassImages(
            self.images,
            self.starts.repeat(repeat),
            self.sizes.repeat(repeat),
            [f"{name}/rot{90 * int(k)}" for k in turns for name in self.class_names],
            ((self.rotations.unsqueeze(0) + turns.unsqueeze(1)) % 4).reshape(-1),
        )
