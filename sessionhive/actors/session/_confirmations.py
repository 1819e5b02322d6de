"""Human confirmation of tool calls, and cancellation.

A running turn that needs a human decision sends ``ConfirmationAsked``; the
decision arrives as ``Confirm`` (from the user), ``ConfirmationTimedOut``
(from the turn's timer) or a cancel. The session is the one arbiter: the
first of them settles the call, the others find nothing to settle.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from sessionhive.actors.messages import Cancel, Confirm
from sessionhive.actors.session._jobs import JobsPart
from sessionhive.actors.turn import ConfirmationAsked, ConfirmationTimedOut
from sessionhive.agent.loop import Decision
from sessionhive.model.errors import ConfirmationNotFound
from sessionhive.model.events import ConfirmationRequired, ConfirmationResolved, TurnCancelled

__all__ = ["ConfirmationsPart"]

log = logging.getLogger("sessionhive.session")


class ConfirmationsPart(JobsPart):
    """Confirm, cancel, and the turn's confirmation requests and timeouts."""

    def on_Confirm(self, message: Confirm) -> None:
        # Only a call that waits now can be answered: ids are unique within the
        # session's history (the loop names the calls a model leaves unnamed by
        # turn and position), so a late or repeated answer meant for an earlier
        # call finds nothing here instead of deciding a later call.
        pending = self._pending.pop(message.tool_id, None)
        if pending is None:
            raise ConfirmationNotFound(self.session_id, message.tool_id)
        outcome: Literal["approved", "rejected"] = "approved" if message.approved else "rejected"
        _turn_id, resolve = pending
        decision = Decision(bool(message.approved), outcome, message.reason, message.decided_by)
        self._settle(message.tool_id, resolve, decision, message.decided_by)
        self._answer(message.reply, True)

    def _settle(self, tool_id: str, resolve: Any, decision: Decision, decided_by: str | None = None) -> None:
        resolve(decision)
        self._touch()
        self._metrics.confirmations_pending.dec()
        self._metrics.child(self._metrics.confirmations, decision.outcome).inc()
        sink = self._running.job.sink if self._running else None
        self._emit(
            ConfirmationResolved(
                self.session_id, tool_id, decision.approved, decision.outcome, decision.reason, decided_by
            ),
            sink,
        )

    def _cancel_pending(self, reason: str) -> bool:
        cancelled = False
        for tool_id, (_turn_id, resolve) in list(self._pending.items()):
            del self._pending[tool_id]
            self._settle(tool_id, resolve, Decision(False, "cancelled", reason))
            cancelled = True
        return cancelled

    def _cancel_everything(self, reason: str = "cancelled by cancel_operation()") -> bool:
        """Cancel pending confirmations, queued jobs and the running job; True if there was any."""
        did_something = self._cancel_pending(reason)
        if self._reject_queued(lambda: TurnCancelled(self.session_id, f"{reason}, before it started")):
            did_something = True
        running = self._running
        if running is not None and not running.cancelled and running.handle is not None:
            running.cancelled = True
            running.cancel_reason = reason
            running.handle.cancel()
            did_something = True
        return did_something

    def on_Cancel(self, message: Cancel) -> None:
        self._answer(message.reply, self._cancel_everything(message.reason))

    def on_ConfirmationAsked(self, message: ConfirmationAsked) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id or running.cancelled:
            message.resolve(Decision(False, "cancelled", "the turn is no longer running"))
            return
        self._pending[message.call.id] = (message.turn_id, message.resolve)
        self._touch()
        self._metrics.confirmations_pending.inc()
        sink = running.job.sink
        if not self._listened(sink):
            # Nobody streams this turn or subscribes to the session: say so
            # instead of letting the call wait silently for its timeout.
            log.warning(
                "session %s: tool call %s (%s) waits for confirmation, but nobody streams or subscribes "
                "to this session; it resolves by policy (%s) in %.0f s. Answer it with confirm_tool(), "
                "generate(..., on_confirmation=...), a stream or a subscription.",
                self.session_id,
                message.call.id,
                message.call.name,
                self._policy.on_timeout,
                message.timeout_s,
            )
        self._emit(
            ConfirmationRequired(
                self.session_id, message.call.id, message.call.name, message.arguments, message.timeout_s
            ),
            sink,
        )

    def on_ConfirmationTimedOut(self, message: ConfirmationTimedOut) -> None:
        pending = self._pending.get(message.tool_id)
        if pending is None or pending[0] != message.turn_id:
            return  # answered by confirm_tool or cancel first
        del self._pending[message.tool_id]
        approve = self._policy.on_timeout == "approve"
        self._settle(message.tool_id, pending[1], Decision(approve, "timed_out", "no answer in time"))
