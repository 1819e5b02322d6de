"""Traces across Ray: the caller's W3C context rides with each call, and the shard continues it.

A call's :class:`~sessionhive.cluster.messages.Routing` carries the caller's
trace context (:func:`call_trace`, taken in the caller's task; the sync
facade's loop thread runs each call in a copy of the calling thread's
context). :func:`continues_caller_trace` wraps a shard entry point in a
SERVER span that is the child of that context, so the turn the shard runs is
in the caller's trace. A shard process is started by sessionhive, not by the
application, so it installs the SDK itself when the standard ``OTEL_*``
variables name a collector (nothing otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sessionhive.cluster.messages import Routing, SessionOp
from sessionhive.metrics import tracing

__all__ = ["call_trace", "continues_caller_trace"]

R = TypeVar("R")
S = TypeVar("S")

_sdk_checked = False


def call_trace() -> dict[str, str]:
    """The current task's trace context as W3C headers (empty when nothing is traced)."""
    return dict(tracing.inject())


def _install_sdk_once() -> None:
    global _sdk_checked
    if not _sdk_checked:
        _sdk_checked = True
        tracing.configure_sdk(service_name="sessionhive-shard")


def continues_caller_trace(
    method: Callable[[S, SessionOp, Routing], Awaitable[R]],
) -> Callable[[S, SessionOp, Routing], Awaitable[R]]:
    """Run a shard entry point ``(self, op, routing)`` in the caller's trace."""

    @functools.wraps(method)
    async def traced(self: S, op: SessionOp, routing: Routing) -> R:
        _install_sdk_once()
        attributes = {
            "sessionhive.shard.id": str(getattr(self, "shard_id", "")),
            "gen_ai.conversation.id": op.session_id,
        }
        name = f"shard {method.__name__} {op.name}"
        with tracing.remote_span(name, tracing.extract(dict(routing.trace)), attributes):
            return await method(self, op, routing)

    return traced
