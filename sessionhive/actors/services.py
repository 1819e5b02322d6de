"""What every actor of one Hive shares: immutable services, and the line to the persistence actor.

Nothing here holds session state. :class:`PersistenceLink` is the one way
actors and the facade talk to the persistence actor, so that what they send
reaches it in the order it was sent; on the asyncio backend it also packs
every message of one event-loop pass into a single ``tell`` (one wake-up of
the persistence thread per pass instead of one per snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from sessionhive.persistence.actor import Backlog, Batch, Delete, Save

if TYPE_CHECKING:
    from sessionhive.actors.directory import Directory
    from sessionhive.actors.turn import TurnLoop
    from sessionhive.agent.loop import ToolRunner
    from sessionhive.llm import ClientCache, LlmClient
    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.model.llm_config import LlmConfig
    from sessionhive.runtime import AsyncioBackend

__all__ = ["SAVE_DELAY", "HiveServices", "PersistenceLink"]

#: Longest a snapshot waits on the actors' loop before it leaves for the
#: persistence actor with the others of its batch (see PersistenceLink).
SAVE_DELAY = 0.002


class PersistenceLink:
    """Sends messages to the persistence actor in order; batched on the actors' loop when it has one.

    With ``backend`` (an :class:`~sessionhive.runtime.AsyncioBackend`) every
    :meth:`send` must happen on its loop. Snapshots and deletes then wait up
    to :data:`SAVE_DELAY` seconds and leave together in one ``tell``: the
    persistence actor writes in batches anyway (every ``flush_interval``),
    and waking its thread once per snapshot would cost a GIL hand-off each.
    Anything a caller waits on (loads, flushes, health checks) leaves at
    once, after whatever was sent before it. Without ``backend`` each
    message is told at once.
    """

    def __init__(self, ref: pykka.ActorRef[Any] | None, backend: AsyncioBackend | None) -> None:
        self.ref = ref
        self._backend = backend
        self._batch: list[Any] = []  # the loop thread's alone
        self._timer_armed = False

    def send(self, message: Any) -> None:
        ref = self.ref
        if ref is None:
            return
        backend = self._backend
        if backend is None:
            ref.tell(message)
            return
        self._batch.append(message)
        if not isinstance(message, Save | Delete):
            self._send_batch()  # someone waits on this one
        elif not self._timer_armed:
            self._timer_armed = True
            backend.schedule_later(SAVE_DELAY, self._on_timer)

    def _on_timer(self) -> None:
        self._timer_armed = False
        self._send_batch()

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if self.ref is not None and batch:
            try:
                self.ref.tell(batch[0] if len(batch) == 1 else Batch(tuple(batch)))
            except pykka.ActorDeadError:
                pass  # the Hive stopped: its last flush already ran


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

    @property
    def stores_sessions(self) -> bool:
        return self.persistence.ref is not None
