"""The end of a session actor's life: destroy, passivation, Hive shutdown, crash.

:class:`Lifecycle` owns whether and how the session is going away
(:attr:`Lifecycle.gone`), the answer owed to a Hive shutdown, and the
supervisor to hand things to. Once a session has decided to go, calls that
still reach it are not lost: a passivated or crashed session hands them back
to the supervisor, which delivers them to the next incarnation; a destroyed
one answers :class:`~sessionhive.SessionNotFound`. Calls that reach the actor
after it stopped arrive through :meth:`Lifecycle.dead_letters` and go the
same way. The session's record is handed to it once; the jobs and
confirmations it ends, with every call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

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
from sessionhive.metrics import tracing
from sessionhive.model.errors import HiveStopped, SessionNotFound, TurnFailed
from sessionhive.model.events import TurnCancelled
from sessionhive.persistence.messages import Delete
from sessionhive.runtime import complete_threadsafe

if TYPE_CHECKING:
    from sessionhive.actors.session._confirmations import Confirmations
    from sessionhive.actors.session._jobs import Jobs
    from sessionhive.actors.session._state import SessionState
    from sessionhive.runtime import Reply

__all__ = ["Gone", "Lifecycle"]

log = logging.getLogger("sessionhive.session")

Gone = Literal["", "passivated", "destroyed", "stopped", "crashed"]


class Lifecycle:
    """Destroy, Passivate, Shutdown, crash hand-over and the calls that arrive too late."""

    # The jobs and confirmations to end, and the actor's own ref, are handed
    # to each call: held here they would cost every idle session 24 bytes.
    __slots__ = ("_session", "gone", "shutdown_reply", "supervisor")

    def __init__(self, session: SessionState, supervisor: pykka.ActorRef[Any]) -> None:
        self._session = session
        self.supervisor = supervisor
        self.gone: Gone = ""
        self.shutdown_reply: Reply | None = None  # answered once the running turn ended

    def _go(self, how: Gone, jobs: Jobs) -> None:
        self.gone = how
        jobs.closed = True  # nothing queued starts on a session that is going away

    def started(self, jobs: Jobs) -> None:
        """The actor runs: its spending counts against its budget; a turn resumed from the journal starts."""
        session = self._session
        session.services.budgets.track(session.session_id, session.config.budget, session.usage)
        jobs.start_next()

    def redirect(self, call: SessionCall) -> None:
        """A call for a session that is going away: to its next incarnation, or refused."""
        session = self._session
        if self.gone == "destroyed":
            session.refuse(call.reply, SessionNotFound(session.session_id))
        elif self.gone == "stopped":
            session.refuse(call.reply, HiveStopped())
        else:
            try:
                self.supervisor.tell(Route(session.session_id, call))
            except pykka.ActorDeadError:
                session.refuse(call.reply, HiveStopped())

    def dead_letters(self) -> Callable[[Any], None]:
        supervisor, session_id = self.supervisor, self._session.session_id  # not self: let the actor go

        def forward(message: Any) -> None:
            if not isinstance(message, SessionCall):
                return  # internal traffic of a session that no longer exists
            try:
                supervisor.tell(Route(session_id, message))
            except pykka.ActorDeadError:
                complete_threadsafe(message.reply, None, HiveStopped())

        return forward

    def destroy(
        self, message: Destroy, jobs: Jobs, confirmations: Confirmations, ref: pykka.ActorRef[Any]
    ) -> None:
        """Stop for good: cancel work, delete from the store, then tell the supervisor."""
        session = self._session
        jobs.cancel_everything(confirmations, "cancelled because the session was destroyed")
        self._go("destroyed", jobs)
        session.services.budgets.forget(session.session_id)
        jobs.abandon_running(TurnCancelled(session.session_id, "the session was destroyed"), "cancelled")
        session.close_subscribers()
        ack = None
        if session.stored():
            ack = session.commit_ack()
            session.services.persistence.send(Delete(session.session_id, ack))
        self.supervisor.tell(SessionGone(session.session_id, "destroyed", ref))
        session.withdraw_view()
        session.deliver(message.reply, None, ack, "destroy")
        ref.stop(block=False)

    def passivate(
        self, message: Passivate, jobs: Jobs, confirmations: Confirmations, ref: pykka.ActorRef[Any]
    ) -> None:
        """Stop to save memory if idle; the store holds everything needed to come back."""
        session = self._session
        busy = jobs.running is not None or jobs.queue or confirmations.pending or session.subscribers
        if busy or not session.stored():
            session.answer(message.reply, False)
            return
        self._go("passivated", jobs)
        tracing.passivation(session.session_id)
        self.supervisor.tell(SessionGone(session.session_id, "passivated", ref))
        session.answer(message.reply, True)
        ref.stop(block=False)

    def shutdown(
        self, message: Shutdown, jobs: Jobs, confirmations: Confirmations, ref: pykka.ActorRef[Any]
    ) -> None:
        """Hive.stop(): cancel running work, record what it left, then stop.

        The running turn is given the chance to hand back its partial history
        (the prompt is kept), so the last snapshot is final.
        """
        jobs.cancel_everything(confirmations, "cancelled because the Hive stopped")
        self._go("stopped", jobs)
        self.shutdown_reply = message.reply
        if jobs.running is None:
            self.stop_now(jobs, ref)

    def stop_now(self, jobs: Jobs, ref: pykka.ActorRef[Any]) -> None:
        self._go("stopped", jobs)
        self._session.answer(self.shutdown_reply, None)
        ref.stop(block=False)

    def crashed(
        self,
        exception_value: BaseException | None,
        jobs: Jobs,
        confirmations: Confirmations,
        ref: pykka.ActorRef[Any],
    ) -> None:
        """A handler raised (a bug): hand everything over to the supervisor, which restarts the session.

        Calls still in the mailbox reach the restarted actor in order (the
        runtime forwards them as dead letters, after this report). Work this
        incarnation accepted fails with a clear error.
        """
        session = self._session
        error = f"{type(exception_value).__name__}: {exception_value}"
        crashed = TurnFailed(
            f"session {session.session_id!r} crashed ({error}) and was restarted from its last snapshot; "
            "retry the call"
        )
        jobs.abandon_running(crashed, "error")
        jobs.reject_queued(lambda: crashed)
        confirmations.cancel("the session crashed", None)
        session.close_subscribers()
        self._go("crashed", jobs)
        session.withdraw_view()  # readers wait for the restarted actor instead of reading this one's state
        snapshot = None if session.stored() else session.snapshot()
        self.supervisor.tell(SessionCrashed(session.session_id, ref, snapshot, (), error))

    def stopped(self, jobs: Jobs) -> None:
        """The actor stopped (for whatever reason): nothing it accepted is left without an answer."""
        session = self._session
        jobs.abandon_running(TurnCancelled(session.session_id, "the Hive stopped"), "cancelled")
        session.close_subscribers()
        jobs.reject_queued(lambda: TurnCancelled(session.session_id, "the Hive stopped"))
