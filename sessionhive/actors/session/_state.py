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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from sessionhive.actors.directory import SessionEntry, SessionView
from sessionhive.model.errors import LlmNotConfigured, StoreError
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, ContextUsage, Message
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.runtime import complete, complete_threadsafe, fail

if TYPE_CHECKING:
    from sessionhive._channels import EventSink
    from sessionhive.actors.services import HiveServices
    from sessionhive.llm import LlmClient
    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.runtime import Reply

__all__ = ["SessionState"]

log = logging.getLogger("sessionhive.session")


class SessionState:
    """One session's record, its published view and its subscribers."""

    # Slots, not an instance dict: a process may hold a hundred thousand
    # idle sessions.
    __slots__ = (
        "_context_cache",
        "_entry",
        "_pending",
        "budget",
        "config",
        "context_used",
        "created_at",
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
        "running_turn",
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
    ) -> None:
        """Answer with ``value`` (an exception is raised to the caller) once ``ack`` committed.

        A durable session's call that could not commit fails with StoreError.
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
            elif error is not None:
                complete_threadsafe(
                    reply, None, StoreError(f"session {session_id!r}: {operation} did not commit: {error}")
                )
            else:
                complete_threadsafe(reply, value)

        ack.add_done_callback(committed)

    # ------------------------------------------------------------------ events

    def emit(self, event: AgentEvent, sink: EventSink | None = None) -> None:
        if sink is not None:
            sink.offer(event)
        for subscriber in self.subscribers:
            subscriber.offer(event)

    def listened(self, sink: EventSink | None) -> bool:
        return sink is not None or bool(self.subscribers)

    def close_subscribers(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()
        self.subscribers.clear()
