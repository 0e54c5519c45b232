"""DAFL-style CIFAR ResNets: resnet18/34/50.

Layout (matches the public checkpoints' keys): 64-channel 3x3 stride-1 stem ``conv1``/``bn1`` (no
max-pool), four stages ``layer1..4`` (strides 1, 2, 2, 2; projection shortcut ``shortcut.0/1``),
adaptive average pool, ``linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastad.models.registry import Classifier, init_weights, register_model

__all__ = ["DaflResNet"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    # An empty Sequential is the identity and adds no state_dict keys.
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_planes, H, W] -> [B, planes, H/stride, W/stride]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = _shortcut(in_planes, 4 * planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_planes, H, W] -> [B, 4 * planes, H/stride, W/stride]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class DaflResNet(Classifier):
    """Four-stage ResNet (64/128/256/512 planes) for small images."""

    head_name = "linear"

    def __init__(
        self,
        block: type[_BasicBlock] | type[_Bottleneck],
        num_blocks: tuple[int, int, int, int],
        *,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)
        self.feature_dim = in_planes
        init_weights(self)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 512 * expansion]``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


@register_model
def resnet18(*, num_classes: int, in_channels: int = 3) -> DaflResNet:
    """ResNet-18 (basic blocks 2-2-2-2), feature_dim 512."""
    return DaflResNet(_BasicBlock, (2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet34(*, num_classes: int, in_channels: int = 3) -> DaflResNet:
    """ResNet-34 (basic blocks 3-4-6-3), feature_dim 512."""
    return DaflResNet(_BasicBlock, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet50(*, num_classes: int, in_channels: int = 3) -> DaflResNet:
    """ResNet-50 (bottlenecks 3-4-6-3), feature_dim 2048."""
    return DaflResNet(_Bottleneck, (3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
