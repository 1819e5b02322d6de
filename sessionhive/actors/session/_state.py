"""The session's record: what a snapshot stores, its published view, its listeners, how a change is recorded.

:class:`SessionState` is the state part of
:class:`~sessionhive.actors.session.SessionActor`: every attribute a
snapshot stores (history, config, policy, model, usage, version...), the
directory entry the view is published to, and the event subscribers. The
other parts (jobs, confirmations, lifecycle) are handed this object and
change the record through it. A handler changes state, calls
:meth:`SessionState.persist` (new version, snapshot to the persistence
actor, view marked stale) and answers with :meth:`SessionState.answer`,
which publishes the new view *before* the caller can see the answer: a call
that returned has published its effect.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from sessionhive.actors.directory import SessionEntry, SessionView
from sessionhive.model.errors import LlmNotConfigured, OutcomeUnknown, StoreError
from sessionhive.model.events import (
    EVENT_RING_SIZE,
    TERMINAL_EVENTS,
    AgentEvent,
    EventsDropped,
    TurnCancelled,
    TurnEnd,
    TurnError,
)
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, AgentResult, ContextUsage, Message
from sessionhive.model.runs import Run, RunNotFound, RunStatus
from sessionhive.persistence.messages import WriteStillPending
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.runtime import complete, complete_threadsafe, fail

if TYPE_CHECKING:
    from sessionhive._channels import EventSink
    from sessionhive.actors.services import HiveServices
    from sessionhive.llm import LlmClient
    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.runtime import Reply

__all__ = ["EVENT_IDS_SKIPPED_AFTER_A_STOP", "SessionState"]

log = logging.getLogger("sessionhive.session")

#: How far event ids jump when a session comes back from a process that
#: stopped mid-turn: the events emitted after its last stored snapshot (a
#: model answer streamed as deltas, at most one step of the turn) were seen
#: by readers but their ids were not stored, and a new event must never
#: reuse one. Far more events than one step emits; far from overflowing a
#: JavaScript number (2**53) in any session's life.
EVENT_IDS_SKIPPED_AFTER_A_STOP = 1 << 20

# What a session without runs holds: one shared empty mapping, not two dicts per idle session.
_NONE: Mapping[str, Any] = MappingProxyType({})


class SessionState:
    """One session's record, its published view and its subscribers."""

    # Slots, not an instance dict: a process may hold a hundred thousand
    # idle sessions.
    __slots__ = (
        "_context_cache",
        "_entry",
        "_first_own_event",
        "_marked",
        "_pending",
        "_ring",
        "_stored_event_seq",
        "budget",
        "config",
        "context_used",
        "created_at",
        "current_run",
        "current_run_last_event",
        "event_seq",
        "history_epoch",
        "inherited_llm_config",
        "journal",
        "llm_client",
        "llm_config",
        "llm_problem",
        "messages",
        "metrics",
        "parent_id",
        "policy",
        "run_first_event",
        "running_turn",
        "runs",
        "services",
        "session_id",
        "state",
        "subscribers",
        "thinking",
        "unheard",
        "updated_at",
        "usage",
        "version",
        "view_stale",
    )

    def __init__(
        self,
        services: HiveServices,
        entry: SessionEntry,
        snapshot: SessionSnapshot,
        pending: Mapping[str, object],
        llm_client: LlmClient | None = None,
        inherited_llm_config: LlmConfig | None = None,
    ) -> None:
        self.services = services
        self.metrics: HiveMetrics = services.metrics
        self._entry = entry
        # The confirmations part's waiting calls (it owns them): read for the view only.
        self._pending = pending
        self.session_id = snapshot.session_id
        self.parent_id = snapshot.parent_id
        self.config = snapshot.config
        self.policy = snapshot.confirmation_policy
        self.llm_config = snapshot.llm_config  # the session's own; may carry a key in memory
        self.inherited_llm_config = inherited_llm_config
        self.llm_client = llm_client
        self.llm_problem: str | None = None  # why the configured model cannot be built
        if self.llm_client is None and self.llm_config is not None:
            self.llm_client = self.build_client(self.llm_config)
        self.thinking = snapshot.thinking
        self.budget = snapshot.budget
        self.messages = snapshot.messages
        # The turn journal: the running turn's stored steps, kept apart from
        # the history (which readers see) until the turn ends.
        self.running_turn = snapshot.running_turn
        self.journal: tuple[Message, ...] = ()
        self.history_epoch = snapshot.history_epoch
        self.usage = snapshot.usage
        self.context_used = snapshot.context_usage.used_tokens
        self._context_cache = snapshot.context_usage  # rebuilt only when a count changes
        self.state: Literal["active", "paused"] = snapshot.state
        self.version = snapshot.version
        self.created_at = snapshot.created_at
        self.updated_at = snapshot.updated_at
        self.subscribers: list[EventSink] = []
        # Events emitted before anyone could listen (a turn closed on
        # activation): the first subscriber gets them.
        self.unheard: list[AgentEvent] | None = None
        self.view_stale = True
        # Runs, oldest first: the unfinished ones and the last finished ones.
        self.runs: Mapping[str, Run] = {run.run_id: run for run in snapshot.runs} if snapshot.runs else _NONE
        self.current_run: str | None = None  # the run of the turn that runs now
        self.current_run_last_event = 0
        # The id of the first event each run created by this incarnation may emit (replay's gap check).
        self.run_first_event: Mapping[str, int] = _NONE
        self.event_seq = self._stored_event_seq = snapshot.event_seq
        if snapshot.running_turn is not None or any(not run.done for run in snapshot.runs):
            self.event_seq += EVENT_IDS_SKIPPED_AFTER_A_STOP
        self._first_own_event = self.event_seq + 1  # ids below it were given by earlier incarnations
        # The last EVENT_RING_SIZE events, for replay; created by the first event (idle sessions are many).
        self._ring: deque[AgentEvent] | None = None
        # The running turn's messages and their marked copies, as last shown (see in_progress).
        self._marked: tuple[tuple[Message, ...], tuple[Message, ...]] = ((), ())

    # ------------------------------------------------------------------ the view

    def publish(self) -> None:
        """Replace the published view with the current state (the only writer of ``entry.view``)."""
        self.view_stale = False
        self._entry.view = SessionView(
            self.version,
            self.state,
            self.messages,
            self.usage,
            self.context_usage(),
            tuple(self._pending),
            self.policy,
            self.effective_llm_config(),
            self.parent_id,
            self.in_progress(),
        )

    def withdraw_view(self) -> None:
        """No published view any more: a read goes through the supervisor (SessionNotFound, or a restart)."""
        self.view_stale = False
        self._entry.view = None

    def touch(self) -> None:
        """Mark the view stale: published before the next answer or at the end of this message."""
        self.view_stale = True

    def answer(self, reply: Reply | None, value: Any) -> None:
        if self.view_stale:
            self.publish()
        complete(reply, value)

    def refuse(self, reply: Reply | None, error: BaseException) -> None:
        if self.view_stale:
            self.publish()
        fail(reply, error)

    def in_progress(self) -> tuple[Message, ...]:
        """The running turn's messages so far (its prompt first), marked in progress for ``history()``."""
        running = self.running_turn
        if running is None:
            return ()
        journal = self.journal or (Message.user(running.prompt),)
        shown, marked = self._marked
        if journal is shown:
            return marked
        # Each journal entry extends the last one: only the new messages need a marked copy.
        kept = len(shown) if shown and journal[: len(shown)] == shown else 0
        marked = marked[:kept] + tuple(_marked(message) for message in journal[kept:])
        self._marked = (journal, marked)
        return marked

    # ------------------------------------------------------------------ derived state

    def context_usage(self) -> ContextUsage:
        cached = self._context_cache
        max_tokens = self.config.max_context_length or DEFAULT_MAX_CONTEXT
        if cached.used_tokens != self.context_used or cached.max_tokens != max_tokens:
            cached = self._context_cache = ContextUsage(self.context_used, max_tokens)
        return cached

    def effective_llm_config(self) -> LlmConfig | None:
        config = self.llm_config or self.inherited_llm_config
        if config is not None:
            return config.without_key()
        if self.llm_client is not None:
            return LlmConfig(self.llm_client.provider, self.llm_client.model)
        return self.services.default_llm_config

    def build_client(self, config: LlmConfig) -> LlmClient | None:
        try:
            return self.services.llm_clients.get(config)
        except Exception as exc:  # noqa: BLE001 - a missing SDK or key must not kill the session
            # Never a silent switch to the Hive's default model: turns fail
            # with LlmNotConfigured naming the model and the problem.
            self.llm_problem = f"{config.provider} model {config.model!r}: {exc}"
            log.warning("session %s: cannot build its model (%s)", self.session_id, self.llm_problem)
            return None

    def llm(self) -> LlmClient | None:
        if self.llm_client is not None:
            return self.llm_client
        if self.llm_config is not None:
            return None  # configured but unbuildable: see llm_problem
        return self.services.default_llm

    def no_llm(self) -> LlmNotConfigured:
        return LlmNotConfigured(self.session_id, self.llm_problem)

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(
            session_id=self.session_id,
            version=self.version,
            parent_id=self.parent_id,
            state=self.state,
            config=self.config,
            confirmation_policy=self.policy,
            llm_config=self.llm_config,
            thinking=self.thinking,
            budget=self.budget,
            usage=self.usage,
            context_usage=self.context_usage(),
            messages=self.messages + self.journal if self.journal else self.messages,
            history_epoch=self.history_epoch,
            created_at=self.created_at,
            updated_at=self.updated_at,
            running_turn=self.running_turn,
            # As recorded at their last change: a running run's last_event_id is not
            # stored per step (it would rewrite its row with every step of the turn).
            runs=tuple(self.runs.values()),
            event_seq=self.event_seq,
        )

    def stored(self) -> bool:
        return self.services.stores_sessions and self.config.storage != "memory"

    def commit_ack(self) -> concurrent.futures.Future[None] | None:
        """A future for the commit of the next write, if this session's writes are waited for now.

        Durable sessions wait for every write; batched ones only while the
        writer is behind (backpressure).
        """
        if self.services.persistence.waits_for_commit(self.config.durability):
            return concurrent.futures.Future()
        return None

    def persist(self) -> concurrent.futures.Future[None] | None:
        """Record a change: bump the version, send the snapshot, mark the view stale.

        Returns the commit acknowledgement for durable sessions, and for
        batched ones while the writer is behind (backpressure).
        """
        self.version += 1
        self.updated_at = time.time()
        self.view_stale = True
        if not self.stored():
            return None
        ack = self.commit_ack()
        self.services.persistence.save(self.session_id, self.snapshot, ack)
        return ack

    def commit_and_answer(self, reply: Reply | None, value: Any, operation: str) -> None:
        """Persist the change, then answer: after the commit for durable sessions, else at once."""
        self.deliver(reply, value, self.persist(), operation)

    def deliver(
        self,
        reply: Reply | None,
        value: object,
        ack: concurrent.futures.Future[None] | None,
        operation: str,
        run_id: str | None = None,
    ) -> None:
        """Answer with ``value`` (an exception is raised to the caller) once ``ack`` committed.

        A durable session's call that could not commit fails with StoreError; one whose
        commit failed and is retried (its change stays in the session and pending, so it may
        yet be stored) with OutcomeUnknown.
        """
        if self.view_stale:
            self.publish()
        if ack is None:
            if isinstance(value, BaseException):
                fail(reply, value)
            else:
                complete(reply, value)
            return
        session_id = self.session_id

        def committed(done: concurrent.futures.Future[None]) -> None:
            # Runs on the persistence actor's thread.
            error = done.exception()
            if isinstance(value, BaseException):
                complete_threadsafe(reply, None, value)
            elif isinstance(error, WriteStillPending):
                detail = f"its commit failed and is retried: {error}"
                complete_threadsafe(reply, None, OutcomeUnknown(session_id, operation, run_id or "-", detail))
            elif error is not None:
                complete_threadsafe(
                    reply, None, StoreError(f"session {session_id!r}: {operation} did not commit: {error}")
                )
            else:
                complete_threadsafe(reply, value)

        ack.add_done_callback(committed)

    # ------------------------------------------------------------------ runs

    def run_view(self, run: Run) -> Run:
        """``run`` as callers see it: the running one with the id of its last event so far."""
        if run.run_id == self.current_run and run.last_event_id != self.current_run_last_event:
            return replace(run, last_event_id=self.current_run_last_event)
        return run

    def get_run(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return self.run_view(run)

    def run_by_key(self, key: str) -> Run | None:
        # A scan: a session keeps at most max_finished_runs runs, and most carry no key.
        return next((run for run in self.runs.values() if run.idempotency_key == key), None)

    def add_run(self, run: Run) -> None:
        if self.runs is _NONE:
            self.runs = {}
        self._own_runs()[run.run_id] = run
        first = self.run_first_event if self.run_first_event is not _NONE else {}
        assert isinstance(first, dict)
        first[run.run_id] = self.event_seq + 1
        self.run_first_event = first
        self.view_stale = True

    def _own_runs(self) -> dict[str, Run]:
        """The runs, to change (a session with a run has a dict of its own)."""
        runs = self.runs
        assert isinstance(runs, dict)
        return runs

    def update_run(self, run_id: str, status: RunStatus, **changes: Any) -> Run | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        if run_id == self.current_run:
            changes.setdefault("last_event_id", self.current_run_last_event)
        run = self._own_runs()[run_id] = run.with_status(status, **changes)
        if run.done:
            if run_id == self.current_run:
                self.current_run = None
            self._forget_old_runs()
        self.view_stale = True
        return run

    def refresh_run_waiting(self) -> None:
        """The running run waits while one of its tool calls waits for a human decision."""
        run_id = self.current_run
        run = self.runs.get(run_id) if run_id is not None else None
        if run is None or run.done:
            return
        status: RunStatus = "waiting" if self._pending else "running"
        if run.status != status:
            self._own_runs()[run.run_id] = run.with_status(status)

    def _forget_old_runs(self) -> None:
        finished = [run_id for run_id, run in self.runs.items() if run.done]
        runs, first = self._own_runs(), self.run_first_event
        for run_id in finished[: max(0, len(finished) - self.services.max_finished_runs)]:
            del runs[run_id]
            if isinstance(first, dict):
                first.pop(run_id, None)

    # ------------------------------------------------------------------ events

    def stamp(self, event: AgentEvent, run_id: str | None) -> None:
        """Give ``event`` the session's next id (once) and its run, and keep it for replay."""
        if event.event_id:
            return
        self.event_seq += 1
        event.event_id = self.event_seq
        event.run_id = run_id
        if run_id is not None and run_id == self.current_run:
            self.current_run_last_event = self.event_seq
        ring = self._ring
        if ring is None:
            ring = self._ring = deque(maxlen=EVENT_RING_SIZE)
        ring.append(event)

    def emit(self, event: AgentEvent, sink: EventSink | None = None, *, of_run: bool = True) -> None:
        """Send ``event`` to ``sink`` and every subscriber; ``of_run=False``: a session-level event."""
        self.stamp(event, self.current_run if of_run else None)
        if sink is not None:
            sink.offer(event)
        for subscriber in self.subscribers:
            subscriber.offer(event)

    def replay(self, sink: EventSink, after: int, run_id: str | None = None) -> None:
        """Offer ``sink`` the kept events after ``after`` (of run ``run_id`` only, if given).

        Starts with an :class:`EventsDropped` when events after ``after`` are
        no longer kept. A finished run's terminal event is rebuilt from its
        record when it is not kept.
        """
        ring = self._ring or ()
        oldest_kept = ring[0].event_id if ring else self.event_seq + 1
        if run_id is None:
            last = self.event_seq
            first = 1
        else:
            run = self.get_run(run_id)
            last = run.last_event_id
            # A run of an earlier incarnation may have emitted from id 1 on, as far as this one knows.
            first = self.run_first_event.get(run_id, 1)
        lost = self._lost(max(after + 1, first), min(oldest_kept, last + 1))
        if lost:
            sink.offer(EventsDropped(self.session_id, lost, run_id=run_id))
        ended = False
        for event in ring:
            if event.event_id > after and (run_id is None or event.run_id == run_id):
                sink.offer(event)
                ended = ended or isinstance(event, TERMINAL_EVENTS)
        if run_id is not None and not ended:
            run = self.get_run(run_id)
            if run.done and run.last_event_id > after:
                sink.offer(self.terminal_event(run))

    def _lost(self, low: int, high: int) -> int:
        """How many events with ids in ``[low, high)`` are no longer kept (skipped ids are none)."""
        earlier = max(0, min(high, self._stored_event_seq + 1) - low)
        own = max(0, high - max(low, self._first_own_event))
        return earlier + own

    def terminal_event(self, run: Run) -> AgentEvent:
        """The event a finished run ended with, rebuilt from its record (its id is the run's last)."""
        event: AgentEvent
        if run.status == "completed":
            result = AgentResult(
                run.text or "", [], run.usage, stop_reason=run.stop_reason or "stop", output=run.output
            )
            event = TurnEnd(self.session_id, result)
        elif run.status == "cancelled":
            event = TurnCancelled(self.session_id, run.error or "cancelled")
        else:
            kind = "interrupted" if run.status == "interrupted" else "error"
            event = TurnError(self.session_id, run.error or run.status, kind)
        event.event_id, event.run_id = run.last_event_id, run.run_id
        return event

    def listened(self, sink: EventSink | None) -> bool:
        return sink is not None or bool(self.subscribers)

    def close_subscribers(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()
        self.subscribers.clear()


def _marked(message: Message) -> Message:
    """``message`` marked in progress (the constructor: ``dataclasses.replace`` costs three times as much)."""
    return Message(
        message.role,
        message.text,
        message.tool_calls,
        message.tool_call_id,
        message.is_error,
        message.model,
        in_progress=True,
    )
