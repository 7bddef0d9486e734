"""Tasks and data sets: episodes, samplers and the loaders behind them."""
from metabook_learn.data.sinusoid import SinusoidSampler, SinusoidTasks, sample_sinusoid_tasks
from metabook_learn.data.tasks import Task, TaskBatch, stack_tasks
from metabook_learn.data.samplers import (
    EpisodeComposition,
    MetaDatasetSampler,
    NWayKShotSampler,
    ShuffledOrder,
    meta_dataset_statistics,
)

__all__ = ["SinusoidTasks", "SinusoidSampler", "sample_sinusoid_tasks"]
__all__ += ["Task", "TaskBatch", "stack_tasks"]
__all__ += ["NWayKShotSampler", "ShuffledOrder", "MetaDatasetSampler", "EpisodeComposition", "meta_dataset_statistics"]

# Data set loaders (each module's docstring describes its protocol and file formats).
from metabook_learn.data.classes import ClassImages
from metabook_learn.data.storage import DataError, UpstreamFile, cache_dir, mirror_dir
from metabook_learn.data.omniglot import load_omniglot, load_omniglot_characters, omniglot_split_characters
from metabook_learn.data.omniglot_runs import (
    HUMAN_ERROR_RATE,
    load_omniglot_runs,
    modified_hausdorff_classifier,
    nearest_pixels_classifier,
    score_one_shot,
)
from metabook_learn.data.rotated_mnist import RotatedMNIST, load_rotated_mnist
from metabook_learn.data.mini_imagenet import load_mini_imagenet
from metabook_learn.data.cifar_fs import load_cifar_fs

__all__ += ["ClassImages", "DataError", "UpstreamFile", "cache_dir", "mirror_dir"]
__all__ += ["load_omniglot", "load_omniglot_characters", "omniglot_split_characters"]
__all__ += ["HUMAN_ERROR_RATE", "load_omniglot_runs", "score_one_shot"]
__all__ += ["modified_hausdorff_classifier", "nearest_pixels_classifier"]
__all__ += ["RotatedMNIST", "load_rotated_mnist", "load_mini_imagenet", "load_cifar_fs"]
