"""Where turns run: coroutines on the Hive's event loop, off every actor's mailbox.

A turn spends nearly all its time waiting (LLM streaming, tool subprocesses,
a human confirmation), so turns are coroutines: ten thousand of them can be
in flight on one thread without holding a dispatcher thread or an OS thread
each. ``max_concurrent_turns`` bounds how many run at once; the rest wait
their turn in order (backpressure), visible in the turns-in-flight gauge.

With the asyncio backend the loop is the one the session actors run on (so
a turn and its session talk without a thread hop); with the other backends
it is a loop thread of its own. A turn owns no shared state: it works on an
immutable copy of its session's history and reports back to its
SessionActor with tells (:class:`SessionTurnHooks`). Whatever a turn raises
(``SystemExit`` from a model client or a tool included) ends that turn
only: it reaches the session as the turn's outcome and never escapes into
the event loop, where it would stop every session.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pykka

from sessionhive.agent.loop import Decision
from sessionhive.model.events import AgentEvent
from sessionhive.model.messages import ToolCall

__all__ = [
    "ConfirmationAsked",
    "ConfirmationTimedOut",
    "SessionTurnHooks",
    "TurnEvents",
    "TurnHandle",
    "TurnLoop",
]

T = TypeVar("T")


class _Raised:
    """A turn's exception, carried out of the coroutine as a value (see the module docstring)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class TurnLoop:
    """Runs turns with bounded concurrency on ``loop``, or on a loop thread of its own."""

    def __init__(
        self, max_concurrent_turns: int = 10_000, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Without ``loop``, start a loop thread; with one, it must be running in the calling thread."""
        self._thread: threading.Thread | None = None
        self.thread_id: int | None = None
        if loop is None:
            self.loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="sessionhive-loop", daemon=True
            )
            self._thread.start()
            ready.wait()
        else:
            self.loop = loop
            self.thread_id = threading.get_ident()
        self._slots = asyncio.Semaphore(max_concurrent_turns)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.thread_id = threading.get_ident()
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    @property
    def owns_thread(self) -> bool:
        return self._thread is not None

    def on_loop(self) -> bool:
        return threading.get_ident() == self.thread_id

    def submit(
        self, coro: Coroutine[Any, Any, T], on_done: Callable[[T | BaseException], None]
    ) -> TurnHandle:
        """Run ``coro`` once a slot is free and pass its result (or exception) to ``on_done``.

        ``on_done`` runs on the loop thread and must not block (it tells an actor).
        A turn cancelled while it waits for a slot never starts; ``on_done``
        then gets ``asyncio.CancelledError``.
        """
        handle = TurnHandle(self)

        def finished(task: asyncio.Task[T | _Raised]) -> None:
            if task.cancelled():
                on_done(asyncio.CancelledError())
                return
            error = task.exception()
            if error is not None:
                on_done(error)
                return
            result = task.result()
            on_done(result.error if isinstance(result, _Raised) else result)

        def start() -> None:
            handle.task = self.loop.create_task(self._bounded(coro))
            handle.task.add_done_callback(finished)
            if handle.cancel_requested:
                handle.task.cancel()

        if self.on_loop():
            start()
        else:
            self.loop.call_soon_threadsafe(start)
        return handle

    async def _bounded(self, coro: Coroutine[Any, Any, T]) -> T | _Raised:
        try:
            async with self._slots:
                return await coro
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - contained: see the module docstring
            return _Raised(error)
        finally:
            coro.close()  # a turn cancelled while waiting for a slot never started

    @contextlib.asynccontextmanager
    async def slot_lent(self) -> AsyncIterator[None]:
        """Inside a turn: give its slot up while it waits for another turn (a task's), take one after.

        A waiting turn runs nothing; holding its slot could hold the last one
        the turn it waits for needs (with ``max_concurrent_turns=1``, always).
        """
        self._slots.release()
        try:
            yield
        finally:
            # Shielded: cancelled meanwhile, the turn still ends holding a slot for _bounded
            # to release (the acquire finishes later and balances that release).
            await asyncio.shield(self._slots.acquire())

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        if self.on_loop():
            self.loop.call_soon(callback, *args)
        else:
            self.loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        """Cancel what still runs and, if this loop has its own thread, end it."""

        def _shutdown() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            if self._thread is not None:
                self.loop.call_soon(self.loop.stop)

        if self._thread is None:
            return  # a loop we do not own: its owner ends it
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(_shutdown)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            # Its selector and wake-up socket pair are file descriptors: a
            # service that starts and stops Hives must not leak them.
            self.loop.close()


class TurnHandle:
    """Cancels a submitted coroutine from any thread."""

    __slots__ = ("_turns", "cancel_requested", "task")

    def __init__(self, turns: TurnLoop) -> None:
        self._turns = turns
        self.task: asyncio.Task[Any] | None = None
        self.cancel_requested = False

    def cancel(self) -> None:
        self._turns.call_soon(self._cancel)

    def _cancel(self) -> None:
        # On the loop: the task exists unless its start is still scheduled,
        # and then start() sees the request.
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()


# The turn's messages to its session, typed like those of actors/messages.py.
@dataclass(frozen=True, slots=True)
class TurnEvents:
    """Events of the running job ``turn_id``, in order (one message per burst, not per event)."""

    turn_id: int
    events: list[AgentEvent]


@dataclass(frozen=True, slots=True)
class ConfirmationAsked:
    """The running turn waits for a human decision about ``call``."""

    turn_id: int
    call: ToolCall
    arguments: dict[str, Any]
    timeout_s: float
    resolve: Callable[[Decision], None]


@dataclass(frozen=True, slots=True)
class ConfirmationTimedOut:
    """Nobody answered ``tool_id`` in time; the session applies the policy's default."""

    turn_id: int
    tool_id: str


def _settle(future: asyncio.Future[Decision], decision: Decision) -> None:
    if not future.done():
        future.set_result(decision)


class SessionTurnHooks:
    """The turn's side of the session protocol: tells only, never a blocking ask.

    Events are batched: those emitted in one pass of the event loop (a burst
    of streamed text deltas, say) travel in one :class:`TurnEvents` message,
    which divides the session's mailbox traffic by the burst size. Order is
    kept: the batch is sent before any other message of this turn, and the
    loop runs the scheduled send before the turn's completion callback.
    """

    def __init__(self, session: pykka.ActorRef[Any], turn_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self._session = session
        self._turn_id = turn_id
        self._loop = loop
        self._batch: list[AgentEvent] = []  # touched on the loop thread only

    def emit(self, event: AgentEvent) -> None:
        if not self._batch:
            self._loop.call_soon(self._send)
        self._batch.append(event)

    def _send(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            try:
                self._session.tell(TurnEvents(self._turn_id, batch))
            except pykka.ActorDeadError:
                pass  # the session crashed or went away; this turn is being abandoned

    async def confirm(self, call: ToolCall, arguments: dict[str, Any], timeout_s: float) -> Decision:
        future: asyncio.Future[Decision] = self._loop.create_future()
        loop = self._loop

        def resolve(decision: Decision) -> None:
            loop.call_soon_threadsafe(_settle, future, decision)

        self._send()  # the events before the request arrive before it
        try:
            self._session.tell(ConfirmationAsked(self._turn_id, call, arguments, timeout_s, resolve))
        except pykka.ActorDeadError:
            return Decision(False, "cancelled", "the session is gone")
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            # The session is the one arbiter: a confirm_tool that reached it
            # first still wins over the timeout.
            try:
                self._session.tell(ConfirmationTimedOut(self._turn_id, call.id))
            except pykka.ActorDeadError:
                return Decision(False, "cancelled", "the session is gone")
            return await future
