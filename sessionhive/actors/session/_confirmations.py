"""Human confirmation of tool calls: the calls that wait for a decision, and how one is settled.

A running turn that needs a human decision sends ``ConfirmationAsked``; the
decision arrives as ``Confirm`` (from the user), ``ConfirmationTimedOut``
(from the turn's timer) or a cancel. The session is the one arbiter: the
first of them settles the call, the others find nothing to settle.
:class:`Confirmations` owns the waiting calls; the session's record
(:class:`~sessionhive.actors.session._state.SessionState`) is handed to it
for events, metrics and the view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from sessionhive.actors.messages import Confirm
from sessionhive.actors.turn import ConfirmationAsked, ConfirmationTimedOut
from sessionhive.agent.loop import Decision
from sessionhive.model.errors import ConfirmationNotFound
from sessionhive.model.events import ConfirmationRequired, ConfirmationResolved

if TYPE_CHECKING:
    from sessionhive._channels import EventSink
    from sessionhive.actors.session._state import SessionState

__all__ = ["Confirmations", "Resolve"]

log = logging.getLogger("sessionhive.session")

Resolve = Callable[[Decision], None]
"""How a waiting tool call is told its decision (the turn's side of the call)."""


class Confirmations:
    """The tool calls waiting for a human decision, and their settling."""

    __slots__ = ("_session", "pending")

    def __init__(self, session: SessionState, pending: dict[str, tuple[int, Resolve]]) -> None:
        self._session = session
        # tool id -> (turn id, resolve callback); the session's view lists its keys
        self.pending = pending

    def confirm(self, message: Confirm, sink: EventSink | None) -> None:
        # Only a call that waits now can be answered: ids are unique within the
        # session's history (the loop names the calls a model leaves unnamed by
        # turn and position), so a late or repeated answer meant for an earlier
        # call finds nothing here instead of deciding a later call.
        pending = self.pending.pop(message.tool_id, None)
        if pending is None:
            raise ConfirmationNotFound(self._session.session_id, message.tool_id)
        outcome: Literal["approved", "rejected"] = "approved" if message.approved else "rejected"
        _turn_id, resolve = pending
        decision = Decision(bool(message.approved), outcome, message.reason, message.decided_by)
        self._settle(message.tool_id, resolve, decision, sink, message.decided_by)
        self._session.answer(message.reply, True)

    def _settle(
        self,
        tool_id: str,
        resolve: Resolve,
        decision: Decision,
        sink: EventSink | None,
        decided_by: str | None = None,
    ) -> None:
        session, metrics = self._session, self._session.metrics
        resolve(decision)
        session.touch()
        session.refresh_run_waiting()
        metrics.confirmations_pending.dec()
        metrics.child(metrics.confirmations, decision.outcome).inc()
        session.emit(
            ConfirmationResolved(
                session.session_id, tool_id, decision.approved, decision.outcome, decision.reason, decided_by
            ),
            sink,
        )

    def cancel(self, reason: str, sink: EventSink | None, turn_id: int | None = None) -> bool:
        """Settle the waiting calls (of turn ``turn_id`` only, if given) as cancelled; True if any."""
        cancelled = False
        for tool_id, (waiting_turn, resolve) in list(self.pending.items()):
            if turn_id is None or waiting_turn == turn_id:
                del self.pending[tool_id]
                self._settle(tool_id, resolve, Decision(False, "cancelled", reason), sink)
                cancelled = True
        return cancelled

    def asked(self, message: ConfirmationAsked, running: bool, sink: EventSink | None) -> None:
        """The turn asks; ``running``: whether that turn still runs uncancelled (else it is refused)."""
        session = self._session
        if not running:
            message.resolve(Decision(False, "cancelled", "the turn is no longer running"))
            return
        self.pending[message.call.id] = (message.turn_id, message.resolve)
        session.touch()
        session.refresh_run_waiting()
        session.metrics.confirmations_pending.inc()
        if not session.listened(sink):
            # Nobody streams this turn or subscribes to the session: say so
            # instead of letting the call wait silently for its timeout.
            log.warning(
                "session %s: tool call %s (%s) waits for confirmation, but nobody streams or subscribes "
                "to this session; it resolves by policy (%s) in %.0f s. Answer it with confirm_tool(), "
                "generate(..., on_confirmation=...), a stream or a subscription.",
                session.session_id,
                message.call.id,
                message.call.name,
                session.policy.on_timeout,
                message.timeout_s,
            )
        session.emit(
            ConfirmationRequired(
                session.session_id,
                message.call.id,
                message.call.name,
                message.arguments,
                message.timeout_s,
                parent_id=session.services.directory.parents.get(session.session_id),
            ),
            sink,
        )

    def timed_out(self, message: ConfirmationTimedOut, sink: EventSink | None) -> None:
        pending = self.pending.get(message.tool_id)
        if pending is None or pending[0] != message.turn_id:
            return  # answered by confirm_tool or cancel first
        del self.pending[message.tool_id]
        approve = self._session.policy.on_timeout == "approve"
        self._settle(message.tool_id, pending[1], Decision(approve, "timed_out", "no answer in time"), sink)
