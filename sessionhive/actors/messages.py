"""The typed messages of the session and supervisor protocols: one small frozen class per operation.

A message a user's call becomes is a :class:`SessionCall`: it carries the
``reply`` its caller waits on. Those are the messages that must never be
lost: a session that is passivating hands them back to the supervisor, which
delivers them to the session's next incarnation. Everything else here is
internal traffic between actors and the turns they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.content import ContentPart
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.output import OutputSpec
from sessionhive.model.runs import OnBusy, Webhook

if TYPE_CHECKING:
    import concurrent.futures

    import pykka

    from sessionhive._channels import EventSink
    from sessionhive.agent.loop import TurnJournal
    from sessionhive.persistence.snapshot import SessionSnapshot
    from sessionhive.runtime import Reply

__all__ = [
    "Activate",
    "Cancel",
    "CancelRun",
    "Clear",
    "Compact",
    "Configure",
    "Confirm",
    "Continue",
    "Create",
    "Destroy",
    "DestroyTree",
    "Generate",
    "GetRun",
    "Inheritance",
    "Journaled",
    "ListRuns",
    "ListSessions",
    "LoadAll",
    "MaybeAutoCompact",
    "Passivate",
    "Pause",
    "PersistFailed",
    "ResetSession",
    "Resume",
    "Route",
    "RunEvents",
    "SessionCall",
    "SessionCrashed",
    "SessionGone",
    "SetPolicy",
    "Shutdown",
    "ShutdownAll",
    "StartRun",
    "Subscribe",
    "Unsubscribe",
    "WaitRun",
]


# ---------------------------------------------------------------- session calls


@dataclass(frozen=True, slots=True)
class SessionCall:
    """A user's call for one session; ``reply`` gets the answer (``None``: nobody waits)."""

    reply: Reply | None


@dataclass(frozen=True, slots=True)
class Activate(SessionCall):
    """Make the session live and answer its version (restore_session_by_id, reading a resting session)."""


@dataclass(frozen=True, slots=True)
class Generate(SessionCall):
    """Run a turn; ``reply`` gets its result, ``accepted`` the :class:`~sessionhive.Run` once accepted."""

    prompt: str
    sink: EventSink | None = None
    accepted: Reply | None = None
    trace_parent: Any = None  # the caller's trace context (metrics.tracing.current_context())
    idempotency_key: str | None = None
    on_busy: OnBusy = "enqueue"
    output: OutputSpec | None = None
    parts: tuple[ContentPart, ...] = ()  # the prompt's content parts; ``prompt`` is their text


@dataclass(frozen=True, slots=True)
class StartRun(SessionCall):
    """Start a turn in the background; ``reply`` gets the accepted :class:`~sessionhive.Run`."""

    prompt: str
    idempotency_key: str | None = None
    on_busy: OnBusy = "enqueue"
    webhook: Webhook | None = None  # held in memory only: its secret is never stored
    trace_parent: Any = None
    output: OutputSpec | None = None
    parts: tuple[ContentPart, ...] = ()  # the prompt's content parts; ``prompt`` is their text


@dataclass(frozen=True, slots=True)
class GetRun(SessionCall):
    run_id: str


@dataclass(frozen=True, slots=True)
class WaitRun(SessionCall):
    """Answered with the run once it finished."""

    run_id: str


@dataclass(frozen=True, slots=True)
class CancelRun(SessionCall):
    run_id: str
    reason: str = "cancelled by cancel_run()"


@dataclass(frozen=True, slots=True)
class ListRuns(SessionCall):
    pass


@dataclass(frozen=True, slots=True)
class RunEvents(SessionCall):
    """Replay a run's kept events after ``after`` into ``sink``, then its live ones until it ends."""

    run_id: str
    after: int | None
    sink: EventSink


@dataclass(frozen=True, slots=True)
class Compact(SessionCall):
    pass


@dataclass(frozen=True, slots=True)
class MaybeAutoCompact(SessionCall):
    pass


@dataclass(frozen=True, slots=True)
class Clear(SessionCall):
    pass


@dataclass(frozen=True, slots=True)
class Configure(SessionCall):
    thinking: bool | None
    budget: int | None
    model_config: LlmConfig | None


@dataclass(frozen=True, slots=True)
class SetPolicy(SessionCall):
    policy: ConfirmationPolicy


@dataclass(frozen=True, slots=True)
class Pause(SessionCall):
    pass


@dataclass(frozen=True, slots=True)
class Resume(SessionCall):
    pass


@dataclass(frozen=True, slots=True)
class Cancel(SessionCall):
    #: What the cancelled turn and confirmations say (``TurnCancelled.reason``).
    reason: str = "cancelled by cancel_operation()"


@dataclass(frozen=True, slots=True)
class Confirm(SessionCall):
    tool_id: str
    approved: bool
    reason: str | None
    decided_by: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe(SessionCall):
    sink: EventSink
    after: int | None = None  # replay the kept events with a larger id first


@dataclass(frozen=True, slots=True)
class Unsubscribe(SessionCall):
    sink: EventSink


@dataclass(frozen=True, slots=True)
class Inheritance(SessionCall):
    """What a child takes from this parent: (policy, LLM client, LLM config without key)."""


@dataclass(frozen=True, slots=True)
class Destroy(SessionCall):
    """Stop for good and delete from the store (sent by the supervisor, children first)."""


@dataclass(frozen=True, slots=True)
class Passivate(SessionCall):
    """Stop to save memory if idle (sent by the supervisor); answers whether it did."""


@dataclass(frozen=True, slots=True)
class Shutdown(SessionCall):
    """Hive.stop(): cancel running work, record what it left, stop."""


# ---------------------------------------------------------------- supervisor


@dataclass(frozen=True, slots=True)
class Route:
    """Deliver ``call`` to session ``session_id``, activating it first if needed."""

    session_id: str
    call: SessionCall


@dataclass(frozen=True, slots=True)
class Create:
    session_id: str
    config: SessionConfig
    parent_id: str | None
    reply: Reply
    exist_ok: bool = False


@dataclass(frozen=True, slots=True)
class DestroyTree:
    """Destroy ``session_id`` and, first, all its descendants."""

    session_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class ListSessions:
    reply: Reply


@dataclass(frozen=True, slots=True)
class LoadAll:
    reply: Reply


@dataclass(frozen=True, slots=True)
class ResetSession:
    """Clear a session's ``failed`` mark (and its crash count) so it takes work again."""

    session_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class ShutdownAll:
    reply: Reply


@dataclass(frozen=True, slots=True)
class SessionGone:
    """Told to the supervisor when a session actor stops for good or is passivated."""

    session_id: str
    reason: Literal["destroyed", "passivated"]
    ref: pykka.ActorRef[Any]


@dataclass(frozen=True, slots=True)
class SessionCrashed:
    """Told to the supervisor when a handler raised: restart the session, redeliver ``held`` calls."""

    session_id: str
    ref: pykka.ActorRef[Any]
    snapshot: SessionSnapshot | None
    held: tuple[SessionCall, ...]
    error: str


@dataclass(frozen=True, slots=True)
class Journaled:
    """A running turn completed a step: store it now (the turn journal)."""

    turn_id: int
    journal: TurnJournal
    ack: concurrent.futures.Future[None] | None


@dataclass(frozen=True, slots=True)
class PersistFailed:
    """The store refused this session's snapshot after every retry (told to a live session only)."""

    operation: str
    error: str


@dataclass(frozen=True, slots=True)
class Continue:
    """Run ``fn`` inside the receiving actor (a future it waited for completed)."""

    fn: Callable[[], None]
