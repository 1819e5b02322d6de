"""The service's errors as RFC 9457 ``application/problem+json``, each naming its sessionhive class.

A client reads ``error`` (the class name) and the fields the class carries
(``session_id``, ``tool_id``, ``limit``...) and raises the same exception the
embedded :class:`~sessionhive.Hive` would have raised.
"""

from __future__ import annotations

from typing import Any

from sessionhive import (
    BaseUrlNotAllowed,
    CallTimeout,
    ConfirmationNotFound,
    Forbidden,
    HiveStopped,
    InvalidConfig,
    InvalidSessionId,
    LlmError,
    LlmNotConfigured,
    Overloaded,
    QuotaExceeded,
    SessionExists,
    SessionFailed,
    SessionhiveError,
    SessionNotFound,
    SessionPaused,
    StoreError,
    TurnCancelled,
    TurnError,
    TurnFailed,
    event_to_dict,
)

__all__ = ["PROBLEM_MEDIA_TYPE", "PROBLEM_TYPE_PREFIX", "HttpProblem", "problem_for", "status_for"]

PROBLEM_TYPE_PREFIX = "urn:sessionhive:error:"
PROBLEM_MEDIA_TYPE = "application/problem+json"

# Most specific first: TurnCancelled and SessionPaused are also events.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (SessionNotFound, 404),
    (ConfirmationNotFound, 404),
    (SessionExists, 409),
    (SessionPaused, 409),
    (TurnCancelled, 409),
    (InvalidSessionId, 400),
    # Before InvalidConfig, its base class: the operator's decision, not a malformed body.
    (BaseUrlNotAllowed, 403),
    (InvalidConfig, 422),
    (LlmNotConfigured, 422),
    (Forbidden, 403),
    (Overloaded, 429),
    (QuotaExceeded, 429),
    (StoreError, 503),
    (HiveStopped, 503),
    (CallTimeout, 504),
    (LlmError, 502),
    (SessionFailed, 500),
    (TurnFailed, 500),
)


class HttpProblem(Exception):
    """A failure of the HTTP layer itself (auth, body, routing, draining), not of a session."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def status_for(exc: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem_for(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, problem document and extra headers for ``exc``."""
    if isinstance(exc, HttpProblem):
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_PREFIX + exc.error,
            "title": exc.error,
            "status": exc.status,
            "detail": exc.detail,
            "error": exc.error,
        }
        headers = {"Retry-After": "1", **exc.headers} if exc.status in (429, 503) else exc.headers
        return exc.status, body, headers
    status = status_for(exc)
    name = type(exc).__name__ if isinstance(exc, SessionhiveError) else "InternalError"
    detail = str(exc) if isinstance(exc, SessionhiveError) else "internal error; see the server log"
    body = {
        "type": PROBLEM_TYPE_PREFIX + name,
        "title": name,
        "status": status,
        "detail": detail,
        "error": name,
    }
    # The fields the client needs to rebuild the very exception.
    for field in (
        "session_id",
        "tool_id",
        "limit",
        "last_error",
        "reason",
        "base_url",
        "scope",
        "tenant",
        "quota",
    ):
        value = getattr(exc, field, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            body[field] = value
    if isinstance(exc, LlmNotConfigured) and exc.detail is not None:
        body["llm_problem"] = exc.detail  # why the configured model cannot be used (never a key)
    event = getattr(exc, "event", None)
    if isinstance(event, TurnError):
        body["event"] = event_to_dict(event)
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    return status, body, headers
