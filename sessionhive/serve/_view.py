"""What the service has seen of its sessions and the turns it runs (the Hive reports neither).

Owned by the service's event loop: every field is read and written there only.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sessionhive import (
    AgentEvent,
    AgentResult,
    ConfirmationRequired,
    ConfirmationResolved,
    SessionPaused,
    SessionResumed,
    TurnStart,
)

__all__ = ["STATES", "SessionView", "Turn"]

#: The states a session can be in, as the service reports them.
STATES = ("waiting", "running", "paused", "idle")


@dataclass(eq=False)
class Turn:
    """One turn this service runs: its events fan out to the HTTP response, if anyone still listens.

    A background run (``POST .../runs``) is followed too, with no response to feed (``run_id``).
    """

    session_id: str
    tenant: str
    run_id: str | None = None
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    outcome: asyncio.Future[AgentResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SessionView:
    """What this service has seen of each session: paused, running turns, waiting confirmations.

    The Hive does not report a session's state, so the service keeps what it
    observed: pauses and resumes made through it, turns it runs, and the
    ConfirmationRequired events of those turns (the Hive lists only the ids).
    """

    def __init__(self) -> None:
        self.paused: set[str] = set()
        self.running: dict[str, int] = {}
        self.confirmations: dict[str, dict[str, ConfirmationRequired]] = {}
        # When each confirmation began waiting (wall clock), so the inbox lists the oldest first.
        self.waiting_since: dict[tuple[str, str], float] = {}
        # The prompt of each session's running turn: the history holds it only once the turn ends.
        self.prompts: dict[str, str] = {}

    def observe(self, event: AgentEvent) -> None:
        sid = event.session_id
        if isinstance(event, TurnStart):
            self.prompts[sid] = event.prompt
        elif isinstance(event, ConfirmationRequired):
            self.confirmations.setdefault(sid, {})[event.tool_id] = event
            self.waiting_since.setdefault((sid, event.tool_id), time.time())
        elif isinstance(event, ConfirmationResolved):
            waiting = self.confirmations.get(sid)
            self.waiting_since.pop((sid, event.tool_id), None)
            if waiting is not None:
                waiting.pop(event.tool_id, None)
                if not waiting:
                    del self.confirmations[sid]
        elif isinstance(event, SessionPaused):
            self.paused.add(sid)
        elif isinstance(event, SessionResumed):
            self.paused.discard(sid)

    def turn_started(self, sid: str) -> None:
        self.running[sid] = self.running.get(sid, 0) + 1

    def turn_ended(self, sid: str) -> None:
        left = self.running.get(sid, 0) - 1
        if left > 0:
            self.running[sid] = left
        else:
            self.running.pop(sid, None)
            self.prompts.pop(sid, None)
            self._drop_confirmations(sid)

    def forget(self, sid: str) -> None:
        self.paused.discard(sid)
        self.running.pop(sid, None)
        self.prompts.pop(sid, None)
        self._drop_confirmations(sid)

    def _drop_confirmations(self, sid: str) -> None:
        for tool_id in self.confirmations.pop(sid, {}):
            self.waiting_since.pop((sid, tool_id), None)

    def in_state(self, state: str) -> set[str]:
        """The sessions in ``state``, other than idle (which is every session not in another)."""
        if state == "paused":
            return set(self.paused)
        if state == "waiting":
            return {sid for sid, waiting in self.confirmations.items() if waiting} - self.paused
        return set(self.running) - self.paused - self.in_state("waiting")

    def state(self, sid: str) -> str:
        if sid in self.paused:
            return "paused"
        if self.confirmations.get(sid):
            return "waiting"
        if self.running.get(sid):
            return "running"
        return "idle"
