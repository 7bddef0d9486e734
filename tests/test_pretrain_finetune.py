"""Chen et al.'s pretrain-then-fine-tune baseline (metabook_learn.pretrain_finetune), checked independently:

- a class batch is exactly the images and rotations a by-hand lookup gives;
- one fine-tuning step of a zero head equals the closed form of the softmax gradient at zero;
- pretraining learns a small classification problem, refuses a head of the wrong size, and stops on divergence.
"""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from metabook_learn.data import ClassImages
from metabook_learn.inner_loop import fine_tune, parameters_of
from metabook_learn.models import ConvNet
from metabook_learn.pretrain_finetune import FINE_TUNING, class_batch, pretrain, with_new_head


def small_classes(num_classes: int = 4, per_class: int = 6, side: int = 8) -> ClassImages:
    """Classes that differ in where their bright square is, with a little noise: learnable in a few steps."""
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(num_classes * per_class, 1, side, side, dtype=torch.uint8)
    for c in range(num_classes):
        row, col = divmod(c, 2)
        block = images[c * per_class:(c + 1) * per_class]
        block[:, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = 255
        block[torch.rand(block.shape, generator=generator) < 0.05] = 128
    data = ClassImages.from_sizes(images, [per_class] * num_classes, [f"c{c}" for c in range(num_classes)])
    data.rotations = torch.tensor([0, 1, 2, 3][:num_classes])
    return data


def test_a_class_batch_is_what_a_by_hand_lookup_gives():
    data = small_classes()
    x, y = class_batch(data, 32, torch.Generator().manual_seed(1))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (32,)
    for image, label in zip(x, y.tolist()):
        block = data.images[data.starts[label]:data.starts[label] + data.sizes[label]].float() / 255
        turned = torch.rot90(block, int(data.rotations[label]), dims=(-2, -1))
        assert any(torch.equal(image, candidate) for candidate in turned), f"an image not of class {label}"


def test_one_step_of_a_zero_head_is_the_closed_form_softmax_gradient():
    torch.manual_seed(0)
    network = ConvNet(10, in_channels=1, filters=4, downsample="stride", image_size=8).double()
    fresh = with_new_head(network, 3)
    assert fresh.head.weight.abs().max() == 0 and network.head.out_features == 10  # the original is left alone
    support_x, support_y = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2])
    one_step = replace(FINE_TUNING, steps=1, lr=0.7)
    adapted = fine_tune(fresh, parameters_of(fresh), support_x, support_y, one_step)
    with torch.no_grad():
        features = fresh.features(support_x)  # [S, D]; the zero head's softmax is uniform, 1/N
        residual = F.one_hot(support_y, 3).double() - 1 / 3  # [S, N]: −∂CE/∂logits at zero, per example
        expected_weight = 0.7 * residual.T @ features / 6
        expected_bias = 0.7 * residual.mean(0)
    torch.testing.assert_close(adapted["head.weight"], expected_weight)
    torch.testing.assert_close(adapted["head.bias"], expected_bias)
    torch.testing.assert_close(adapted["body.0.conv.weight"], fresh.body[0].conv.weight)  # the body stays


def test_pretraining_learns_and_calls_back_every_step():
    torch.manual_seed(0)
    data = small_classes()
    network = ConvNet(4, in_channels=1, filters=8, downsample="stride", image_size=8)
    called = []
    losses = pretrain(network, data, steps=150, batch_size=16, lr=3e-3, after_step=called.append)
    assert called == list(range(1, 151))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > 1.0 and last < 0.3 * first, (first, last)  # ln 4 = 1.39 at the start


def test_pretraining_refuses_a_head_of_another_size_and_stops_on_divergence():
    data = small_classes()
    with pytest.raises(ValueError, match="all 4 training classes, but the network has 5 outputs"):
        pretrain(ConvNet(5, in_channels=1, filters=4, downsample="stride", image_size=8), data, steps=1)
    broken = ConvNet(4, in_channels=1, filters=4, downsample="stride", image_size=8)
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="pretraining diverged at step 1"):
        pretrain(broken, data, steps=3)
