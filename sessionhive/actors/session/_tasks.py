"""The ``task`` tool's runner: a new child session per call, a turn in it, its answer as the result.

:class:`ChildTasks` is the :class:`~sessionhive.agent.tasks.TaskRunner` of
one turn of a session with ``SessionConfig(task_tool=True)``. It runs on the
turn loop, inside the calling turn's tool call, and only sends messages: a
``Create`` to the supervisor (the child inherits policy and LLM as every
child session does), then a ``Generate`` routed to the child, and it awaits
their replies as futures, so the calling session's mailbox stays free
(``confirm_tool``, ``cancel_operation``, ``history`` answer meanwhile).

What reaches the caller of the calling turn: the child's confirmation
requests and their resolutions, relayed into the calling turn's events, so
its ``on_confirmation`` callback, its stream and the console's inbox see
them (with the child's ``session_id``: the answer goes to the child). What
stays in the tree: the child's model calls count against its ancestors'
budgets (each turn spends against its session's lineage), and a cancel of
the calling turn cancels the child's turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from sessionhive.actors.messages import Cancel, Create, Generate, Route
from sessionhive.metrics import tracing
from sessionhive.model.errors import HiveStopped, SessionExists, SessionhiveError
from sessionhive.model.events import AgentEvent, ConfirmationRequired, ConfirmationResolved, TurnCancelled
from sessionhive.model.ids import MAX_ID_LENGTH
from sessionhive.model.messages import AgentResult, ToolResult

if TYPE_CHECKING:
    from sessionhive.actors.session._state import SessionState
    from sessionhive.actors.turn import TurnLoop
    from sessionhive.model.config import SessionConfig
    from sessionhive.runtime import Reply

__all__ = ["ChildTasks", "child_config"]

#: Ids tried for one task's child before giving up (a call id seen before in this session).
_ID_ATTEMPTS = 5
_CANCELLED = "the turn that started this task was cancelled"


def child_config(parent: SessionConfig, parent_id: str, description: str) -> SessionConfig:
    """The config of a task's child: ``task_child_config``, or the parent's own.

    The parent's own loses its budget (the child spends from its ancestors'
    budgets already; a copy would be a second, separate cap) and its
    confirmation policy (the child takes the parent's live one when it is
    created). A child without a workspace takes the parent's.
    """
    base = parent.task_child_config
    if base is None:
        base = dataclasses.replace(parent, budget=None, confirmation_policy=None)
    workspace = base.workspace if base.workspace is not None else parent.workspace
    metadata = {**base.metadata, "task_of": parent_id, "task": description}
    return dataclasses.replace(base, workspace=workspace, metadata=metadata)


def _child_id(parent_id: str, call_id: str, attempt: int) -> str:
    """``<parent>.task-<call id>``, numbered after a clash; hashed when that would be too long."""
    child_id = f"{parent_id}.task-{call_id}" + (f"-{attempt + 1}" if attempt else "")
    if len(child_id) <= MAX_ID_LENGTH and child_id.isprintable():
        return child_id
    return "task-" + hashlib.sha256(child_id.encode()).hexdigest()[:32]


def _generate(prompt: str, sink: _ConfirmationRelay, trace_parent: Any, reply: Reply) -> Generate:
    return Generate(reply, prompt, sink, None, trace_parent)


class _ConfirmationRelay:
    """The child turn's event sink: hands its confirmation events on to the calling turn.

    ``offer`` runs on the child actor's thread; the relay runs on the turn
    loop. Each event is a copy: the calling session numbers it as its own.
    """

    __slots__ = ("_loop", "_relay")

    def __init__(self, relay: Callable[[AgentEvent], None], loop: TurnLoop) -> None:
        self._relay = relay
        self._loop = loop

    def offer(self, event: AgentEvent) -> None:
        if isinstance(event, ConfirmationRequired | ConfirmationResolved):
            try:
                self._loop.call_soon(self._relay, dataclasses.replace(event, event_id=0, run_id=None))
            except RuntimeError:
                pass  # the loop closed: the Hive stopped and nobody waits for this turn

    def close(self) -> None:
        """The child's turn ended; its answer comes as the Generate reply."""


class ChildTasks:
    """Runs the ``task`` calls of one turn of ``session`` (see the module docstring).

    Touched by its turn only, on the turn loop: ``started`` needs no lock.
    """

    __slots__ = ("_config", "_directory", "_loop", "_parent_id", "_supervisor", "started")

    def __init__(self, session: SessionState, supervisor: pykka.ActorRef[Any]) -> None:
        self._parent_id = session.session_id
        self._config = session.config
        self._directory = session.services.directory
        self._loop = session.services.turn_loop
        self._supervisor = supervisor
        self.started = 0

    def _depth(self) -> int:
        """How many ancestors the calling session has (a root session: 0), by the supervisor's directory."""
        depth, parents, seen = 0, self._directory.parents, {self._parent_id}
        parent = parents.get(self._parent_id)
        while parent is not None and parent not in seen:
            depth += 1
            seen.add(parent)
            parent = parents.get(parent)
        return depth

    async def run(
        self, call_id: str, prompt: str, description: str, relay: Callable[[AgentEvent], None]
    ) -> ToolResult:
        config, depth = self._config, self._depth() + 1
        if depth > config.task_max_depth:
            return ToolResult(
                f"error: task refused: a task here would be {depth} levels below the root "
                f"session, and task_max_depth={config.task_max_depth}; do this step yourself",
                True,
            )
        if self.started >= config.task_max_per_turn:
            return ToolResult(
                f"error: task refused: this turn already started {self.started} tasks "
                f"(task_max_per_turn={config.task_max_per_turn}); finish with what you have",
                True,
            )
        self.started += 1
        try:
            child_id = await self._create(call_id, description)
        except SessionhiveError as error:
            return ToolResult(f"error: the task's child session could not be created: {error}", True)
        if child_id is None:
            return ToolResult("error: the task's child session could not be created: its ids are taken", True)
        sink = _ConfirmationRelay(relay, self._loop)
        trace_parent = tracing.current_context()  # the child's turn span is a child of this tool call's
        generate = functools.partial(_generate, prompt, sink, trace_parent)
        try:
            result = await self._child_turn(child_id, generate)
        except TurnCancelled as cancelled:
            return ToolResult(
                f"error: the task in child session {child_id} was cancelled: {cancelled.reason}", True
            )
        except SessionhiveError as error:
            return ToolResult(f"error: the task failed in child session {child_id}: {error}", True)
        assert isinstance(result, AgentResult)
        if result.stop_reason == "budget":
            return ToolResult(
                f"error: a budget stopped the task in child session {child_id} before it answered", True
            )
        return ToolResult(f"{result.text}\n\n[task {description!r} ran in child session {child_id}]")

    async def _child_turn(self, child_id: str, generate: Callable[[Reply], Generate]) -> Any:
        """The child's turn's result; a cancel of this turn cancels the child's first."""
        async with self._loop.slot_lent():  # the child's turn may need the very slot this one holds
            try:
                return await self._ask(child_id, generate)
            except asyncio.CancelledError:
                # Before the slot is taken back: the child may hold the one this turn waits for.
                try:
                    self._tell(Route(child_id, Cancel(None, _CANCELLED)))
                except HiveStopped:
                    pass  # stopping the Hive cancels every turn anyway
                raise

    async def _create(self, call_id: str, description: str) -> str | None:
        config = child_config(self._config, self._parent_id, description)
        for attempt in range(_ID_ATTEMPTS):
            child_id = _child_id(self._parent_id, call_id, attempt)
            try:
                await self._ask(None, functools.partial(Create, child_id, config, self._parent_id))
            except SessionExists:
                continue
            return child_id
        return None

    async def _ask(self, session_id: str | None, make: Callable[[Reply], Any]) -> Any:
        """Send ``make(reply)`` (routed to ``session_id``, or to the supervisor) and await the reply."""
        reply: concurrent.futures.Future[Any] = concurrent.futures.Future()
        message = make(reply)
        self._tell(message if session_id is None else Route(session_id, message))
        return await asyncio.wrap_future(reply)

    def _tell(self, message: Any) -> None:
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            raise HiveStopped from None
