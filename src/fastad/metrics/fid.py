"""Frechet distance between feature sets (FID-style), with any classifier as the extractor.

Inception cannot be downloaded here, so features come from ``model.penultimate(x) -> [B, D]``,
which every fastad classifier has (by default the teacher's). Numbers are therefore comparable only
between runs that use the same extractor and the same ``transform``, never with published FIDs.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from scipy import linalg
from torch import Tensor, nn

from fastad.errors import UserError

__all__ = ["frechet_distance", "compute_features", "fid"]


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    ``d^2 = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` in float64, with ``(S_a S_b)^{1/2}``
    from ``scipy.linalg.sqrtm``; if that is not finite (singular covariances), ``eps * I`` is
    added to both covariances and it is recomputed. Imaginary parts from round-off are dropped;
    a large one raises.

    Args:
        feats_a: ``[N_a, D]`` features, ``N_a >= 2``.
        feats_b: ``[N_b, D]`` features, ``N_b >= 2``.

    Returns:
        The squared distance ``d^2`` (what FID reports), a float >= 0 up to round-off.
    """
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise UserError(f"features must be [N, D] with the same D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise UserError(f"need at least 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))

    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. N < D): regularise, as pytorch-fid and TTUR do.
        offset = np.eye(cov_a.shape[0]) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm of the covariance product has imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def _device(model: nn.Module, fallback: torch.device) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else fallback


@torch.no_grad()
def compute_features(
    model: nn.Module,
    images: Tensor,
    *,
    batch_size: int = 256,
    transform: Optional[Callable[[Tensor], Tensor]] = None,
) -> np.ndarray:
    """Penultimate-layer features of ``images``.

    Args:
        model: a classifier with ``penultimate(x [B, C, H, W]) -> [B, D]``; run in eval mode under
            no_grad, its train/eval mode restored afterwards.
        images: ``[N, C, H, W]``, moved batch by batch to the model's device.
        batch_size: images per forward.
        transform: applied to each batch on the model's device before ``penultimate`` (e.g. the
            prior-space [-1, 1] to teacher-input normalisation).

    Returns:
        ``[N, D]`` float64 numpy array.
    """
    if not callable(getattr(model, "penultimate", None)):
        raise UserError(f"{type(model).__name__} has no penultimate(x) method to extract features with")
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    device, was_training = _device(model, images.device), model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device)
            if transform is not None:
                x = transform(x)
            f = model.penultimate(x)
            out.append(f.reshape(f.shape[0], -1).double().cpu())
    finally:
        model.train(was_training)
    if not out:
        raise UserError("no images to compute features of")
    return torch.cat(out).numpy()


def fid(model: nn.Module, images_a: Tensor, images_b: Tensor, **kw: Any) -> float:
    """Frechet distance between the ``model.penultimate`` features of two image sets ``[N, C, H, W]``.

    ``kw`` goes to :func:`compute_features` (``batch_size``, ``transform``).
    """
    return frechet_distance(compute_features(model, images_a, **kw), compute_features(model, images_b, **kw))
