"""The threads that run blocking tool work, shared so that one stuck session cannot hold them all.

A :class:`ToolLane` hands out a bounded number of slots, and at most
``per_session`` of them to any one session, so a session whose tools hang
(a ``time.sleep(120)``, a read on a FIFO) waits for its own slots while
other sessions keep theirs. Calls run on daemon threads (reused while they
are idle, as a pool's would be): when a call is cancelled or times out, its
slot is given back at once and its thread is *abandoned*, left to finish on
its own, counted in ``sessionhive_tool_threads_abandoned``, and never
keeping the process alive at exit (``concurrent.futures`` pools join their
threads at exit, so one hung tool would hold ``stop()`` hostage; these
threads are not joined). The number of threads is bounded by the slots
plus the abandoned calls still running.

Slots are taken and given back from any thread and any event loop: one
executor serves sessions that may run on several loops (the threaded and
pooled actor backends), so waiting is a future on the waiter's own loop,
granted with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sessionhive.metrics.registry import abandoned_tool_threads
from sessionhive.runtime import loop_handoff

__all__ = ["LaneClosed", "ToolLane", "run_on_thread"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
# An idle thread waits this long for another call before it exits.
_IDLE_THREAD_S = 30.0


class _DaemonThreads:
    """Daemon threads that run submitted callables, reusing idle ones and starting more as needed."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # Not session state: the pool's own count of idle threads, changed by submitters and by the
        # worker threads themselves; the lock makes "claim an idle thread or start one" one step.
        self._lock = threading.Lock()
        # Guarded by _lock: threads waiting for a job that no submit has claimed yet.
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # claimed: one waiting thread will take this job
                self._jobs.put(job)
                return
        threading.Thread(target=self._work, args=(job,), name="sessionhive-tool", daemon=True).start()

    def _work(self, job: Callable[[], None]) -> None:
        while True:
            job()
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=_IDLE_THREAD_S)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # nobody claimed a waiting thread: one can go
                        self._idle -= 1
                        return
                # Every waiting thread was claimed as this one timed out: a job is on its way.
                job = self._jobs.get()


_threads = _DaemonThreads()


class LaneClosed(Exception):
    """The lane was closed (its executor's Hive is stopping) while a call waited for a slot."""


@dataclass(eq=False)
class _Waiter:
    session_id: str
    loop: asyncio.AbstractEventLoop
    granted: asyncio.Future[None]


class ToolLane:
    """At most ``capacity`` calls at once, at most ``per_session`` of them from one session.

    Waiters are served first come, first served among those whose session
    is under its share, so a session at its share never holds up others.
    """

    def __init__(self, name: str, capacity: int, per_session: int) -> None:
        self.name = name
        self.capacity = capacity
        self.per_session = min(per_session, capacity)
        self._lock = threading.Condition()
        # Guarded by _lock: slots held per session, slots held in all, who waits, closed.
        self._held: dict[str, int] = {}
        self._busy = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False

    @property
    def busy(self) -> int:
        """Slots held now."""
        return self._busy

    def held_by(self, session_id: str) -> int:
        """Slots ``session_id`` holds now."""
        return self._held.get(session_id, 0)

    def _fits(self, session_id: str) -> bool:
        return self._busy < self.capacity and self._held.get(session_id, 0) < self.per_session

    def _take(self, session_id: str) -> None:
        self._busy += 1
        self._held[session_id] = self._held.get(session_id, 0) + 1

    async def acquire(self, session_id: str) -> None:
        """Wait for a slot for ``session_id``.

        :raises LaneClosed: the lane was closed before a slot came.
        """
        with self._lock:
            if self._closed:
                raise LaneClosed(self.name)
            if self._fits(session_id):
                self._take(session_id)
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(session_id, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            # The slot was granted as the cancellation came. Either _grant is still on its
            # way (it finds the future cancelled and gives the slot back), or it already
            # ran and the slot is ours to give back.
            granted = waiter.granted
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self.release(session_id)
            raise

    def release(self, session_id: str) -> None:
        """Give a slot of ``session_id`` back, handing it to the first waiter it fits."""
        with self._lock:
            self._busy -= 1
            if not self._busy:
                self._lock.notify_all()
            left = self._held[session_id] - 1
            if left:
                self._held[session_id] = left
            else:
                del self._held[session_id]
            chosen = None
            for waiter in self._waiters:
                if self._fits(waiter.session_id):
                    chosen = waiter
                    break
            if chosen is None:
                return
            self._waiters.remove(chosen)
            self._take(chosen.session_id)
        try:
            loop_handoff(chosen.loop).add(self._grant, chosen)  # one loop wake-up per batch
        except RuntimeError:  # its loop is closed: nobody will use the slot
            self.release(chosen.session_id)

    def _grant(self, waiter: _Waiter) -> None:
        if waiter.granted.done():  # cancelled meanwhile
            self.release(waiter.session_id)
        else:
            waiter.granted.set_result(None)

    def wait_idle(self) -> None:
        """Block until no slot is held (abandoned calls hold none)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._busy)

    def close(self) -> None:
        """Refuse new calls and fail every waiting one with :class:`LaneClosed`; running ones go on."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            try:
                waiter.loop.call_soon_threadsafe(_fail, waiter.granted, self.name)
            except RuntimeError:
                pass  # its loop is gone, and the call with it


def _fail(granted: asyncio.Future[None], name: str) -> None:
    if not granted.done():
        granted.set_exception(LaneClosed(name))


class _Job(Generic[_T]):
    """One call on a thread; either it finishes and gives its slot back, or it is abandoned."""

    def __init__(
        self,
        func: Callable[[], _T],
        lane: ToolLane,
        session_id: str,
        tool: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.func = func
        self.lane = lane
        self.session_id = session_id
        self.tool = tool
        self.loop = loop
        self.result: asyncio.Future[_T] = loop.create_future()
        # Not session state: the worker thread and the event loop (cancel, timeout) race to
        # settle one call; the lock lets exactly one of them return its slot.
        self._lock = threading.Lock()
        # Guarded by _lock: exactly one of "the thread finished" and "the call gave up" owns the slot.
        self._finished = False
        self._abandoned_at: float | None = None

    def run(self) -> None:
        value: _T | None = None
        error: BaseException | None = None
        try:
            value = self.func()
        # Even a SystemExit must reach the awaiting call (which re-raises it) and free the slot.
        except BaseException as exc:  # noqa: BLE001
            error = exc
        with self._lock:
            self._finished = True
            abandoned_at = self._abandoned_at
        if abandoned_at is not None:
            abandoned_tool_threads.add(-1)
            logger.info(
                "tool %r of session %r returned %.1f s after its call gave up on it",
                self.tool,
                self.session_id,
                time.monotonic() - abandoned_at,
            )
            return
        self.lane.release(self.session_id)
        try:
            loop_handoff(self.loop).add(self._deliver, value, error)  # one loop wake-up per batch
        except RuntimeError:
            pass  # the caller's loop is closed: nobody waits for the result

    def _deliver(self, value: _T | None, error: BaseException | None) -> None:
        if self.result.done():
            return
        if error is not None:
            self.result.set_exception(error)
        else:
            self.result.set_result(value)  # type: ignore[arg-type]  # None only with an error

    def abandon(self, why: str) -> None:
        """Give the slot back now and leave the thread to finish alone (unless it just did)."""
        with self._lock:
            if self._finished:
                return
            self._abandoned_at = time.monotonic()
        abandoned_tool_threads.add(1)
        self.lane.release(self.session_id)
        logger.warning(
            "tool %r of session %r is still running after its call was %s; its slot is free again and "
            "its thread is left to finish on its own",
            self.tool,
            self.session_id,
            why,
        )


async def run_on_thread(
    lane: ToolLane,
    session_id: str,
    tool: str,
    func: Callable[[], _T],
    *,
    timeout_s: float | None = None,
) -> _T:
    """Run ``func`` on a daemon thread, in a slot of ``lane`` held for ``session_id``.

    :raises LaneClosed: the lane closed before a slot came.
    :raises TimeoutError: ``func`` did not return within ``timeout_s`` (its thread is abandoned).
    :raises asyncio.CancelledError: the caller was cancelled (its thread is abandoned).
    """
    await lane.acquire(session_id)
    job = _Job(func, lane, session_id, tool, asyncio.get_running_loop())
    try:
        _threads.submit(job.run)
    except BaseException:
        lane.release(session_id)
        raise
    try:
        done, _ = await asyncio.wait({job.result}, timeout=timeout_s)
    except asyncio.CancelledError:
        job.abandon("cancelled")
        raise
    if not done:
        job.abandon(f"timed out after {timeout_s:g} s")
        raise TimeoutError
    return job.result.result()
