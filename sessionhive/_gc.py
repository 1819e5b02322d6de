"""Garbage-collector settings for processes that host many sessions."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc(first_threshold: int = 100_000) -> None:
    """Make full collections rare in a process hosting thousands of sessions.

    Every live session holds many small container objects (messages, tool
    calls, actor plumbing), and CPython's default thresholds then run
    generation-2 collections hundreds of times a minute, each pausing every
    thread for up to hundreds of milliseconds (measured in bench/RESULTS.md:
    control-call p99 fell 2-6x with these settings). This raises the first
    threshold and freezes what exists now (imports, the started Hive) out of
    future collections. The ``sessionhive`` command calls it; a service
    embedding sessionhive may call it once after ``Hive.start()``. It changes
    process-wide state, so it is never done behind a library user's back.
    """
    gc.set_threshold(first_threshold, 50, 1_000)
    gc.freeze()
