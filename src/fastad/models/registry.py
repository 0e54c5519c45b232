"""Model registry: ``create_model(name, ...)`` builds any registered classifier by name.

Architectures register themselves with :func:`register_model` at import time (timm's
``_registry.py`` habit); an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

from fastad.errors import UserError

__all__ = ["CLASSIFIER_LAYOUT", "Classifier", "register_model", "create_model", "list_models"]

#: Memory layout of the classifiers a distillation runs (teacher and student, set where they go onto the
#: device). channels_last made the Fashion-MNIST teacher's guidance pass 1.2x and the student's KD step 1.3x
#: faster on CPU (docs/results.md, "Scale and speed on the CPU"); the prior stays contiguous (0.74x).
CLASSIFIER_LAYOUT = torch.channels_last


class Classifier(nn.Module):
    """Base of every zoo model: ``forward(x) = head(penultimate(x))``.

    Subclasses implement :meth:`penultimate`, set ``feature_dim`` and name their final linear
    layer in ``head_name`` (``fc``, ``linear`` or ``classifier``, as the reference checkpoints
    spell it).
    """

    head_name: str = "fc"
    feature_dim: int

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """Features fed to the final linear layer: ``x [B, C, H, W] -> [B, feature_dim]``."""
        raise NotImplementedError

    @property
    def head(self) -> nn.Linear:
        """The final linear layer ``[feature_dim] -> [num_classes]``."""
        return getattr(self, self.head_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: ``x [B, C, H, W] -> [B, num_classes]``."""
        return self.head(self.penultimate(x))


_MODELS: dict[str, Callable[..., Classifier]] = {}


def register_model(fn: Callable[..., Classifier]) -> Callable[..., Classifier]:
    """Decorator: register ``fn(*, num_classes, in_channels) -> Classifier`` under ``fn.__name__``."""
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def _natural_key(name: str) -> list[int | str]:
    # resnet8 < resnet18 < resnet110, as a person reads them
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def list_models() -> list[str]:
    """All registered model names, naturally sorted (``resnet8`` before ``resnet18``)."""
    return sorted(_MODELS, key=_natural_key)


def _check_count(arg: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{arg} must be an integer >= 1, got {value!r}")
    return value


def create_model(name: str, *, num_classes: int, in_channels: int = 3) -> Classifier:
    """Build the registered classifier ``name`` with fresh weights.

    ``in_channels`` only changes the first convolution's input channels, so state_dict keys are
    the same for any channel count. The model gets attributes ``arch``, ``num_classes``,
    ``in_channels`` and ``feature_dim``.
    """
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    _check_count("num_classes", num_classes)
    _check_count("in_channels", in_channels)
    model = _MODELS[name](num_classes=num_classes, in_channels=in_channels)
    model.arch = name
    model.num_classes = num_classes
    model.in_channels = in_channels
    return model


def init_weights(model: nn.Module) -> None:
    """He init for convs (fan_out, as the reference CIFAR zoos use), BN to identity, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
