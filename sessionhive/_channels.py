"""Event channels between the actor world and user code (threads or asyncio).

A session never blocks on a consumer: ``offer`` always returns at once. A
bounded channel (a subscription) drops events when its consumer falls behind
and, as soon as there is room again, tells the consumer how many it lost with
an :class:`~sessionhive.events.EventsDropped` event.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Protocol

from sessionhive.model.events import AgentEvent, EventsDropped

__all__ = ["AsyncChannel", "EventSink", "ThreadChannel"]

_CLOSED = object()


class EventSink(Protocol):
    """The producer side of a channel; only the owning session actor calls it."""

    def offer(self, event: AgentEvent) -> None: ...

    def close(self) -> None: ...


class _DropMark:
    """Placed in a queue where events went missing: ``total`` drops had happened by then."""

    __slots__ = ("total",)

    def __init__(self, total: int) -> None:
        self.total = total


class ThreadChannel:
    """A channel read by a thread. ``maxsize=0`` means unbounded (a turn's own stream).

    Drop accounting needs no lock: the producer alone writes ``_dropped_total``
    and the consumer alone writes ``_reported``; each reads the other's
    counter, which can only grow.
    """

    def __init__(
        self, maxsize: int = 0, on_drop: Callable[[int], None] | None = None, session_id: str = ""
    ) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._maxsize = maxsize
        self._session_id = session_id
        self._dropped_total = 0  # producer-owned
        self._marked_total = 0  # producer-owned
        self._reported = 0  # consumer-owned
        self._on_drop = on_drop
        self.closed = False

    def offer(self, event: AgentEvent) -> None:
        if self.closed:
            return
        if self._maxsize:
            if self._queue.qsize() >= self._maxsize:
                self._dropped_total += 1
                if self._on_drop is not None:
                    self._on_drop(1)
                return
            if self._dropped_total > self._marked_total:
                self._marked_total = self._dropped_total
                self._queue.put(_DropMark(self._marked_total))
        self._queue.put(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put(_CLOSED)

    def _report(self, total: int) -> AgentEvent:
        count, self._reported = total - self._reported, total
        return EventsDropped(self._session_id, count)

    def __iter__(self) -> Iterator[AgentEvent]:
        """The events until the channel closes."""
        while (event := self.get()) is not None:
            yield event

    def get(self, timeout: float | None = None) -> AgentEvent | None:
        """The next event, or ``None`` once the channel is closed and drained.

        Raises ``TimeoutError`` when nothing arrives within ``timeout`` seconds.
        """
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                dropped = self._dropped_total
                if dropped > self._reported:
                    return self._report(dropped)
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"no event within {timeout} s") from None
            if isinstance(item, _DropMark):
                if item.total > self._reported:
                    return self._report(item.total)
                continue
            if item is _CLOSED:
                self._queue.put(_CLOSED)  # keep later readers from blocking
                return None
            assert isinstance(item, AgentEvent)
            return item


class AsyncChannel:
    """A channel read by a coroutine on ``loop``.

    Producers append to a deque and wake the loop once per burst (one
    ``call_soon_threadsafe`` while a drain is pending, not one per event):
    waking an event loop costs a system call, and a busy session emits
    events far faster than the loop needs waking.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        maxsize: int = 0,
        on_drop: Callable[[int], None] | None = None,
        session_id: str = "",
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()  # created by the consumer, on its loop
        self._incoming: deque[object] = deque()  # producer appends, loop pops: both atomic
        self._drain_pending = False  # set by the producer, cleared by the loop before it drains
        self._items: deque[object] = deque()  # loop thread only
        self._waiter: asyncio.Future[None] | None = None
        self._maxsize = maxsize
        self._session_id = session_id
        self._dropped = 0  # loop thread only
        self._on_drop = on_drop
        self.closed = False

    def offer(self, event: AgentEvent) -> None:
        if not self.closed:
            self._push(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._push(_CLOSED)

    def _push(self, item: object) -> None:
        self._incoming.append(item)
        if not self._drain_pending:
            self._drain_pending = True
            try:
                if threading.get_ident() == self._loop_thread:
                    self._loop.call_soon(self._drain)  # a producer on the consumer's loop: no wake-up needed
                else:
                    self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                self.closed = True  # the consumer's loop is gone: nobody is left to read

    def _drain(self) -> None:
        # Cleared before draining: an item appended after this line either is
        # drained below or schedules another drain; none is left behind.
        self._drain_pending = False
        while self._incoming:
            self._deliver(self._incoming.popleft())
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _deliver(self, item: object) -> None:
        if item is not _CLOSED and self._maxsize and len(self._items) >= self._maxsize:
            self._dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return
        if item is not _CLOSED and self._dropped:
            self._items.append(EventsDropped(self._session_id, self._dropped))
            self._dropped = 0
        self._items.append(item)

    async def __aiter__(self) -> AsyncIterator[AgentEvent]:
        """The events until the channel closes."""
        while (event := await self.get()) is not None:
            yield event

    async def get(self) -> AgentEvent | None:
        """The next event, or ``None`` once the channel is closed and drained."""
        while not self._items:
            if self._dropped:
                count, self._dropped = self._dropped, 0
                return EventsDropped(self._session_id, count)
            self._waiter = self._loop.create_future()
            await self._waiter
        item = self._items[0]
        if item is _CLOSED:
            return None
        self._items.popleft()
        assert isinstance(item, AgentEvent)
        return item
