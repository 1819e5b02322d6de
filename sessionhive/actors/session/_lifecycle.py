"""The end of a session actor's life: destroy, passivation, Hive shutdown, crash.

Once a session has decided to go (:attr:`SessionState._gone`), calls that
still reach it are not lost: a passivated or crashed session hands them back
to the supervisor, which delivers them to the next incarnation; a destroyed
one answers :class:`~sessionhive.SessionNotFound`. Calls that reach the actor
after it stopped arrive through :meth:`dead_letters` and go the same way.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

import pykka

from sessionhive.actors.messages import (
    Destroy,
    Passivate,
    Route,
    SessionCall,
    SessionCrashed,
    SessionGone,
    Shutdown,
)
from sessionhive.actors.session._confirmations import ConfirmationsPart
from sessionhive.model.errors import HiveStopped, SessionNotFound, TurnFailed
from sessionhive.model.events import TurnCancelled
from sessionhive.persistence.messages import Delete
from sessionhive.runtime import complete_threadsafe

__all__ = ["LifecyclePart"]

log = logging.getLogger("sessionhive.session")


class LifecyclePart(ConfirmationsPart):
    """Destroy, Passivate, Shutdown, crash hand-over and the calls that arrive too late."""

    def on_start(self) -> None:
        self._start_next()  # a turn resumed from the journal, if any

    def _redirect(self, call: SessionCall) -> None:
        """A call for a session that is going away: to its next incarnation, or refused."""
        if self._gone == "destroyed":
            self._refuse(call.reply, SessionNotFound(self.session_id))
        elif self._gone == "stopped":
            self._refuse(call.reply, HiveStopped())
        else:
            try:
                self._supervisor.tell(Route(self.session_id, call))
            except pykka.ActorDeadError:
                self._refuse(call.reply, HiveStopped())

    def dead_letters(self) -> Callable[[Any], None] | None:
        supervisor, session_id = self._supervisor, self.session_id  # not self: let the actor go

        def forward(message: Any) -> None:
            if not isinstance(message, SessionCall):
                return  # internal traffic of a session that no longer exists
            try:
                supervisor.tell(Route(session_id, message))
            except pykka.ActorDeadError:
                complete_threadsafe(message.reply, None, HiveStopped())

        return forward

    def _withdraw_view(self) -> None:
        """No published view any more: a read goes through the supervisor (SessionNotFound, or a restart)."""
        self._view_stale = False
        self._entry.view = None

    def _close_subscribers(self) -> None:
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()

    def on_Destroy(self, message: Destroy) -> None:
        """Stop for good: cancel work, delete from the store, then tell the supervisor."""
        self._cancel_everything("cancelled because the session was destroyed")
        self._gone = "destroyed"
        running = self._finish_running()
        if running is not None:
            self._abandon(running, TurnCancelled(self.session_id, "the session was destroyed"), "cancelled")
        self._close_subscribers()
        ack: concurrent.futures.Future[None] | None = None
        if self._stored():
            wait = self._services.persistence.waits_for_commit(self._config.durability)
            ack = concurrent.futures.Future() if wait else None
            self._services.persistence.send(Delete(self.session_id, ack))
        self._supervisor.tell(SessionGone(self.session_id, "destroyed", self.actor_ref))
        self._withdraw_view()
        self._deliver(message.reply, None, ack, "destroy")
        self.actor_ref.stop(block=False)

    def on_Passivate(self, message: Passivate) -> None:
        """Stop to save memory if idle; the store holds everything needed to come back."""
        busy = self._running is not None or self._jobs or self._pending or self._subscribers
        if busy or not self._stored():
            self._answer(message.reply, False)
            return
        self._gone = "passivated"
        self._supervisor.tell(SessionGone(self.session_id, "passivated", self.actor_ref))
        self._answer(message.reply, True)
        self.actor_ref.stop(block=False)

    def on_Shutdown(self, message: Shutdown) -> None:
        """Hive.stop(): cancel running work, record what it left, then stop.

        The running turn is given the chance to hand back its partial history
        (the prompt is kept), so the last snapshot is final.
        """
        self._cancel_everything("cancelled because the Hive stopped")
        self._gone = "stopped"
        self._shutdown_reply = message.reply
        if self._running is None:
            self._stop_now()

    def _stop_now(self) -> None:
        self._gone = "stopped"
        self._answer(self._shutdown_reply, None)
        self.actor_ref.stop(block=False)

    def on_failure(
        self,
        exception_type: type[BaseException] | None,  # noqa: ARG002 - pykka's hook signature
        exception_value: BaseException | None,
        traceback: Any,  # noqa: ARG002 - pykka's hook signature
    ) -> None:
        """A handler raised (a bug): hand everything over to the supervisor, which restarts us.

        Calls still in the mailbox reach the restarted actor in order (the
        runtime forwards them as dead letters, after this report). Work this
        incarnation accepted fails with a clear error.
        """
        error = f"{type(exception_value).__name__}: {exception_value}"
        crashed = TurnFailed(
            f"session {self.session_id!r} crashed ({error}) and was restarted from its last snapshot; "
            "retry the call"
        )
        running = self._finish_running()
        if running is not None:
            self._abandon(running, crashed, "error")
        self._reject_queued(lambda: crashed)
        self._cancel_pending("the session crashed")
        self._close_subscribers()
        self._gone = "crashed"
        self._withdraw_view()  # readers wait for the restarted actor instead of reading this one's state
        snapshot = None if self._stored() else self._snapshot()
        self._supervisor.tell(SessionCrashed(self.session_id, self.actor_ref, snapshot, (), error))

    def on_stop(self) -> None:
        running = self._finish_running()
        if running is not None:
            self._abandon(running, TurnCancelled(self.session_id, "the Hive stopped"), "cancelled")
        self._close_subscribers()
        self._reject_queued(lambda: TurnCancelled(self.session_id, "the Hive stopped"))
