"""DeepInversion's BatchNorm statistic loss ``L_BN``, recorded by hooks that are active only on demand.

Hooks that store BatchNorm inputs whenever the teacher runs keep every
activation of student training and evaluation alive (24 GB in the prototype). Here the hooks are
registered once and do nothing unless :meth:`BNStatsRecorder.record` is active; what they keep is
one scalar per layer, cleared when the recording ends.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BNStatsRecorder", "bn_stat_term"]


def bn_stat_term(x: Tensor, running_mean: Tensor, running_var: Tensor) -> Tensor:
    """``||mu - running_mean||^2 + ||var - running_var||^2`` for one BatchNorm layer's input.

    x: ``[N, C, *]`` (any float dtype); ``mu``, ``var`` [C] are the batch mean and *biased* variance
    over every dim but C (what BatchNorm normalises with in training), computed in float32.
    Returns a float32 scalar; its gradient w.r.t. ``x`` is one fused pass (:class:`_BNStatTerm`).
    """
    return _BNStatTerm.apply(x.float(), running_mean.float(), running_var.float())


class _BNStatTerm(torch.autograd.Function):
    """:func:`bn_stat_term` with a closed-form backward: ``d/dx = a_c + b_c * x`` per channel c, with
    ``b_c = 4 (var_c - rv_c) / n`` and ``a_c = 2 (mu_c - rm_c) / n - b_c * mu_c`` (``n`` values per channel).
    Autograd's own backward of ``var_mean`` takes several full-size passes; this takes one."""

    @staticmethod
    def forward(ctx, x: Tensor, running_mean: Tensor, running_var: Tensor) -> Tensor:
        var, mu = torch.var_mean(x, dim=[0, *range(2, x.ndim)], correction=0)
        ctx.save_for_backward(x, mu, var, running_mean, running_var)
        return (mu - running_mean).pow(2).sum() + (var - running_var).pow(2).sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:
        x, mu, var, running_mean, running_var = ctx.saved_tensors
        n = x.numel() // x.shape[1]
        b = (4.0 / n) * (var - running_var)
        a = (2.0 / n) * (mu - running_mean) - b * mu
        shape = (1, -1, *([1] * (x.ndim - 2)))
        return grad * torch.addcmul(a.view(shape), x, b.view(shape)), None, None


class BNStatsRecorder:
    """Forward pre-hooks on every BatchNorm layer (with running statistics) of ``model``.

    Registered once, at construction. While :meth:`record` is active each layer's forward appends
    :func:`bn_stat_term` of its input to :attr:`terms`; outside it the hooks return immediately and
    store nothing. :meth:`remove` unregisters the hooks.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
        self.terms: list[Tensor] = []  # one float32 scalar per BN forward, only while recording
        self._recording = False
        self._handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]

    def _hook(self, module: _BatchNorm, inputs: tuple[Tensor, ...]) -> None:
        if self._recording:
            self.terms.append(bn_stat_term(inputs[0], module.running_mean, module.running_var))

    @contextmanager
    def record(self) -> Iterator["BNStatsRecorder"]:
        """Record during the ``with`` block; :attr:`terms` is emptied on entry and on exit."""
        if self._recording:
            raise RuntimeError("BNStatsRecorder.record() is not re-entrant")
        self.terms.clear()
        self._recording = True
        try:
            yield self
        finally:
            self._recording = False
            self.terms.clear()

    def loss(self) -> Tensor:
        """``L_BN`` = mean of the recorded per-layer terms (float32 scalar; 0 when there are none).

        Call inside :meth:`record`, after the forward; it empties :attr:`terms` so that nothing
        outlives the step but the returned graph.
        """
        terms, self.terms = self.terms, []
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).mean()

    @property
    def num_hooks(self) -> int:
        """Hooks this recorder still has registered."""
        return len(self._handles)

    def remove(self) -> None:
        """Unregister all hooks and drop any recorded terms (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.terms = []
        self._recording = False
