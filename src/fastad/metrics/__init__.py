"""Evaluation metrics."""

from fastad.metrics.fid import compute_features, fid, frechet_distance

__all__ = ["compute_features", "fid", "frechet_distance"]
