"""``AsyncHive``: the :class:`~sessionhive.Hive` API as coroutines.

Everything but waiting is :class:`~sessionhive._core.HiveCore`'s. Started
inside a running event loop (``await AsyncHive.start(...)``) with the
default asyncio backend, the Hive's actors run on *that* loop: an awaited
call is a message appended to a session's mailbox and an
:class:`asyncio.Future` completed on the same thread, with no thread hop and
no system call. With the thread-based backends (or when awaited from
another loop), calls carry a :class:`concurrent.futures.Future` bridged
with :func:`asyncio.wrap_future`. Awaiting never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from types import TracebackType
from typing import Any

from sessionhive._channels import AsyncChannel
from sessionhive._core import DEFAULT_STORE, HiveCore, HiveOptions, OnConfirmation, prepare
from sessionhive.actors.directory import SessionView
from sessionhive.actors.messages import (
    Cancel,
    Clear,
    Compact,
    Configure,
    Confirm,
    MaybeAutoCompact,
    Pause,
    Resume,
    SetPolicy,
    Subscribe,
    Unsubscribe,
)
from sessionhive.api import (
    DEFAULT,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAILBOX_SIZE,
    DEFAULT_MAX_CONCURRENT_TURNS,
    DEFAULT_RESTART_LIMIT,
    DEFAULT_RESTART_WINDOW,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_SUBSCRIBER_QUEUE_SIZE,
    Timeout,
)
from sessionhive.hive import Hive
from sessionhive.llm import LlmClient
from sessionhive.metrics.registry import HiveMetrics, MetricsConfig
from sessionhive.model.budget import Budget
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.confirmation import check_confirm_arguments
from sessionhive.model.errors import CallTimeout
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolDefinition, Usage
from sessionhive.model.validate import check_instance
from sessionhive.runtime import ActorBackend, Reply
from sessionhive.tools import ToolExecutor

__all__ = ["AsyncHive", "AsyncSubscription", "AsyncTurnStream"]

_ACTIVATION_TRIES = 100


def _expire(future: asyncio.Future[Any], what: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(
            CallTimeout(f"{what} got no answer within {timeout} s (the work may still finish)")
        )


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Marks the exception as seen: a failed turn whose result nobody awaits
    # (a stream read to its end) must not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


async def _await(reply: Reply, timeout: float | None, what: str) -> Any:
    """The answer of ``reply``; a timeout drops the answer, never the work."""
    if isinstance(reply, asyncio.Future) and reply.get_loop() is asyncio.get_running_loop():
        if reply.done() or timeout is None:
            return await reply
        handle = reply.get_loop().call_later(timeout, _expire, reply, what, timeout)
        try:
            return await reply
        finally:
            handle.cancel()
    assert isinstance(reply, concurrent.futures.Future)
    wrapped = asyncio.wrap_future(reply)
    # asyncio.wait, not wait_for: a timeout must not cancel the call's future.
    done, _ = await asyncio.wait({wrapped}, timeout=timeout)
    if not done:
        wrapped.add_done_callback(_retrieve)
        raise CallTimeout(f"{what} got no answer within {timeout} s (the work may still finish)")
    return wrapped.result()


class AsyncTurnStream:
    """The events of one turn, as an async iterator; ``await stream.result()`` for the outcome."""

    def __init__(self, hive: AsyncHive, session_id: str, channel: AsyncChannel, result: Reply) -> None:
        self.session_id = session_id
        self._hive = hive
        self._channel = channel
        self._result = result
        if isinstance(result, asyncio.Future):
            result.add_done_callback(_retrieve)

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return aiter(self._channel)

    async def result(self, timeout: float | None = None) -> AgentResult:
        result: AgentResult = await _await(self._result, timeout, f"the turn of session {self.session_id!r}")
        return result

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
        try:
            self._hive.core.send(self.session_id, Unsubscribe(None, self._channel))
        except Exception:  # noqa: BLE001 - the session or the Hive is gone: nothing left to detach
            pass

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Starting:
    """What ``AsyncHive.start()`` returns: await it, or use it with ``async with``."""

    def __init__(self, options: HiveOptions) -> None:
        self._options = options
        self._hive: AsyncHive | None = None

    async def _start(self) -> AsyncHive:
        prepared = await asyncio.to_thread(prepare, self._options)
        if prepared.backend_name == "asyncio":
            core = HiveCore(prepared, asyncio.get_running_loop())  # the actors run on this loop
        else:
            core = await asyncio.to_thread(HiveCore, prepared, None)
        self._hive = AsyncHive(core)
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


class AsyncHive:
    """The asyncio twin of :class:`~sessionhive.Hive`: same methods, as coroutines.

    ``hive = await AsyncHive.start(...)`` or ``async with AsyncHive.start(...) as hive:``
    (the same arguments as :meth:`Hive.start`). ``sync`` is a
    :class:`~sessionhive.Hive` on the same actors, for code that mixes both
    from other threads.
    """

    def __init__(self, hive: HiveCore | Hive) -> None:
        """Wrap a running Hive: ``AsyncHive(hive)`` awaits the same actors a sync ``Hive`` drives."""
        core = hive.core if isinstance(hive, Hive) else hive
        self._core = core
        self._sync = hive if isinstance(hive, Hive) else Hive(core)
        self.metrics: HiveMetrics = core.metrics

    @staticmethod
    def start(
        store: Any = DEFAULT_STORE,
        llm: LlmConfig | LlmClient | None = None,
        workspace: str | os.PathLike[str] = ".",
        metrics: MetricsConfig | None = None,
        *,
        actor_backend: str | ActorBackend | None = None,
        tools: ToolExecutor | None = None,
        idle_timeout: float | None = None,
        max_live_sessions: int | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        max_concurrent_turns: int = DEFAULT_MAX_CONCURRENT_TURNS,
        subscriber_queue_size: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        restart_limit: int = DEFAULT_RESTART_LIMIT,
        restart_window: float = DEFAULT_RESTART_WINDOW,
        shared_store: bool = False,
        allow_base_urls: Sequence[str] | None = None,
        trace_content: bool = False,
        budget: Budget | None = None,
    ) -> _Starting:
        """Start a Hive (same arguments as :meth:`Hive.start`); the blocking parts run off the loop."""
        return _Starting(
            HiveOptions(
                store=store,
                llm=llm,
                workspace=workspace,
                metrics=metrics,
                actor_backend=actor_backend,
                tools=tools,
                idle_timeout=idle_timeout,
                max_live_sessions=max_live_sessions,
                batch_size=batch_size,
                flush_interval=flush_interval,
                max_concurrent_turns=max_concurrent_turns,
                subscriber_queue_size=subscriber_queue_size,
                call_timeout=call_timeout,
                mailbox_size=mailbox_size,
                restart_limit=restart_limit,
                restart_window=restart_window,
                shared_store=shared_store,
                allow_base_urls=allow_base_urls,
                trace_content=trace_content,
                budget=budget,
            )
        )

    @property
    def core(self) -> HiveCore:
        """The running actors and services this facade drives."""
        return self._core

    @property
    def sync(self) -> Hive:
        return self._sync

    async def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Cancel running turns, flush, stop every actor (never blocking the loop)."""
        core = self._core
        if core.stopped:
            return
        try:
            await _await(core.shutdown_sessions(), timeout, "stopping the sessions")
        except CallTimeout:
            pass
        core.stopped = True
        core.supervisor.stop(block=False)
        error: BaseException | None = None
        try:
            await _await(core.flush(), timeout, "the last flush")
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

    @property
    def call_timeout(self) -> float:
        return self._core.call_timeout

    @property
    def metrics_url(self) -> str | None:
        exporter = self._core.exporter
        return exporter.url if exporter is not None else None

    def wsgi_app(self) -> Callable[..., Any]:
        """A WSGI app serving this Hive's metrics, to mount in your own server."""
        return self.sync.wsgi_app()

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving this Hive's metrics, to mount in your own server."""
        return self.sync.asgi_app()

    # ------------------------------------------------------------------ plumbing

    async def _wait(self, reply: Reply, timeout: Timeout, what: str) -> Any:
        return await _await(reply, self._core.timeout(timeout), what)

    async def _call(self, session_id: str, make: Callable[[Reply], Any], timeout: Timeout, what: str) -> Any:
        reply = self._core.call(session_id, make, awaitable_here=True)
        return await self._wait(reply, timeout, f"{what} on session {session_id!r}")

    async def _view(self, session_id: str, timeout: Timeout) -> SessionView:
        core = self._core
        for _ in range(_ACTIVATION_TRIES):
            view = core.view(session_id)
            if view is not None:
                return view
            await self._wait(
                core.activate(session_id, awaitable_here=True), timeout, f"activating session {session_id!r}"
            )
        raise CallTimeout(f"session {session_id!r} kept being passivated while it was read")

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        reply = self._core.create(session_id, config, None, exist_ok=False, awaitable_here=True)
        created: str = await self._wait(reply, timeout, "create_session()")
        return created

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        reply = self._core.create(session_id, config, None, exist_ok=True, awaitable_here=True)
        created: str = await self._wait(reply, timeout, "get_or_create_session()")
        return created

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        reply = self._core.create(child_id, config, parent_id, exist_ok=False, awaitable_here=True)
        created: str = await self._wait(reply, timeout, "create_child_session()")
        return created

    async def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._wait(self._core.destroy(session_id, awaitable_here=True), timeout, "destroy_session()")

    async def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(
            await self._wait(self._core.reset(session_id, awaitable_here=True), timeout, "reset_session()")
        )

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:  # noqa: ARG002 - read from the directory
        return self._core.children(parent_id)

    async def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:  # noqa: ARG002 - read from the directory
        return self._core.is_child(session_id)

    async def session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002 - read from the directory
        return self._core.known_count()

    async def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002 - read from the directory
        return self._core.live_count()

    async def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        ids: list[str] = await self._wait(
            self._core.list_sessions(awaitable_here=True), timeout, "list_sessions()"
        )
        return ids

    def list_tools(self) -> list[ToolDefinition]:
        return list(self._core.tools.definitions())

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._wait(
            self._core.activate(session_id, awaitable_here=True), timeout, "restore_session_by_id()"
        )

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        count: int = await self._wait(
            self._core.load_all(awaitable_here=True), timeout, "load_all_sessions()"
        )
        return count

    # ------------------------------------------------------------------ turns

    async def generate(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = None,
        on_confirmation: OnConfirmation | None = None,
    ) -> AgentResult:
        """Run one turn (see :meth:`Hive.generate`); ``on_confirmation`` may be a coroutine function."""
        result, _accepted = self._core.generate(
            session_id, prompt, None, on_confirmation, awaitable_here=True
        )
        value: AgentResult = await self._wait(result, timeout, f"generate() on session {session_id!r}")
        return value

    async def generate_streaming(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
    ) -> AsyncTurnStream:
        channel = AsyncChannel(asyncio.get_running_loop())
        result, accepted = self._core.generate(
            session_id, prompt, channel, on_confirmation, awaitable_here=True
        )
        waited_result = _as_asyncio(result)
        waited_accepted = _as_asyncio(accepted)
        done, _ = await asyncio.wait(
            [waited_result, waited_accepted],
            timeout=self._core.timeout(timeout),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not done:
            waited_result.add_done_callback(_retrieve)
            raise CallTimeout(f"session {session_id!r} did not accept the turn in time")
        if waited_result.done() and not waited_accepted.done() and waited_result.exception() is not None:
            raise waited_result.exception()  # type: ignore[misc]
        return AsyncTurnStream(self, session_id, channel, waited_result)

    async def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        return list((await self._view(session_id, timeout)).history)

    async def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return (await self._view(session_id, timeout)).context_usage

    async def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return (await self._view(session_id, timeout)).usage

    async def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._call(session_id, lambda r: Clear(r), timeout, "clear()")

    async def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        await self._call(session_id, lambda r: Compact(r), timeout, "compact()")

    async def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return bool(
            await self._call(session_id, lambda r: MaybeAutoCompact(r), timeout, "maybe_auto_compact()")
        )

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        await self._call(
            session_id, lambda r: Configure(r, thinking, budget, model_config), timeout, "configure()"
        )

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        return (await self._view(session_id, timeout)).llm_config

    async def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(await self._call(session_id, lambda r: Pause(r), timeout, "pause_session()"))

    async def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(await self._call(session_id, lambda r: Resume(r), timeout, "resume_session()"))

    async def cancel_operation(
        self, session_id: str, *, reason: str | None = None, timeout: Timeout = DEFAULT
    ) -> bool:
        message = (lambda r: Cancel(r)) if reason is None else (lambda r: Cancel(r, reason))
        return bool(await self._call(session_id, message, timeout, "cancel_operation()"))

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
        check_confirm_arguments(tool_id, approved, reason, decided_by)
        confirm = await self._call(
            session_id,
            lambda r: Confirm(r, tool_id, approved, reason, decided_by),
            timeout,
            "confirm_tool()",
        )
        return bool(confirm)

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return list((await self._view(session_id, timeout)).pending_confirmations)

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        check_instance("policy", policy, ConfirmationPolicy)
        result: ConfirmationPolicy = await self._call(
            session_id, lambda r: SetPolicy(r, policy), timeout, "set_confirmation_policy()"
        )
        return result

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return (await self._view(session_id, timeout)).policy

    async def subscribe(self, session_id: str, *, timeout: Timeout = DEFAULT) -> AsyncSubscription:
        channel = AsyncChannel(
            asyncio.get_running_loop(),
            self._core.options.subscriber_queue_size,
            self.metrics.events_dropped.inc,
            session_id,
        )
        await self._call(session_id, lambda r: Subscribe(r, channel), timeout, "subscribe()")
        return AsyncSubscription(self, session_id, channel)

    # ------------------------------------------------------------------ store

    async def flush(self, timeout: Timeout = None) -> None:
        await self._wait(self._core.flush(), timeout, "flush()")

    async def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        health: list[tuple[str, str]] = await self._wait(self._core.health(), timeout, "store_health()")
        return health


def _as_asyncio(reply: Reply) -> asyncio.Future[Any]:
    if isinstance(reply, asyncio.Future):
        return reply
    return asyncio.wrap_future(reply)
