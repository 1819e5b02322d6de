"""The actor runtime: the actor base class and the backends that run actors.

A leaf package: it depends on pykka only. Everything above it spawns actors
through an :class:`ActorBackend` and never touches a backend's internals.
Three backends: :class:`AsyncioBackend` (every actor on one event loop, the
default), :class:`PooledBackend` (a fixed pool of dispatcher threads) and
:class:`ThreadBackend` (pykka's thread per actor).
"""

from __future__ import annotations

from sessionhive.runtime._asyncio import AsyncioActor, AsyncioBackend
from sessionhive.runtime._base import (
    ActorBackend,
    HiveActor,
    LoopHandoff,
    Reply,
    ThreadBackend,
    complete,
    complete_threadsafe,
    fail,
    guarded,
    loop_future,
    loop_handoff,
)
from sessionhive.runtime._pooled import PooledActor, PooledBackend, PooledFuture

__all__ = [
    "ActorBackend",
    "AsyncioActor",
    "AsyncioBackend",
    "HiveActor",
    "LoopHandoff",
    "PooledActor",
    "PooledBackend",
    "PooledFuture",
    "Reply",
    "ThreadBackend",
    "complete",
    "complete_threadsafe",
    "fail",
    "guarded",
    "loop_future",
    "loop_handoff",
]
