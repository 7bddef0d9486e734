"""metabook: meta-learning, learned by building it.

The package behind the metabook executable book. The names a student needs
are here, without knowing the module layout::

    import metabook
    metabook.seed_everything(0)
    train_split, test_split = metabook.load_omniglot("train"), metabook.load_omniglot("test")
    config = metabook.TrainConfig(algorithm="maml", steps=300, meta_batch=8, queries=5)
    model = metabook.omniglot_convnet(5)
    result = metabook.train(config, model, metabook.NWayKShotSampler(train_split, 5, 1, 5), progress=False)
    test = metabook.evaluate(model, metabook.NWayKShotSampler(test_split, 5, 1, 5), result.eval_inner,
                             method=config.algorithm)

* tasks and data: :class:`~metabook.data.samplers.NWayKShotSampler`,
  :class:`~metabook.data.samplers.MetaDatasetSampler`,
  :class:`~metabook.data.sinusoid.SinusoidSampler`, :class:`~metabook.data.tasks.TaskBatch`,
  :func:`~metabook.data.omniglot.load_omniglot`, :func:`~metabook.data.mini_imagenet.load_mini_imagenet`,
  :func:`~metabook.data.cifar_fs.load_cifar_fs`, :func:`~metabook.data.rotated_mnist.load_rotated_mnist`,
  :class:`~metabook.data.domains.DomainBatchSampler`;
* networks: :class:`~metabook.models.ConvNet`, :func:`~metabook.models.omniglot_convnet`,
  :func:`~metabook.models.miniimagenet_convnet`, :func:`~metabook.models.sinusoid_mlp`,
  :class:`~metabook.models.MLP`;
* the inner loop: :class:`~metabook.inner_loop.InnerLoop`, :func:`~metabook.inner_loop.fine_tune`,
  :func:`~metabook.inner_loop.adapt`;
* the methods: :mod:`metabook.methods` (:class:`~metabook.methods.Method`,
  :func:`~metabook.methods.register`, ``get_method`` = :func:`metabook.methods.get`,
  ``load_method`` = :func:`metabook.methods.load`);
* training and evaluation: :class:`~metabook.training.TrainConfig`, :func:`~metabook.training.train`,
  :func:`~metabook.evaluation.evaluate`;
* the shipped models: :mod:`metabook.pretrained`;
* the machine: :func:`~metabook.runtime.pick_device`, :func:`~metabook.runtime.seed_everything`.

Each name is imported when first used, so ``import metabook`` stays cheap.
"""
from __future__ import annotations

import importlib

from metabook.runtime import pick_device, seed_everything

__version__ = "0.1.0"

# name -> (module, attribute in it; None: the module itself)
_PUBLIC = {
    "NWayKShotSampler": ("metabook.data", "NWayKShotSampler"),
    "MetaDatasetSampler": ("metabook.data", "MetaDatasetSampler"),
    "SinusoidSampler": ("metabook.data", "SinusoidSampler"),
    "TaskBatch": ("metabook.data", "TaskBatch"),
    "load_omniglot": ("metabook.data", "load_omniglot"),
    "load_mini_imagenet": ("metabook.data", "load_mini_imagenet"),
    "load_cifar_fs": ("metabook.data", "load_cifar_fs"),
    "load_rotated_mnist": ("metabook.data", "load_rotated_mnist"),
    "DomainBatchSampler": ("metabook.data.domains", "DomainBatchSampler"),
    "ConvNet": ("metabook.models", "ConvNet"),
    "omniglot_convnet": ("metabook.models", "omniglot_convnet"),
    "miniimagenet_convnet": ("metabook.models", "miniimagenet_convnet"),
    "sinusoid_mlp": ("metabook.models", "sinusoid_mlp"),
    "MLP": ("metabook.models", "MLP"),
    "InnerLoop": ("metabook.inner_loop", "InnerLoop"),
    "fine_tune": ("metabook.inner_loop", "fine_tune"),
    "adapt": ("metabook.inner_loop", "adapt"),
    "methods": ("metabook.methods", None),
    "Method": ("metabook.methods", "Method"),
    "register": ("metabook.methods", "register"),
    "get_method": ("metabook.methods", "get"),
    "load_method": ("metabook.methods", "load"),
    "TrainConfig": ("metabook.training", "TrainConfig"),
    "train": ("metabook.training", "train"),
    "evaluate": ("metabook.evaluation", "evaluate"),
    "pretrained": ("metabook.pretrained", None),
}

__all__ = ["pick_device", "seed_everything", "__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'metabook' has no attribute {name!r}")
    module_name, attribute = _PUBLIC[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
