"""Online data-free distillation: synthesis rounds into a replay buffer, KD of the student."""

from fastad.distill.loop import distill, kd_loss
from fastad.distill.synthesis import PROVIDERS, Synthesizer, balanced_labels, conditioning_provider

__all__ = ["PROVIDERS", "Synthesizer", "balanced_labels", "conditioning_provider", "distill", "kd_loss"]
