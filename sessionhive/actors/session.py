"""``SessionActor``: the one owner of one session's state.

Every change to a session (its messages, config, policy, LLM, pause state,
pending confirmations, job queue, version) happens inside this actor's
message handlers, one message at a time. Long work (agent turns, LLM
compaction) runs on the Hive's :class:`~sessionhive.actors.turn.TurnLoop`
and reports back with tells, so the mailbox keeps answering ``history``,
``confirm_tool``, ``cancel_operation`` and friends while a turn runs.

Jobs (turns, compactions, clears) of one session run strictly one after
another from :attr:`_jobs`, so a history is never interleaved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pykka

from sessionhive._channels import EventSink
from sessionhive.actors.turn import (
    ConfirmationAsked,
    ConfirmationTimedOut,
    SessionTurnHooks,
    TurnEvents,
    TurnHandle,
    TurnLoop,
)
from sessionhive.agent import compaction
from sessionhive.agent.loop import (
    CompactionOutcome,
    Decision,
    TurnOutcome,
    TurnSpec,
    run_compaction,
    run_turn,
)
from sessionhive.llm import ClientCache, LlmClient, LlmConfig
from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.errors import (
    ConfirmationNotFound,
    InvalidConfig,
    LlmError,
    LlmNotConfigured,
    SessionNotFound,
    StoreError,
    TurnFailed,
)
from sessionhive.model.events import (
    AgentEvent,
    ConfirmationRequired,
    ConfirmationResolved,
    ContextCompacted,
    PersistenceFailed,
    SessionPaused,
    SessionResumed,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnStart,
)
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, ContextUsage, Message, Usage
from sessionhive.persistence.actor import Delete, Save
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.runtime import HiveActor, complete, fail

if TYPE_CHECKING:
    from sessionhive.agent.loop import ToolRunner

__all__ = ["Call", "HiveServices", "SessionActor", "SessionCrashed", "SessionGone"]

log = logging.getLogger("sessionhive.session")


# Sent to the caller of a deferred operation: the value arrives later.
_DEFERRED = object()


@dataclass(frozen=True)
class HiveServices:
    """What every session of a Hive shares: immutable services, no session state."""

    persistence: pykka.ActorRef[Any] | None
    turn_loop: TurnLoop
    tools: ToolRunner
    workspace: Path
    metrics: HiveMetrics
    default_llm: LlmClient | None
    default_llm_config: LlmConfig | None
    llm_clients: ClientCache
    subscriber_queue_size: int = 1024


class Call:
    """A request for a session: the operation name, its arguments, and where to answer."""

    __slots__ = ("args", "op", "reply")

    def __init__(
        self, op: str, args: tuple[Any, ...] = (), reply: concurrent.futures.Future[Any] | None = None
    ):
        self.op = op
        self.args = args
        self.reply = reply

    def __repr__(self) -> str:
        return f"Call({self.op!r})"


@dataclass(frozen=True)
class SessionGone:
    """Told to the supervisor when a session actor stops for good or is passivated."""

    session_id: str
    reason: Literal["destroyed", "passivated"]
    ref: pykka.ActorRef[Any]


@dataclass(frozen=True)
class SessionCrashed:
    """Told to the supervisor when a handler raised: restart the session, redeliver ``held`` calls."""

    session_id: str
    ref: pykka.ActorRef[Any]
    snapshot: SessionSnapshot | None
    held: tuple[Call, ...]
    error: str


@dataclass
class _Job:
    kind: Literal["turn", "compact", "auto_compact", "clear"]
    reply: concurrent.futures.Future[Any] | None
    prompt: str = ""
    sink: EventSink | None = None
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Running:
    job: _Job
    turn_id: int
    handle: TurnHandle | None
    started: float
    history_at_start: tuple[Message, ...]
    cancelled: bool = False


@dataclass
class _Pending:
    turn_id: int
    resolve: Callable[[Decision], None]


@dataclass(frozen=True)
class _JobFinished:
    turn_id: int
    outcome: object  # TurnOutcome | CompactionOutcome | BaseException


@dataclass(frozen=True)
class _PersistFailed:
    operation: str
    error: str


class SessionActor(HiveActor):
    """One session. Spawned by the SupervisorActor only; talk to it through the Hive."""

    def __init__(
        self,
        services: HiveServices,
        supervisor: pykka.ActorRef[Any],
        snapshot: SessionSnapshot,
        llm_client: LlmClient | None = None,
        inherited_llm_config: LlmConfig | None = None,
        created: concurrent.futures.Future[Any] | None = None,
    ) -> None:
        super().__init__()
        self._services = services
        self._metrics = services.metrics
        self._supervisor = supervisor
        self.session_id = snapshot.session_id
        self._parent_id = snapshot.parent_id
        self._config = snapshot.config
        self._policy = snapshot.confirmation_policy
        self._llm_config = snapshot.llm_config  # the session's own; may carry a key in memory
        self._inherited_llm_config = inherited_llm_config
        self._llm_client = llm_client
        if self._llm_client is None and self._llm_config is not None:
            self._llm_client = self._build_client(self._llm_config)
        self._thinking = snapshot.thinking
        self._budget = snapshot.budget
        self._messages = snapshot.messages
        self._history_epoch = snapshot.history_epoch
        self._usage = snapshot.usage
        self._context_used = snapshot.context_usage.used_tokens
        self._state: Literal["active", "paused"] = snapshot.state
        self._version = snapshot.version
        self._created_at = snapshot.created_at
        self._updated_at = snapshot.updated_at
        self._jobs: deque[_Job] = deque()
        self._running: _Running | None = None
        self._pending: dict[str, _Pending] = {}
        self._subscribers: list[EventSink] = []
        self._turn_seq = 0
        self._gone = False
        self._created = created
        self._shutting_down = False
        self._shutdown_reply: concurrent.futures.Future[Any] | None = None

    # ------------------------------------------------------------------ plumbing

    def on_start(self) -> None:
        if self._created is not None:
            self._answer(self._created, self.session_id, "create")
            self._created = None

    def _build_client(self, config: LlmConfig) -> LlmClient | None:
        try:
            return self._services.llm_clients.get(config)
        except Exception as exc:  # noqa: BLE001 - a missing SDK or key must not kill the session
            log.warning("session %s: cannot build the %s client: %s", self.session_id, config.provider, exc)
            return None

    def _llm(self) -> LlmClient | None:
        return self._llm_client or self._services.default_llm

    def _snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(
            session_id=self.session_id,
            version=self._version,
            parent_id=self._parent_id,
            state=self._state,
            config=self._config,
            confirmation_policy=self._policy,
            llm_config=self._llm_config,
            thinking=self._thinking,
            budget=self._budget,
            usage=self._usage,
            context_usage=self._context_usage(),
            messages=self._messages,
            history_epoch=self._history_epoch,
            created_at=self._created_at,
            updated_at=self._updated_at,
        )

    def _context_usage(self) -> ContextUsage:
        return ContextUsage(self._context_used, self._config.max_context_length or DEFAULT_MAX_CONTEXT)

    def _persist(self, operation: str) -> concurrent.futures.Future[None] | None:
        """Record a change: bump the version and send the snapshot to the PersistenceActor.

        Returns the commit acknowledgement for ``durability="sync"`` sessions.
        """
        self._version += 1
        self._updated_at = time.time()
        persistence = self._services.persistence
        if persistence is None or self._config.storage == "memory":
            return None
        ack: concurrent.futures.Future[None] | None = None
        if self._config.durability == "sync":
            ack = concurrent.futures.Future()
        persistence.tell(Save(self._snapshot(), ack))
        return ack

    def _answer(self, reply: concurrent.futures.Future[Any] | None, value: Any, operation: str) -> None:
        """Persist the change, then answer: at once, or after the commit for sync sessions."""
        self._deliver(reply, value, self._persist(operation), operation)

    def _emit(self, event: AgentEvent, sink: EventSink | None = None) -> None:
        if sink is not None:
            sink.offer(event)
        for subscriber in self._subscribers:
            subscriber.offer(event)

    def on_receive(self, message: Any) -> Any:
        kind = message.op if type(message) is Call else type(message).__name__
        self._metrics.child(self._metrics.messages_handled, "session", kind).inc()
        return super().on_receive(message)

    def on_Call(self, call: Call) -> None:
        if self._gone:
            fail(call.reply, SessionNotFound(self.session_id))
            return
        handler = getattr(self, "_op_" + call.op, None)
        if handler is None:
            fail(call.reply, TypeError(f"unknown session operation {call.op!r}"))
            return
        try:
            result = handler(call.reply, *call.args)
        except Exception as error:  # noqa: BLE001 - delivered to the caller
            fail(call.reply, error)
            return
        if result is not _DEFERRED:
            complete(call.reply, result)

    def on__PersistFailed(self, message: _PersistFailed) -> None:
        self._emit(PersistenceFailed(self.session_id, message.operation, message.error))

    # ------------------------------------------------------------------ queries

    def _op_history(self, reply: Any) -> list[Message]:
        return list(self._messages)

    def _op_context_usage(self, reply: Any) -> ContextUsage:
        return self._context_usage()

    def _op_version(self, reply: Any) -> int:
        return self._version

    def _op_usage(self, reply: Any) -> Usage:
        return self._usage

    def _op_is_child(self, reply: Any) -> bool:
        return self._parent_id is not None

    def _op_get_policy(self, reply: Any) -> ConfirmationPolicy:
        return self._policy

    def _op_get_llm_config(self, reply: Any) -> LlmConfig | None:
        config = self._llm_config or self._inherited_llm_config
        if config is None:
            if self._llm_client is not None:
                return LlmConfig(self._llm_client.provider, self._llm_client.model)
            return self._services.default_llm_config
        return config.without_key()

    def _op_inheritance(self, reply: Any) -> tuple[ConfirmationPolicy, LlmClient | None, LlmConfig | None]:
        """What a child session takes from this parent."""
        config = self._llm_config or self._inherited_llm_config
        return self._policy, self._llm_client, config.without_key() if config else None

    def _op_pending_confirmations(self, reply: Any) -> list[str]:
        return list(self._pending)

    def _op_configure(
        self, reply: Any, thinking: bool | None, budget: int | None, model_config: LlmConfig | None
    ) -> object:
        if thinking is not None and not isinstance(thinking, bool):
            raise InvalidConfig("configure(thinking=...) must be a bool")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InvalidConfig("configure(budget=...) must be a token count >= 0")
        if model_config is not None and not isinstance(model_config, LlmConfig):
            raise InvalidConfig("configure(model_config=...) must be an LlmConfig")
        if thinking is not None:
            self._thinking = thinking
        if budget is not None:
            self._budget = budget
        if model_config is not None:
            client = self._services.llm_clients.get(model_config)
            self._llm_config = model_config
            self._llm_client = client
        self._answer(reply, None, "configure")
        return _DEFERRED

    def _op_set_policy(self, reply: Any, policy: ConfirmationPolicy) -> object:
        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("set_confirmation_policy() takes a ConfirmationPolicy")
        self._policy = policy
        self._config = replace(self._config, confirmation_policy=policy)
        self._answer(reply, policy, "set_confirmation_policy")
        return _DEFERRED

    def _op_pause(self, reply: Any) -> object:
        if self._state == "paused":
            return False
        self._state = "paused"
        # Jobs that were accepted but have not started would otherwise run on a
        # paused session; they fail as a new generate would.
        while self._jobs:
            job = self._jobs.popleft()
            self._metrics.turn_queue_depth.dec()
            self._reject(job, SessionPaused(self.session_id))
        self._emit(SessionPaused(self.session_id))
        self._answer(reply, True, "pause")
        return _DEFERRED

    def _op_resume(self, reply: Any) -> object:
        if self._state == "active":
            return False
        self._state = "active"
        self._emit(SessionResumed(self.session_id))
        self._answer(reply, True, "resume")
        return _DEFERRED

    def _op_subscribe(self, reply: Any, sink: EventSink) -> None:
        self._subscribers.append(sink)

    def _op_unsubscribe(self, reply: Any, sink: EventSink) -> None:
        if sink in self._subscribers:
            self._subscribers.remove(sink)
        sink.close()

    def _op_confirm(self, reply: Any, tool_id: str, approved: bool, reason: str | None) -> bool:
        pending = self._pending.pop(tool_id, None)
        if pending is None:
            raise ConfirmationNotFound(self.session_id, tool_id)
        outcome: Literal["approved", "rejected"] = "approved" if approved else "rejected"
        self._settle(tool_id, pending, Decision(bool(approved), outcome, reason))
        return True

    def _settle(self, tool_id: str, pending: _Pending, decision: Decision) -> None:
        pending.resolve(decision)
        self._metrics.confirmations_pending.dec()
        self._metrics.child(self._metrics.confirmations, decision.outcome).inc()
        sink = self._running.job.sink if self._running else None
        self._emit(
            ConfirmationResolved(
                self.session_id, tool_id, decision.approved, decision.outcome, decision.reason
            ),
            sink,
        )

    def _op_cancel(self, reply: Any) -> bool:
        did_something = False
        for tool_id, pending in list(self._pending.items()):
            del self._pending[tool_id]
            self._settle(tool_id, pending, Decision(False, "cancelled", "cancelled by cancel_operation()"))
            did_something = True
        while self._jobs:
            job = self._jobs.popleft()
            self._metrics.turn_queue_depth.dec()
            self._reject(job, TurnCancelled(self.session_id, "cancelled before it started"))
            did_something = True
        running = self._running
        if running is not None and not running.cancelled and running.handle is not None:
            running.cancelled = True
            running.handle.cancel()
            did_something = True
        return did_something

    # ------------------------------------------------------------------ jobs

    def _op_generate(
        self,
        reply: Any,
        prompt: str,
        sink: EventSink | None,
        accepted: concurrent.futures.Future[bool] | None,
    ) -> object:
        if not isinstance(prompt, str):
            raise InvalidConfig("the prompt must be a string")
        if self._state == "paused":
            raise SessionPaused(self.session_id)
        if self._llm() is None:
            raise LlmNotConfigured(self.session_id)
        self._enqueue(_Job("turn", reply, prompt, sink))
        complete(accepted, True)
        return _DEFERRED

    def _op_compact(self, reply: Any) -> object:
        self._enqueue(_Job("compact", reply))
        return _DEFERRED

    def _op_maybe_auto_compact(self, reply: Any) -> object:
        if not self._should_auto_compact():
            return False
        self._enqueue(_Job("auto_compact", reply))
        return _DEFERRED

    def _op_clear(self, reply: Any) -> object:
        self._enqueue(_Job("clear", reply))
        return _DEFERRED

    def _enqueue(self, job: _Job) -> None:
        self._jobs.append(job)
        self._metrics.turn_queue_depth.inc()
        self._start_next()

    def _reject(self, job: _Job, error: BaseException) -> None:
        if job.sink is not None and isinstance(error, AgentEvent):
            job.sink.offer(error)
            job.sink.close()
        elif job.sink is not None:
            job.sink.close()
        fail(job.reply, error)

    def _should_auto_compact(self) -> bool:
        return (
            self._config.auto_compact and self._context_usage().percent >= self._config.auto_compact_threshold
        )

    def _start_next(self) -> None:
        while self._running is None and self._jobs and not self._gone:
            job = self._jobs.popleft()
            self._metrics.turn_queue_depth.dec()
            if job.kind == "clear":
                self._messages = ()
                self._history_epoch += 1
                self._context_used = 0
                self._answer(job.reply, None, "clear")
                continue
            if job.kind == "turn" and self._state == "paused":
                self._reject(job, SessionPaused(self.session_id))
                continue
            self._turn_seq += 1
            turn_id = self._turn_seq
            running = _Running(job, turn_id, None, time.perf_counter(), self._messages)
            self._running = running
            if job.kind == "turn":
                self._metrics.turns_in_flight.inc()
            ref = self.actor_ref

            def on_done(result: object, turn_id: int = turn_id, ref: pykka.ActorRef[Any] = ref) -> None:
                try:
                    ref.tell(_JobFinished(turn_id, result))
                except pykka.ActorDeadError:
                    pass  # the session was destroyed meanwhile

            loop = self._services.turn_loop
            if job.kind == "turn":
                llm = self._llm()
                if llm is None:  # configure() may have changed since the job was queued
                    self._finish_running()
                    self._reject(job, LlmNotConfigured(self.session_id))
                    continue
                spec = self._turn_spec(job, llm)
                self._emit(TurnStart(self.session_id, job.prompt, turn_id), job.sink)
                hooks = SessionTurnHooks(ref, turn_id, loop.loop)
                running.handle = loop.submit(run_turn(spec, hooks), on_done)
            else:
                target = int(self._config.auto_compact_threshold * self._context_usage().max_tokens)
                llm = self._llm()
                hook = self._llm_metrics_hook(llm) if llm is not None else None
                compacting = run_compaction(
                    self.session_id, self._messages, self._config.system_prompt, llm, target, hook
                )
                running.handle = loop.submit(compacting, on_done)

    def _llm_metrics_hook(self, llm: LlmClient) -> Callable[[str, str, float, Usage | None], None] | None:
        """What records an LLM call's metrics, unless the client records its own."""
        if getattr(llm, "records_metrics", False):
            return None
        metrics = self._metrics
        provider = llm.provider

        def on_llm_call(outcome: str, model: str, seconds: float, usage: Usage | None) -> None:
            metrics.child(metrics.llm_request_duration, provider, model, outcome).observe(seconds)
            if usage is not None:
                metrics.child(metrics.llm_tokens, provider, model, "prompt").inc(usage.prompt_tokens)
                metrics.child(metrics.llm_tokens, provider, model, "completion").inc(usage.completion_tokens)

        return on_llm_call

    def _turn_spec(self, job: _Job, llm: LlmClient) -> TurnSpec:
        metrics = self._metrics

        def on_tool_call(tool: str, outcome: str) -> None:
            metrics.child(metrics.tool_calls, tool, outcome).inc()

        workspace = Path(self._config.workspace) if self._config.workspace else self._services.workspace
        return TurnSpec(
            session_id=self.session_id,
            prompt=job.prompt,
            history=self._messages,
            system=self._config.system_prompt,
            llm=llm,
            tools=self._services.tools,
            workspace=workspace,
            confirmation_policy=self._policy,
            permission_policy=self._config.permission_policy,
            max_tool_rounds=self._config.max_tool_rounds,
            thinking=self._thinking,
            budget=self._budget,
            stream=job.sink is not None or bool(self._subscribers),
            on_llm_call=self._llm_metrics_hook(llm),
            on_tool_call=on_tool_call,
        )

    def _finish_running(self) -> _Running | None:
        running, self._running = self._running, None
        if running is not None and running.job.kind == "turn":
            self._metrics.turns_in_flight.dec()
        return running

    def _count_turn(self, running: _Running, outcome: str) -> None:
        if running.job.kind != "turn":
            return
        metrics = self._metrics
        metrics.child(metrics.turns, outcome).inc()
        metrics.child(metrics.turn_duration, outcome).observe(time.perf_counter() - running.started)

    def _abandon(self, running: _Running, error: BaseException, outcome: str) -> None:
        """End the running job without its result (destroy, crash, stop): count it and tell its caller."""
        if running.handle is not None:
            running.handle.cancel()
        self._count_turn(running, outcome)
        self._reject(running.job, error)

    def on_TurnEvents(self, message: TurnEvents) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id:
            return  # late events of a turn that already ended
        sink = running.job.sink
        for event in message.events:
            self._emit(event, sink)

    def on_ConfirmationAsked(self, message: ConfirmationAsked) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id or running.cancelled:
            message.resolve(Decision(False, "cancelled", "the turn is no longer running"))
            return
        self._pending[message.call.id] = _Pending(message.turn_id, message.resolve)
        self._metrics.confirmations_pending.inc()
        self._emit(
            ConfirmationRequired(
                self.session_id, message.call.id, message.call.name, message.arguments, message.timeout_s
            ),
            running.job.sink,
        )

    def on_ConfirmationTimedOut(self, message: ConfirmationTimedOut) -> None:
        pending = self._pending.pop(message.tool_id, None)
        if pending is None or pending.turn_id != message.turn_id:
            if pending is not None:
                self._pending[message.tool_id] = pending
            return  # answered by confirm_tool or cancel first
        approve = self._policy.on_timeout == "approve"
        self._settle(message.tool_id, pending, Decision(approve, "timed_out", "no answer in time"))

    def on__JobFinished(self, message: _JobFinished) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id:
            return
        self._finish_running()
        for tool_id, pending in list(self._pending.items()):
            if pending.turn_id == message.turn_id:  # cannot happen unless the turn crashed mid-wait
                del self._pending[tool_id]
                self._settle(tool_id, pending, Decision(False, "cancelled", "the turn ended"))
        job, outcome = running.job, message.outcome
        if job.kind == "turn":
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    outcome = TurnOutcome(new_messages=[Message.user(job.prompt)], status="cancelled")
                else:
                    outcome = TurnOutcome(
                        new_messages=[Message.user(job.prompt)],
                        status="error",
                        error=f"{type(outcome).__name__}: {outcome}",
                        error_kind="error",
                    )
            assert isinstance(outcome, TurnOutcome)
            self._finish_turn(running, outcome)
        else:
            self._finish_compaction(running, outcome)
        if self._shutting_down:
            self._stop_now()
            return
        self._start_next()

    def _finish_turn(self, running: _Running, outcome: TurnOutcome) -> None:
        job = running.job
        self._messages = self._messages + tuple(outcome.new_messages)
        self._usage = self._usage + outcome.usage
        if outcome.last_usage is not None:
            self._context_used = outcome.last_usage.total_tokens
        self._count_turn(
            running, {"ok": "completed", "error": "error", "cancelled": "cancelled"}[outcome.status]
        )
        auto = self._should_auto_compact() and outcome.status == "ok"
        if auto:
            # Compaction happens before the next queued turn sees the history.
            self._jobs.appendleft(_Job("auto_compact", None))
            self._metrics.turn_queue_depth.inc()
        event: AgentEvent
        if outcome.status == "ok":
            result = outcome.result(self._messages)
            event = TurnEnd(self.session_id, result)
            value: object = result
        elif outcome.status == "cancelled":
            event = TurnCancelled(self.session_id)
            value = event
        else:
            event = TurnError(self.session_id, outcome.error, outcome.error_kind)
            value = (
                LlmError(f"session {self.session_id!r}: {outcome.error}")
                if outcome.error_kind == "llm"
                else TurnFailed(f"session {self.session_id!r}: {outcome.error}")
            )
            if isinstance(value, TurnFailed | LlmError):
                value.event = event
        self._emit(event, job.sink)
        if job.sink is not None:
            job.sink.close()
        self._deliver(job.reply, value, self._persist("generate"), "generate")

    def _deliver(
        self,
        reply: concurrent.futures.Future[Any] | None,
        value: object,
        ack: concurrent.futures.Future[None] | None,
        operation: str,
    ) -> None:
        """Answer with ``value`` (an exception is raised to the caller) once ``ack`` committed.

        A sync session's call that could not commit fails with StoreError.
        """

        def now(done: concurrent.futures.Future[None] | None = None) -> None:
            error = done.exception() if done is not None else None
            if isinstance(value, BaseException):
                fail(reply, value)
            elif error is not None:
                fail(reply, StoreError(f"session {self.session_id!r}: {operation} did not commit: {error}"))
            else:
                complete(reply, value)

        if ack is None:
            now()
        else:
            ack.add_done_callback(now)

    def _finish_compaction(self, running: _Running, outcome: object) -> None:
        job = running.job
        trigger = "auto" if job.kind == "auto_compact" else "manual"
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, asyncio.CancelledError):
                log.warning("session %s: compaction failed: %s", self.session_id, outcome)
                fail(job.reply, LlmError(f"session {self.session_id!r}: compaction failed: {outcome}"))
            else:
                fail(job.reply, TurnCancelled(self.session_id, "compaction cancelled"))
            return
        assert isinstance(outcome, CompactionOutcome)
        before = len(self._messages)
        percent = self._context_usage().percent
        changed = outcome.messages != self._messages
        if changed:
            self._messages = outcome.messages
            self._history_epoch += 1
            self._context_used = compaction.estimate_tokens(self._messages, self._config.system_prompt)
            self._usage = self._usage + outcome.usage
            self._metrics.child(self._metrics.compactions, trigger).inc()
            self._emit(ContextCompacted(self.session_id, before, len(self._messages), percent, trigger))
        value: object = True if job.kind == "auto_compact" else None
        if changed:
            self._answer(job.reply, value, "compact")
        else:
            complete(job.reply, value)

    # ------------------------------------------------------------------ end of life

    def _op_destroy(self, reply: Any) -> object:
        """Stop for good: cancel work, delete from the store, then tell the supervisor."""
        self._op_cancel(None)
        self._gone = True
        running = self._finish_running()
        if running is not None:
            self._abandon(running, TurnCancelled(self.session_id, "the session was destroyed"), "cancelled")
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()
        persistence = self._services.persistence
        ack: concurrent.futures.Future[None] | None = None
        if persistence is not None and self._config.storage != "memory":
            ack = concurrent.futures.Future() if self._config.durability == "sync" else None
            persistence.tell(Delete(self.session_id, ack))
        self._supervisor.tell(SessionGone(self.session_id, "destroyed", self.actor_ref))
        self._deliver(reply, None, ack, "destroy")
        self.actor_ref.stop(block=False)
        return _DEFERRED

    def _op_passivate(self, reply: Any) -> bool:
        """Stop to save memory if idle; the store holds everything needed to come back."""
        if self._running is not None or self._jobs or self._pending or self._subscribers:
            return False
        if self._config.storage == "memory" or self._services.persistence is None:
            return False
        self._gone = True
        self._supervisor.tell(SessionGone(self.session_id, "passivated", self.actor_ref))
        self.actor_ref.stop(block=False)
        return True

    def _op_shutdown(self, reply: Any) -> object:
        """Hive.stop(): cancel running work, record what it left, then stop.

        The running turn is given the chance to hand back its partial history
        (the prompt is kept), so the last snapshot is final.
        """
        self._op_cancel(None)
        self._shutting_down = True
        self._shutdown_reply = reply
        if self._running is None:
            self._stop_now()
        return _DEFERRED

    def _stop_now(self) -> None:
        self._gone = True
        complete(self._shutdown_reply, None)
        self.actor_ref.stop(block=False)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: Any,
    ) -> None:
        """A handler raised (a bug): hand everything over to the supervisor, which restarts us.

        Calls still in the mailbox are not lost: they go back to the
        supervisor and reach the restarted actor in order. Work that was
        accepted by this incarnation fails with a clear error.
        """
        held: list[Call] = []
        while not self.actor_inbox.empty():
            message = self.actor_inbox.get().message
            if type(message) is Call:
                held.append(message)
        error = f"{type(exception_value).__name__}: {exception_value}"
        crashed = TurnFailed(
            f"session {self.session_id!r} crashed ({error}) and was restarted from its last snapshot; "
            "retry the call"
        )
        running = self._finish_running()
        if running is not None:
            self._abandon(running, crashed, "error")
        while self._jobs:
            self._metrics.turn_queue_depth.dec()
            self._reject(self._jobs.popleft(), crashed)
        for tool_id, pending in list(self._pending.items()):
            del self._pending[tool_id]
            self._settle(tool_id, pending, Decision(False, "cancelled", "the session crashed"))
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()
        self._gone = True
        in_store = self._config.storage != "memory" and self._services.persistence is not None
        snapshot = None if in_store else self._snapshot()
        self._supervisor.tell(SessionCrashed(self.session_id, self.actor_ref, snapshot, tuple(held), error))

    def on_stop(self) -> None:
        running = self._finish_running()
        if running is not None:
            self._abandon(running, TurnCancelled(self.session_id, "the Hive stopped"), "cancelled")
        for subscriber in self._subscribers:
            subscriber.close()
        while self._jobs:
            self._metrics.turn_queue_depth.dec()
            self._reject(self._jobs.popleft(), TurnCancelled(self.session_id, "the Hive stopped"))
