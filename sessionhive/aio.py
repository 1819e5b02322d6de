"""``AsyncHive``: the :class:`~sessionhive.Hive` API as coroutines.

Everything but waiting is :class:`~sessionhive._core.HiveCore`'s. Started
inside a running event loop (``await AsyncHive.start(...)``) with the
default asyncio backend, the Hive's actors run on *that* loop: an awaited
call is a message appended to a session's mailbox and an
:class:`asyncio.Future` completed on the same thread, with no thread hop and
no system call. With the thread-based backends (or when awaited from
another loop), calls carry a :class:`concurrent.futures.Future` bridged
with :func:`asyncio.wrap_future`. Awaiting never blocks the event loop. Each method is documented once, on
:class:`~sessionhive.api.HiveAPI`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import Any, TypeVar

from sessionhive._channels import AsyncChannel
from sessionhive._core import (
    HiveCore,
    OnConfirmation,
    Pending,
    launch_async,
)
from sessionhive._startup import HiveOptions, taking
from sessionhive.actors.directory import SessionView
from sessionhive.api import DEFAULT, DEFAULT_ON_BUSY, DEFAULT_STOP_TIMEOUT, Timeout
from sessionhive.hive import Hive, LocalFacade
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.content import Prompt
from sessionhive.model.errors import CallTimeout
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import AgentResult, ContextUsage, Message, Usage
from sessionhive.model.output import OutputSchema
from sessionhive.model.runs import OnBusy, Run, Webhook
from sessionhive.runtime import Reply

__all__ = ["AsyncHive", "AsyncSubscription", "AsyncTurnStream"]

T = TypeVar("T")


def _expire(future: asyncio.Future[Any], pending: Pending[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(pending.timed_out(timeout))


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Marks the exception as seen: a failed turn whose result nobody awaits
    # (a stream read to its end) must not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


async def _await(pending: Pending[T], timeout: float | None) -> T:
    """The answer of ``pending``; a timeout drops the answer, never the work."""
    reply = pending.reply
    value: T
    if isinstance(reply, asyncio.Future) and reply.get_loop() is asyncio.get_running_loop():
        if reply.done() or timeout is None:
            value = await reply
            return value
        handle = reply.get_loop().call_later(timeout, _expire, reply, pending, timeout)
        try:
            value = await reply
            return value
        finally:
            handle.cancel()
    assert isinstance(reply, concurrent.futures.Future)
    wrapped = asyncio.wrap_future(reply)
    # asyncio.wait, not wait_for: a timeout must not cancel the call's future.
    done, _ = await asyncio.wait({wrapped}, timeout=timeout)
    if not done:
        wrapped.add_done_callback(_retrieve)
        raise pending.timed_out(timeout)
    value = wrapped.result()
    return value


class AsyncTurnStream:
    """The events of one turn, as an async iterator; ``await stream.result()`` for the outcome."""

    def __init__(
        self,
        hive: AsyncHive,
        session_id: str,
        channel: AsyncChannel,
        result: Pending[AgentResult],
        run_id: str,
    ) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self._hive = hive
        self._channel = channel
        self._result = result
        if isinstance(result.reply, asyncio.Future):
            result.reply.add_done_callback(_retrieve)

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return aiter(self._channel)

    async def result(self, timeout: float | None = None) -> AgentResult:
        return await _await(self._result, timeout)

    async def cancel(self) -> bool:
        return await self._hive.cancel_operation(self.session_id)


class AsyncSubscription:
    """A session's events as an async iterator; bounded like :class:`~sessionhive.Subscription`."""

    def __init__(self, hive: AsyncHive, session_id: str, channel: AsyncChannel) -> None:
        self.session_id = session_id
        self._hive = hive
        self._channel = channel

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return aiter(self._channel)

    async def get(self, timeout: float | None = None) -> AgentEvent | None:
        return await asyncio.wait_for(self._channel.get(), timeout)

    def close(self) -> None:
        self._channel.close()
        self._hive.core.unsubscribe(self.session_id, self._channel)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Starting:
    """What ``AsyncHive.start()`` returns: await it, or use it with ``async with``.

    Start a Hive (same arguments as :meth:`Hive.start`); the blocking parts run off the loop.
    """

    def __init__(self, options: HiveOptions) -> None:
        self._options = options
        self._hive: AsyncHive | None = None

    async def _start(self) -> AsyncHive:
        self._hive = AsyncHive(await launch_async(self._options))
        return self._hive

    def __await__(self) -> Generator[Any, None, AsyncHive]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncHive:
        return await self._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._hive is not None:
            await self._hive.stop()


class AsyncHive(LocalFacade):
    """The asyncio twin of :class:`~sessionhive.Hive`: :class:`~sessionhive.api.AsyncHiveAPI`.

    ``hive = await AsyncHive.start(...)`` or ``async with AsyncHive.start(...) as hive:``
    (the same arguments as :meth:`Hive.start`). ``sync`` is a
    :class:`~sessionhive.Hive` on the same actors, for code that mixes both
    from other threads.
    """

    # On the actors' own loop a call gets an asyncio future, completed without a thread hop.
    _here = True

    def __init__(self, hive: HiveCore | Hive) -> None:
        """Wrap a running Hive: ``AsyncHive(hive)`` awaits the same actors a sync ``Hive`` drives."""
        core = hive.core if isinstance(hive, Hive) else hive
        super().__init__(core)
        #: A :class:`~sessionhive.Hive` on the same actors, for code on other threads.
        self.sync: Hive = hive if isinstance(hive, Hive) else Hive(core)

    start = staticmethod(taking(HiveOptions, _Starting))

    async def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Cancel running turns, flush, stop every actor (never blocking the loop)."""
        core = self._core
        if core.stopped:
            return
        try:
            await _await(core.shutdown_sessions(), timeout)
        except CallTimeout:
            pass
        core.stopped = True
        core.supervisor.stop(block=False)
        error: BaseException | None = None
        try:
            await _await(core.flush(), timeout)
        except Exception as exc:  # noqa: BLE001 - re-raised after everything stopped
            error = exc
        await asyncio.to_thread(core.stop_persistence, timeout)
        aclose = core.services.llm_clients.aclose()
        if core.on_loop():
            await aclose
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(aclose, core.turns.loop))
        await asyncio.to_thread(core.turns.stop)
        core.release()
        if error is not None:
            raise error

    async def __aenter__(self) -> AsyncHive:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ plumbing

    async def _wait(self, pending: Pending[T], timeout: Timeout) -> T:
        return await _await(pending, self._core.timeout(timeout))

    async def _view(self, session_id: str, timeout: Timeout) -> SessionView:
        for _ in range(self._activation_tries):
            view = self._core.view_or_activation(session_id, self._here)
            if isinstance(view, SessionView):
                return view
            await self._wait(view, timeout)
        raise self._core.kept_passivating(session_id)

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return await self._wait(self._core.create(session_id, config, None, False, self._here), timeout)

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return await self._wait(self._core.create(session_id, config, None, True, self._here), timeout)

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        return await self._wait(self._core.create(child_id, config, parent_id, False, self._here), timeout)

    async def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._wait(self._core.destroy(session_id, self._here), timeout)

    async def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._wait(self._core.reset(session_id, self._here), timeout)

    # Directory reads: answered here from the published directory, without waiting, so timeout is unused.

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:  # noqa: ARG002
        return self._core.children(parent_id)

    async def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:  # noqa: ARG002
        return self._core.is_child(session_id)

    async def session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002
        return self._core.known_count()

    async def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002
        return self._core.live_count()

    async def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        return await self._wait(self._core.list_sessions(self._here), timeout)

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._wait(self._core.activate(session_id, self._here), timeout)

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return await self._wait(self._core.load_all(self._here), timeout)

    # ------------------------------------------------------------------ turns

    async def generate(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = None,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AgentResult:
        """Run one turn (see :meth:`HiveAPI.generate`); ``on_confirmation`` may be a coroutine function."""
        result, _accepted = self._core.generate(
            session_id, prompt, None, on_confirmation, self._here, idempotency_key, on_busy, output_schema
        )
        return await self._wait(result, timeout)

    async def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AsyncTurnStream:
        channel = AsyncChannel(asyncio.get_running_loop())
        result, accepted = self._core.generate(
            session_id, prompt, channel, on_confirmation, self._here, idempotency_key, on_busy, output_schema
        )
        turn, taken = _as_asyncio(result.reply), _as_asyncio(accepted)
        done, _ = await asyncio.wait(
            [turn, taken], timeout=self._core.timeout(timeout), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            turn.add_done_callback(_retrieve)
            raise self._core.turn_not_accepted(session_id)
        if not taken.done():
            error = turn.exception()
            if error is not None:
                raise error
            await taken  # answered before the turn's result: the session accepts first
        run: Run = taken.result()
        return AsyncTurnStream(self, session_id, channel, Pending(turn, result.op, session_id), run.run_id)

    # ------------------------------------------------------------------ runs

    async def start_run(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        webhook: Webhook | None = None,
        timeout: Timeout = DEFAULT,
        output_schema: OutputSchema | None = None,
    ) -> Run:
        pending = self._core.start_run(
            session_id, prompt, idempotency_key, on_busy, webhook, self._here, output_schema
        )
        return await self._wait(pending, timeout)

    async def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        return await self._wait(self._core.get_run(run_id, self._here), timeout)

    async def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        return await self._wait(self._core.wait_run(run_id, self._here), timeout)

    async def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._wait(self._core.cancel_run(run_id, self._here), timeout)

    async def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        return await self._wait(self._core.list_runs(session_id, self._here), timeout)

    async def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncIterator[AgentEvent]:
        """See :meth:`RunsAPI.run_events` (``async for``); the replay starts at the first iteration."""
        channel = AsyncChannel(asyncio.get_running_loop())
        await self._wait(self._core.run_events(run_id, after, channel, self._here), timeout)
        async for event in channel:
            yield event

    async def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        view = await self._view(session_id, timeout)
        return [*view.history, *view.in_progress]

    async def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return (await self._view(session_id, timeout)).context_usage

    async def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return (await self._view(session_id, timeout)).usage

    async def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._wait(self._core.clear(session_id, self._here), timeout)

    async def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        await self._wait(self._core.compact(session_id, self._here), timeout)

    async def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return await self._wait(self._core.maybe_auto_compact(session_id, self._here), timeout)

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        await self._wait(
            self._core.configure(session_id, thinking, budget, model_config, self._here), timeout
        )

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        return (await self._view(session_id, timeout)).llm_config

    async def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._wait(self._core.pause(session_id, self._here), timeout)

    async def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._wait(self._core.resume(session_id, self._here), timeout)

    async def cancel_operation(
        self, session_id: str, *, reason: str | None = None, timeout: Timeout = DEFAULT
    ) -> bool:
        """See :meth:`Hive.cancel_operation`."""
        return await self._wait(self._core.cancel(session_id, reason, self._here), timeout)

    # ------------------------------------------------------------------ confirmations

    async def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        decided_by: str | None = None,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        """See :meth:`Hive.confirm_tool`."""
        confirm = self._core.confirm(session_id, tool_id, approved, reason, decided_by, self._here)
        return await self._wait(confirm, timeout)

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return list((await self._view(session_id, timeout)).pending_confirmations)

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return await self._wait(self._core.set_policy(session_id, policy, self._here), timeout)

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return (await self._view(session_id, timeout)).policy

    # ------------------------------------------------------------------ events and the store

    async def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncSubscription:
        channel = AsyncChannel(asyncio.get_running_loop(), *self._core.subscriber_queue(session_id))
        await self._wait(self._core.subscribe(session_id, channel, self._here, after), timeout)
        return AsyncSubscription(self, session_id, channel)

    async def flush(self, timeout: Timeout = None) -> None:
        await self._wait(self._core.flush(), timeout)

    async def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        return await self._wait(self._core.health(), timeout)


def _as_asyncio(reply: Reply) -> asyncio.Future[Any]:
    if isinstance(reply, asyncio.Future):
        return reply
    return asyncio.wrap_future(reply)
