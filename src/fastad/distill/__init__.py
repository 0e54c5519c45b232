"""Online data-free distillation: synthesis rounds into a replay buffer, KD of the student."""

from fastad.distill.build import Built, build, load_run_prior, load_teacher
from fastad.distill.loop import distill
from fastad.distill.synthesis import PROVIDERS, Synthesizer, conditioning_provider

__all__ = ["PROVIDERS", "Built", "Synthesizer", "build", "conditioning_provider", "distill", "load_run_prior",
           "load_teacher"]
