"""The exception hierarchy: every error sessionhive raises is a :class:`SessionhiveError`.

Each message names the session involved and what to do next, so that a user
reading a traceback in a long-running service knows how to recover.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, dataclass_transform

__all__ = [
    "BaseUrlNotAllowed",
    "CallTimeout",
    "ConfirmationNotFound",
    "Forbidden",
    "HiveStopped",
    "InvalidConfig",
    "InvalidSessionId",
    "LlmError",
    "LlmNotConfigured",
    "OutcomeUnknown",
    "OutputInvalid",
    "Overloaded",
    "QuotaExceeded",
    "SessionExists",
    "SessionFailed",
    "SessionNotFound",
    "SessionhiveError",
    "StoreError",
    "TurnFailed",
    "turn_failure",
]


class SessionhiveError(Exception):
    """Base class of every error raised by sessionhive."""


@dataclass_transform(eq_default=False)
class _Detailed(SessionhiveError):
    """An error whose ``__init__`` arguments are named fields and whose message is built from them.

    A subclass declares its fields (it becomes a dataclass) and a ``template``
    that ``str.format`` fills with them; ``args`` holds the fields in order, so
    the error pickles (a cluster shard raises it in another process) and
    repeats as ``SessionNotFound('a')``.
    """

    template: ClassVar[str] = ""
    _field_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__annotations__" not in cls.__dict__:
            return  # declares no fields (a user's subclass, Ray's RayTaskError wrapper): inherit as is
        # eq and repr off: an exception keeps identity equality, its hash, and a repr made from args.
        made: Any = dataclass(eq=False, repr=False)(cls)
        cls._field_names = tuple(field.name for field in fields(made))

    def __post_init__(self) -> None:
        self.args = tuple(getattr(self, name) for name in self._field_names)

    def __str__(self) -> str:
        return self.template.format_map(vars(self))


class InvalidSessionId(SessionhiveError, ValueError):
    """A session id is empty, too long, or contains control characters."""


class InvalidConfig(SessionhiveError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class BaseUrlNotAllowed(_Detailed, InvalidConfig):
    """A model's ``base_url`` is not an endpoint the operator allowed; nothing was sent to it.

    ``base_url`` is the refused URL (never with a user or password: such URLs
    are refused before they are shown) and ``reason`` says what refused it.
    """

    base_url: str
    reason: str
    template = (
        "base URL {base_url!r} is not allowed: {reason}; the operator allows an endpoint "
        "with 'sessionhive serve --allow-base-url URL' (or Hive.start(allow_base_urls=[URL]))"
    )


class SessionNotFound(_Detailed, KeyError):
    """No live or stored session has this id."""

    session_id: str
    template = (
        "session {session_id!r} does not exist (neither live nor in the store); "
        "create it with create_session() first"
    )


class SessionExists(_Detailed):
    """A session with this id already exists, live or in the store."""

    session_id: str
    template = "session {session_id!r} already exists; pick another id or destroy_session() the old one first"


class LlmNotConfigured(_Detailed):
    """A turn or compaction needs an LLM and neither the session nor the Hive has one.

    ``detail`` says why a model the session did configure cannot be used.
    """

    session_id: str
    detail: str | None = None

    def __str__(self) -> str:
        if self.detail is not None:
            return f"session {self.session_id!r} cannot use its configured model: {self.detail}"
        return (
            f"no LLM configured for session {self.session_id!r}; pass llm= to Hive.start() "
            "or call configure(session_id, model_config=LlmConfig(...))"
        )


class ConfirmationNotFound(_Detailed):
    """``confirm_tool`` named a tool call that is not waiting for confirmation."""

    session_id: str
    tool_id: str
    template = (
        "session {session_id!r} has no tool call {tool_id!r} waiting for confirmation; it may have "
        "timed out, been cancelled, or already been answered "
        "(watch ConfirmationRequired events for the ids that wait)"
    )


class LlmError(SessionhiveError):
    """The LLM provider failed in a way retrying does not fix (bad key, unknown model...).

    When raised for a turn, ``event`` is the turn's :class:`~sessionhive.TurnError`.
    """

    event: object | None = None


class TurnFailed(SessionhiveError):
    """A turn ended with a :class:`~sessionhive.events.TurnError`; ``.event`` carries it."""

    event: object | None = None


class OutputInvalid(TurnFailed):
    """A turn with an ``output_schema`` ended without a matching answer, after its one repair round.

    The session's history keeps both answers and the repair request: it stays
    valid for the next turn.
    """


def turn_failure(kind: str, message: str) -> LlmError | TurnFailed:
    """What a turn that ended with a ``TurnError`` of ``kind`` raises (``message`` its text)."""
    if kind == "llm":
        return LlmError(message)
    return OutputInvalid(message) if kind == "output_invalid" else TurnFailed(message)


class StoreError(SessionhiveError):
    """The session store failed, or holds data this version cannot read."""


class CallTimeout(SessionhiveError, TimeoutError):
    """A call did not get its answer within its ``timeout``; the work may still finish."""


class OutcomeUnknown(_Detailed):
    """A call was handed to a shard that then died or stopped answering: it may or may not have run.

    Raised instead of a failure when nobody can tell whether the work
    committed (the shard was killed after it took the call, or it went
    silent and the session moved on without it). Do not retry blindly: read
    the session's history once it answers again (``run_id`` names the call)
    to see whether the turn is there. Calls that provably never started
    raise :class:`CallTimeout` instead.
    """

    session_id: str
    op: str
    run_id: str
    detail: str
    template = (
        "{op}() on session {session_id!r} (run {run_id}) may or may not have happened: "
        "{detail}; read the session's history once it answers to know"
    )


class HiveStopped(SessionhiveError):
    """The Hive was stopped; no further calls are accepted."""

    def __str__(self) -> str:
        return "the Hive has been stopped; start a new one with Hive.start()"


class Overloaded(_Detailed):
    """A session's mailbox is full: the call was refused, nothing of it was accepted.

    Retry later, or raise ``mailbox_size`` in :meth:`Hive.start`.
    """

    session_id: str
    limit: int
    template = (
        "session {session_id!r} has {limit} calls waiting already (its mailbox is full); "
        "the call was not accepted: retry later"
    )


class SessionFailed(_Detailed):
    """A session crashed too often in a short time and refuses work until it is reset.

    ``last_error`` names the last crash; ``reset_session(id)`` brings it back.
    """

    session_id: str
    last_error: str
    template = (
        "session {session_id!r} crashed too often and is marked failed (last crash: {last_error}); "
        "reset_session() brings it back"
    )


class Forbidden(_Detailed):
    """The caller's token lacks the scope this request needs (403 over HTTP); ``scope`` names it."""

    scope: str
    action: str = "this request"
    template = (
        "this token lacks the {scope!r} scope needed for {action}; "
        "ask the operator for a token whose scopes include {scope!r}"
    )


class QuotaExceeded(_Detailed):
    """A tenant is at one of its quotas (429 over HTTP): ``quota`` is its name, ``limit`` its value.

    Nothing of the refused request was done: wait (a turn ends, a session is
    deleted) and retry, or ask the operator to raise the quota.
    """

    tenant: str
    quota: str
    limit: int

    def __str__(self) -> str:
        what = "sessions" if self.quota == "max_sessions" else "turns running at once"
        return (
            f"tenant {self.tenant!r} is at its {self.quota} quota ({self.limit} {what}); nothing was done: "
            f"retry once one ends, or raise it in the token file's [tenant.{self.tenant}] table"
        )
