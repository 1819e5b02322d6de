"""What every actor of one Hive shares: immutable services, and the line to the persistence actor.

Nothing here holds session state. :class:`PersistenceLink` is the one way
actors and the facade talk to the persistence actor, so that what they send
reaches it in the order it was sent; on the asyncio backend it also packs
every message of one event-loop pass into a single ``tell`` (one wake-up of
the persistence thread per pass instead of one per snapshot).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from sessionhive.agent.spending import BudgetBook
from sessionhive.model.runs import DEFAULT_MAX_FINISHED_RUNS
from sessionhive.persistence.messages import Backlog, Batch, Delete, Save

if TYPE_CHECKING:
    from sessionhive.actors.directory import Directory
    from sessionhive.actors.turn import TurnLoop
    from sessionhive.agent.loop import ToolRunner
    from sessionhive.llm import ClientCache, LlmClient
    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.model.llm_config import LlmConfig
    from sessionhive.model.runs import Run, Webhook
    from sessionhive.persistence.snapshot import SessionSnapshot
    from sessionhive.runtime import AsyncioBackend

__all__ = ["SAVE_DELAY", "HiveServices", "PersistenceLink", "RunWebhooks"]

#: Longest a snapshot waits on the actors' loop before it leaves for the
#: persistence actor with the others of its batch (see PersistenceLink).
SAVE_DELAY = 0.002


class _PendingSave:
    """A session's snapshot to send: built when the batch leaves, so only its newest state is built."""

    __slots__ = ("acks", "build", "issued", "saves")

    def __init__(self, build: Callable[[], SessionSnapshot]) -> None:
        self.build = build
        self.acks: list[concurrent.futures.Future[None]] = []
        self.issued = time.monotonic()  # the oldest change it carries: the batched deadline counts from it
        self.saves = 0

    def message(self) -> Save:
        acks = self.acks
        if not acks:
            return Save(self.build(), None, self.issued, self.saves)
        if len(acks) == 1:
            return Save(self.build(), acks[0], self.issued, self.saves)
        combined: concurrent.futures.Future[None] = concurrent.futures.Future()

        def settle(done: concurrent.futures.Future[None]) -> None:
            error = done.exception()
            for ack in acks:
                if error is None:
                    ack.set_result(None)
                else:
                    ack.set_exception(error)

        combined.add_done_callback(settle)
        return Save(self.build(), combined, self.issued, self.saves)


class PersistenceLink:
    """Sends messages to the persistence actor in order; batched on the actors' loop when it has one.

    With ``backend`` (an :class:`~sessionhive.runtime.AsyncioBackend`) every
    call must happen on its loop. Snapshots then wait up to
    :data:`SAVE_DELAY` seconds and leave together in one ``tell``: the
    persistence actor writes in batches anyway (every ``flush_interval``),
    and waking its thread once per snapshot would cost a GIL hand-off each.
    A session saved several times in that window (each step of a turn is
    journaled) is sent once, built from its newest state when the batch
    leaves, with every waiting acknowledgement attached. Anything a caller
    waits on (loads, flushes, health checks) leaves at once, after whatever
    was sent before it. Without ``backend`` each message is told at once.

    Every save is counted in ``backlog`` (if given) until the persistence
    actor commits it; :meth:`waits_for_commit` tells a session whether a
    change must wait for its commit. ``durable_store=False`` (the memory
    store) has no commit worth waiting for.
    """

    def __init__(
        self,
        ref: pykka.ActorRef[Any] | None,
        backend: AsyncioBackend | None,
        backlog: Backlog | None = None,
        *,
        durable_store: bool = True,
    ) -> None:
        self.ref = ref
        self._backend = backend
        self._backlog = backlog
        self._durable_store = durable_store
        self._batch: list[Any] = []  # messages and _PendingSave entries, in order; the loop's alone
        self._saves: dict[str, _PendingSave] = {}  # the entry in _batch of each session saved since
        self._timer_armed = False
        self._urgent_armed = False

    def save(
        self,
        session_id: str,
        build: Callable[[], SessionSnapshot],
        ack: concurrent.futures.Future[None] | None = None,
    ) -> None:
        """Persist what ``build()`` returns; a session actor passes its own snapshot method."""
        ref = self.ref
        if ref is None:
            return
        if self._backlog is not None:
            self._backlog.told(1)
        if self._backend is None:
            ref.tell(Save(build(), ack, time.monotonic(), 1))
            return
        entry = self._saves.get(session_id)
        if entry is None:
            entry = self._saves[session_id] = _PendingSave(build)
            self._batch.append(entry)
        else:
            entry.build = build  # a new incarnation of the session may have taken over
        entry.saves += 1
        if ack is not None:
            entry.acks.append(ack)
            self._arm_urgent()
        else:
            self._arm()

    def waits_for_commit(self, durability: str) -> bool:
        """Whether a change of a session with this durability is answered only after its commit.

        Durable sessions wait when the store outlives the process; every
        session waits while the writer is behind (backpressure on batched).
        """
        if durability == "durable" and self._durable_store:
            return True
        backlog = self._backlog
        return backlog is not None and backlog.congested

    def send(self, message: Any) -> None:
        ref = self.ref
        if ref is None:
            return
        if self._backend is None:
            ref.tell(message)
            return
        self._batch.append(message)
        if isinstance(message, Delete):
            self._saves.pop(message.session_id, None)  # a save after it belongs to a new session
            self._arm()
        else:
            self._send_batch()  # someone waits on this one

    def _arm(self) -> None:
        if not self._timer_armed:
            self._timer_armed = True
            assert self._backend is not None
            self._backend.schedule_later(SAVE_DELAY, self._on_timer)

    def _arm_urgent(self) -> None:
        # Someone waits for this commit: leave at the end of this loop pass (with every
        # save made in it), not after SAVE_DELAY; the writer's group commit does the batching.
        if not self._urgent_armed:
            self._urgent_armed = True
            assert self._backend is not None
            self._backend.schedule_later(0.0, self._on_urgent)

    def _on_urgent(self) -> None:
        self._urgent_armed = False
        self._send_batch()

    def _on_timer(self) -> None:
        self._timer_armed = False
        self._send_batch()

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        self._saves.clear()
        if self.ref is None or not batch:
            return
        messages = [item.message() if isinstance(item, _PendingSave) else item for item in batch]
        try:
            self.ref.tell(messages[0] if len(messages) == 1 else Batch(tuple(messages)))
        except pykka.ActorDeadError:
            pass  # the Hive stopped: its last flush already ran


class RunWebhooks(Protocol):
    """Where a session hands a finished run that has a webhook (the webhook outbox delivers it).

    Called on the session actor's thread: it must only record the delivery, never wait for it.
    """

    def run_finished(self, run: Run, webhook: Webhook) -> None: ...


@dataclass(frozen=True)
class HiveServices:
    """What every session of a Hive shares: immutable services, no session state."""

    persistence: PersistenceLink
    turn_loop: TurnLoop
    tools: ToolRunner
    workspace: Path
    metrics: HiveMetrics
    default_llm: LlmClient | None
    default_llm_config: LlmConfig | None
    llm_clients: ClientCache
    directory: Directory
    subscriber_queue_size: int = 1024
    mailbox_size: int = 1024
    restart_limit: int = 3
    restart_window: float = 60.0
    persistence_backlog: Backlog | None = None
    #: ``Hive.start(trace_content=True)``: turn spans carry prompt, answer and tool text.
    trace_content: bool = False
    #: The ledgers of the session budgets and of the Hive's (or each tenant's) budget.
    budgets: BudgetBook = field(default_factory=BudgetBook)
    #: Finished runs each session keeps (with their idempotency keys), ``Hive.start(max_finished_runs=...)``.
    max_finished_runs: int = DEFAULT_MAX_FINISHED_RUNS
    #: The webhook outbox, if the Hive delivers webhooks (``None``: a run's webhook is not delivered).
    webhooks: RunWebhooks | None = None

    @property
    def stores_sessions(self) -> bool:
        return self.persistence.ref is not None
