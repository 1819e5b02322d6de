"""The live halves of the remote API: a turn's events and a session's subscription, sync and async.

Both read the service's server-sent events; the events, results and
problems they carry are decoded once, in :mod:`._codec`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from sessionhive import (
    AgentEvent,
    AgentResult,
    CallTimeout,
    ConfirmationNotFound,
    ConfirmationRequired,
    SessionhiveError,
    TurnCancelled,
    TurnEnd,
    TurnError,
)
from sessionhive.model.confirmation import decision_from_answer, read_confirmation_answer
from sessionhive.model.errors import turn_failure
from sessionhive.model.events import TERMINAL_EVENTS
from sessionhive.model.output import rebuild_output

from ._codec import (
    ServiceUnavailable,
    SseParser,
    aiter_sse,
    error_from_problem,
    event_from_dict,
    iter_sse,
    load,
    result_from_dict,
)
from ._core import HttpCall, RemoteCore, Resumption, transport_error

if TYPE_CHECKING:
    from ._remote import AsyncRemoteHive, RemoteHive

HiveT = TypeVar("HiveT", "RemoteHive", "AsyncRemoteHive")

__all__ = [
    "AsyncRemoteSubscription",
    "AsyncRemoteTurnStream",
    "RemoteSubscription",
    "RemoteTurnStream",
    "afollow_run",
    "follow_run",
]


def _ask(callback: Callable[[ConfirmationRequired], Any], event: ConfirmationRequired) -> object:
    """The callback's answer; one that raises answers a rejection with the error as the reason."""
    try:
        return callback(event)
    except Exception as error:  # noqa: BLE001 - a failing callback rejects, as with an embedded Hive
        return (False, f"on_confirmation raised {type(error).__name__}: {error}")


def _decide_blocking(answer: object, timeout_s: float) -> tuple[bool, str | None] | None:
    """:func:`read_confirmation_answer` from sync code: an awaitable answer runs on a loop of its own.

    In a thread of its own too, so it works even where this thread runs a loop
    already (a notebook); ``None`` means no answer in time (the service's timer decides).
    """
    if not inspect.isawaitable(answer):
        return decision_from_answer(answer)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sessionhive-confirm") as pool:
        return pool.submit(asyncio.run, read_confirmation_answer(answer, timeout_s)).result()


class _TurnReader(Generic[HiveT]):
    """What both turn streams keep: their hive, the response being read, the turn's outcome once it ends."""

    def __init__(
        self,
        hive: HiveT,
        session_id: str,
        response: httpx.Response,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        output_model: type[Any] | None = None,
    ) -> None:
        self.session_id = session_id
        #: The model class of ``output_schema=`` the result's JSON output is validated into.
        self._output_model = output_model
        #: The turn's run (``get_run``, ``run_events``): named by the stream's first frame.
        self.run_id = ""
        self._hive: HiveT = hive
        self._response = response
        self._on_confirmation = on_confirmation
        self._result: AgentResult | None = None
        self._error: Exception | None = None
        self._finished = False
        # What a cut stream resumes from: the last event's id, and whether the turn's end was seen.
        self._last_event_id: int | None = None
        self._terminal: AgentEvent | None = None
        self._dropped = False

    def _take(self, kind: str, data: str) -> AgentEvent | None:
        """The event one message carries, or ``None`` when it was the turn's outcome (kept)."""
        payload = load(data)
        if kind == "run":
            self.run_id = str(payload["run_id"])
            return None
        if kind == "result":
            self._result = result_from_dict(payload)
        elif kind == "error":
            self._error = error_from_problem(int(payload.get("status", 500)), payload)
        else:
            return event_from_dict(payload)
        return None

    def _ended_early(self) -> None:
        self._error = ServiceUnavailable(0, {"detail": "the turn's event stream ended early"})
        self._dropped = True

    def _lost(self, exc: httpx.HTTPError) -> None:
        self._error = transport_error(exc, f"the turn of session {self.session_id!r}")
        self._dropped = True

    def _seen(self, event: AgentEvent) -> None:
        if event.event_id:
            self._last_event_id = event.event_id
        if isinstance(event, TERMINAL_EVENTS):
            self._terminal = event

    def _resumable(self) -> bool:
        """Cut off before its outcome: resume from the run's own stream (if the service named the run)."""
        if not self._dropped or not self.run_id:
            return False
        if self._terminal is not None:  # the end arrived, its `result` frame did not: it says the same
            self._settle(self._terminal)
            return False
        return True

    def _settle(self, event: AgentEvent) -> None:
        """The outcome a terminal event carries, as the embedded Hive raises or returns it."""
        self._error = None
        if isinstance(event, TurnEnd):
            self._result = event.result
        elif isinstance(event, TurnCancelled):
            self._error = event
        elif isinstance(event, TurnError):
            failure = turn_failure(event.kind, f"session {self.session_id!r}: {event.error}")
            failure.event = event
            self._error = failure

    def _outcome(self) -> AgentResult:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return rebuild_output(self._result, self._output_model)


class RemoteTurnStream(_TurnReader["RemoteHive"]):
    """A turn's events as they arrive over server-sent events; :meth:`result` for the outcome."""

    def __init__(
        self,
        hive: RemoteHive,
        session_id: str,
        response: httpx.Response,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        output_model: type[Any] | None = None,
    ) -> None:
        super().__init__(hive, session_id, response, on_confirmation, output_model)
        self._frames = iter_sse(response.iter_lines())
        self._pushed_back: tuple[str, str] | None = None

    def accepted(self) -> RemoteTurnStream:
        """Read the first frame, which names the run (the turn is accepted once it is sent)."""
        try:
            kind, data = next(self._frames)
        except (StopIteration, httpx.HTTPError) as exc:
            self._response.close()
            raise ServiceUnavailable(0, {"detail": f"the turn's event stream ended early: {exc!r}"}) from None
        if kind != "run":  # a service from before runs: its first frame is an event
            self._pushed_back = (kind, data)
        else:
            self._take(kind, data)
        return self

    def _all_frames(self) -> Iterator[tuple[str, str]]:
        if self._pushed_back is not None:
            pushed, self._pushed_back = self._pushed_back, None
            yield pushed
        yield from self._frames

    def __iter__(self) -> Iterator[AgentEvent]:
        if self._finished:
            return
        try:
            yield from self._answered(self._read())
            if self._resumable():
                # Cut off (a proxy, a network blip): the run goes on; read the rest of its events.
                yield from self._answered(self._resumed())
        finally:
            self._finished = True

    def _read(self) -> Iterator[AgentEvent]:
        try:
            for kind, data in self._all_frames():
                event = self._take(kind, data)
                if event is None:
                    break
                yield event
            else:
                self._ended_early()
        except httpx.HTTPError as exc:
            self._lost(exc)
        finally:
            self._response.close()

    def _resumed(self) -> Iterator[AgentEvent]:
        try:
            for event in self._hive.run_events(self.run_id, after=self._last_event_id):
                yield event
                if isinstance(event, TERMINAL_EVENTS):
                    self._settle(event)
        except SessionhiveError as exc:  # gave up: the service stayed away
            self._error = exc

    def _answered(self, events: Iterator[AgentEvent]) -> Iterator[AgentEvent]:
        for event in events:
            self._seen(event)
            if self._on_confirmation is not None and isinstance(event, ConfirmationRequired):
                decision = _decide_blocking(_ask(self._on_confirmation, event), event.timeout_s)
                if decision is not None:
                    with contextlib.suppress(ConfirmationNotFound):  # timed out meanwhile
                        self._hive.confirm_tool(event.session_id, event.tool_id, *decision)
            yield event

    def result(self, timeout: float | None = None) -> AgentResult:
        """The outcome, once the stream has been read to its end (``timeout`` as Hive's, unused:
        the service ends every turn's stream with its outcome)."""
        del timeout
        for _ in self:
            pass
        return self._outcome()

    def cancel(self) -> bool:
        return self._hive.cancel_operation(self.session_id)


class RemoteSubscription:
    """A session's live events; a reader thread keeps the stream drained into a queue."""

    def __init__(self, session_id: str, response: httpx.Response) -> None:
        self.session_id = session_id
        self._response = response
        self._queue: queue.SimpleQueue[AgentEvent | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"sessionhive-sub-{session_id}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for kind, data in iter_sse(self._response.iter_lines()):
                if kind == "subscribed":
                    self.ready.set()
                elif kind == "end":
                    break
                else:
                    self._queue.put(event_from_dict(load(data)))
        except (httpx.HTTPError, ValueError, RuntimeError):
            pass  # closed by close(), or the service went away: the iteration ends
        finally:
            self.ready.set()
            self._queue.put(None)
            self._response.close()

    def __iter__(self) -> Iterator[AgentEvent]:
        while True:
            event = self._queue.get()
            if event is None:
                self._queue.put(None)
                return
            yield event

    def get(self, timeout: float | None = None) -> AgentEvent | None:
        """The next event (``None`` when closed); raises ``TimeoutError`` after ``timeout``."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event of session {self.session_id!r} within {timeout} s") from None
        if event is None:
            self._queue.put(None)
        return event

    def close(self) -> None:
        # The reader thread is blocked in recv(): closing the socket would not wake it (nor tell the
        # service), shutting it down does both.
        network = self._response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
        self._thread.join(5)
        self._response.close()

    def __enter__(self) -> RemoteSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRemoteTurnStream(_TurnReader["AsyncRemoteHive"]):
    """A turn's events as an async iterator; ``await stream.result()`` for the outcome."""

    def __init__(
        self,
        hive: AsyncRemoteHive,
        session_id: str,
        response: httpx.Response,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        output_model: type[Any] | None = None,
    ) -> None:
        super().__init__(hive, session_id, response, on_confirmation, output_model)
        self._frames = aiter_sse(response.aiter_lines())
        self._pushed_back: tuple[str, str] | None = None

    async def accepted(self) -> AsyncRemoteTurnStream:
        """Read the first frame, which names the run (the turn is accepted once it is sent)."""
        try:
            kind, data = await anext(self._frames)
        except (StopAsyncIteration, httpx.HTTPError) as exc:
            await self._response.aclose()
            raise ServiceUnavailable(0, {"detail": f"the turn's event stream ended early: {exc!r}"}) from None
        if kind != "run":  # a service from before runs: its first frame is an event
            self._pushed_back = (kind, data)
        else:
            self._take(kind, data)
        return self

    async def _all_frames(self) -> AsyncIterator[tuple[str, str]]:
        if self._pushed_back is not None:
            pushed, self._pushed_back = self._pushed_back, None
            yield pushed
        async for frame in self._frames:
            yield frame

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        if self._finished:
            return
        try:
            async for event in self._answered(self._read()):
                yield event
            if self._resumable():
                async for event in self._answered(self._resumed()):
                    yield event
        finally:
            self._finished = True

    async def _read(self) -> AsyncIterator[AgentEvent]:
        try:
            async for kind, data in self._all_frames():
                event = self._take(kind, data)
                if event is None:
                    return
                yield event
            self._ended_early()
        except httpx.HTTPError as exc:
            self._lost(exc)
        finally:
            await self._response.aclose()

    async def _resumed(self) -> AsyncIterator[AgentEvent]:
        try:
            async for event in self._hive.run_events(self.run_id, after=self._last_event_id):
                yield event
                if isinstance(event, TERMINAL_EVENTS):
                    self._settle(event)
        except SessionhiveError as exc:
            self._error = exc

    async def _answered(self, events: AsyncIterator[AgentEvent]) -> AsyncIterator[AgentEvent]:
        async for event in events:
            self._seen(event)
            if self._on_confirmation is not None and isinstance(event, ConfirmationRequired):
                answer = _ask(self._on_confirmation, event)
                decision = await read_confirmation_answer(answer, event.timeout_s)
                if decision is not None:
                    with contextlib.suppress(ConfirmationNotFound):  # timed out meanwhile
                        await self._hive.confirm_tool(event.session_id, event.tool_id, *decision)
            yield event

    async def result(self, timeout: float | None = None) -> AgentResult:
        async def drain() -> None:
            async for _ in self:
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except TimeoutError:
            raise CallTimeout(f"the turn of session {self.session_id!r} did not end in time") from None
        return self._outcome()

    async def cancel(self) -> bool:
        return await self._hive.cancel_operation(self.session_id)


class AsyncRemoteSubscription:
    """A session's live events as an async iterator."""

    def __init__(self, session_id: str, response: httpx.Response) -> None:
        self.session_id = session_id
        self._response = response
        self._queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        self.ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for kind, data in aiter_sse(self._response.aiter_lines()):
                if kind == "subscribed":
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif kind == "end":
                    break
                else:
                    self._queue.put_nowait(event_from_dict(load(data)))
        except (httpx.HTTPError, ValueError, RuntimeError):
            pass
        finally:
            if not self.ready.done():
                self.ready.set_result(None)
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await self._response.aclose()

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event

    async def get(self, timeout: float | None = None) -> AgentEvent | None:
        event = await asyncio.wait_for(self._queue.get(), timeout)
        if event is None:
            self._queue.put_nowait(None)
        return event

    def close(self) -> None:
        self._task.cancel()

    async def __aenter__(self) -> AsyncRemoteSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _RunStreamReader:
    """One connection of a followed run, without I/O: each line in, the events it completes out.

    Both twins of :func:`follow_run` feed it the lines they read; it checks the
    deadline at every line (keep-alives included), records the resume position
    and says when the run has ended (``finished``) or why the stream must be
    opened again (:meth:`dropped`).
    """

    def __init__(self, resumption: Resumption, deadline: float | None) -> None:
        self._resumption = resumption
        self._deadline = deadline
        self._parser = SseParser()
        self._stopping = False
        self.finished = False

    def check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise CallTimeout(f"run {self._resumption.run_id!r} did not end in time")

    def feed(self, line: str) -> AgentEvent | None:
        self.check_deadline()
        frame = self._parser.feed(line)
        if frame is None:
            return None
        if frame[0] == "end":  # the service stops: resume, there or on another instance
            self._stopping = True
            return None
        event = event_from_dict(load(frame[1]))
        self._resumption.took(event)
        self.finished = isinstance(event, TERMINAL_EVENTS)
        return event

    def dropped(self) -> Exception | None:
        """At the end of a stream: why to reconnect, or ``None`` when the run has nothing more."""
        if self.finished or not self._stopping:
            return None  # a whole stream without a terminal event: the run has nothing after `after`
        return ServiceUnavailable(0, {"detail": "the service stopped during the run"})

    def transport_failed(self, exc: httpx.HTTPError) -> Exception:
        return transport_error(exc, f"the events of run {self._resumption.run_id!r}")


def follow_run(
    open_stream: Callable[[HttpCall], httpx.Response],
    core: RemoteCore,
    resumption: Resumption,
    deadline: float | None = None,
) -> Iterator[AgentEvent]:
    """A run's events to its terminal one, reconnecting with ``Last-Event-ID`` whenever the stream drops.

    ``open_stream`` is the twin's way to send a streamed call. ``deadline``
    (``time.monotonic()``) is checked at every line, keep-alives included.
    """
    while True:
        reader = _RunStreamReader(resumption, deadline)
        reader.check_deadline()
        try:
            response = open_stream(core.run_events_stream(resumption))
        except ServiceUnavailable as exc:  # unreachable, or draining: another instance may answer
            time.sleep(resumption.retry_delay(exc))
            continue
        try:
            for line in response.iter_lines():
                if (event := reader.feed(line)) is not None:
                    yield event
                    if reader.finished:
                        return
            dropped = reader.dropped()
        except httpx.HTTPError as exc:
            dropped = reader.transport_failed(exc)
        finally:
            response.close()
        if dropped is None:
            return
        time.sleep(resumption.retry_delay(dropped))


async def afollow_run(
    open_stream: Callable[[HttpCall], Awaitable[httpx.Response]],
    core: RemoteCore,
    resumption: Resumption,
    deadline: float | None = None,
) -> AsyncIterator[AgentEvent]:
    """:func:`follow_run` for coroutines."""
    while True:
        reader = _RunStreamReader(resumption, deadline)
        reader.check_deadline()
        try:
            response = await open_stream(core.run_events_stream(resumption))
        except ServiceUnavailable as exc:
            await asyncio.sleep(resumption.retry_delay(exc))
            continue
        try:
            async for line in response.aiter_lines():
                if (event := reader.feed(line)) is not None:
                    yield event
                    if reader.finished:
                        return
            dropped = reader.dropped()
        except httpx.HTTPError as exc:
            dropped = reader.transport_failed(exc)
        finally:
            await response.aclose()
        if dropped is None:
            return
        await asyncio.sleep(resumption.retry_delay(dropped))
