"""metabook: meta-learning, learned by building it.

The package behind the metabook executable book. The names a student needs
are here, without knowing the module layout::

    import metabook_learn
    metabook_learn.seed_everything(0)
    train_split, test_split = metabook_learn.load_omniglot("train"), metabook_learn.load_omniglot("test")
    config = metabook_learn.TrainConfig(algorithm="maml", steps=300, meta_batch=8, queries=5)
    model = metabook_learn.omniglot_convnet(5)
    result = metabook_learn.train(config, model, metabook_learn.NWayKShotSampler(train_split, 5, 1, 5), progress=False)
    test = metabook_learn.evaluate(model, metabook_learn.NWayKShotSampler(test_split, 5, 1, 5), result.eval_inner,
                             method=config.algorithm)

* tasks and data: :class:`~metabook_learn.data.samplers.NWayKShotSampler`,
  :class:`~metabook_learn.data.samplers.MetaDatasetSampler`,
  :class:`~metabook_learn.data.sinusoid.SinusoidSampler`, :class:`~metabook_learn.data.tasks.TaskBatch`,
  :func:`~metabook_learn.data.omniglot.load_omniglot`, :func:`~metabook_learn.data.mini_imagenet.load_mini_imagenet`,
  :func:`~metabook_learn.data.cifar_fs.load_cifar_fs`, :func:`~metabook_learn.data.rotated_mnist.load_rotated_mnist`,
  :class:`~metabook_learn.data.domains.DomainBatchSampler`;
* networks: :class:`~metabook_learn.models.ConvNet`, :func:`~metabook_learn.models.omniglot_convnet`,
  :func:`~metabook_learn.models.miniimagenet_convnet`, :func:`~metabook_learn.models.sinusoid_mlp`,
  :class:`~metabook_learn.models.MLP`;
* the inner loop: :class:`~metabook_learn.inner_loop.InnerLoop`, :func:`~metabook_learn.inner_loop.fine_tune`,
  :func:`~metabook_learn.inner_loop.adapt`;
* the methods: :mod:`metabook_learn.methods` (:class:`~metabook_learn.methods.Method`,
  :func:`~metabook_learn.methods.register`, ``get_method`` = :func:`metabook_learn.methods.get`,
  ``load_method`` = :func:`metabook_learn.methods.load`);
* training and evaluation: :class:`~metabook_learn.training.TrainConfig`, :func:`~metabook_learn.training.train`,
  :func:`~metabook_learn.evaluation.evaluate`;
* the shipped models: :mod:`metabook_learn.pretrained`;
* the machine: :func:`~metabook_learn.runtime.pick_device`, :func:`~metabook_learn.runtime.seed_everything`.

Each name is imported when first used, so ``import metabook_learn`` stays cheap.
"""
from __future__ import annotations

import importlib

from metabook_learn.runtime import pick_device, seed_everything

__version__ = "0.1.0"

# name -> (module, attribute in it; None: the module itself)
_PUBLIC = {
    "NWayKShotSampler": ("metabook_learn.data", "NWayKShotSampler"),
    "MetaDatasetSampler": ("metabook_learn.data", "MetaDatasetSampler"),
    "SinusoidSampler": ("metabook_learn.data", "SinusoidSampler"),
    "TaskBatch": ("metabook_learn.data", "TaskBatch"),
    "load_omniglot": ("metabook_learn.data", "load_omniglot"),
    "load_mini_imagenet": ("metabook_learn.data", "load_mini_imagenet"),
    "load_cifar_fs": ("metabook_learn.data", "load_cifar_fs"),
    "load_rotated_mnist": ("metabook_learn.data", "load_rotated_mnist"),
    "DomainBatchSampler": ("metabook_learn.data.domains", "DomainBatchSampler"),
    "ConvNet": ("metabook_learn.models", "ConvNet"),
    "omniglot_convnet": ("metabook_learn.models", "omniglot_convnet"),
    "miniimagenet_convnet": ("metabook_learn.models", "miniimagenet_convnet"),
    "sinusoid_mlp": ("metabook_learn.models", "sinusoid_mlp"),
    "MLP": ("metabook_learn.models", "MLP"),
    "InnerLoop": ("metabook_learn.inner_loop", "InnerLoop"),
    "fine_tune": ("metabook_learn.inner_loop", "fine_tune"),
    "adapt": ("metabook_learn.inner_loop", "adapt"),
    "methods": ("metabook_learn.methods", None),
    "Method": ("metabook_learn.methods", "Method"),
    "register": ("metabook_learn.methods", "register"),
    "get_method": ("metabook_learn.methods", "get"),
    "load_method": ("metabook_learn.methods", "load"),
    "TrainConfig": ("metabook_learn.training", "TrainConfig"),
    "train": ("metabook_learn.training", "train"),
    "evaluate": ("metabook_learn.evaluation", "evaluate"),
    "pretrained": ("metabook_learn.pretrained", None),
}

__all__ = ["pick_device", "seed_everything", "__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'metabook_learn' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
