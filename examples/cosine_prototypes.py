"""Your own method through ``train``: prototypes compared by cosine similarity, in one file outside the package.

    python examples/cosine_prototypes.py --steps 300      # trains on Omniglot through metabook_learn.train, ~2 min
    python -m metabook_learn train --method examples/cosine_prototypes.py:COSINE_PROTONET --data omniglot

Prototypical Networks (Snell et al. 2017) score a query by the squared
Euclidean distance to each class's mean embedding c_k. A cosine classifier
(Gidaris & Komodakis 2018; Chen et al. 2019's Baseline++ head) scores it by

    logit_k = s · cos(f(x), c_k) = s · f(x)ᵀ c_k / (‖f(x)‖ ‖c_k‖)

with a learned temperature s > 0 (stored as log s): without it the logits lie
in [−1, 1] and the softmax can never become confident. Everything else is
Prototypical Networks': the episode, the loss, the training loop. So the file
only defines the network and the :class:`metabook_learn.methods.Method` that
tells ``train``, ``evaluate`` and the command line how to build it
(``episodic_image_classifier`` fills in what every episodic image classifier
shares); the package's episodic machinery does the rest.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import metabook_learn
from metabook_learn.episodic import episodic_image_classifier
from metabook_learn.methods import register
from metabook_learn.models import embedding_network
from metabook_learn.protonets import PRESETS, PrototypicalNetwork, check_labels, prototypes


class CosinePrototypes(PrototypicalNetwork):
    """A prototypical network whose logits are ``s · cos(f(x_q), c_k)``, ``[Q, ways]``; ``s`` is learned.

    ``log_scale`` holds log s (initially log 10), shared by every number of ways (:meth:`at_ways`).
    """

    def __init__(self, embedding: nn.Module, ways: int, query_bn: str = "transductive",
                 log_scale: nn.Parameter | None = None):
        super().__init__(embedding, ways, query_bn)
        self.log_scale = log_scale if log_scale is not None else nn.Parameter(torch.tensor(math.log(10.0)))

    def logits(self, support_x, support_y, query_x, query_y=None) -> torch.Tensor:
        check_labels(support_y, query_y, self.ways)  # labels out of range: an error that says so
        support_z, query_z = self.embed(support_x, query_x)  # [S, D], [Q, D]
        centres = prototypes(support_z, support_y, self.ways)  # [N, D]
        cosine = F.normalize(query_z, dim=-1) @ F.normalize(centres, dim=-1).T  # [Q, N]
        return self.log_scale.exp() * cosine

    def at_ways(self, ways: int) -> "CosinePrototypes":
        return CosinePrototypes(self.embedding, ways, self.query_bn, self.log_scale)


def build(config, ways: int) -> CosinePrototypes:
    """MAML's conv body for ``config.dataset`` as the embedding, as the package's ProtoNets use."""
    return CosinePrototypes(embedding_network(config.dataset), ways, query_bn=config.query_bn)


COSINE_PROTONET = register(episodic_image_classifier(
    "cosine-protonet", "prototypes compared by cosine similarity with a learned temperature (an example method)",
    build, presets=PRESETS,  # Prototypical Networks' settings (Snell et al. 2017), which this file does not change
))


def main(steps: int = 300, test_tasks: int = 200) -> float:
    """Train for ``steps`` 20-way episodes on Omniglot's training characters; return 5-way 1-shot test accuracy."""
    metabook_learn.seed_everything(0)
    config = metabook_learn.TrainConfig(algorithm="cosine-protonet", dataset="omniglot", ways=5, shots=1,
                                        train_ways=20, queries=5, meta_batch=1, meta_lr=1e-3, steps=steps,
                                        log_every=max(1, steps // 10), device="cpu")
    model = COSINE_PROTONET.build(config, config.training_ways)
    train_images = metabook_learn.load_omniglot("train")
    result = metabook_learn.train(config, model, metabook_learn.NWayKShotSampler(train_images, 20, 1, 5, seed=0),
                                  progress=False)
    test_images = metabook_learn.load_omniglot("test")
    test = metabook_learn.evaluate(model.at_ways(5), metabook_learn.NWayKShotSampler(test_images, 5, 1, 15, seed=0),
                                   None, num_tasks=test_tasks, method=COSINE_PROTONET)
    print(f"{result.steps_done} episodes in {result.wall_time_s:.0f} s; learned temperature "
          f"s = {model.log_scale.exp().item():.1f}; Omniglot 5-way 1-shot test: {test}")
    return test.mean


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training episodes (default: 300)")
    main(parser.parse_args().steps)
