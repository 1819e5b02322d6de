"""JSON from the service turned back into sessionhive values: results, events and exceptions.

The inverse of ``event_to_dict``, ``AgentResult.to_dict`` and the service's
problem documents, so that remote code sees the very classes embedded code sees.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from sessionhive import (
    AgentEvent,
    AgentResult,
    ConfirmationRequired,
    ConfirmationResolved,
    ContextCompacted,
    ContextUsage,
    EventsDropped,
    LlmError,
    PersistenceFailed,
    SessionhiveError,
    SessionPaused,
    SessionResumed,
    TextDelta,
    ToolEnd,
    ToolStart,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnFailed,
    TurnStart,
)
from sessionhive.serve.problems import PROBLEMS, ProblemKind

__all__ = [
    "RemoteError",
    "ServiceUnavailable",
    "SseParser",
    "Unauthorized",
    "aiter_sse",
    "context_from_dict",
    "error_from_problem",
    "event_from_dict",
    "iter_sse",
    "result_from_dict",
]

_EVENTS: dict[str, type[AgentEvent]] = {
    cls.__name__: cls
    for cls in (
        TurnStart,
        TextDelta,
        ToolStart,
        ToolEnd,
        ConfirmationRequired,
        ConfirmationResolved,
        TurnEnd,
        TurnError,
        TurnCancelled,
        ContextCompacted,
        PersistenceFailed,
        SessionPaused,
        SessionResumed,
        EventsDropped,
    )
}


class RemoteError(SessionhiveError):
    """The service refused a request for a reason that is not a session's (``status``, ``problem``)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(problem.get("detail") or f"HTTP {status}")
        self.status = status
        self.problem = problem
        self.error = str(problem.get("error") or "")


class Unauthorized(RemoteError):
    """401: the bearer token is missing or wrong (set ``token=`` or ``SESSIONHIVE_TOKEN``)."""


class ServiceUnavailable(RemoteError):
    """503 while the service drains before stopping: retry on another instance or later."""


def result_from_dict(data: dict[str, Any]) -> AgentResult:
    return AgentResult.from_dict(data)


def context_from_dict(data: dict[str, Any]) -> ContextUsage:
    return ContextUsage(int(data["used_tokens"]), int(data["max_tokens"]), float(data["percent"]))


def event_from_dict(data: dict[str, Any]) -> AgentEvent:
    """The event ``event_to_dict`` made ``data`` from (an unknown type raises ``ValueError``)."""
    cls = _EVENTS.get(str(data.get("type")))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = result_from_dict(value) if f.name == "result" else value
    return cls(**kwargs)


# Each class the service names, by name, with the fields its constructor takes.
_KINDS: dict[str, ProblemKind] = {kind.cls.__name__: kind for kind in PROBLEMS}
# A field's value when the problem lacks it (an older or a foreign service).
_MISSING: dict[str, Any] = {"limit": 0, "reason": "cancelled", "llm_problem": None}


def _argument(problem: dict[str, Any], field: str) -> Any:
    value = problem.get(field, _MISSING.get(field, ""))
    if field == "limit":
        return int(value)
    return None if value is None else str(value)


def error_from_problem(status: int, problem: dict[str, Any]) -> SessionhiveError:
    """The exception the embedded Hive would have raised for this problem document."""
    kind = _KINDS.get(str(problem.get("error")))
    if kind is not None:
        error = kind.cls(*(_argument(problem, field) for field in kind.fields))
        if isinstance(error, TurnFailed | LlmError) and isinstance(problem.get("event"), dict):
            error.event = event_from_dict(problem["event"])
        return error
    if status == 401:
        return Unauthorized(status, problem)
    if status == 503:
        return ServiceUnavailable(status, problem)
    return RemoteError(status, problem)


class SseParser:
    """The same as :func:`iter_sse`, fed one line at a time (for async bodies)."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            found = (self._event, "\n".join(self._data)) if self._data else None
            self._event, self._data = "message", []
            return found
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def iter_sse(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` pairs from the lines of a ``text/event-stream`` body."""
    parser = SseParser()
    for line in lines:
        found = parser.feed(line)
        if found is not None:
            yield found


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncIterator[tuple[str, str]]:
    """:func:`iter_sse` over the lines of an async body."""
    parser = SseParser()
    async for line in lines:
        found = parser.feed(line)
        if found is not None:
            yield found


def load(data: str) -> Any:
    return json.loads(data)
