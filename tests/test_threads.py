"""``run.threads: 0`` (auto): the idle cores at the start of a run, read from /proc/stat over short windows."""

from __future__ import annotations

import pytest

import fastad.utils.threads as threads


def _machine(monkeypatch, busy_cores_per_window: list[float], cores: int = 2) -> None:
    """A ``cores``-core machine whose other processes keep ``busy_cores_per_window[i]`` cores busy in window i."""
    jiffies = 100  # per core and window
    readings, busy, total = [], 0, 0
    readings.append((busy, total))
    for b in busy_cores_per_window:
        busy, total = busy + round(b * jiffies), total + cores * jiffies
        readings.append((busy, total))
    it = iter(readings)
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(it))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cores)


@pytest.mark.parametrize("windows, want", [
    ([0.0, 0.0, 0.0], 2),  # idle
    ([1.0, 1.0, 1.0], 1),  # one other busy process all along
    ([1.0, 0.0, 0.0], 2),  # a process ending as the run starts: no thread lost for the whole run
    ([2.0, 2.0, 1.9], 1),  # never fewer than one
])
def test_available_cores_takes_the_least_busy_window(monkeypatch, windows, want):
    _machine(monkeypatch, windows)
    assert threads.available_cores() == want


def test_available_cores_without_proc_stat_is_the_affinity(monkeypatch):
    monkeypatch.setattr(threads, "_cpu_times", lambda: None)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert threads.available_cores() == 3
    assert threads.choose_threads(0, share=2) == 1 and threads.choose_threads(4) == 4
