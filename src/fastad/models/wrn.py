"""Pre-activation wide ResNets (WRN-depth-k): wrn16_1, wrn16_2, wrn40_1, wrn40_2.

Layout (matches the public checkpoints' keys): ``conv1`` stem (16 channels), three groups
``block1..3.layer.<i>`` of pre-activation blocks (``bn1, conv1, bn2, conv2``, 1x1
``convShortcut`` where the width or stride changes), final ``bn1`` + ReLU, global average pool,
``fc``. Depth = 6n + 4 with n blocks per group; widths 16k, 32k, 64k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastad.models.registry import Classifier, init_weights, register_model

__all__ = ["WideResNet"]


class _PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == planes
        # The reference only projects when widths differ (stride 2 always comes with a widening).
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_planes, H, W] -> [B, planes, H/stride, W/stride]``."""
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # Identity blocks add the raw input; projecting blocks project the pre-activated input.
        return out + (x if self.convShortcut is None else self.convShortcut(pre))


class _Group(nn.Module):
    """``n`` blocks under the attribute ``layer`` (the reference's NetworkBlock)."""

    def __init__(self, n: int, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(_PreActBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(n))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(Classifier):
    """WRN-``depth``-``widen`` for small images, feature_dim ``64 * widen``."""

    head_name = "fc"

    def __init__(self, depth: int, widen: int, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        w = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False)
        self.block1 = _Group(n, w[0], w[1], 1)
        self.block2 = _Group(n, w[1], w[2], 2)
        self.block3 = _Group(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)
        self.feature_dim = w[3]
        init_weights(self)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, 64 * widen]``."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        # avg_pool2d(8) in the reference == adaptive pool on the 8x8 map of a 32x32 input.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


@register_model
def wrn16_1(*, num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-16-1, feature_dim 64."""
    return WideResNet(16, 1, num_classes=num_classes, in_channels=in_channels)


@register_model
def wrn16_2(*, num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-16-2, feature_dim 128."""
    return WideResNet(16, 2, num_classes=num_classes, in_channels=in_channels)


@register_model
def wrn40_1(*, num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-40-1, feature_dim 64."""
    return WideResNet(40, 1, num_classes=num_classes, in_channels=in_channels)


@register_model
def wrn40_2(*, num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-40-2, feature_dim 128."""
    return WideResNet(40, 2, num_classes=num_classes, in_channels=in_channels)
