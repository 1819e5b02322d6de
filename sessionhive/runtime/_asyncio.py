"""A pykka actor runtime whose mailboxes are drained by an asyncio event loop.

:class:`AsyncioBackend` runs every actor it spawns on one event loop: the
Hive's own loop thread for a synchronous ``Hive``, or the application's
running loop for an ``AsyncHive`` started inside it. Session actors, the
supervisor and the agent turns (coroutines) then share one thread, so a
message between them costs a ``deque.append`` and a scheduled callback, never
a thread hand-off. Blocking work stays off the loop: database I/O runs on the
persistence actor's own thread, blocking tools on a bounded thread pool.

Design
------
* **pykka's three hooks.** :class:`AsyncioActor` implements
  ``_create_actor_inbox``, ``_create_future`` and ``_start_actor_loop``;
  ``ActorRef``, ``tell``/``ask``, proxies, ``_handle_receive``, ``_stop``,
  ``on_start``/``on_stop``/``on_failure`` and pykka's loop set-up and teardown
  are pykka's. Only the body of the loop is restated, as a bounded *run* of
  at most ``throughput`` messages scheduled with ``loop.call_soon``.
* **Mailbox.** A deque plus a *scheduled* flag. A sender appends and, if the
  flag is clear, sets it and schedules a run (``call_soon`` on the loop
  thread; from any other, through the loop's :class:`LoopHandoff`, which
  wakes the loop once for all the runs other threads ask for meanwhile). The
  flag is a plain bool: every run happens on the one loop thread, so two runs of one actor can
  never overlap, and a rare duplicate scheduling (two foreign senders racing)
  only costs an empty run. The run clears the flag *before* it looks at the
  deque for more mail, so no message is ever stranded.
* **Fairness.** A run handles at most ``throughput`` messages (default 50),
  then goes to the back of the loop's ready queue: one flooded actor delays
  the others by one run, never by its whole backlog.
* **Containment.** An exception of any kind from a handler (``SystemExit``
  and other ``BaseException`` included) fails that actor alone: it is logged,
  ``on_failure`` runs, and the actor stops. pykka's rule of stopping every
  registered actor in the process (``ActorRegistry.stop_all``) is never
  applied, so one session cannot stop another session, another Hive, or the
  application's own pykka actors. ``KeyboardInterrupt`` is re-raised after
  the actor is stopped, so Ctrl-C still reaches the program.
* **No global registry.** Actors are not added to pykka's process-wide
  ``ActorRegistry`` (a list whose unregister is linear in its length: with
  100,000 sessions every passivation would pay for all of them). The Hive's
  supervisor is the registry of its sessions.
* **Dead letters.** A ``tell`` that reaches an actor after it stopped (the
  sender looked the actor up just before) is handed to the actor's
  :meth:`~sessionhive.runtime.HiveActor.dead_letters` handler instead of being
  dropped; an ``ask`` gets :class:`pykka.ActorDeadError`.
* **Cost.** An idle actor is its own state, a ref, a mailbox without a deque
  (created on first mail, released when drained) and a light stopped flag.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any

import pykka
from pykka import ActorDeadError
from pykka._envelope import Envelope

from sessionhive.runtime._base import (
    SpawningBackend,
    fail_contained,
    handle_contained,
    loop_handoff,
    reject_dead_mail,
)
from sessionhive.runtime._pooled import PooledFuture

if TYPE_CHECKING:
    from pykka._actor import ActorInbox


__all__ = ["AsyncioActor", "AsyncioBackend"]

logger = logging.getLogger(__name__)

_urns = count(1)


class _StopFlag(threading.Event):
    """``actor_stopped`` without a condition variable: only the loop thread sets it.

    pykka reads it (``ActorRef.is_alive``) from any thread and sets it from
    the actor's own context; nothing in this runtime waits on it, so the
    lock and condition of a real :class:`threading.Event` (about 1 KB per
    actor) are not needed.
    """

    def __init__(self) -> None:  # no super().__init__(): no condition variable
        self._stopped = False

    def is_set(self) -> bool:
        return self._stopped

    def set(self) -> None:
        self._stopped = True

    def clear(self) -> None:
        self._stopped = False

    def wait(self, timeout: float | None = None) -> bool:  # noqa: ARG002 - threading.Event's signature
        msg = "an asyncio actor's stopped flag cannot be waited on; use ActorRef.stop(block=True)"
        raise RuntimeError(msg)

    def __repr__(self) -> str:
        return f"<_StopFlag {'set' if self._stopped else 'unset'}>"


class _LoopMailbox:
    """An actor's inbox, drained on its backend's event loop (pykka's ``ActorInbox`` protocol)."""

    __slots__ = ("_actor", "_backend", "_dead_letters", "_queue", "_scheduled", "_started")

    def __init__(self, backend: AsyncioBackend) -> None:
        self._queue: deque[Envelope[Any]] | None = None
        # Born scheduled: mail sent before the actor starts (from its own
        # __init__, say) waits for the first run, which runs on_start first.
        self._scheduled = True
        self._backend = backend
        self._actor: AsyncioActor | None = None
        self._started = False
        self._dead_letters: Callable[[Any], None] | None = None

    # -- pykka's ActorInbox protocol
    def put(self, envelope: Envelope[Any], /) -> None:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(envelope)
        if not self._scheduled:
            self._scheduled = True
            self._backend.schedule(self._run)

    def get(self) -> Envelope[Any]:
        assert self._queue, "get() on an empty mailbox"
        return self._queue.popleft()

    def empty(self) -> bool:
        return not self._queue

    def qsize(self) -> int:
        """Messages waiting (not counting the one being handled)."""
        return len(self._queue) if self._queue else 0

    __len__ = qsize

    def deliver_inline(self, envelope: Envelope[Any]) -> bool:
        """Handle ``envelope`` now, in the caller's frame, if the actor is idle; False if it is not.

        For a caller already on the loop thread and outside any handler (a
        coroutine awaiting a Hive call): the message is handled exactly as a
        scheduled run would handle it, one at a time, without a trip through
        the loop's ready queue.
        """
        backend = self._backend
        actor = self._actor
        if self._scheduled or self._queue or backend.handling or actor is None or not self._started:
            return False
        if actor.actor_stopped.is_set():
            return False
        self._scheduled = True
        backend.handling = True
        try:
            handle_contained(actor, envelope)
        finally:
            backend.handling = False
            self._scheduled = False
        if self._queue or actor.actor_stopped.is_set():
            self._scheduled = True
            backend.schedule(self._run)  # more mail, or a stop to tear down
        return True

    # -- runtime
    def bind(self, actor: AsyncioActor) -> None:
        self._actor = actor
        self._backend.schedule(self._run)  # we hold the flag since __init__

    def _run(self) -> None:
        actor = self._actor
        if actor is None:
            self._scheduled = False
            reject_dead_mail(self._queue, self._dead_letters)
            return
        backend = self._backend
        backend.handling = True
        try:
            if not self._started:
                self._started = True
                actor._asyncio_setup()
            stopped = actor.actor_stopped
            queue = self._queue
            if queue:
                budget = backend.throughput
                while queue and budget and not stopped.is_set():
                    budget -= 1
                    handle_contained(actor, queue.popleft())
        finally:
            backend.handling = False
        if stopped.is_set():
            # Asked only now, not at start: an idle actor carries no handler.
            self._dead_letters = actor.dead_letters()
            actor._actor_loop_teardown()
            self._actor = None  # stale refs must not keep the actor's state alive
            self._scheduled = False
            reject_dead_mail(self._queue, self._dead_letters)
            return
        # Cleared before looking for more mail: a message appended after this
        # line schedules its own run.
        self._scheduled = False
        if self._queue:
            self._scheduled = True
            self._backend.schedule(self._run)
        else:
            self._queue = None


class AsyncioActor(pykka.Actor):
    """A pykka actor whose messages are handled on its backend's event loop.

    Semantics are pykka's (one message at a time, FIFO per sender,
    ``on_start`` first, ``on_stop``/``on_failure``), except the two listed in
    the module docstring: no ``stop_all`` on a ``BaseException``, and no
    global registry. Spawn it with :meth:`AsyncioBackend.spawn`.
    """

    _asyncio_backend: AsyncioBackend | None = None
    """The backend this concrete class runs on; set by :meth:`AsyncioBackend.spawn`."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # pykka's fields without a uuid4 and a threading.Event each (the
        # bulk of an actor's start-up cost and size); see _StopFlag.
        backend = type(self)._asyncio_backend
        if backend is None:
            msg = f"{type(self).__name__} has no event loop: start it with AsyncioBackend.spawn()"
            raise RuntimeError(msg)
        self.actor_urn = f"urn:sessionhive:{next(_urns)}"
        self.actor_inbox = _LoopMailbox(backend)
        self.actor_stopped = _StopFlag()
        self._actor_ref = pykka.ActorRef(self)

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:  # pragma: no cover - __init__ builds the inbox
        msg = "AsyncioActor builds its mailbox in __init__"
        raise NotImplementedError(msg)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return PooledFuture()

    def _start_actor_loop(self) -> None:
        inbox = self.actor_inbox
        assert isinstance(inbox, _LoopMailbox)
        inbox.bind(self)

    def dead_letters(self) -> Callable[[Any], None] | None:
        return None  # HiveActor overrides it; here for actors that are not HiveActors

    def _asyncio_setup(self) -> None:
        try:
            self._actor_loop_setup()
        except BaseException:  # noqa: BLE001 - contained: this actor alone stops
            fail_contained(self)


class AsyncioBackend(SpawningBackend):
    """Runs actors on one asyncio event loop (see the module docstring).

    Args:
        loop: the event loop that drains every mailbox. It must be running
            (or about to run) on one thread; actors are spawned from that
            thread or from any other.
        throughput: the most messages one actor handles per run before the
            loop moves on to other callbacks (fairness).
    """

    name = "asyncio"
    actor_base = AsyncioActor

    def __init__(self, loop: asyncio.AbstractEventLoop, throughput: int = 50) -> None:
        super().__init__()
        if throughput < 1:
            msg = f"AsyncioBackend throughput must be at least 1 message per run, got {throughput}"
            raise ValueError(msg)
        self.loop = loop
        self.throughput = throughput
        self.loop_thread_id: int | None = None
        self.handling = False  # True while a handler runs (on the loop thread): no inline delivery then
        self._call_soon = loop.call_soon
        # From other threads (the writer's, tool threads), mailboxes to run are handed over in
        # batches: one loop wake-up for every session a group commit answers, not one each.
        self._handoff = loop_handoff(loop)

    def __repr__(self) -> str:
        return f"<AsyncioBackend loop={self.loop!r} throughput={self.throughput}>"

    def bind_thread(self, thread_id: int) -> None:
        """Record which thread runs the loop (set once, before any actor runs)."""
        self.loop_thread_id = thread_id

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.loop_thread_id

    def tell_inline(self, ref: pykka.ActorRef[Any], message: Any) -> None:
        """``ref.tell(message)``, handled at once if sent from the loop (not a handler) to an idle actor."""
        if not ref.is_alive():
            raise ActorDeadError(f"{ref} not found")
        envelope = Envelope(message)
        inbox = ref.actor_inbox
        if (
            isinstance(inbox, _LoopMailbox)
            and threading.get_ident() == self.loop_thread_id
            and inbox.deliver_inline(envelope)
        ):
            return
        inbox.put(envelope)

    def schedule(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop soon: no system call when already on the loop thread."""
        if threading.get_ident() == self.loop_thread_id:
            self._call_soon(callback)
            return
        try:
            self._handoff.add(callback)
        except RuntimeError:  # the loop is closed: nobody will ever run this mailbox
            logger.debug("sessionhive: a message reached an actor after its event loop closed")

    def schedule_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop after ``delay`` seconds; call it on the loop thread."""
        self.loop.call_later(delay, callback)

    def _concrete_attributes(self) -> dict[str, Any]:
        return {"_asyncio_backend": self}

    def _start(
        self, concrete: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> pykka.ActorRef[Any]:
        actor = concrete(*args, **kwargs)
        actor._start_actor_loop()
        ref: pykka.ActorRef[Any] = actor.actor_ref
        return ref

    def shutdown(self) -> None:
        """Refuse further spawns. Actors are stopped by their owners (the Hive stops its own)."""
        self._shut_down = True
