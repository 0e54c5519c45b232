"""RepDistiller-style CIFAR ResNets: resnet8/14/20/32/44/56/110, resnet8x4, resnet32x4.

Layout (matches the public checkpoints' keys): ``conv1``/``bn1`` stem, three stages
``layer1..3`` of basic blocks (``conv1, bn1, conv2, bn2``, projection shortcut ``downsample.0/1``
where the shape changes), global average pool, ``fc``. Depth = 6n + 2 with n blocks per stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastad.models.registry import Classifier, init_weights, register_model

__all__ = ["CifarResNet"]


class _BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_planes, H, W] -> [B, planes, H/stride, W/stride]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(Classifier):
    """CIFAR ResNet with stage widths ``widths = (stem, stage1, stage2, stage3)``."""

    head_name = "fc"

    def __init__(self, depth: int, widths: tuple[int, int, int, int], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for i, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = [_BasicBlock(in_planes if j == 0 else planes, planes, stride if j == 0 else 1) for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            in_planes = planes
        self.fc = nn.Linear(in_planes, num_classes)
        self.feature_dim = in_planes
        init_weights(self)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, widths[3]]`` (globally pooled last stage)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # The reference uses avg_pool2d(8) on the 8x8 map of a 32x32 input; adaptive pooling is
        # identical there and works for any input size.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)  # the "x4" variants



@register_model
def resnet8(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-8 (1 block per stage), 16/32/64 channels, feature_dim 64."""
    return CifarResNet(8, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet14(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-14 (2 blocks per stage), feature_dim 64."""
    return CifarResNet(14, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet20(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (3 blocks per stage), feature_dim 64."""
    return CifarResNet(20, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet32(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (5 blocks per stage), feature_dim 64."""
    return CifarResNet(32, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet44(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 (7 blocks per stage), feature_dim 64."""
    return CifarResNet(44, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet56(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (9 blocks per stage), feature_dim 64."""
    return CifarResNet(56, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet110(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 (18 blocks per stage), feature_dim 64."""
    return CifarResNet(110, _NARROW, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet8x4(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-8 with 4x wider stages (32 stem, 64/128/256), feature_dim 256."""
    return CifarResNet(8, _WIDE, num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet32x4(*, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 with 4x wider stages, feature_dim 256."""
    return CifarResNet(32, _WIDE, num_classes=num_classes, in_channels=in_channels)
