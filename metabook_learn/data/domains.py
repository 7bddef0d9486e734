"""Domain-aware batches for domain generalization: every example knows which domain it came from.

A domain-generalization data set is a pool of labelled examples, each tagged
with its domain (a rotation angle of Rotated MNIST, a synthetic environment).
Some domains are *sources*, seen in training; the *target* domain is held out
and never sampled here.

:class:`DomainBatchSampler` draws, for every training iteration, ``batch_size``
examples from **each** source domain (so every domain weighs the same), and
splits the source domains at random into *meta-train* and *meta-test* domains,
as MLDG does at every iteration (:func:`split_domains`). The
result, a :class:`DomainBatch`, uses the field names of a few-shot task batch,
``support_*`` for the meta-train domains' examples and ``query_*`` for the
meta-test domains', so that the book's one training loop
(:func:`metabook_learn.training.train`) runs MLDG and its ERM baseline like any other
algorithm. ERM ignores the split and uses all the examples.

The sampler owns a ``torch.Generator``: the same seed gives the same batches
and splits, and ``state_dict()`` / ``load_state_dict()`` resume the stream
from a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch

__all__ = ["DomainBatch", "DomainBatchSampler", "split_domains"]


def split_domains(
    num_sources: int, num_meta_test: int, num_splits: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random splits of ``num_sources`` source domains into meta-train and meta-test domains.

    Returns ``(meta_train [T, D-m], meta_test [T, m])``: positions
    ``0..D-1`` in the list of source domains, ascending within each split,
    disjoint, together all of them. ``T = num_splits``, ``m = num_meta_test``.
    Every split is uniformly random: each gives the domains random keys and
    takes the ``m`` largest keys as meta-test.
    """
    if not 1 <= num_meta_test < num_sources:
        raise ValueError(f"need 1 <= num_meta_test < num_sources, got {num_meta_test} of {num_sources}")
    device = generator.device if generator is not None else None
    order = torch.rand(num_splits, num_sources, generator=generator, device=device).argsort(dim=1)
    meta_train, meta_test = order[:, : num_sources - num_meta_test], order[:, num_sources - num_meta_test:]
    return meta_train.sort(dim=1).values, meta_test.sort(dim=1).values


@dataclass
class DomainBatch:
    """``T`` independent draws of a batch per source domain, each split into meta-train and meta-test domains.

    With ``D`` source domains, ``m`` of them meta-test and ``B`` examples per
    domain:

    ``support_x``: ``float32 [T, (D-m)*B, ...]``, the meta-train domains'
    examples, domain after domain (in the order of ``meta_train_domains``);
    ``support_y``: ``int64 [T, (D-m)*B]``; ``support_domain``: ``int64
    [T, (D-m)*B]``, the domain of each example.
    ``query_x``, ``query_y``, ``query_domain``: the same for the meta-test
    domains, ``[T, m*B, ...]``.
    ``meta_train_domains``: ``int64 [T, D-m]``; ``meta_test_domains``:
    ``int64 [T, m]``, domain ids, ascending. Together they are the sources.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    support_domain: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    query_domain: torch.Tensor
    meta_train_domains: torch.Tensor
    meta_test_domains: torch.Tensor

    def __len__(self) -> int:
        return self.support_x.shape[0]

    @property
    def x(self) -> torch.Tensor:
        """Every source example of each draw, ``[T, D*B, ...]``: what ERM trains on."""
        return torch.cat([self.support_x, self.query_x], dim=1)

    @property
    def y(self) -> torch.Tensor:
        return torch.cat([self.support_y, self.query_y], dim=1)

    @property
    def domain(self) -> torch.Tensor:
        return torch.cat([self.support_domain, self.query_domain], dim=1)

    def to(self, device) -> "DomainBatch":
        return DomainBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


class DomainBatchSampler:
    """Batches of ``batch_size`` examples from every source domain, split into meta-train and meta-test domains.

    ``x``: ``[N, ...]`` inputs (``uint8`` images are scaled to ``float32`` in
    [0, 1], as the episode samplers do); ``y``: ``int64 [N]`` labels;
    ``domains``: ``int64 [N]`` the domain of each example. ``sources``: the
    domain ids to draw from (the held-out target domain is simply not among
    them). ``meta_test_domains``: how many sources are meta-test domains in
    each split (MLDG's code holds out one). Inside a batch, a domain's examples
    are distinct; batches are drawn independently of each other.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        domains: torch.Tensor,
        sources: Sequence[int],
        batch_size: int,
        meta_test_domains: int = 1,
        seed: int = 0,
    ):
        if not (len(x) == len(y) == len(domains)):
            raise ValueError(f"x, y and domains must have one entry per example; got {len(x)}, {len(y)}, "
                             f"{len(domains)}")
        sources = [int(d) for d in sources]
        if len(set(sources)) != len(sources):
            raise ValueError(f"sources must be distinct domain ids, got {sources}")
        if not 1 <= meta_test_domains < len(sources):
            raise ValueError(f"need at least one meta-train and one meta-test domain: meta_test_domains must be "
                             f"between 1 and {len(sources) - 1} for {len(sources)} sources, got {meta_test_domains}")
        self.members = [torch.nonzero(domains == d).flatten() for d in sources]  # example indices per source
        sizes = [len(m) for m in self.members]
        if min(sizes) < batch_size:
            smallest = sources[sizes.index(min(sizes))]
            raise ValueError(f"domain {smallest} has {min(sizes)} examples, fewer than batch_size={batch_size}; "
                             "lower batch_size")
        self.x, self.y, self.domains = x, y, domains
        self.sources = torch.tensor(sources, device=domains.device)
        self.batch_size, self.meta_test_domains = batch_size, meta_test_domains
        self.generator = torch.Generator(device=x.device).manual_seed(seed)

    def sample(self, num_splits: int = 1) -> DomainBatch:
        """``num_splits`` independent batches, each with its own meta-train/meta-test split."""
        g, B = self.generator, self.batch_size
        train_pos, test_pos = split_domains(len(self.members), self.meta_test_domains, num_splits, g)
        # B distinct examples of every source domain, per draw: [T, D, B] example indices.
        chosen = torch.stack([
            members[torch.rand(num_splits, len(members), generator=g, device=members.device).topk(B).indices]
            for members in self.members
        ], dim=1)

        def gather(positions: torch.Tensor):
            index = chosen.gather(1, positions.unsqueeze(-1).expand(-1, -1, B)).flatten(1)  # [T, k*B]
            x = self.x[index]
            x = x.float().div_(255) if x.dtype == torch.uint8 else x
            return x, self.y[index], self.domains[index]

        support, query = gather(train_pos), gather(test_pos)
        return DomainBatch(*support, *query, self.sources[train_pos], self.sources[test_pos])

    def state_dict(self) -> dict:
        """The generator's state: save it with a checkpoint to resume the same stream of batches."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
