"""The actor runtime: the actor base class and the backends that run actors.

A leaf package: it depends on pykka only. Everything above it spawns actors
through an :class:`ActorBackend` and never touches a backend's internals.
"""

from __future__ import annotations

from sessionhive.runtime._base import ActorBackend, HiveActor, ThreadBackend, complete, fail, guarded
from sessionhive.runtime._pooled import PooledActor, PooledBackend, PooledFuture

__all__ = [
    "ActorBackend",
    "HiveActor",
    "PooledActor",
    "PooledBackend",
    "PooledFuture",
    "ThreadBackend",
    "complete",
    "fail",
    "guarded",
]
