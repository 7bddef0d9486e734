"""metabook: meta-learning, learned by building it.

The package behind the metabook executable book. Start with::

    import metabook
    device = metabook.pick_device()
    metabook.seed_everything(0)
"""
from metabook.runtime import pick_device, seed_everything

__version__ = "0.1.0"
__all__ = ["pick_device", "seed_everything", "__version__"]
