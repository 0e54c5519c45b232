"""Online data-free distillation: synthesis rounds into a replay buffer, KD of the student."""

from fastad.distill.build import Built, TeacherSpec, build, describe, kd_teacher, load_teacher, resolve_spec
from fastad.distill.loop import run_distillation
from fastad.distill.synthesis import PROVIDERS, Synthesizer, conditioning_provider

__all__ = ["PROVIDERS", "Built", "Synthesizer", "TeacherSpec", "build", "conditioning_provider", "describe",
           "kd_teacher", "load_teacher", "resolve_spec", "run_distillation"]
