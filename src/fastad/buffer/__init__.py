"""Replay buffer of synthetic images for online distillation (FIFO, compact CPU storage)."""

from fastad.buffer.replay import STORAGES, ReplayBuffer

__all__ = ["ReplayBuffer", "STORAGES"]
