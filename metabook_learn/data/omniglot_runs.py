"""The original Omniglot one-shot benchmark (Lake, Salakhutdinov and Tenenbaum, 2015).

``all_runs.zip`` holds 20 runs of 20-way 1-shot classification. Each run
draws 20 characters from one alphabet of the evaluation set: one drawing of
each is a training image (``runNN/training/classCC.png``) and a drawing of
each by another person is a test image (``runNN/test/itemII.png``);
``runNN/class_labels.txt`` pairs every test item with its training image.
A classifier sees the 20 training images and must name, for every test
image, the training image of the same character. People err on 4.5% of the
test images (Lake et al., 2015).

``score_one_shot`` scores any classifier on the runs. Two baselines:
``modified_hausdorff_classifier`` is the demo of the Omniglot repository
(Dubuisson and Jain's modified Hausdorff distance between the sets of inked
pixels; the repository reports 38.8% error), and
``nearest_pixels_classifier`` compares raw pixels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metabook_learn import validation
from metabook_learn.data.omniglot import resize_drawing
from metabook_learn.data.storage import DataError, UpstreamFile, cache_dir, extract_archive, fetch, open_image

__all__ = [
    "ALL_RUNS",
    "HUMAN_ERROR_RATE",
    "OneShotRun",
    "OneShotScore",
    "load_omniglot_runs",
    "score_one_shot",
    "modified_hausdorff_classifier",
    "nearest_pixels_classifier",
]

ALL_RUNS = UpstreamFile(
    "omniglot",
    "all_runs.zip",
    "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/one-shot-classification/all_runs.zip",
    "e8996daecdf12afeeb4a53a179f06b19",  # MD5 of the upstream file (the shared mirror is byte-identical)
)
HUMAN_ERROR_RATE = 0.045  # Lake et al. (2015), people on these 20 runs
NUM_RUNS, WAYS = 20, 20

# A classifier maps (training uint8 [20, 1, S, S], test uint8 [20, 1, S, S])
# to the index of the chosen training image for every test image, int64 [20].
Classifier = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class OneShotRun:
    """One run: ``training`` and ``test`` are ``uint8 [20, 1, S, S]`` (strokes 255 on 0);
    ``test_labels`` ``int64 [20]``: test image ``i`` shows the character of ``training[test_labels[i]]``."""

    name: str
    training: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor


@dataclass
class OneShotScore:
    """Fraction of test images misclassified, per run and averaged over the runs."""

    run_errors: list[float]

    @property
    def mean_error(self) -> float:
        return float(np.mean(self.run_errors))

    def __str__(self) -> str:
        return (f"{100 * self.mean_error:.1f}% error over {len(self.run_errors)} runs "
                f"(people: {100 * HUMAN_ERROR_RATE:.1f}%, chance: {100 * (1 - 1 / WAYS):.0f}%)")


def load_omniglot_runs(
    image_size: int = 105,
    antialias: bool = True,
    cache: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> list[OneShotRun]:
    """The 20 runs, images at their native 105x105 or resized like ``load_omniglot`` does."""
    image_size = validation.count("image_size", image_size)
    folder = cache_dir(cache) / "omniglot" / "all_runs"
    if not folder.is_dir():  # unpacked once; a finished folder is complete (see extract_archive)
        extract_archive(fetch(ALL_RUNS, cache, mirror, allow_download), folder)
    runs = []
    for r in range(1, NUM_RUNS + 1):
        run = folder / f"run{r:02d}"
        labels_file = run / "class_labels.txt"
        if not labels_file.is_file():
            raise DataError(f"{labels_file} is missing; all_runs.zip is incomplete: delete {folder} "
                            "and run `python -m metabook_learn data prepare omniglot-runs`")
        training_files = [f"run{r:02d}/training/class{c:02d}.png" for c in range(1, WAYS + 1)]
        pairs = [line.split() for line in labels_file.read_text().splitlines() if line.strip()]
        test_files = [test for test, _ in pairs]
        labels = [training_files.index(train) for _, train in pairs]
        runs.append(OneShotRun(
            name=f"run{r:02d}",
            training=_read_images(folder, training_files, image_size, antialias),
            test=_read_images(folder, test_files, image_size, antialias),
            test_labels=torch.tensor(labels, dtype=torch.int64),
        ))
    return runs


def _read_images(folder: Path, names: list[str], image_size: int, antialias: bool) -> torch.Tensor:
    images = []
    for name in names:
        with open_image(folder / name) as image:
            images.append(resize_drawing(image, image_size, antialias))
    return torch.from_numpy(np.stack(images)).unsqueeze(1)


def score_one_shot(classifier: Classifier, runs: list[OneShotRun]) -> OneShotScore:
    """Error rate of ``classifier`` on each run (see ``Classifier`` above for its signature)."""
    errors = []
    for run in runs:
        predicted = torch.as_tensor(classifier(run.training, run.test)).reshape(-1).cpu()
        if predicted.shape != run.test_labels.shape:
            raise ValueError(f"the classifier returned {tuple(predicted.shape)} predictions for "
                             f"{len(run.test_labels)} test images in {run.name}")
        errors.append(float((predicted != run.test_labels).float().mean()))
    return OneShotScore(errors)


def _inked_points(image: torch.Tensor) -> torch.Tensor:
    """Row and column of every inked pixel of ``image`` (``[1, S, S]``), centred on their mean: ``[n, 2]``."""
    points = (image[0] > 127).nonzero().double()
    return points - points.mean(0)


def modified_hausdorff_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dubuisson and Jain (1994): the larger of the mean nearest-point distances from ``a`` to ``b`` and back."""
    distances = torch.cdist(a, b)
    return torch.maximum(distances.min(1).values.mean(), distances.min(0).values.mean())


def modified_hausdorff_classifier(training: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """For each test image, the training image at the smallest modified Hausdorff distance: ``int64 [20]``."""
    train_points = [_inked_points(image) for image in training]
    test_points = [_inked_points(image) for image in test]
    costs = torch.tensor([[float(modified_hausdorff_distance(a, b)) for b in train_points] for a in test_points])
    return costs.argmin(1)  # [20]


def nearest_pixels_classifier(training: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """For each test image, the training image nearest in Euclidean pixel distance: ``int64 [20]``."""
    return torch.cdist(test.flatten(1).float(), training.flatten(1).float()).argmin(1)
