"""``AsyncHive``: the :class:`~sessionhive.Hive` API as coroutines.

Awaiting never blocks the event loop: each call's
:class:`concurrent.futures.Future` is bridged with :func:`asyncio.wrap_future`
(which completes the asyncio future through ``loop.call_soon_threadsafe``),
and event streams are fed to the loop the same way. pykka's own
``await future`` would block the loop, so it is not used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import Any, Literal, TypeVar

from sessionhive._channels import AsyncChannel
from sessionhive.hive import Hive
from sessionhive.llm import LlmConfig
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.errors import CallTimeout
from sessionhive.model.events import AgentEvent
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolDefinition, Usage

__all__ = ["AsyncHive", "AsyncSubscription", "AsyncTurnStream"]

T = TypeVar("T")
Timeout = float | None | Literal["default"]


async def _await(future: concurrent.futures.Future[T], timeout: float | None, what: str) -> T:
    wrapped = asyncio.wrap_future(future)
    # asyncio.wait, not wait_for: a timeout must not cancel the call's future
    # (the work may still finish, and its answer is then simply not awaited).
    done, _ = await asyncio.wait({wrapped}, timeout=timeout)
    if not done:
        raise CallTimeout(f"{what} got no answer within {timeout} s (the work may still finish)")
    return wrapped.result()


class AsyncTurnStream:
    """The events of one turn, as an async iterator; ``await stream.result()`` for the outcome."""

    def __init__(
        self,
        hive: AsyncHive,
        session_id: str,
        channel: AsyncChannel,
        result: concurrent.futures.Future[AgentResult],
    ) -> None:
        self.session_id = session_id
        self._hive = hive
        self._channel = channel
        self._result = result

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self._channel.get()
            if event is None:
                return
            yield event

    async def result(self, timeout: float | None = None) -> AgentResult:
        return await _await(self._result, timeout, f"the turn of session {self.session_id!r}")

    async def cancel(self) -> bool:
        return await self._hive.cancel_operation(self.session_id)


class AsyncSubscription:
    """A session's events as an async iterator; bounded like :class:`~sessionhive.Subscription`."""

    def __init__(self, hive: AsyncHive, session_id: str, channel: AsyncChannel) -> None:
        self.session_id = session_id
        self._hive = hive
        self._channel = channel

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self._channel.get()
            if event is None:
                return
            yield event

    async def get(self, timeout: float | None = None) -> AgentEvent | None:
        return await asyncio.wait_for(self._channel.get(), timeout)

    def close(self) -> None:
        self._hive.sync._unsubscribe(self.session_id, self._channel)

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Starting:
    """What ``AsyncHive.start()`` returns: await it, or use it with ``async with``."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs
        self._hive: AsyncHive | None = None

    async def _start(self) -> AsyncHive:
        hive = await asyncio.to_thread(lambda: Hive.start(**self._kwargs))
        self._hive = AsyncHive(hive)
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

    ``hive = await AsyncHive.start(...)`` or ``async with AsyncHive.start(...) as hive:``.
    ``sync`` is the underlying :class:`~sessionhive.Hive`, for code that mixes both.
    """

    def __init__(self, hive: Hive) -> None:
        self.sync = hive

    @staticmethod
    def start(**kwargs: Any) -> _Starting:
        """Start a Hive (same keyword arguments as :meth:`Hive.start`) off the event loop."""
        return _Starting(kwargs)

    async def stop(self, timeout: float | None = 60.0) -> None:
        await asyncio.to_thread(self.sync.stop, timeout)

    async def __aenter__(self) -> AsyncHive:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def metrics(self) -> Any:
        return self.sync.metrics

    @property
    def metrics_url(self) -> str | None:
        return self.sync.metrics_url

    def _t(self, timeout: Timeout) -> float | None:
        return self.sync._timeout(timeout)

    async def _call(self, session_id: str, op: str, *args: Any, timeout: Timeout) -> Any:
        future = self.sync._call_future(session_id, op, *args)
        return await _await(future, self._t(timeout), f"{op}() on session {session_id!r}")

    # sessions
    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = "default"
    ) -> str:
        return await _await(
            self.sync._create_future(session_id, config, None), self._t(timeout), "create_session()"
        )

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> str:
        future = self.sync._create_future(child_id, config, parent_id)
        return await _await(future, self._t(timeout), "create_child_session()")

    async def destroy_session(self, session_id: str, *, timeout: Timeout = "default") -> None:
        await _await(self.sync._destroy_future(session_id), self._t(timeout), "destroy_session()")

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = "default") -> list[str]:
        from sessionhive.model.ids import check_id

        check_id(parent_id, "parent session id")
        children: list[str] = await _await(
            self.sync._query_future("children", parent_id), self._t(timeout), "get_child_sessions()"
        )
        return children

    async def is_child_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call(session_id, "is_child", timeout=timeout))

    async def session_count(self, *, timeout: Timeout = "default") -> int:
        count: int = await _await(self.sync._query_future("count"), self._t(timeout), "session_count()")
        return count

    async def live_session_count(self, *, timeout: Timeout = "default") -> int:
        count: int = await _await(
            self.sync._query_future("live_count"), self._t(timeout), "live_session_count()"
        )
        return count

    async def list_sessions(self, *, timeout: Timeout = "default") -> list[str]:
        ids: list[str] = await _await(self.sync._query_future("list"), self._t(timeout), "list_sessions()")
        return ids

    def list_tools(self) -> list[ToolDefinition]:
        return self.sync.list_tools()

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = "default") -> None:
        await self._call(session_id, "version", timeout=timeout)

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        count: int = await _await(
            self.sync._query_future("load_all"), self._t(timeout), "load_all_sessions()"
        )
        return count

    # turns
    async def generate(self, session_id: str, prompt: str, *, timeout: float | None = None) -> AgentResult:
        result, _accepted = self.sync._generate_futures(session_id, prompt, None)
        return await _await(result, timeout, f"generate() on session {session_id!r}")

    async def generate_streaming(
        self, session_id: str, prompt: str, *, timeout: Timeout = "default"
    ) -> AsyncTurnStream:
        channel = AsyncChannel(asyncio.get_running_loop())
        result, accepted = self.sync._generate_futures(session_id, prompt, channel)
        wrapped_result, wrapped_accepted = asyncio.wrap_future(result), asyncio.wrap_future(accepted)
        waitables: list[asyncio.Future[Any]] = [wrapped_result, wrapped_accepted]
        done, _ = await asyncio.wait(waitables, timeout=self._t(timeout), return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise CallTimeout(f"session {session_id!r} did not accept the turn in time")
        if wrapped_result in done and not wrapped_accepted.done() and wrapped_result.exception() is not None:
            raise wrapped_result.exception()  # type: ignore[misc]
        return AsyncTurnStream(self, session_id, channel, result)

    async def history(self, session_id: str, *, timeout: Timeout = "default") -> list[Message]:
        messages: list[Message] = await self._call(session_id, "history", timeout=timeout)
        return messages

    async def context_usage(self, session_id: str, *, timeout: Timeout = "default") -> ContextUsage:
        usage: ContextUsage = await self._call(session_id, "context_usage", timeout=timeout)
        return usage

    async def usage(self, session_id: str, *, timeout: Timeout = "default") -> Usage:
        usage: Usage = await self._call(session_id, "usage", timeout=timeout)
        return usage

    async def clear(self, session_id: str, *, timeout: Timeout = "default") -> None:
        await self._call(session_id, "clear", timeout=timeout)

    async def compact(self, session_id: str, *, timeout: float | None = None) -> None:
        await self._call(session_id, "compact", timeout=timeout)

    async def maybe_auto_compact(self, session_id: str, *, timeout: float | None = None) -> bool:
        return bool(await self._call(session_id, "maybe_auto_compact", timeout=timeout))

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> None:
        await self._call(session_id, "configure", thinking, budget, model_config, timeout=timeout)

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = "default") -> LlmConfig | None:
        config: LlmConfig | None = await self._call(session_id, "get_llm_config", timeout=timeout)
        return config

    async def pause_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call(session_id, "pause", timeout=timeout))

    async def resume_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call(session_id, "resume", timeout=timeout))

    async def cancel_operation(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call(session_id, "cancel", timeout=timeout))

    async def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = "default",
    ) -> bool:
        from sessionhive.model.errors import InvalidConfig

        if not isinstance(tool_id, str) or not tool_id:
            raise InvalidConfig("tool_id must be the non-empty id from a ConfirmationRequired event")
        return bool(await self._call(session_id, "confirm", tool_id, bool(approved), reason, timeout=timeout))

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = "default") -> list[str]:
        ids: list[str] = await self._call(session_id, "pending_confirmations", timeout=timeout)
        return ids

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = "default"
    ) -> ConfirmationPolicy:
        from sessionhive.model.errors import InvalidConfig

        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("policy must be a ConfirmationPolicy")
        result: ConfirmationPolicy = await self._call(session_id, "set_policy", policy, timeout=timeout)
        return result

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = "default"
    ) -> ConfirmationPolicy:
        policy: ConfirmationPolicy = await self._call(session_id, "get_policy", timeout=timeout)
        return policy

    async def subscribe(self, session_id: str, *, timeout: Timeout = "default") -> AsyncSubscription:
        channel = AsyncChannel(
            asyncio.get_running_loop(),
            self.sync._services.subscriber_queue_size,
            self.sync.metrics.events_dropped.inc,
            session_id,
        )
        await self._call(session_id, "subscribe", channel, timeout=timeout)
        return AsyncSubscription(self, session_id, channel)

    # store
    async def flush(self, timeout: float | None = None) -> None:
        await _await(self.sync._flush_future(), timeout, "flush()")

    async def store_health(self, *, timeout: Timeout = "default") -> list[tuple[str, str]]:
        return await _await(self.sync._health_future(), self._t(timeout), "store_health()")
