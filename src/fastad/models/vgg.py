"""RepDistiller-style CIFAR VGGs with batch norm: vgg8, vgg11, vgg13, vgg16, vgg19.

Layout (matches the public checkpoints' keys): five groups ``block0..4``, each a Sequential of
``conv(bias=True), bn, relu`` triples whose last ReLU is applied outside the Sequential (so the
keys are ``blockN.0``, ``blockN.1``, ``blockN.3``, ``blockN.4``, ...); 2x2 max-pools after
block0..2 (and after block3 only for 64x64 inputs, as in the reference); global average pool;
``classifier`` (512 -> num_classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastad.models.registry import Classifier, init_weights, register_model

__all__ = ["VGG"]

# Conv widths per group.
_CFGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _group(in_ch: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        in_ch = w
    return nn.Sequential(*layers[:-1])  # trailing ReLU applied in penultimate(); keeps key indices


class VGG(Classifier):
    """VGG-BN for small images, feature_dim 512.

    Minimum input size is 8x8 (three floor-mode 2x2 max-pools, as in the reference).
    """

    head_name = "classifier"

    def __init__(self, cfg: tuple[tuple[int, ...], ...], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        in_ch = in_channels
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", _group(in_ch, widths))
            in_ch = widths[-1]
        self.classifier = nn.Linear(in_ch, num_classes)
        self.feature_dim = in_ch
        init_weights(self)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 512]``."""
        pool_after_block3 = x.shape[2] == 64  # reference quirk: keeps 64x64 maps at 4x4 in block4
        x = F.max_pool2d(F.relu(self.block0(x)), 2)
        x = F.max_pool2d(F.relu(self.block1(x)), 2)
        x = F.max_pool2d(F.relu(self.block2(x)), 2)
        x = F.relu(self.block3(x))
        if pool_after_block3:
            x = F.max_pool2d(x, 2)
        x = F.relu(self.block4(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _vgg(name: str, num_classes: int, in_channels: int) -> VGG:
    return VGG(_CFGS[name], num_classes=num_classes, in_channels=in_channels)


@register_model
def vgg8(*, num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-8-BN (one conv per group)."""
    return _vgg("vgg8", num_classes, in_channels)


@register_model
def vgg11(*, num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-11-BN."""
    return _vgg("vgg11", num_classes, in_channels)


@register_model
def vgg13(*, num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-13-BN."""
    return _vgg("vgg13", num_classes, in_channels)


@register_model
def vgg16(*, num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-16-BN."""
    return _vgg("vgg16", num_classes, in_channels)


@register_model
def vgg19(*, num_classes: int, in_channels: int = 3) -> VGG:
    """VGG-19-BN."""
    return _vgg("vgg19", num_classes, in_channels)
