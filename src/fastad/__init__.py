"""fastad: diffusion-based data-free knowledge distillation (Fast-AD)."""

__version__ = "0.1.0"
