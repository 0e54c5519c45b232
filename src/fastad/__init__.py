"""fastad: diffusion-based data-free knowledge distillation (Fast-AD).

The Python entry point is :func:`fastad.api.distill`; ``fastad`` on the command line is a thin layer over it.
"""

__version__ = "0.1.0"
