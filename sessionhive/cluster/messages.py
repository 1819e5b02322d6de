"""The typed messages between a cluster facade and its shards: one small frozen class per operation.

A session call travels as a :class:`SessionOp` (its class says whether it
changes the session and whether it may safely run twice) inside a
:class:`Call` carrying its :class:`Routing` (tree root, membership, client
deadline). A shard runs the operation with :meth:`SessionOp.run` on its Hive:
no operation is named by a string, and none reaches the Hive by ``getattr``.
Turns, subscriptions and a run's events start as a :class:`StartFeed`, whose
events are fetched in batches with :class:`NextEvents`. A run's calls name
the session its run id names (``session_of_run``), so they route as that
session's calls do. Calls on a shard as a whole are
:class:`ShardOp` subclasses. Everything here is pickled by Ray.

An :data:`Outcome` is a shard's answer: ``("ok", value)``, ``("err",
exception)``, ``("moved", None)`` (not run: ask the shard the membership
names), ``("expired", reason)`` (not run: its client's deadline passed
first), ``("interrupted", reason)`` (handed to the Hive, then cut off: it may
or may not have happened).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sessionhive.api import DEFAULT_ON_BUSY
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.content import Prompt
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.runs import OnBusy, Webhook

if TYPE_CHECKING:
    from sessionhive import AsyncHive

__all__ = [
    "Call",
    "CancelOperation",
    "CancelRun",
    "Clear",
    "Compact",
    "Configure",
    "ConfirmTool",
    "ContextUsage",
    "CreateChildSession",
    "CreateSession",
    "DestroySession",
    "FeedOp",
    "FlushShard",
    "GetChildSessions",
    "GetConfirmationPolicy",
    "GetLlmForSession",
    "GetOrCreateSession",
    "GetRun",
    "History",
    "IsChildSession",
    "ListRuns",
    "LiveSessionCount",
    "MaybeAutoCompact",
    "NextEvents",
    "Outcome",
    "PauseSession",
    "PendingConfirmations",
    "ResetSession",
    "RestoreSession",
    "ResumeSession",
    "Routing",
    "RunEvents",
    "SessionOp",
    "SessionUsage",
    "SetConfirmationPolicy",
    "ShardOp",
    "ShardRequest",
    "StartFeed",
    "StartRun",
    "StartTurn",
    "StoreHealth",
    "Subscribe",
    "Turn",
    "WaitRun",
]

Outcome = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a call goes and until when it may start.

    ``sent_at`` and ``deadline`` are ``time.time()``: a duration would start
    again if the call was delivered late (to a stopped shard, or to the
    restarted incarnation of a killed one). ``deadline`` ``None``: never.
    """

    root_id: str
    membership: tuple[int, tuple[str, ...]]
    sent_at: float
    deadline: float | None
    #: The caller's W3C trace context (``traceparent``...; empty if none): the shard continues it.
    trace: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------- session calls


@dataclass(frozen=True, slots=True)
class SessionOp:
    """One call on one session. ``name`` is the facade method's (for errors and logs)."""

    session_id: str

    name: ClassVar[str]
    #: Changes the session: answered only while the shard still holds its lease.
    mutating: ClassVar[bool] = True
    #: Running it twice changes nothing: retried after an interruption instead of OutcomeUnknown.
    idempotent: ClassVar[bool] = False
    #: May create the session: its lease is taken even if the store does not have it yet.
    creates: ClassVar[bool] = False

    def new_child(self) -> str | None:
        """The id of the session this call creates besides its own (a child); owned with it."""
        return None

    async def run(self, hive: AsyncHive) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CreateSession(SessionOp):
    config: SessionConfig | None = None
    name: ClassVar[str] = "create_session"
    creates: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.create_session(self.session_id, self.config)


@dataclass(frozen=True, slots=True)
class GetOrCreateSession(SessionOp):
    config: SessionConfig | None = None
    name: ClassVar[str] = "get_or_create_session"
    creates: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.get_or_create_session(self.session_id, self.config)


@dataclass(frozen=True, slots=True)
class CreateChildSession(SessionOp):
    child_id: str = ""
    config: SessionConfig | None = None
    name: ClassVar[str] = "create_child_session"

    def new_child(self) -> str | None:
        return self.child_id

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.create_child_session(self.session_id, self.child_id, self.config)


@dataclass(frozen=True, slots=True)
class ResetSession(SessionOp):
    name: ClassVar[str] = "reset_session"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.reset_session(self.session_id)


@dataclass(frozen=True, slots=True)
class DestroySession(SessionOp):
    name: ClassVar[str] = "destroy_session"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.destroy_session(self.session_id)


@dataclass(frozen=True, slots=True)
class Turn(SessionOp):
    """``generate``: one turn, answered with its result once it ended."""

    prompt: Prompt = ""
    idempotency_key: str | None = None
    on_busy: OnBusy = DEFAULT_ON_BUSY
    output_schema: dict[str, Any] | None = None  # a JSON Schema: a model class stays with the caller
    name: ClassVar[str] = "generate"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.generate(
            self.session_id,
            self.prompt,
            idempotency_key=self.idempotency_key,
            on_busy=self.on_busy,
            output_schema=self.output_schema,
        )


@dataclass(frozen=True, slots=True)
class Clear(SessionOp):
    name: ClassVar[str] = "clear"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.clear(self.session_id)


@dataclass(frozen=True, slots=True)
class Compact(SessionOp):
    name: ClassVar[str] = "compact"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.compact(self.session_id)


@dataclass(frozen=True, slots=True)
class MaybeAutoCompact(SessionOp):
    name: ClassVar[str] = "maybe_auto_compact"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.maybe_auto_compact(self.session_id)


@dataclass(frozen=True, slots=True)
class Configure(SessionOp):
    thinking: bool | None = None
    budget: int | None = None
    model_config: LlmConfig | None = None
    name: ClassVar[str] = "configure"
    idempotent: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.configure(self.session_id, self.thinking, self.budget, self.model_config)


@dataclass(frozen=True, slots=True)
class PauseSession(SessionOp):
    name: ClassVar[str] = "pause_session"
    idempotent: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.pause_session(self.session_id)


@dataclass(frozen=True, slots=True)
class ResumeSession(SessionOp):
    name: ClassVar[str] = "resume_session"
    idempotent: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.resume_session(self.session_id)


@dataclass(frozen=True, slots=True)
class CancelOperation(SessionOp):
    name: ClassVar[str] = "cancel_operation"
    idempotent: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.cancel_operation(self.session_id)


@dataclass(frozen=True, slots=True)
class ConfirmTool(SessionOp):
    tool_id: str = ""
    approved: bool = False
    reason: str | None = None
    decided_by: str | None = None
    name: ClassVar[str] = "confirm_tool"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.confirm_tool(
            self.session_id, self.tool_id, self.approved, self.reason, decided_by=self.decided_by
        )


@dataclass(frozen=True, slots=True)
class SetConfirmationPolicy(SessionOp):
    policy: ConfirmationPolicy | None = None
    name: ClassVar[str] = "set_confirmation_policy"
    idempotent: ClassVar[bool] = True

    async def run(self, hive: AsyncHive) -> Any:
        assert self.policy is not None  # checked by the facade
        return await hive.set_confirmation_policy(self.session_id, self.policy)


@dataclass(frozen=True, slots=True)
class _Read(SessionOp):
    """A call that changes nothing: it may run twice, and its answer needs no lease check."""

    mutating: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class History(_Read):
    name: ClassVar[str] = "history"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.history(self.session_id)


@dataclass(frozen=True, slots=True)
class ContextUsage(_Read):
    name: ClassVar[str] = "context_usage"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.context_usage(self.session_id)


@dataclass(frozen=True, slots=True)
class SessionUsage(_Read):
    name: ClassVar[str] = "usage"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.usage(self.session_id)


@dataclass(frozen=True, slots=True)
class GetLlmForSession(_Read):
    name: ClassVar[str] = "get_llm_for_session"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.get_llm_for_session(self.session_id)


@dataclass(frozen=True, slots=True)
class PendingConfirmations(_Read):
    name: ClassVar[str] = "pending_confirmations"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.pending_confirmations(self.session_id)


@dataclass(frozen=True, slots=True)
class GetConfirmationPolicy(_Read):
    name: ClassVar[str] = "get_confirmation_policy"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.get_confirmation_policy(self.session_id)


@dataclass(frozen=True, slots=True)
class IsChildSession(_Read):
    name: ClassVar[str] = "is_child_session"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.is_child_session(self.session_id)


@dataclass(frozen=True, slots=True)
class GetChildSessions(_Read):
    name: ClassVar[str] = "get_child_sessions"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.get_child_sessions(self.session_id)


@dataclass(frozen=True, slots=True)
class RestoreSession(_Read):
    name: ClassVar[str] = "restore_session_by_id"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.restore_session_by_id(self.session_id)


# ---------------------------------------------------------------------- runs


@dataclass(frozen=True, slots=True)
class StartRun(SessionOp):
    """``start_run``: answered with the Run once the session accepted it."""

    prompt: Prompt = ""
    idempotency_key: str | None = None
    on_busy: OnBusy = DEFAULT_ON_BUSY
    webhook: Webhook | None = None
    output_schema: dict[str, Any] | None = None
    name: ClassVar[str] = "start_run"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.start_run(
            self.session_id,
            self.prompt,
            idempotency_key=self.idempotency_key,
            on_busy=self.on_busy,
            webhook=self.webhook,
            output_schema=self.output_schema,
        )


@dataclass(frozen=True, slots=True)
class CancelRun(SessionOp):
    run_id: str = ""
    name: ClassVar[str] = "cancel_run"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.cancel_run(self.run_id)


@dataclass(frozen=True, slots=True)
class GetRun(_Read):
    run_id: str = ""
    name: ClassVar[str] = "get_run"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.get_run(self.run_id)


@dataclass(frozen=True, slots=True)
class WaitRun(_Read):
    """``wait_run``: answered once the run finished (the call's deadline is its timeout)."""

    run_id: str = ""
    timeout: float | None = None
    name: ClassVar[str] = "wait_run"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.wait_run(self.run_id, timeout=self.timeout)


@dataclass(frozen=True, slots=True)
class ListRuns(_Read):
    name: ClassVar[str] = "list_runs"

    async def run(self, hive: AsyncHive) -> Any:
        return await hive.list_runs(self.session_id)


# ---------------------------------------------------------------------- feeds


@dataclass(frozen=True, slots=True)
class StartTurn(SessionOp):
    """``generate_streaming``: the turn starts; its events and result come through a feed."""

    prompt: Prompt = ""
    idempotency_key: str | None = None
    on_busy: OnBusy = DEFAULT_ON_BUSY
    output_schema: dict[str, Any] | None = None
    name: ClassVar[str] = "generate"

    async def open(self, hive: AsyncHive, timeout: float | None) -> Any:
        """The turn's local stream (``AsyncTurnStream``), which the shard pumps into a feed."""
        return await hive.generate_streaming(
            self.session_id,
            self.prompt,
            timeout=timeout,
            idempotency_key=self.idempotency_key,
            on_busy=self.on_busy,
            output_schema=self.output_schema,
        )

    async def run(self, hive: AsyncHive) -> Any:
        return await self.open(hive, None)


@dataclass(frozen=True, slots=True)
class Subscribe(_Read):
    """``subscribe``: the session's events come through a feed until it is closed."""

    after: int | None = None
    name: ClassVar[str] = "subscribe"

    async def open(self, hive: AsyncHive, timeout: float | None) -> Any:
        """The session's local subscription, which the shard pumps into a feed."""
        return await hive.subscribe(self.session_id, after=self.after, timeout=timeout)

    async def run(self, hive: AsyncHive) -> Any:
        return await self.open(hive, None)


@dataclass(frozen=True, slots=True)
class RunEvents(_Read):
    """``run_events``: the run's events after ``after`` come through a feed, to its terminal one."""

    run_id: str = ""
    after: int | None = None
    name: ClassVar[str] = "run_events"

    async def open(self, hive: AsyncHive, timeout: float | None) -> Any:
        """The run's local event iterator, which the shard pumps into a feed."""
        await hive.get_run(self.run_id, timeout=timeout)  # RunNotFound now, not as the feed's outcome
        return hive.run_events(self.run_id, after=self.after, timeout=timeout)

    async def run(self, hive: AsyncHive) -> Any:
        return await self.open(hive, None)


#: The operations a feed starts with.
FeedOp = StartTurn | Subscribe | RunEvents


# ---------------------------------------------------------------------- batched requests


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``op`` (a :class:`SessionOp`) on the session's behalf."""

    op: SessionOp
    routing: Routing


@dataclass(frozen=True, slots=True)
class StartFeed:
    """Start a turn stream, a subscription or a run's events; answers a feed id (and a turn's run id)."""

    op: FeedOp
    routing: Routing


@dataclass(frozen=True, slots=True)
class NextEvents:
    """Every event of feed ``feed_id`` since the last fetch (waiting up to ``wait`` s for one)."""

    feed_id: int
    wait: float


ShardRequest = Call | StartFeed | NextEvents


# ---------------------------------------------------------------------- the shard as a whole


@dataclass(frozen=True, slots=True)
class ShardOp:
    """A call on a shard's Hive as a whole."""

    async def run(self, hive: AsyncHive, shard_id: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class LiveSessionCount(ShardOp):
    async def run(self, hive: AsyncHive, shard_id: str) -> Any:  # noqa: ARG002 - every ShardOp's signature
        return await hive.live_session_count()


@dataclass(frozen=True, slots=True)
class StoreHealth(ShardOp):
    async def run(self, hive: AsyncHive, shard_id: str) -> Any:
        return [(f"{shard_id}: {name}", status) for name, status in await hive.store_health()]


@dataclass(frozen=True, slots=True)
class FlushShard(ShardOp):
    async def run(self, hive: AsyncHive, shard_id: str) -> Any:  # noqa: ARG002 - every ShardOp's signature
        await hive.flush()
