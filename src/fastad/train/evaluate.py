"""Classifier evaluation on a real split: top-1/top-5, per-class accuracy, agreement with a teacher."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fastad.data import ImageDataset, iterate_batches, to_float


def normalizer(mean: Sequence[float], std: Sequence[float]):
    """``f(x01) -> (x01 - mean) / std`` per channel; follows x's device and dtype."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x - m.to(x)) / s.to(x)

    return f


@torch.no_grad()
def predict(
    model: nn.Module, dataset: ImageDataset, *, mean: Sequence[float], std: Sequence[float],
    batch_size: int = 512, device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] (float32, CPU) and labels [N] of a model over a dataset, in order."""
    norm = normalizer(mean, std)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in iterate_batches(dataset, batch_size, shuffle=False):
        logits.append(model(norm(to_float(x.to(device)))).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def accuracy_report(
    logits: torch.Tensor, labels: torch.Tensor, *, num_classes: int, teacher_logits: torch.Tensor | None = None
) -> dict:
    """top1/top5 (percent; top5 only with >= 5 classes), per_class list, and agreement with a teacher."""
    pred = logits.argmax(1)
    report: dict = {"num_images": int(labels.numel()), "top1": 100.0 * (pred == labels).float().mean().item()}
    if logits.shape[1] >= 5:
        top5 = logits.topk(5, dim=1).indices
        report["top5"] = 100.0 * (top5 == labels[:, None]).any(1).float().mean().item()
    per_class = []
    for c in range(num_classes):
        mask = labels == c
        n = int(mask.sum())
        per_class.append(100.0 * (pred[mask] == c).float().mean().item() if n else float("nan"))
    report["per_class"] = per_class
    if teacher_logits is not None:
        report["agreement"] = 100.0 * (teacher_logits.argmax(1) == pred).float().mean().item()
    return report
