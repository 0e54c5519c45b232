"""Classifier evaluation on a real split: top-1/top-5, per-class accuracy, agreement with a teacher."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fastad.data import ImageDataset, iterate_batches, make_view, to_float


def normalizer(mean: Sequence[float], std: Sequence[float]):
    """``f(x01) -> (x01 - mean) / std`` per channel; follows x's device and dtype."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x - m.to(x)) / s.to(x)

    return f


@torch.no_grad()
def classify(teacher: nn.Module, x: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
             batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's reading of prior-space images ``[N, C, H, W]``: ``(pred [N] long, confidence
    [N] float32)``, confidence being the softmax probability of the predicted class. Images are
    clamped to [-1, 1] first (they are what a grid shows)."""
    teacher.eval()
    device = next(teacher.parameters()).device
    view = make_view(mean, std)
    probs = torch.cat([teacher(view(x[s:s + batch_size].clamp(-1, 1).to(device))).float().softmax(1).cpu()
                       for s in range(0, len(x), batch_size)])
    conf, pred = probs.max(1)
    return pred, conf


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
    """top1/top5 (percent; top5 only with >= 5 classes), per_class list, the confusion matrix (counts, rows
    = true class, columns = prediction), and agreement with a teacher."""
    pred = logits.argmax(1)
    report: dict = {"num_images": int(labels.numel()), "top1": 100.0 * (pred == labels).float().mean().item()}
    if logits.shape[1] >= 5:
        top5 = logits.topk(5, dim=1).indices
        report["top5"] = 100.0 * (top5 == labels[:, None]).any(1).float().mean().item()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels.long().cpu(), pred.cpu()), torch.ones_like(pred.cpu()), accumulate=True)
    # Per-class top-1 is the diagonal over the row (float32, as a mean of hits would be); nan for absent classes.
    hits, counts = confusion.diagonal().float(), confusion.sum(1).float()
    report["per_class"] = [100.0 * (h / n).item() if n else float("nan") for h, n in zip(hits, counts)]
    report["confusion"] = confusion.tolist()
    if teacher_logits is not None:
        report["agreement"] = 100.0 * (teacher_logits.argmax(1) == pred).float().mean().item()
    return report


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: str, *, title: str = "") -> None:
    """A row-normalised confusion matrix (percent of each true class) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = torch.tensor(confusion, dtype=torch.float64)
    pct = (100 * m / m.sum(1, keepdim=True).clamp(min=1)).numpy()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    if k <= 20:  # numbers are legible up to about 20 classes
        for i in range(k):
            for j in range(k):
                if pct[i, j] >= 0.5:
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if pct[i, j] > 50 else "black")
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true class (row: % of its images)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
