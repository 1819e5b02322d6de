"""The service's errors as RFC 9457 ``application/problem+json``, each naming its sessionhive class.

Both ends of the wire read :data:`PROBLEMS`: the service answers each class
with its status and the fields its constructor takes, and the client
(``sessionhive.client``) rebuilds the very exception from ``error`` (the class
name) and those fields, so remote code raises what the embedded
:class:`~sessionhive.Hive` would have raised. Imports no web framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionhive import SessionPaused, TurnCancelled, TurnError, event_to_dict
from sessionhive.model import errors
from sessionhive.model.runs import IdempotencyConflict, RunNotFound, SessionBusy

__all__ = [
    "PROBLEMS",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_PREFIX",
    "HttpProblem",
    "ProblemKind",
    "kind_of",
    "problem_for",
    "status_for",
]

PROBLEM_TYPE_PREFIX = "urn:sessionhive:error:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemKind:
    """A sessionhive error class on the wire: its HTTP status and its constructor's arguments.

    ``fields`` names the problem document's fields in the order the constructor
    takes them (``detail`` is the message); the service sends them, the client
    passes them back.
    """

    cls: type[errors.SessionhiveError]
    status: int
    fields: tuple[str, ...] = ("detail",)


#: Every class the service names, most specific first (TurnCancelled and SessionPaused are also events).
PROBLEMS: tuple[ProblemKind, ...] = (
    ProblemKind(errors.SessionNotFound, 404, ("session_id",)),
    ProblemKind(errors.ConfirmationNotFound, 404, ("session_id", "tool_id")),
    ProblemKind(RunNotFound, 404, ("run_id",)),
    ProblemKind(errors.SessionExists, 409, ("session_id",)),
    ProblemKind(SessionPaused, 409, ("session_id",)),
    ProblemKind(TurnCancelled, 409, ("session_id", "reason")),
    ProblemKind(SessionBusy, 409, ("session_id",)),
    # The same Idempotency-Key with another prompt: the request is wrong, not the session's state.
    ProblemKind(IdempotencyConflict, 422, ("session_id", "key", "run_id")),
    ProblemKind(errors.InvalidSessionId, 400),
    # Before InvalidConfig, its base class: the operator's decision, not a malformed body.
    ProblemKind(errors.BaseUrlNotAllowed, 403, ("base_url", "reason")),
    ProblemKind(errors.InvalidConfig, 422),
    # llm_problem: why the configured model cannot be used (never a key).
    ProblemKind(errors.LlmNotConfigured, 422, ("session_id", "llm_problem")),
    ProblemKind(errors.Forbidden, 403, ("scope",)),
    ProblemKind(errors.Overloaded, 429, ("session_id", "limit")),
    ProblemKind(errors.QuotaExceeded, 429, ("tenant", "quota", "limit")),
    ProblemKind(errors.StoreError, 503),
    ProblemKind(errors.HiveStopped, 503, ()),
    ProblemKind(errors.CallTimeout, 504),
    ProblemKind(errors.LlmError, 502),
    # Before TurnFailed, its base class: the model's answer was wrong, not the service.
    ProblemKind(errors.OutputInvalid, 502),
    ProblemKind(errors.SessionFailed, 500, ("session_id", "last_error")),
    ProblemKind(errors.TurnFailed, 500),
)
# Where a field's value is read from the exception, when not from the attribute of its name.
_ATTRIBUTE = {"llm_problem": "detail"}
# The fields sent whenever the error has them: a class outside PROBLEMS still tells its session.
_FIELDS = tuple(
    dict.fromkeys(f for kind in PROBLEMS for f in kind.fields if f not in ("detail", *_ATTRIBUTE))
)


class HttpProblem(Exception):
    """A failure of the HTTP layer itself (auth, body, routing, draining), not of a session."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def kind_of(exc: BaseException) -> ProblemKind | None:
    return next((kind for kind in PROBLEMS if isinstance(exc, kind.cls)), None)


def status_for(exc: BaseException) -> int:
    kind = kind_of(exc)
    return kind.status if kind is not None else 500


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
    kind = kind_of(exc)
    status = kind.status if kind is not None else 500
    name = type(exc).__name__ if isinstance(exc, errors.SessionhiveError) else "InternalError"
    detail = str(exc) if isinstance(exc, errors.SessionhiveError) else "internal error; see the server log"
    body = {
        "type": PROBLEM_TYPE_PREFIX + name,
        "title": name,
        "status": status,
        "detail": detail,
        "error": name,
    }
    # The fields the client needs to rebuild the very exception.
    for field in dict.fromkeys((*_FIELDS, *(kind.fields if kind is not None else ()))):
        if field == "detail":
            continue  # already there
        value = getattr(exc, _ATTRIBUTE.get(field, field), None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            body[field] = value
    event = getattr(exc, "event", None)
    if isinstance(event, TurnError):
        body["event"] = event_to_dict(event)
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    return status, body, headers
