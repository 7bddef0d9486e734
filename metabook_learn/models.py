"""The networks of MAML's experiments (Finn et al., 2017), written for meta-learning.

Every network here is a ``body`` (the feature extractor) followed by a ``head``
(the last linear layer), so its parameters are named ``body.…`` and ``head.…``.
ANIL's "adapt only the head" (Raghu et al., 2020) is then :func:`is_head`.

Two things differ from the networks of ordinary supervised learning:

* Batch normalization keeps **no running statistics**. A network is adapted
  per task, inside ``torch.func`` transforms, and averages carried across tasks
  would both mix the tasks and break ``grad``/``vmap``. Every forward pass
  normalizes with statistics of the batch it is given, as MAML's reference code
  does (there, batch norm is always in training mode).
* ``forward(x, stats_rows=None)`` can take those statistics from the first
  ``stats_rows`` examples of ``x`` only. Forwarding ``cat[support, query]`` with
  ``stats_rows = len(support)`` normalizes the query with the support set's
  statistics (inductive evaluation, see :func:`metabook_learn.inner_loop.predict`).

Where these differ from MAML's reference code (github.com/cbfinn/maml): the
weights start from PyTorch's default initialization, and batch norm learns a
scale as well as a shift, both adapted in the inner loop like every other
parameter (the reference code learns only a shift, and only in the outer loop).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TaskBatchNorm2d",
    "batch_norm_of_rows",
    "ConvBlock",
    "ConvNet",
    "SinusoidMLP",
    "omniglot_convnet",
    "miniimagenet_convnet",
    "sinusoid_mlp",
    "MLP",
    "DigitConvNet",
    "is_head",
    "use_channels_last",
    "CONVNETS",
    "IMAGE_DATA_SETS",
    "maml_network",
    "embedding_network",
]


def is_head(name: str) -> bool:
    """True for the parameters of the last layer: the ones ANIL adapts."""
    return name.startswith("head.")


class TaskBatchNorm2d(nn.Module):
    """Batch normalization with statistics of the current batch only (no running averages).

    ``x``: ``[B, C, H, W]``. Mean and variance per channel are taken over the
    first ``stats_rows`` examples (all of them when ``None``) and applied to all
    ``B`` examples, followed by the learned scale ``weight`` and shift ``bias``
    (``[C]`` each).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        return batch_norm_of_rows(x, self.weight, self.bias, self.eps, stats_rows)


def batch_norm_of_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                       stats_rows: int | None) -> torch.Tensor:
    """Normalize ``x [B, C, H, W]`` per channel with the statistics of its first ``stats_rows`` rows (all: ``None``).

    Then scale by ``weight`` and shift by ``bias`` (``[C]`` each).
    """
    if stats_rows is None:
        # The fused kernel. Under torch.func.vmap, take the meta-gradient of
        # each task inside vmap (metabook_learn.maml explains why).
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    reference = x[:stats_rows]
    mean = reference.mean(dim=(0, 2, 3), keepdim=True)
    var = reference.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normalized = (x - mean) * torch.rsqrt(var + eps)
    return normalized * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class ConvBlock(nn.Module):
    """3x3 convolution, batch norm, ReLU, then halve the resolution.

    ``downsample="stride"`` halves it with a stride-2 convolution (MAML on
    Omniglot), ``"maxpool"`` with 2x2 max-pooling (MAML on mini-ImageNet).
    ``[B, C_in, H, W]`` -> ``[B, C_out, ceil(H/2), ceil(W/2)]`` (stride) or
    ``[B, C_out, H//2, W//2]`` (max-pool).
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: str):
        super().__init__()
        if downsample not in ("stride", "maxpool"):
            raise ValueError(f"downsample must be 'stride' or 'maxpool', got {downsample!r}")
        stride = 2 if downsample == "stride" else 1
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.norm = TaskBatchNorm2d(out_channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        x = F.relu(self.norm(self.conv(x), stats_rows))
        return F.max_pool2d(x, 2) if self.downsample == "maxpool" else x


class ConvNet(nn.Module):
    """MAML's 4-block convolutional network with a linear head.

    ``x``: ``[B, C, H, W]`` -> logits ``[B, num_classes]``. With strided
    convolutions the last feature map is averaged over space (as MAML's
    reference code does for Omniglot: 28 -> 14 -> 7 -> 4 -> 2, then mean, so
    the head sees ``filters`` features); with max-pooling it is flattened
    (mini-ImageNet: 84 -> 42 -> 21 -> 10 -> 5, ``filters * 5 * 5`` features).

    ``num_classes=None`` builds the body alone, an embedding network: the
    forward pass returns the features ``[B, num_features]`` (Prototypical
    Networks and R2-D2 put their own classifier on top).
    """

    def __init__(
        self,
        num_classes: int | None,
        in_channels: int,
        filters: int,
        downsample: str,
        image_size: int,
        blocks: int = 4,
    ):
        super().__init__()
        channels = [in_channels] + [filters] * blocks
        self.body = nn.ModuleList(
            ConvBlock(c_in, c_out, downsample) for c_in, c_out in zip(channels, channels[1:])
        )
        self.downsample = downsample
        if downsample == "stride":
            features = filters
        else:
            side = image_size
            for _ in range(blocks):
                side //= 2
            features = filters * side * side
        self.num_features = features
        self.head = None if num_classes is None else nn.Linear(features, num_classes)
        self.channels_last = False  # set by use_channels_last: inputs are then converted in forward

    def __setstate__(self, state):
        state.setdefault("channels_last", False)  # a ConvNet pickled before the attribute existed
        super().__setstate__(state)

    def features(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        """The body's output, ``[B, num_features]``: what the head sees."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        for block in self.body:
            x = block(x, stats_rows)
        return x.mean(dim=(2, 3)) if self.downsample == "stride" else x.flatten(1)

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        x = self.features(x, stats_rows)
        return x if self.head is None else self.head(x)


class SinusoidMLP(nn.Module):
    """MAML's regression network: 1 -> 40 -> 40 -> 1 with ReLUs. ``x``: ``[B, 1]`` -> ``[B, 1]``.

    It has no normalization layer, so ``stats_rows`` changes nothing: every
    example is processed on its own.
    """

    def __init__(self, hidden: int = 40):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        return self.head(self.body(x))


class MLP(nn.Module):
    """A classifier of flattened inputs: ``hidden`` layers, each followed by ``activation`` (ReLU), then a linear head.

    ``x``: ``[B, ...]`` with ``in_features`` numbers per example -> logits
    ``[B, num_classes]``. No normalization layer, so ``stats_rows`` changes
    nothing: every example is classified on its own (what domain
    generalization needs, where a test domain gives no batch to normalize with).
    ``activation=nn.Tanh`` gives a smooth network, for checks of Taylor
    expansions that ReLU's kinks would spoil.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (64,),
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [in_features, *hidden]
        layers = [nn.Flatten()]
        for size_in, size_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(size_in, size_out), activation()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        return self.head(self.body(x))


class DigitConvNet(nn.Module):
    """A small convolutional network for 28x28 digits, without normalization layers.

    Two 3x3 convolutions with stride 2 and ReLUs (28 -> 14 -> 7, ``filters``
    then ``2 * filters`` channels), flattened into a linear head:
    ``[B, 1, 28, 28]`` -> logits ``[B, num_classes]``. Like :class:`MLP`, it
    classifies every example on its own.
    """

    def __init__(self, num_classes: int = 10, filters: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, filters, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(filters, 2 * filters, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * filters * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        return self.head(self.body(x))


def omniglot_convnet(num_classes: int = 5) -> ConvNet:
    """MAML's Omniglot network: 28x28x1 input, 64 filters, strided convolutions.

    Section 5.2 of the paper: "For Omniglot, we used strided convolutions
    instead of max-pooling."
    """
    return ConvNet(num_classes, in_channels=1, filters=64, downsample="stride", image_size=28)


def miniimagenet_convnet(num_classes: int = 5) -> ConvNet:
    """MAML's mini-ImageNet network: 84x84x3 input, 32 filters, 2x2 max-pooling."""
    return ConvNet(num_classes, in_channels=3, filters=32, downsample="maxpool", image_size=84)


def sinusoid_mlp() -> SinusoidMLP:
    """MAML's sinusoid regression network (Section 5.1): two hidden layers of 40 ReLUs."""
    return SinusoidMLP(hidden=40)


def use_channels_last(model: nn.Module, on: bool = True) -> nn.Module:
    """Store ``model``'s convolution weights channels-last (NHWC) and convert every ConvNet's input to match.

    ``on=False`` goes back to the default layout (NCHW).

    Plain float32, the same numbers up to the order of summation, and on a
    CPU with oneDNN often much faster for large batches (measured in
    ``benchmarks/cpu_fast_path.py``). Both the weights and the input must be
    channels-last for the fast kernels: a 5-D task tensor is flattened to
    ``[B, C, H, W]`` before the first convolution, where the ConvNet converts
    it. Returns ``model``, changed in place.
    """
    model.to(memory_format=torch.channels_last if on else torch.contiguous_format)
    for module in model.modules():
        if isinstance(module, ConvNet):
            module.channels_last = on
    return model


# MAML's networks for each image data set: omniglot_convnet, miniimagenet_convnet, and the latter on
# CIFAR-FS's 32x32 images (32 -> 16 -> 8 -> 4 -> 2: 32 * 2 * 2 features).
CONVNETS = {
    "omniglot": dict(in_channels=1, filters=64, downsample="stride", image_size=28),
    "mini-imagenet": dict(in_channels=3, filters=32, downsample="maxpool", image_size=84),
    "cifar-fs": dict(in_channels=3, filters=32, downsample="maxpool", image_size=32),
}
IMAGE_DATA_SETS = tuple(CONVNETS)


def maml_network(dataset: str, ways: int) -> nn.Module:
    """MAML's network for ``dataset``: its ConvNet with ``ways`` outputs, or for ``"sinusoid"`` its 1-40-40-1 MLP."""
    if dataset == "sinusoid":
        return sinusoid_mlp()
    return ConvNet(ways, **CONVNETS[dataset])


def embedding_network(dataset: str) -> ConvNet:
    """MAML's ConvNet for ``dataset`` without its head: ``[B, C, H, W]`` images -> ``[B, num_features]``."""
    return ConvNet(None, **CONVNETS[dataset])
