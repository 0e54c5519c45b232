"""Frechet distance: closed form for Gaussians, invariants, and the penultimate-layer extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from fastad.errors import UserError
from fastad.metrics import compute_features, fid, frechet_distance

D = 4


def _spd(rng: np.random.Generator, scale: float) -> np.ndarray:
    m = rng.normal(size=(D, D))
    return scale * (m @ m.T / D + 0.2 * np.eye(D))  # non-diagonal, well conditioned


def _analytic(mu1, s1, mu2, s2) -> float:
    r1 = linalg.sqrtm(s1).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real))


def _wrong(mu1, s1, mu2, s2) -> float:
    """A common bug: elementwise square root of the covariance product."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(np.sqrt(np.abs(s1 @ s2))))


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=D), rng.normal(size=D)
    s1, s2 = _spd(rng, 1.0), _spd(rng, 2.0)
    n = 50_000
    a = rng.multivariate_normal(mu1, s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    return (mu1, s1, mu2, s2), a, b


def test_matches_closed_form(gaussians) -> None:
    params, a, b = gaussians
    exact = _analytic(*params)
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.03)
    # With the sample means/covariances plugged in, the formula is exact (to round-off).
    sample = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(_analytic(*sample), rel=1e-9)
    # The elementwise-sqrt bug gives a visibly different number on non-diagonal covariances.
    assert abs(_wrong(*params) - exact) > 0.1 * exact


def test_invariants(gaussians) -> None:
    _, a, b = gaussians
    a, b = a[:2000], b[:2000]
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    # Fewer samples than dimensions: singular covariances still give a finite number.
    rng = np.random.default_rng(1)
    assert np.isfinite(frechet_distance(rng.normal(size=(5, 16)), rng.normal(size=(6, 16))))
    with pytest.raises(UserError, match="same D"):
        frechet_distance(a, b[:, :3])
    with pytest.raises(UserError, match="at least 2"):
        frechet_distance(a[:1], b)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 10)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.penultimate(x))


def test_compute_features_and_fid() -> None:
    torch.manual_seed(0)
    model = _Tiny().train()
    x = torch.randn(10, 3, 8, 8)
    feats = compute_features(model, x, batch_size=3)
    assert feats.shape == (10, 4) and feats.dtype == np.float64
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(feats, model.penultimate(x).double().numpy(), rtol=1e-6, atol=1e-7)
    shifted = compute_features(model, x, transform=lambda t: t + 1.0)
    assert not np.allclose(shifted, feats)
    assert fid(model, x, x) == pytest.approx(0.0, abs=1e-6)
    assert fid(model, x, x * 3 + 1, batch_size=4) > 0
    with pytest.raises(UserError, match="penultimate"):
        compute_features(nn.Linear(2, 2), x)
