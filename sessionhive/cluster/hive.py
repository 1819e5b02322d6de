"""``ClusterHive``: the cluster for synchronous callers, running the one async facade on a loop thread.

Every method hands the :class:`~sessionhive.cluster.AsyncClusterHive`
coroutine of the same name to an event loop on a thread of its own (a
blocking portal, as anyio's ``BlockingPortal`` or Ray Serve's
``SingletonThreadRouter``) and waits for it. Calls from many client threads
thus meet on one loop, where the transport batches them into one Ray call
per shard, as it does for asyncio callers: nothing about calls, deadlines or
retries is written twice.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from sessionhive import (
    AgentEvent,
    AgentResult,
    ConfirmationPolicy,
    ContextUsage,
    HiveStopped,
    LlmConfig,
    Message,
    SessionConfig,
    ToolDefinition,
    Usage,
)
from sessionhive.api import DEFAULT, DEFAULT_ON_BUSY, DEFAULT_STOP_TIMEOUT, Timeout
from sessionhive.cluster.aio import (
    AsyncClusterHive,
    AsyncClusterSubscription,
    AsyncClusterTurnStream,
    StartingCluster,
)
from sessionhive.cluster.membership import Cluster
from sessionhive.model.confirmation import OnConfirmation
from sessionhive.model.content import Prompt
from sessionhive.model.output import OutputSchema
from sessionhive.model.runs import OnBusy, Run, Webhook

__all__ = ["ClusterHive", "ClusterSubscription", "ClusterTurnStream"]

T = TypeVar("T")
P = ParamSpec("P")
_END = object()


class _LoopThread:
    """An event loop on a daemon thread; :meth:`run` waits there for a coroutine's result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a ClusterHive call from its own loop thread would wait for itself")
        if self.loop.is_closed():
            coroutine.close()
            raise HiveStopped()
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # the caller stopped waiting (KeyboardInterrupt): so does the call
            raise

    def call(self, function: Callable[[], T]) -> T:
        """A plain function, run on the loop's thread (it touches what the loop owns)."""

        async def on_loop() -> T:
            return function()

        return self.run(on_loop())

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def cancel_the_rest() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            self.run(cancel_the_rest())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def _next(events: Any) -> Any:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return _END


def _blocking(start: Callable[P, StartingCluster]) -> Callable[P, ClusterHive]:
    """``AsyncClusterHive.start``, with its very signature, as a sync start of a ClusterHive."""

    @functools.wraps(start)
    def start_blocking(*args: P.args, **kwargs: P.kwargs) -> ClusterHive:
        return ClusterHive(start(*args, **kwargs).blocking())

    start_blocking.__doc__ = "Start (or join) Ray and the shards; the arguments of AsyncClusterHive.start."
    # help() and inspect show the arguments, and what this one returns.
    vars(start_blocking)["__signature__"] = inspect.signature(start).replace(return_annotation="ClusterHive")
    return start_blocking


class ClusterTurnStream:
    """The events of one turn on a shard, fetched in batches; :meth:`result` for the outcome."""

    def __init__(self, portal: _LoopThread, stream: AsyncClusterTurnStream) -> None:
        self.session_id = stream.session_id
        self.run_id = stream.run_id
        self._portal = portal
        self._stream = stream

    def __iter__(self) -> Iterator[AgentEvent]:
        events = self._stream.__aiter__()
        while True:
            event = self._portal.run(_next(events))
            if event is _END:
                return
            yield event

    def result(self, timeout: float | None = None) -> AgentResult:
        return self._portal.run(self._stream.result(timeout))

    def cancel(self) -> bool:
        return self._portal.run(self._stream.cancel())


class ClusterSubscription:
    """A session's events from its shard, fetched in batches, until :meth:`close`."""

    def __init__(self, portal: _LoopThread, subscription: AsyncClusterSubscription) -> None:
        self.session_id = subscription.session_id
        self._portal = portal
        self._subscription = subscription

    def get(self, timeout: float | None = None) -> AgentEvent | None:
        return self._portal.run(self._subscription.get(timeout))

    def __iter__(self) -> Iterator[AgentEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        if not self._portal.loop.is_closed():
            self._portal.call(self._subscription.close)

    def __enter__(self) -> ClusterSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterHive:
    """The :class:`~sessionhive.Hive` API over ``shards`` hive shards on a Ray cluster.

    ``ClusterHive.start(shards=2, store="postgresql://...", llm=...)``; every
    session lives on one shard at a time (its tree with it), owned through
    a lease in the shared store. Extra keyword arguments are Hive options
    (``idle_timeout``, ``max_live_sessions``, ``workspace``...) for every shard.
    ``aio`` is the :class:`AsyncClusterHive` it runs on its loop thread.
    """

    def __init__(self, cluster: Cluster) -> None:
        self._portal = _LoopThread("sessionhive-cluster-loop")
        self.aio = AsyncClusterHive(cluster)

    #: ``ClusterHive.start(shards=2, store=..., llm=..., ...)``: the arguments of
    #: :meth:`AsyncClusterHive.start`, declared there once; blocks until every shard answers.
    start = staticmethod(_blocking(AsyncClusterHive.start))

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop every shard (each flushes and releases its leases); the local Ray too if this started it."""
        self._portal.stop()
        self.aio.cluster.stop(timeout)

    def __enter__(self) -> ClusterHive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def call_timeout(self) -> float:
        return self.aio.call_timeout

    @property
    def cluster(self) -> Cluster:
        """Membership, placement and shard handles."""
        return self.aio.cluster

    # ------------------------------------------------------------------ cluster

    @property
    def shards(self) -> list[str]:
        """The serving shards."""
        return self.aio.shards

    def shard_of(self, session_id: str) -> str:
        """The shard that serves ``session_id`` now."""
        return self._portal.run(self.aio.shard_of(session_id))

    def add_shard(self) -> str:
        """Start one more shard; the sessions it now places are handed over to it. Returns its id."""
        return self.cluster.add_shard()

    def remove_shard(self, shard_id: str) -> None:
        """Hand a shard's sessions over to the others, then stop it."""
        self.cluster.remove_shard(shard_id)

    def shard_info(self) -> dict[str, dict[str, Any]]:
        """Per shard: its process id, metrics address, leases held, fenced writes, Hive restarts."""
        return self.cluster.shard_info()

    # ------------------------------------------------------------------ sessions

    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return self._portal.run(self.aio.create_session(session_id, config, timeout=timeout))

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        """The session ``session_id``, created with ``config`` if it does not exist (live or stored)."""
        return self._portal.run(self.aio.get_or_create_session(session_id, config, timeout=timeout))

    def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Let a session marked failed (it crashed too often) take work again; True if it was failed."""
        return self._portal.run(self.aio.reset_session(session_id, timeout=timeout))

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        return self._portal.run(self.aio.create_child_session(parent_id, child_id, config, timeout=timeout))

    def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._portal.run(self.aio.destroy_session(session_id, timeout=timeout))

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._portal.run(self.aio.get_child_sessions(parent_id, timeout=timeout))

    def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._portal.run(self.aio.is_child_session(session_id, timeout=timeout))

    def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return self._portal.run(self.aio.session_count(timeout=timeout))

    def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        """Live sessions summed over the serving shards."""
        return self._portal.run(self.aio.live_session_count(timeout=timeout))

    def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._portal.run(self.aio.list_sessions(timeout=timeout))

    def list_tools(self) -> list[ToolDefinition]:
        """The tools every shard offers (the ``tools=`` executor, or the built-ins)."""
        return self.aio.list_tools()

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._portal.run(self.aio.restore_session_by_id(session_id, timeout=timeout))

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return self._portal.run(self.aio.load_all_sessions(timeout=timeout))

    # ------------------------------------------------------------------ turns

    def generate(
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
        """Run one turn; ``on_confirmation(event)`` answers its confirmations (on a worker thread)."""
        return self._portal.run(
            self.aio.generate(
                session_id,
                prompt,
                timeout=timeout,
                on_confirmation=on_confirmation,
                idempotency_key=idempotency_key,
                on_busy=on_busy,
                output_schema=output_schema,
            )
        )

    def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> ClusterTurnStream:
        stream = self._portal.run(
            self.aio.generate_streaming(
                session_id,
                prompt,
                timeout=timeout,
                on_confirmation=on_confirmation,
                idempotency_key=idempotency_key,
                on_busy=on_busy,
                output_schema=output_schema,
            )
        )
        return ClusterTurnStream(self._portal, stream)

    # ------------------------------------------------------------------ runs

    def start_run(
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
        return self._portal.run(
            self.aio.start_run(
                session_id,
                prompt,
                idempotency_key=idempotency_key,
                on_busy=on_busy,
                webhook=webhook,
                timeout=timeout,
                output_schema=output_schema,
            )
        )

    def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        return self._portal.run(self.aio.get_run(run_id, timeout=timeout))

    def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        return self._portal.run(self.aio.wait_run(run_id, timeout=timeout))

    def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._portal.run(self.aio.cancel_run(run_id, timeout=timeout))

    def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        return self._portal.run(self.aio.list_runs(session_id, timeout=timeout))

    def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> Iterator[AgentEvent]:
        events = self.aio.run_events(run_id, after=after, timeout=timeout)
        while True:
            event = self._portal.run(_next(events))
            if event is _END:
                return
            yield event

    def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        return self._portal.run(self.aio.history(session_id, timeout=timeout))

    def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return self._portal.run(self.aio.context_usage(session_id, timeout=timeout))

    def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return self._portal.run(self.aio.usage(session_id, timeout=timeout))

    def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._portal.run(self.aio.clear(session_id, timeout=timeout))

    def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        self._portal.run(self.aio.compact(session_id, timeout=timeout))

    def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return self._portal.run(self.aio.maybe_auto_compact(session_id, timeout=timeout))

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        self._portal.run(self.aio.configure(session_id, thinking, budget, model_config, timeout=timeout))

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        return self._portal.run(self.aio.get_llm_for_session(session_id, timeout=timeout))

    def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._portal.run(self.aio.pause_session(session_id, timeout=timeout))

    def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._portal.run(self.aio.resume_session(session_id, timeout=timeout))

    def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._portal.run(self.aio.cancel_operation(session_id, timeout=timeout))

    # ------------------------------------------------------------------ confirmations

    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        decided_by: str | None = None,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        return self._portal.run(
            self.aio.confirm_tool(
                session_id, tool_id, approved, reason, decided_by=decided_by, timeout=timeout
            )
        )

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._portal.run(self.aio.pending_confirmations(session_id, timeout=timeout))

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return self._portal.run(self.aio.set_confirmation_policy(session_id, policy, timeout=timeout))

    def get_confirmation_policy(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ConfirmationPolicy:
        return self._portal.run(self.aio.get_confirmation_policy(session_id, timeout=timeout))

    # ------------------------------------------------------------------ events and the store

    def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> ClusterSubscription:
        subscription = self._portal.run(self.aio.subscribe(session_id, after=after, timeout=timeout))
        return ClusterSubscription(self._portal, subscription)

    def flush(self, timeout: Timeout = None) -> None:
        """Durability barrier on every serving shard."""
        self._portal.run(self.aio.flush(timeout))

    def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        """``[("shard-N: store", "ok" | "error: ...")]`` for every serving shard."""
        return self._portal.run(self.aio.store_health(timeout=timeout))
