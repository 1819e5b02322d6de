"""The session actor's state, its published view, and how a change is recorded and answered.

Every part of :class:`~sessionhive.actors.session.SessionActor` derives from
:class:`SessionState`, which declares the whole state once. A handler
changes state, calls :meth:`SessionState._persist` (new version, snapshot to
the persistence actor, view marked stale) and answers with
:meth:`SessionState._answer`, which publishes the new view *before* the
caller can see the answer: a call that returned has published its effect.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from sessionhive.actors.directory import SessionEntry, SessionView
from sessionhive.model.errors import StoreError
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, ContextUsage, Message
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.runtime import HiveActor, complete, complete_threadsafe, fail

if TYPE_CHECKING:
    import pykka

    from sessionhive._channels import EventSink
    from sessionhive.actors.services import HiveServices
    from sessionhive.actors.session._jobs import Job, Running
    from sessionhive.agent.loop import Decision
    from sessionhive.llm import LlmClient
    from sessionhive.runtime import Reply

__all__ = ["Gone", "SessionState"]

log = logging.getLogger("sessionhive.session")

Gone = Literal["", "passivated", "destroyed", "stopped", "crashed"]


class SessionState(HiveActor):
    """One session's state; the parts of SessionActor add the handlers."""

    # Slots, not an instance dict: with more than 30 attributes CPython
    # gives every instance a dict of its own (about 1.6 KB), and a process
    # may hold a hundred thousand idle sessions.
    __slots__ = (
        "_budget",
        "_config",
        "_context_cache",
        "_context_used",
        "_created_at",
        "_entry",
        "_gone",
        "_history_epoch",
        "_inherited_llm_config",
        "_jobs",
        "_journal",
        "_llm_client",
        "_llm_config",
        "_llm_problem",
        "_messages",
        "_metrics",
        "_parent_id",
        "_pending",
        "_policy",
        "_running",
        "_running_turn",
        "_services",
        "_shutdown_reply",
        "_state",
        "_subscribers",
        "_supervisor",
        "_thinking",
        "_turn_seq",
        "_unheard",
        "_updated_at",
        "_usage",
        "_version",
        "_view_stale",
        "session_id",
    )

    def __init__(
        self,
        services: HiveServices,
        supervisor: pykka.ActorRef[Any],
        entry: SessionEntry,
        snapshot: SessionSnapshot,
        llm_client: LlmClient | None = None,
        inherited_llm_config: LlmConfig | None = None,
        created: Reply | None = None,
    ) -> None:
        super().__init__()
        self._services = services
        self._metrics = services.metrics
        self._supervisor = supervisor
        self._entry = entry
        self.session_id = snapshot.session_id
        self._parent_id = snapshot.parent_id
        self._config = snapshot.config
        self._policy = snapshot.confirmation_policy
        self._llm_config = snapshot.llm_config  # the session's own; may carry a key in memory
        self._inherited_llm_config = inherited_llm_config
        self._llm_client = llm_client
        self._llm_problem: str | None = None  # why the configured model cannot be built
        if self._llm_client is None and self._llm_config is not None:
            self._llm_client = self._build_client(self._llm_config)
        self._thinking = snapshot.thinking
        self._budget = snapshot.budget
        self._messages = snapshot.messages
        # The turn journal: the running turn's stored steps, kept apart from
        # the history (which readers see) until the turn ends.
        self._running_turn = snapshot.running_turn
        self._journal: tuple[Message, ...] = ()
        self._history_epoch = snapshot.history_epoch
        self._usage = snapshot.usage
        self._context_used = snapshot.context_usage.used_tokens
        self._context_cache = snapshot.context_usage  # rebuilt only when a count changes
        self._state: Literal["active", "paused"] = snapshot.state
        self._version = snapshot.version
        self._created_at = snapshot.created_at
        self._updated_at = snapshot.updated_at
        self._jobs: list[Job] = []  # a list, not a deque: an empty deque costs 600 bytes per session
        self._running: Running | None = None
        self._pending: dict[str, tuple[int, Any]] = {}  # tool id -> (turn id, resolve callback)
        self._subscribers: list[EventSink] = []
        # Events emitted before anyone could listen (a turn closed on
        # activation): the first subscriber gets them.
        self._unheard: list[AgentEvent] | None = None
        self._turn_seq = 0
        self._gone: Gone = ""
        self._shutdown_reply: Reply | None = None
        self._view_stale = True
        # Before the first view is published: no reader ever sees a turn
        # that the last process left half-written.
        self._recover_interrupted_turn()
        if created is not None:
            # A new session: its first snapshot leaves now, and the creator
            # gets its answer without waiting for the actor's first run.
            self._commit_and_answer(created, self.session_id, "create")
        else:
            self._publish()

    # ------------------------------------------------------------------ the view

    def _publish(self) -> None:
        """Replace the published view with the current state (the only writer of ``entry.view``)."""
        self._view_stale = False
        self._entry.view = SessionView(
            self._version,
            self._state,
            self._messages,
            self._usage,
            self._context_usage(),
            tuple(self._pending),
            self._policy,
            self._effective_llm_config(),
            self._parent_id,
        )

    def _touch(self) -> None:
        """Mark the view stale: published before the next answer or at the end of this message."""
        self._view_stale = True

    def _answer(self, reply: Reply | None, value: Any) -> None:
        if self._view_stale:
            self._publish()
        complete(reply, value)

    def _refuse(self, reply: Reply | None, error: BaseException) -> None:
        if self._view_stale:
            self._publish()
        fail(reply, error)

    # ------------------------------------------------------------------ derived state

    def _context_usage(self) -> ContextUsage:
        cached = self._context_cache
        max_tokens = self._config.max_context_length or DEFAULT_MAX_CONTEXT
        if cached.used_tokens != self._context_used or cached.max_tokens != max_tokens:
            cached = self._context_cache = ContextUsage(self._context_used, max_tokens)
        return cached

    def _effective_llm_config(self) -> LlmConfig | None:
        config = self._llm_config or self._inherited_llm_config
        if config is not None:
            return config.without_key()
        if self._llm_client is not None:
            return LlmConfig(self._llm_client.provider, self._llm_client.model)
        return self._services.default_llm_config

    def _build_client(self, config: LlmConfig) -> LlmClient | None:
        try:
            return self._services.llm_clients.get(config)
        except Exception as exc:  # noqa: BLE001 - a missing SDK or key must not kill the session
            # Never a silent switch to the Hive's default model: turns fail
            # with LlmNotConfigured naming the model and the problem.
            self._llm_problem = f"{config.provider} model {config.model!r}: {exc}"
            log.warning("session %s: cannot build its model (%s)", self.session_id, self._llm_problem)
            return None

    def _llm(self) -> LlmClient | None:
        if self._llm_client is not None:
            return self._llm_client
        if self._llm_config is not None:
            return None  # configured but unbuildable: see _llm_problem
        return self._services.default_llm

    # ------------------------------------------------------------------ persistence

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
            messages=self._messages + self._journal if self._journal else self._messages,
            history_epoch=self._history_epoch,
            created_at=self._created_at,
            updated_at=self._updated_at,
            running_turn=self._running_turn,
        )

    def _stored(self) -> bool:
        return self._services.stores_sessions and self._config.storage != "memory"

    def _persist(self) -> concurrent.futures.Future[None] | None:
        """Record a change: bump the version, send the snapshot, mark the view stale.

        Returns the commit acknowledgement for durable sessions, and for
        batched ones while the writer is behind (backpressure).
        """
        self._version += 1
        self._updated_at = time.time()
        self._view_stale = True
        if not self._stored():
            return None
        link = self._services.persistence
        ack: concurrent.futures.Future[None] | None = None
        if link.waits_for_commit(self._config.durability):
            ack = concurrent.futures.Future()
        link.save(self.session_id, self._snapshot, ack)
        return ack

    def _commit_and_answer(self, reply: Reply | None, value: Any, operation: str) -> None:
        """Persist the change, then answer: after the commit for durable sessions, else at once."""
        self._deliver(reply, value, self._persist(), operation)

    def _deliver(
        self,
        reply: Reply | None,
        value: object,
        ack: concurrent.futures.Future[None] | None,
        operation: str,
    ) -> None:
        """Answer with ``value`` (an exception is raised to the caller) once ``ack`` committed.

        A durable session's call that could not commit fails with StoreError.
        """
        if self._view_stale:
            self._publish()
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
            elif error is not None:
                complete_threadsafe(
                    reply, None, StoreError(f"session {session_id!r}: {operation} did not commit: {error}")
                )
            else:
                complete_threadsafe(reply, value)

        ack.add_done_callback(committed)

    # ------------------------------------------------------------------ events

    def _emit(self, event: AgentEvent, sink: EventSink | None = None) -> None:
        if sink is not None:
            sink.offer(event)
        for subscriber in self._subscribers:
            subscriber.offer(event)

    def _listened(self, sink: EventSink | None) -> bool:
        return sink is not None or bool(self._subscribers)

    # Implemented by the parts; declared here so each part type-checks alone.
    def _settle(self, tool_id: str, resolve: Any, decision: Decision) -> None:
        raise NotImplementedError

    def _start_next(self) -> None:
        raise NotImplementedError

    def _recover_interrupted_turn(self) -> None:
        raise NotImplementedError
