"""Runs: every turn is a run with an id, a status, its prompt and its outcome.

A run is created when a session accepts a turn (``generate``, ``stream``,
``start_run``, ``POST /v1/sessions/{id}/runs``). Its id names the session it
belongs to (``run_<session id, base64url>_<16 hex>``), so any facade (a
cluster's included) routes ``get_run(run_id)`` to its session without an
index: :func:`session_of_run` reads it back.

An ``idempotency_key`` names a run within its session: a second request with
the same key is answered with that run and starts nothing; the same key with
another prompt is refused with :class:`IdempotencyConflict`. Keys live as
long as their run's record (the session keeps its last
``max_finished_runs`` finished runs, :data:`DEFAULT_MAX_FINISHED_RUNS`).

``on_busy`` says what a new turn does when the session is running one:
``"enqueue"`` (wait its turn, the default), ``"reject"``
(:class:`SessionBusy`), ``"interrupt"`` (cancel the running turn, which keeps
a valid history, then run) or ``"rollback"`` (cancel the running turn and
remove its messages from the history, then run).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

# _Detailed: errors built from named fields, which pickle (a cluster shard raises them in another process).
from sessionhive.model.errors import InvalidConfig, _Detailed
from sessionhive.model.messages import Usage

__all__ = [
    "DEFAULT_MAX_FINISHED_RUNS",
    "FINISHED_RUN_STATUSES",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "IdempotencyConflict",
    "OnBusy",
    "Run",
    "RunNotFound",
    "RunStatus",
    "SessionBusy",
    "Webhook",
    "check_idempotency_key",
    "check_on_busy",
    "make_run_id",
    "session_of_run",
]

RunStatus = Literal["queued", "running", "waiting", "completed", "failed", "cancelled", "interrupted"]
OnBusy = Literal["enqueue", "reject", "interrupt", "rollback"]

#: The statuses a run ends in; a run in any other is queued or in flight.
FINISHED_RUN_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "interrupted"})
#: Finished runs a session keeps (with their idempotency keys) unless ``Hive.start`` says otherwise.
DEFAULT_MAX_FINISHED_RUNS = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255

_RUN_PREFIX = "run_"


class SessionBusy(_Detailed):
    """``on_busy="reject"``: the session is running a turn (HTTP 409)."""

    session_id: str
    template = "session {session_id!r} is running a turn (on_busy='reject')"


class IdempotencyConflict(_Detailed):
    """The idempotency key names a run of this session with another prompt (HTTP 422)."""

    session_id: str
    key: str
    run_id: str
    template = (
        "session {session_id!r}: idempotency key {key!r} names run {run_id}, started with another prompt"
    )


class RunNotFound(_Detailed):
    """No run of that id: never created, malformed, or older than the session's kept runs (HTTP 404)."""

    run_id: str
    template = "run {run_id!r} not found"


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where a finished run is POSTed; ``secret`` signs the body (never shown, stored or logged)."""

    url: str
    secret: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the URL only (a secret is not persisted; the server's key signs instead)."""
        return {"url": self.url}


@dataclass(frozen=True, slots=True)
class Run:
    """One turn of a session, as its callers see it.

    ``text``, ``usage``, ``stop_reason`` and ``output`` are the turn's outcome once it
    completed (its messages are in the session's history); ``error`` says why
    it failed, was cancelled or interrupted. ``last_event_id`` is the id of the
    last event the run emitted (0 before its first): ``run_events(run_id,
    after=...)`` resumes from any id up to it.
    """

    run_id: str
    session_id: str
    prompt: str
    status: RunStatus = "queued"
    idempotency_key: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    text: str | None = None
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    error: str | None = None
    webhook_url: str | None = None
    last_event_id: int = 0
    #: The validated structured output of a completed run with an ``output_schema``, as JSON data.
    output: Any = None

    @property
    def done(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES

    def with_status(self, status: RunStatus, **changes: Any) -> Run:
        return replace(self, status=status, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "session_id": self.session_id,
            "prompt": self.prompt,
            "status": self.status,
            "idempotency_key": self.idempotency_key,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "text": self.text,
            "usage": self.usage.to_dict(),
            "stop_reason": self.stop_reason,
            "error": self.error,
            "webhook_url": self.webhook_url,
            "last_event_id": self.last_event_id,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        status = data.get("status", "queued")
        if status not in get_args(RunStatus):
            raise ValueError(f"unknown run status {status!r}")
        return cls(
            run_id=str(data["run_id"]),
            session_id=str(data["session_id"]),
            prompt=str(data.get("prompt", "")),
            status=status,
            idempotency_key=data.get("idempotency_key"),
            created_at=float(data.get("created_at") or 0.0),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            text=data.get("text"),
            usage=Usage.from_dict(data.get("usage") or {}),
            stop_reason=data.get("stop_reason"),
            error=data.get("error"),
            webhook_url=data.get("webhook_url"),
            last_event_id=int(data.get("last_event_id") or 0),
            output=data.get("output"),
        )


def make_run_id(session_id: str) -> str:
    """A new run id of ``session_id``: the session's id (base64url, unpadded) and 64 random bits."""
    encoded = base64.urlsafe_b64encode(session_id.encode()).decode().rstrip("=")
    return f"{_RUN_PREFIX}{encoded}_{secrets.token_hex(8)}"


def session_of_run(run_id: str) -> str:
    """The session a run id names; :class:`RunNotFound` for anything that is not a run id."""
    if not isinstance(run_id, str) or not run_id.startswith(_RUN_PREFIX):
        raise RunNotFound(str(run_id))
    encoded, _, suffix = run_id[len(_RUN_PREFIX) :].rpartition("_")
    if not encoded or len(suffix) != 16:
        raise RunNotFound(run_id)
    try:
        int(suffix, 16)
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RunNotFound(run_id) from None


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise InvalidConfig(
            f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters, got {key!r}"
        )
    return key


def check_on_busy(on_busy: object) -> OnBusy:
    if on_busy not in get_args(OnBusy):
        raise InvalidConfig(f"on_busy must be one of {', '.join(get_args(OnBusy))}, got {on_busy!r}")
    return on_busy  # type: ignore[return-value]
