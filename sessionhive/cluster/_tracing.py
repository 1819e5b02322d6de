"""Traces across Ray: the caller's W3C context rides with each call, and the shard continues it.

A call's ``timing`` tuple (when it was sent, when its caller stops waiting)
is the one argument every shard entry point takes last, on the direct and
the batched paths alike, so it carries the caller's ``traceparent`` as a
third item (:func:`call_timing`). :func:`continues_caller_trace` wraps a
shard method in a SERVER span that is the child of that context, so the
turn the shard runs is in the caller's trace. A shard process is started by
sessionhive, not by the application, so it installs the SDK itself when the
standard ``OTEL_*`` variables name a collector (nothing otherwise).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sessionhive.metrics import tracing

__all__ = ["Timing", "call_timing", "continues_caller_trace"]

R = TypeVar("R")

#: (sent, deadline) by ``time.time()``, and the caller's trace context (W3C headers; empty if none).
Timing = tuple[float, float | None, dict[str, str]]

_sdk_checked = False


def call_timing(remaining: float | None) -> Timing:
    """A call's timing, with the calling thread's or task's trace context."""
    now = time.time()
    return now, None if remaining is None else now + remaining, dict(tracing.inject())


def _install_sdk_once() -> None:
    global _sdk_checked
    if not _sdk_checked:
        _sdk_checked = True
        tracing.configure_sdk(service_name="sessionhive-shard")


def continues_caller_trace(
    method: Callable[..., Awaitable[R]],
) -> Callable[..., Awaitable[R]]:
    """Run a shard entry point ``(self, op_or_kind, session_id, ..., timing)`` in the caller's trace."""

    @functools.wraps(method)
    async def traced(self: Any, *args: Any) -> R:
        _install_sdk_once()
        timing = args[-1]
        carrier = timing[2] if len(timing) > 2 else None
        attributes = {"sessionhive.shard.id": str(self.shard_id), "gen_ai.conversation.id": str(args[1])}
        with tracing.remote_span(f"shard {method.__name__} {args[0]}", tracing.extract(carrier), attributes):
            return await method(self, *args)

    return traced
