"""Baselines and references for the benchmark: DeepInversion synthesis, and KD on real data.

``real_kd`` reads the teacher's real training images by design: it is the upper-bound reference a
data-free method chases, never part of data-free synthesis or distillation.
"""

from fastad.baselines.deepinversion import (DeepInversionConfig, DeepInversionStats, DeepInversionSynthesizer,
                                           tv_l2_prior)
from fastad.baselines.real_kd import train_student_on_real

__all__ = ["DeepInversionConfig", "DeepInversionStats", "DeepInversionSynthesizer", "train_student_on_real", "tv_l2_prior"]
