"""Count before you time: synthesis FLOPs per image, and this machine's float32 matmul rate.

The efficiency figure of a method is ``flops_per_image * images_per_second / matmul_rate``: the
share of the machine's measured float32 matmul throughput that its synthesis achieves.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from fastad.config import Config


class FlopCount(TorchDispatchMode):
    """Total FLOPs of the aten ops run inside it, with ``FlopCounterMode``'s own formulas (``flop_registry``).

    Not ``FlopCounterMode`` itself: its per-module tracker hooks module inputs for the backward pass, and
    those hooks fail under ``torch.autograd.grad`` w.r.t. a leaf (torch 2.13), which is exactly what the
    guidance and DeepInversion call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def matmul_flops_per_second(*, n: int = 1024, repeats: int = 5, device: torch.device | str = "cpu",
                            dtype: torch.dtype = torch.float32) -> float:
    """Median rate of an ``[n, n] @ [n, n]`` matmul (``2 n^3`` FLOPs) in ``dtype``, with torch's current threads."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    torch.mm(a, b)  # warm-up: allocation and kernel selection are not part of the rate
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times)


def synthesis_flops_per_image(cfg: Config, *, batch: int = 2) -> float:
    """FLOPs of synthesising one image with ``cfg``'s synthesizer (every DDIM step's prior forward and the
    guidance's teacher forward/backward, or every DeepInversion iteration), counted by :class:`FlopCount`
    on a ``batch``-image call: conv/matmul FLOPs scale linearly with the batch, so a small one suffices."""
    from fastad.data import dataset_info
    from fastad.distill import build
    from fastad.guidance.routing import balanced_labels
    from fastad.utils.runtime import resolve_device

    info = dataset_info(cfg.data.dataset, root=cfg.data.root) if cfg.data.dataset else None
    gen = torch.Generator().manual_seed(0)
    parts = build(cfg, info, device=resolve_device(cfg.run.device), generator=gen)
    parts.student.eval()
    synth = parts.synthesizer
    labels = balanced_labels(batch, parts.spec.num_classes, generator=gen)
    with FlopCount() as counter:
        synth(labels, generator=gen)
    return counter.total / batch
