"""Events a session emits while it works.

Every event is a dataclass carrying ``session_id`` and serializes to JSON with
:func:`event_to_dict`. A turn's stream ends with exactly one of
:class:`TurnEnd`, :class:`TurnError` or :class:`TurnCancelled`.

:class:`TurnCancelled` and :class:`SessionPaused` are both events and errors:
the event a cancelled turn ends with is the very exception
``TurnStream.result()`` raises, and a ``generate`` on a paused session raises
the same class the session emits when it is paused. One name, one meaning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sessionhive.model.errors import SessionhiveError
from sessionhive.model.messages import AgentResult

__all__ = [
    "EVENT_RING_SIZE",
    "TERMINAL_EVENTS",
    "AgentEvent",
    "ConfirmationRequired",
    "ConfirmationResolved",
    "ContextCompacted",
    "EventsDropped",
    "PersistenceFailed",
    "SessionPaused",
    "SessionResumed",
    "TextDelta",
    "ToolEnd",
    "ToolStart",
    "TurnCancelled",
    "TurnEnd",
    "TurnError",
    "TurnInterrupted",
    "TurnStart",
    "event_to_dict",
]

#: Events a live session keeps in memory for replay (``run_events(after=...)``,
#: ``subscribe(after=...)``): about 200 KB per busy session at typical event
#: sizes, and more than a turn with a few tool calls emits. A run's end is
#: kept beyond it, in the run's record.
EVENT_RING_SIZE = 1024


@dataclass
class AgentEvent:
    """Base class of every event.

    ``event_id`` is set by the session when it emits the event: ids grow by
    one per event of a session, across restarts too (0: not emitted by a
    session). ``run_id`` names the run the event belongs to (``None`` for
    session-level events such as :class:`SessionPaused`).
    """

    session_id: str
    event_id: int = field(default=0, kw_only=True)
    run_id: str | None = field(default=None, kw_only=True)

    @property
    def type(self) -> str:
        return type(self).__name__


@dataclass
class TurnStart(AgentEvent):
    prompt: str
    turn_id: int


@dataclass
class TextDelta(AgentEvent):
    text: str


@dataclass
class ToolStart(AgentEvent):
    tool_id: str
    tool_name: str
    arguments: dict[str, Any] | str


@dataclass
class ToolEnd(AgentEvent):
    tool_id: str
    tool_name: str
    output: str
    is_error: bool


@dataclass
class ConfirmationRequired(AgentEvent):
    """A tool call of ``session_id`` waits for a decision (``confirm_tool(session_id, tool_id, ...)``).

    ``parent_id`` names the session's parent when it has one: a ``task``
    tool's child asks through its parent's turn, and its request reaches
    the parent's callers with the child's ``session_id``.
    """

    tool_id: str
    tool_name: str
    arguments: dict[str, Any]
    timeout_s: float
    parent_id: str | None = field(default=None, kw_only=True)


@dataclass
class ConfirmationResolved(AgentEvent):
    """How a tool call's confirmation ended.

    ``decided_by`` names who answered when the answer said so
    (``confirm_tool(..., decided_by=...)``; the service puts the caller's
    token name there); ``None`` for an unnamed answer, a timeout or a cancel.
    """

    tool_id: str
    approved: bool
    outcome: str  # approved | rejected | timed_out | cancelled
    reason: str | None = None
    decided_by: str | None = None


@dataclass
class TurnEnd(AgentEvent):
    result: AgentResult


@dataclass
class TurnError(AgentEvent):
    error: str
    kind: str = "error"  # error | max_rounds | llm | llm_not_configured


@dataclass(eq=False)
class TurnCancelled(AgentEvent, SessionhiveError):
    """A turn was cancelled by ``cancel_operation`` (event and exception)."""

    reason: str = "cancelled by cancel_operation()"
    __hash__ = object.__hash__

    def __str__(self) -> str:
        return f"the turn of session {self.session_id!r} was cancelled: {self.reason}"


@dataclass
class TurnInterrupted(AgentEvent):
    """A turn that a stopped process left unfinished, found when its session came back.

    ``resumed`` is False when the turn was closed (each tool call left
    without a result got one saying the process stopped; ``unfinished_calls``
    lists their ids) and True when ``SessionConfig(resume_interrupted=True)``
    continued it from its journal.
    """

    turn_id: int
    prompt: str
    resumed: bool = False
    unfinished_calls: list[str] = field(default_factory=list)


@dataclass
class ContextCompacted(AgentEvent):
    before_messages: int
    after_messages: int
    percent_before: float
    trigger: str = "manual"  # manual | auto


@dataclass
class PersistenceFailed(AgentEvent):
    operation: str
    error: str


@dataclass(eq=False)
class SessionPaused(AgentEvent, SessionhiveError):
    """The session is paused (event on pause; raised by ``generate`` while paused)."""

    __hash__ = object.__hash__

    def __str__(self) -> str:
        return f"session {self.session_id!r} is paused; call resume_session() before generating"


@dataclass
class SessionResumed(AgentEvent):
    pass


@dataclass
class EventsDropped(AgentEvent):
    """Events a reader will not get: a slow subscriber's queue was full (``count`` of them dropped),
    or a replay (``after=``) reaches back past the events the session still keeps.
    """

    count: int = 0


TERMINAL_EVENTS: tuple[type[AgentEvent], ...] = (TurnEnd, TurnError, TurnCancelled)


def event_to_dict(event: AgentEvent) -> dict[str, Any]:
    """The event as a JSON-ready dict, with its class name under ``"type"``."""
    data: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        data[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
    return data
