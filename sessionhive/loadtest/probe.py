"""The control-call prober: a thread that times the calls a user interface makes while agents work."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

from sessionhive import AsyncHiveAPI, ConfirmationNotFound

from .report import MAX_MISMATCHES, LatencyStats

__all__ = ["PROBE_KINDS", "ControlProber", "ControlTarget", "LoopBoundTarget"]

#: Control calls the prober makes, in the order it makes them.
PROBE_KINDS: tuple[str, ...] = ("history", "confirm", "pause_resume")

# What confirm_tool raises for a tool id that does not wait (a baseline may raise a LookupError).
_NOT_WAITING: tuple[type[BaseException], ...] = (ConfirmationNotFound, LookupError)


class ControlTarget(Protocol):
    """What :class:`ControlProber` calls: :class:`~sessionhive.Hive` or a baseline with the same names."""

    def history(self, session_id: str) -> Any: ...

    def confirm_tool(self, session_id: str, tool_id: str, approved: bool) -> Any: ...

    def pause_session(self, session_id: str) -> Any: ...

    def resume_session(self, session_id: str) -> Any: ...


class LoopBoundTarget:
    """A blocking :class:`ControlTarget` over an async hive whose coroutines run on ``loop``.

    For hives without a blocking twin (a remote client, a cluster): the
    prober thread submits each call to the driver's loop and waits for it.
    """

    def __init__(self, hive: AsyncHiveAPI, loop: asyncio.AbstractEventLoop) -> None:
        self._hive = hive
        self._loop = loop

    def _wait(self, call: Callable[[], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            return await call()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=120)

    def history(self, session_id: str) -> Any:
        return self._wait(partial(self._hive.history, session_id))

    def confirm_tool(self, session_id: str, tool_id: str, approved: bool) -> Any:
        return self._wait(partial(self._hive.confirm_tool, session_id, tool_id, approved))

    def pause_session(self, session_id: str) -> Any:
        return self._wait(partial(self._hive.pause_session, session_id))

    def resume_session(self, session_id: str) -> Any:
        return self._wait(partial(self._hive.resume_session, session_id))


class ControlProber:
    """A thread that times control calls while a load runs.

    Every ``interval`` seconds it makes one round: ``history`` of a random
    busy session, ``confirm_tool`` of a tool id that does not wait (a full
    round trip through the session's mailbox, answered with
    :class:`~sessionhive.ConfirmationNotFound`), and ``pause_session`` then
    ``resume_session`` of ``idle_session`` (pausing a driven session would
    refuse its next turn). Latencies are in :attr:`samples` (seconds, by
    kind); calls that failed otherwise are counted in :attr:`errors`. The
    target may be a :class:`~sessionhive.Hive` or the lock-based baseline of
    the benchmarks.
    """

    def __init__(
        self,
        target: ControlTarget,
        busy_sessions: Sequence[str],
        idle_session: str,
        *,
        interval: float = 0.005,
        seed: int = 0,
    ) -> None:
        self._target = target
        self._busy = list(busy_sessions)
        self._idle = idle_session
        self._interval = interval
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sessionhive-loadtest-prober", daemon=True)
        # Written by the prober thread only; read after stop() joined it.
        self.samples: dict[str, list[float]] = {kind: [] for kind in PROBE_KINDS}
        self.errors: list[str] = []

    def start(self) -> ControlProber:
        if self._busy:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def stats(self) -> dict[str, LatencyStats]:
        return {kind: LatencyStats.of(values) for kind, values in self.samples.items()}

    def _timed(
        self, kind: str, call: Callable[[], object], expected: tuple[type[BaseException], ...] = ()
    ) -> None:
        started = time.perf_counter()
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - recorded; the probe goes on
            if not isinstance(exc, expected):
                if len(self.errors) < MAX_MISMATCHES:
                    self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                return
        self.samples[kind].append(time.perf_counter() - started)

    def _run(self) -> None:
        target = self._target
        idle = self._idle

        def pause_resume() -> None:
            target.pause_session(idle)
            target.resume_session(idle)

        while not self._stop.wait(self._interval):
            busy = self._random.choice(self._busy)
            self._timed("history", partial(target.history, busy))
            self._timed("confirm", partial(target.confirm_tool, busy, "loadtest-probe", True), _NOT_WAITING)
            self._timed("pause_resume", pause_resume)
