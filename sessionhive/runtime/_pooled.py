"""A pykka actor runtime that runs many actors on a small pool of threads.

pykka's :class:`~pykka.ThreadingActor` gives every actor an OS thread of its
own. That is simple and fair, but each idle actor then costs a thread stack,
starting one costs a thread start, and every message costs a thread wake-up
under the GIL. sessionhive keeps one actor per session, and a process may host
a hundred thousand mostly idle sessions, so :class:`PooledBackend` runs
actors the way Akka's dispatchers do: an idle actor is only its state and a
mailbox; a fixed pool of dispatcher threads runs whichever actors have mail.

Design
------
* **Built on pykka's own extension points.** :class:`PooledActor` is a
  :class:`pykka.Actor` that implements the three runtime hooks
  (``_create_actor_inbox``, ``_create_future``, ``_start_actor_loop``).
  ``ActorRef``, proxies, futures, the ``ActorRegistry``, ``_handle_receive``
  (proxy calls, the stop message), ``_stop``, ``_handle_failure``,
  ``on_start``/``on_stop``/``on_failure`` and the start-up and teardown halves
  of pykka's actor loop (``_actor_loop_setup``, ``_actor_loop_teardown``) are
  pykka's, unchanged. Only the middle of the loop, which in pykka blocks a
  thread on the inbox, is restated here as a bounded *turn*; its per-message
  body mirrors ``Actor._actor_loop_running`` line for line.
* **Mailbox.** A :class:`collections.deque` of envelopes (``append`` and
  ``popleft`` are atomic) plus a *scheduled* flag. A sender appends, then
  tries to claim the flag; whoever claims it puts the mailbox on the pool's
  run queue. The flag is held for as long as the mailbox is queued or
  running, so no two dispatcher threads ever run the same actor, and messages
  are handled one at a time in the order they were appended (FIFO per
  sender). The flag is a :class:`threading.Lock` used only through
  non-blocking ``acquire`` (an atomic test-and-set) and ``release``; it is the
  actor runtime's own bookkeeping, never held while waiting and never guards
  session state.
* **Turns and fairness.** A dispatcher thread takes a mailbox from the shared
  FIFO run queue and handles at most ``throughput`` messages (default 50). If
  mail remains, the mailbox goes to the back of the run queue still holding
  its flag; otherwise the flag is released, and the mailbox is looked at once
  more so that a message appended just before the release is not stranded.
  A flooded actor therefore delays a quiet one by at most one turn per
  queued actor ahead of it, never by its whole backlog.
* **Life cycle.** The mailbox is created with its flag held, so messages
  sent before the actor is started (for example from its own ``__init__``)
  wait; ``_start_actor_loop`` schedules the first turn, which runs
  ``on_start`` before any message. A stop message, a failure in a ``tell``
  handler or in ``on_start`` ends the actor as in pykka: remaining messages
  are answered by pykka's teardown (asks get :class:`pykka.ActorDeadError`).
  The mailbox then drops its reference to the actor, so a stopped actor's
  state can be collected even while stale refs exist (pykka 4.5's
  ``ActorRef`` holds its actor only weakly), and it answers any
  message that slips in after the teardown (a sender that passed
  ``is_alive()`` just before the stop) with ``ActorDeadError`` rather than
  leaving the asker waiting forever, as a stopped ``ThreadingActor`` would.
* **BaseException.** Unlike pykka, a ``BaseException`` from a handler (or
  from ``on_start``) fails that actor alone, as an ``Exception`` would: it is
  logged, ``on_failure`` runs, the actor stops. pykka would stop every
  registered actor of the process (``ActorRegistry.stop_all()``), which lets
  one session's ``sys.exit()`` stop every other session, every other Hive
  and the application's own actors.
* **Dead letters.** A ``tell`` that reaches a dead actor's mailbox goes to
  the actor's ``dead_letters()`` handler (asks get ``ActorDeadError``).
* **Futures.** Asks return a :class:`PooledFuture`, a :class:`pykka.Future`
  with pykka's full contract (``get(timeout=)``, ``map``/``join``/``filter``/
  ``reduce``, get hooks, ``await``, ``queue.Full`` on a second ``set``) built
  on a lock used as a one-shot latch instead of
  :class:`pykka.ThreadingFuture`'s condition variable. It is created for every
  ask and mostly set once and read once, and the lighter object halves the
  cost of an ask round trip (measured in ``bench/bench_actor_backends.py``).

The rule that makes a shared pool safe
--------------------------------------
**No handler may block on another actor's future** (``ask`` with
``block=True``, ``future.get()``, ``ref.stop(block=True)``, ``proxy.x.get()``),
nor otherwise wait for another actor to do something. The pool's threads are
shared: a handler that waits for an actor which needs a pool thread to run can
wait forever (with a pool of one thread, it always does). So that this shows
up as an error rather than a hang, :meth:`PooledFuture.get` called on a
dispatcher thread for a future that is not done yet raises
:class:`RuntimeError` (a ``ThreadingFuture`` of a thread-backed actor cannot
be checked, and is the caller's responsibility). Actors talk with
``tell``; a request that needs an answer carries a
:class:`concurrent.futures.Future` or a reply-to ref that the receiver
completes (see :mod:`sessionhive.runtime._base`). A handler that does slow work
(an LLM call, a tool run) hands it to a thread of its own and reports back
with ``tell``. Waiting on something outside the actor system (a socket, a
queue fed by a client thread) cannot deadlock the pool, but parks one of its
threads, which shrinks the pool while it lasts.

Costs
-----
An idle actor is about 2.5 KB (pykka's ``Actor``, ``ActorRef`` and stop
``Event`` included) against about 22 KB resident for a ``ThreadingActor``;
see ``bench/bench_actor_backends.py`` for start-up and ask figures. Each
live actor is a dozen objects tracked by the cyclic garbage collector (three
of them this runtime's), so with 100,000 live actors a full collection takes
about half a second on a small machine; a service holding that many can call
:func:`gc.freeze` once they are loaded.

Compatibility
-------------
Tested against pykka 4.1, 4.3, 4.4 and 4.5 (the project pins
``pykka>=4.1,<4.6`` in ``setup.cfg``). The runtime relies on the hooks listed above and on
``Actor._actor_loop_setup``/``_actor_loop_teardown``, which pykka 4.x has
kept unchanged; a new pykka minor version must pass
``tests/test_pooled_backend.py`` before the pin is widened.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import count
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

import pykka
from pykka import ActorRegistry

from sessionhive.runtime._base import SpawningBackend, fail_contained, handle_contained, reject_dead_mail

if TYPE_CHECKING:
    from pykka._actor import ActorInbox
    from pykka._envelope import Envelope
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

__all__ = ["PooledActor", "PooledBackend", "PooledFuture"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_pool_numbers = count(1)

# Marks dispatcher threads, so that a handler blocking on an actor future
# fails at once instead of deadlocking the pool.
_dispatcher = threading.local()


class _Outcome(NamedTuple):
    value: Any
    exc_info: OptExcInfo | None


class PooledFuture(pykka.Future[T]):
    """The future an ask to a :class:`PooledActor` returns.

    Behaves as :class:`pykka.ThreadingFuture`: any thread may block in
    :meth:`get` (with a timeout), several threads may wait on one future, the
    value or exception is delivered once, a second ``set``/``set_exception``
    (or one after :meth:`set_get_hook`) raises :class:`queue.Full`, and
    ``map``/``join``/``filter``/``reduce``/``await`` come from
    :class:`pykka.Future`.
    """

    def __init__(self) -> None:
        super().__init__()
        # Two runtime-internal locks, never guarding shared state and never
        # held while waiting on anything else. _claimed is a test-and-set:
        # the first of set/set_exception/set_get_hook wins it. _latch is held
        # from birth until the outcome (or get hook) is published; each
        # waiter acquires it and releases it at once, to wake the next.
        self._claimed = threading.Lock()
        self._latch = threading.Lock()
        self._latch.acquire()
        self._outcome: _Outcome | None = None

    def get(self, *, timeout: float | None = None) -> T:
        outcome = self._outcome
        if outcome is None and self._get_hook is None:
            if getattr(_dispatcher, "pool", None) is not None and (timeout is None or timeout > 0):
                msg = (
                    "a PooledActor handler waited on an unfinished actor future, which can deadlock "
                    "the shared dispatcher pool: send a message with tell() and have the other "
                    "actor reply, or stop actors with stop(block=False)"
                )
                raise RuntimeError(msg)
            if timeout is None:
                self._latch.acquire()
            elif not self._latch.acquire(timeout=max(timeout, 0.0)):
                msg = f"{timeout} seconds"
                raise pykka.Timeout(msg)
            self._latch.release()
            outcome = self._outcome
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        assert outcome is not None
        if outcome.exc_info is not None:
            # Raised as ThreadingFuture raises it: with the handler's traceback.
            exc_type, exc_value, exc_traceback = outcome.exc_info
            assert exc_type is not None
            if exc_value is None:
                exc_value = exc_type()
            if exc_value.__traceback__ is not exc_traceback:
                raise exc_value.with_traceback(exc_traceback)
            raise exc_value
        value: T = outcome.value
        return value

    def set(self, value: T | None = None) -> None:
        self._publish(_Outcome(value, None))

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        assert exc_info is None or len(exc_info) == 3
        self._publish(_Outcome(None, sys.exc_info() if exc_info is None else exc_info))

    def set_get_hook(self, func: GetHookFunc[T]) -> None:
        if not self._claimed.acquire(blocking=False):
            if self._get_hook is None:
                raise queue.Full  # a value or exception came first
            super().set_get_hook(func)  # replacing a hook is allowed, as in pykka
            return
        super().set_get_hook(func)
        self._latch.release()

    def _publish(self, outcome: _Outcome) -> None:
        if not self._claimed.acquire(blocking=False):
            raise queue.Full
        self._outcome = outcome
        self._latch.release()


class _Mailbox:
    """An actor's inbox, and its place in its pool's run queue.

    Implements pykka's ``ActorInbox`` protocol (``put``/``get``/``empty``),
    plus ``qsize`` as ThreadingActor's ``queue.Queue`` inbox has it. ``get``
    never blocks: only the actor itself may call it (pykka's teardown, or an
    ``on_failure`` draining its inbox), and only when the inbox is not empty.
    """

    __slots__ = ("_actor", "_dead_letters", "_pool", "_queue", "_scheduled", "_started")

    def __init__(self) -> None:
        self._queue: deque[Envelope[Any]] = deque()
        # Runtime-internal test-and-set flag (see module docstring): held
        # while the mailbox is queued or running. Born held, so messages sent
        # before the actor starts wait for its first turn.
        self._scheduled = threading.Lock()
        self._scheduled.acquire()
        self._actor: PooledActor | None = None
        self._pool: _Pool | None = None
        self._started = False
        self._dead_letters: Callable[[Any], None] | None = None

    def put(self, envelope: Envelope[Any], /) -> None:
        self._queue.append(envelope)
        if self._scheduled.acquire(blocking=False):
            # The flag is first released only after bind(), so _pool is set.
            assert self._pool is not None
            self._pool.submit(self)

    def get(self) -> Envelope[Any]:
        return self._queue.popleft()

    def empty(self) -> bool:
        return not self._queue

    def qsize(self) -> int:
        """Messages waiting (not counting the one being handled), as :meth:`queue.Queue.qsize`."""
        return len(self._queue)

    def bind(self, actor: PooledActor, pool: _Pool) -> None:
        """Attach the started actor and schedule its first turn (which runs on_start)."""
        self._actor = actor
        self._pool = pool
        dead_letters = getattr(actor, "dead_letters", None)
        self._dead_letters = dead_letters() if callable(dead_letters) else None
        pool.submit(self)  # we hold the flag since __init__

    def run(self, throughput: int) -> None:
        """Run one turn of the actor. Called by a dispatcher thread holding the flag."""
        actor = self._actor
        if actor is not None:
            setup = not self._started
            self._started = True
            if not actor._pooled_turn(self._queue, throughput, setup=setup):
                self._actor = None  # dead: stale refs must not keep its state alive
        self._yield_turn()

    def abandon(self) -> None:
        """End the actor without running it: its pool has shut down. Caller holds the flag."""
        actor = self._actor
        if actor is not None:
            self._actor = None
            ActorRegistry.unregister(actor.actor_ref)
            actor.actor_stopped.set()
        self._yield_turn()

    def _yield_turn(self) -> None:
        while True:
            if self._actor is None:
                reject_dead_mail(self._queue, self._dead_letters)
            elif self._queue:
                assert self._pool is not None
                self._pool.submit(self)  # more mail: back of the run queue, still scheduled
                return
            self._scheduled.release()
            # A sender that appended after our last look found the flag held
            # and left the scheduling to us: look once more.
            if not self._queue or not self._scheduled.acquire(blocking=False):
                return


class _Pool:
    """Dispatcher threads sharing one FIFO run queue of scheduled mailboxes."""

    def __init__(self, threads: int, throughput: int, name: str) -> None:
        self.throughput = throughput
        self.name = name
        self._run_queue: SimpleQueue[_Mailbox | None] = SimpleQueue()
        self._finished = False
        self.threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, mailbox: _Mailbox) -> None:
        self._run_queue.put(mailbox)
        if self._finished:
            # No dispatcher will ever take it. Put before checking, so that
            # either this thread or close() sees it.
            self._reap()

    def close(self, deadline: float | None) -> None:
        """Stop the threads once every mailbox queued before now has had its turn."""
        for _ in self.threads:
            self._run_queue.put(None)
        for thread in self.threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self.threads):
            logger.warning(
                "%s: dispatcher threads still busy at shutdown; left running as daemons", self.name
            )
        self._finished = True
        self._reap()

    def _reap(self) -> None:
        while True:
            try:
                mailbox = self._run_queue.get_nowait()
            except Empty:
                return
            if mailbox is not None:
                mailbox.abandon()

    def _work(self) -> None:
        _dispatcher.pool = self
        get = self._run_queue.get
        throughput = self.throughput
        while (mailbox := get()) is not None:
            try:
                mailbox.run(throughput)
            except Exception:  # a runtime bug: keep the thread for the other actors
                logger.exception("%s: error in the actor runtime", self.name)


class PooledActor(pykka.Actor):
    """A pykka actor whose messages are handled by a shared pool of dispatcher threads.

    Semantics are pykka's: one message at a time, FIFO per sender, ``on_start``
    before the first message, ``on_stop``/``on_failure``, ``tell``/``ask``/
    proxies/futures, registry membership, and stop processed in order. The
    difference is where handlers run: on one of the pool's threads, a
    different one from turn to turn, so a handler must never block on another
    actor's future (see the module docstring).

    Do not start a ``PooledActor`` subclass directly; spawn it with
    :meth:`PooledBackend.spawn`, which binds it to that backend's pool.
    """

    _pooled_pool: ClassVar[_Pool | None] = None
    """The pool this concrete class runs on; set by :meth:`PooledBackend.spawn`."""

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        return _Mailbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return PooledFuture()

    def _start_actor_loop(self) -> None:
        pool = type(self)._pooled_pool
        inbox = self.actor_inbox
        if pool is None or not isinstance(inbox, _Mailbox):
            # Actor.start() registered us already: do not leave a zombie behind.
            ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            msg = f"{type(self).__name__} has no dispatcher pool: start it with PooledBackend.spawn()"
            raise RuntimeError(msg)
        inbox.bind(self, pool)

    def _pooled_turn(self, envelopes: deque[Envelope[Any]], throughput: int, *, setup: bool) -> bool:
        """Handle up to ``throughput`` messages; return False once the actor is dead and torn down."""
        stopped = self.actor_stopped
        if setup:
            try:
                self._actor_loop_setup()
            except BaseException:  # noqa: BLE001  # pykka's BaseException rule, as for handlers
                fail_contained(self)
        for _ in range(throughput):
            if stopped.is_set() or not envelopes:
                break
            handle_contained(self, envelopes.popleft())
        if not stopped.is_set():
            return True
        self._actor_loop_teardown()
        return False


class PooledBackend(SpawningBackend):
    """Runs actors on a fixed pool of dispatcher threads (see the module docstring).

    An idle actor holds no thread, only its state and an empty mailbox, so a
    process can keep a hundred thousand of them. Each backend has its own
    pool; several backends in one process are independent.

    Args:
        threads: dispatcher threads; default ``os.cpu_count()``.
        throughput: the most messages one actor handles per turn before the
            pool moves on to the next scheduled actor (fairness).

    Example:
        ```py
        backend = PooledBackend(threads=4)
        ref = backend.spawn(SessionActor, session_id, config)
        ref.tell(Generate(...))
        ...
        backend.shutdown()
        ```
    """

    name = "pooled"
    actor_base = PooledActor

    def __init__(self, threads: int | None = None, throughput: int = 50) -> None:
        super().__init__()
        if threads is None:
            threads = os.cpu_count() or 1
        if threads < 1:
            msg = f"PooledBackend needs at least 1 thread, got threads={threads}"
            raise ValueError(msg)
        if throughput < 1:
            msg = f"PooledBackend throughput must be at least 1 message per turn, got {throughput}"
            raise ValueError(msg)
        self.threads = threads
        self.throughput = throughput
        self._pool = _Pool(threads, throughput, f"sessionhive-pool{next(_pool_numbers)}")

    def __repr__(self) -> str:
        return f"<PooledBackend {self._pool.name} threads={self.threads} throughput={self.throughput}>"

    def _concrete_attributes(self) -> dict[str, Any]:
        return {"_pooled_pool": self._pool}

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop this backend's actors that are still alive, then its dispatcher threads.

        Live actors are sent pykka's stop message, so each handles the
        messages sent before it and runs ``on_stop``; the stops are sent all
        at once and run concurrently, so an application whose actors depend
        on each other should stop them itself first. The threads exit once
        the run queue has drained. Afterwards a message to one of this
        backend's actors gets :class:`pykka.ActorDeadError`, and
        :meth:`spawn` raises. Idempotent. ``timeout`` bounds the whole call;
        threads still busy then are left to finish as daemon threads.

        Raises:
            RuntimeError: called from one of this backend's own threads (it
                would wait for itself).
        """
        if self._shut_down:
            return
        if threading.current_thread() in self._pool.threads:
            msg = f"{self!r}.shutdown() called from its own dispatcher thread"
            raise RuntimeError(msg)
        self._shut_down = True
        deadline = None if timeout is None else time.monotonic() + timeout
        pool = self._pool
        stops = [
            ref.stop(block=False)
            # Oldest first: pykka's registry is a list searched from the
            # front, so unregistering the oldest actors first is cheapest.
            for ref in ActorRegistry.get_all()
            if getattr(ref.actor_class, "_pooled_pool", None) is pool
        ]
        try:
            for stop in stops:
                stop.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except pykka.Timeout:
            logger.warning("%s: actors still running after %ss; shutting down anyway", pool.name, timeout)
        pool.close(deadline)
