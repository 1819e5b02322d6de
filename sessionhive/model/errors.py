"""The exception hierarchy: every error sessionhive raises is a :class:`SessionhiveError`.

Each message names the session involved and what to do next, so that a user
reading a traceback in a long-running service knows how to recover.
"""

from __future__ import annotations

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
    "Overloaded",
    "QuotaExceeded",
    "SessionExists",
    "SessionFailed",
    "SessionNotFound",
    "SessionhiveError",
    "StoreError",
    "TurnFailed",
]


class SessionhiveError(Exception):
    """Base class of every error raised by sessionhive."""


class InvalidSessionId(SessionhiveError, ValueError):
    """A session id is empty, too long, or contains control characters."""


class InvalidConfig(SessionhiveError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class BaseUrlNotAllowed(InvalidConfig):
    """A model's ``base_url`` is not an endpoint the operator allowed; nothing was sent to it.

    ``base_url`` is the refused URL (never with a user or password: such URLs
    are refused before they are shown) and ``reason`` says what refused it.
    """

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(base_url, reason)
        self.base_url = base_url
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"base URL {self.base_url!r} is not allowed: {self.reason}; the operator allows an endpoint "
            "with 'sessionhive serve --allow-base-url URL' (or Hive.start(allow_base_urls=[URL]))"
        )


class SessionNotFound(SessionhiveError, KeyError):
    """No live or stored session has this id."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} does not exist (neither live nor in the store); "
            "create it with create_session() first"
        )


class SessionExists(SessionhiveError):
    """A session with this id already exists, live or in the store."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} already exists; pick another id "
            "or destroy_session() the old one first"
        )


class LlmNotConfigured(SessionhiveError):
    """A turn or compaction needs an LLM and neither the session nor the Hive has one."""

    def __init__(self, session_id: str, detail: str | None = None) -> None:
        super().__init__(session_id)
        self.session_id = session_id
        self.detail = detail

    def __str__(self) -> str:
        if self.detail is not None:
            return f"session {self.session_id!r} cannot use its configured model: {self.detail}"
        return (
            f"no LLM configured for session {self.session_id!r}; pass llm= to Hive.start() "
            "or call configure(session_id, model_config=LlmConfig(...))"
        )


class ConfirmationNotFound(SessionhiveError):
    """``confirm_tool`` named a tool call that is not waiting for confirmation."""

    def __init__(self, session_id: str, tool_id: str) -> None:
        super().__init__(session_id, tool_id)
        self.session_id = session_id
        self.tool_id = tool_id

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} has no tool call {self.tool_id!r} waiting for "
            "confirmation; it may have timed out, been cancelled, or already been answered "
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


class StoreError(SessionhiveError):
    """The session store failed, or holds data this version cannot read."""


class CallTimeout(SessionhiveError, TimeoutError):
    """A call did not get its answer within its ``timeout``; the work may still finish."""


class OutcomeUnknown(SessionhiveError):
    """A call was handed to a shard that then died or stopped answering: it may or may not have run.

    Raised instead of a failure when nobody can tell whether the work
    committed (the shard was killed after it took the call, or it went
    silent and the session moved on without it). Do not retry blindly: read
    the session's history once it answers again (``run_id`` names the call)
    to see whether the turn is there. Calls that provably never started
    raise :class:`CallTimeout` instead.
    """

    def __init__(self, session_id: str, op: str, run_id: str, detail: str) -> None:
        super().__init__(session_id, op, run_id, detail)
        self.session_id = session_id
        self.op = op
        self.run_id = run_id
        self.detail = detail

    def __str__(self) -> str:
        return (
            f"{self.op}() on session {self.session_id!r} (run {self.run_id}) may or may not have happened: "
            f"{self.detail}; read the session's history once it answers to know"
        )


class HiveStopped(SessionhiveError):
    """The Hive was stopped; no further calls are accepted."""

    def __str__(self) -> str:
        return "the Hive has been stopped; start a new one with Hive.start()"


class Overloaded(SessionhiveError):
    """A session's mailbox is full: the call was refused, nothing of it was accepted.

    Retry later, or raise ``mailbox_size`` in :meth:`Hive.start`.
    """

    def __init__(self, session_id: str, limit: int) -> None:
        super().__init__(session_id, limit)
        self.session_id = session_id
        self.limit = limit

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} has {self.limit} calls waiting already (its mailbox is full); "
            "the call was not accepted: retry later"
        )


class SessionFailed(SessionhiveError):
    """A session crashed too often in a short time and refuses work until it is reset.

    ``last_error`` names the last crash; ``reset_session(id)`` brings it back.
    """

    def __init__(self, session_id: str, last_error: str) -> None:
        super().__init__(session_id, last_error)
        self.session_id = session_id
        self.last_error = last_error

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} crashed too often and is marked failed (last crash: "
            f"{self.last_error}); reset_session() brings it back"
        )


class Forbidden(SessionhiveError):
    """The caller's token lacks the scope this request needs (403 over HTTP); ``scope`` names it."""

    def __init__(self, scope: str, action: str = "this request") -> None:
        super().__init__(scope, action)
        self.scope = scope
        self.action = action

    def __str__(self) -> str:
        return (
            f"this token lacks the {self.scope!r} scope needed for {self.action}; "
            f"ask the operator for a token whose scopes include {self.scope!r}"
        )


class QuotaExceeded(SessionhiveError):
    """A tenant is at one of its quotas (429 over HTTP): ``quota`` is its name, ``limit`` its value.

    Nothing of the refused request was done: wait (a turn ends, a session is
    deleted) and retry, or ask the operator to raise the quota.
    """

    def __init__(self, tenant: str, quota: str, limit: int) -> None:
        super().__init__(tenant, quota, limit)
        self.tenant = tenant
        self.quota = quota
        self.limit = limit

    def __str__(self) -> str:
        what = "sessions" if self.quota == "max_sessions" else "turns running at once"
        return (
            f"tenant {self.tenant!r} is at its {self.quota} quota ({self.limit} {what}); nothing was done: "
            f"retry once one ends, or raise it in the token file's [tenant.{self.tenant}] table"
        )
