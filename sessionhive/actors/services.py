"""What every actor of one Hive shares: immutable services, and the line to the persistence actor.

Nothing here holds session state. :class:`PersistenceLink` is the one way
actors and the facade talk to the persistence actor, so that what they send
reaches it in the order it was sent; on the asyncio backend it also packs
every message of one event-loop pass into a single ``tell`` (one wake-up of
the persistence thread per pass instead of one per snapshot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from sessionhive.persistence.actor import Batch

if TYPE_CHECKING:
    from sessionhive.actors.directory import Directory
    from sessionhive.actors.turn import TurnLoop
    from sessionhive.agent.loop import ToolRunner
    from sessionhive.llm import ClientCache, LlmClient
    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.model.llm_config import LlmConfig

__all__ = ["HiveServices", "PersistenceLink"]


class PersistenceLink:
    """Sends messages to the persistence actor in order; batched per loop pass when ``schedule`` is given.

    ``schedule`` runs a callback on the actors' event loop soon (the asyncio
    backend's ``schedule``); every :meth:`send` must then happen on that
    loop. Without it each message is told at once.
    """

    def __init__(
        self, ref: pykka.ActorRef[Any] | None, schedule: Callable[[Callable[[], None]], None] | None
    ) -> None:
        self.ref = ref
        self._schedule = schedule
        self._batch: list[Any] = []  # the loop thread's alone

    def send(self, message: Any) -> None:
        ref = self.ref
        if ref is None:
            return
        if self._schedule is None:
            ref.tell(message)
            return
        if not self._batch:
            self._schedule(self._send_batch)
        self._batch.append(message)

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

    @property
    def stores_sessions(self) -> bool:
        return self.persistence.ref is not None
