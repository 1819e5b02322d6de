"""``AsyncClusterHive``: the Hive API over hive shards on Ray, as coroutines; the one cluster facade.

Every method builds a typed operation (:mod:`sessionhive.cluster.messages`),
checks its arguments as every facade does, and hands it to the
:class:`~sessionhive.cluster.transport.Transport` (batched Ray calls, the one
deadline/retry rule). The sync :class:`~sessionhive.cluster.ClusterHive` runs
this facade on a loop thread of its own, so it shares the batching.
Membership and placement belong to the :class:`~sessionhive.cluster.membership.Cluster`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

from sessionhive import (
    AgentEvent,
    AgentResult,
    CallTimeout,
    ConfirmationPolicy,
    ConfirmationRequired,
    ContextUsage,
    LlmConfig,
    Message,
    SessionConfig,
    ToolDefinition,
    Usage,
)
from sessionhive.api import (
    DEFAULT,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_ON_BUSY,
    DEFAULT_STOP_TIMEOUT,
    Timeout,
    resolve_timeout,
)
from sessionhive.cluster import messages as m
from sessionhive.cluster.membership import Cluster, ClusterSettings, start_cluster
from sessionhive.cluster.transport import FEED_POLL, Feed, Transport, judge_ended
from sessionhive.model.confirmation import OnConfirmation, check_confirm_arguments, read_confirmation_answer
from sessionhive.model.content import Prompt
from sessionhive.model.events import TERMINAL_EVENTS
from sessionhive.model.ids import check_id
from sessionhive.model.output import OutputSchema, rebuild_output, schema_to_send
from sessionhive.model.runs import OnBusy, Run, Webhook, check_idempotency_key, check_on_busy, session_of_run
from sessionhive.model.validate import check_instance, check_prompt

__all__ = ["AsyncClusterHive", "AsyncClusterSubscription", "AsyncClusterTurnStream", "cluster_hive_factory"]


class AsyncClusterTurnStream:
    """The events of one turn on a shard, fetched in batches; ``await stream.result()`` for the outcome.

    With ``on_confirmation``, each :class:`ConfirmationRequired` the stream
    yields is answered by it (a plain function runs on a worker thread, so
    that it cannot block the event loop the cluster's calls share).
    """

    def __init__(
        self,
        hive: AsyncClusterHive,
        op: m.StartTurn,
        feed: Feed,
        on_confirmation: OnConfirmation | None,
        output_model: type[Any] | None = None,
    ) -> None:
        self.session_id = op.session_id
        self._output_model = output_model  # the class of output_schema=: the result's output becomes one
        #: The turn's run (``get_run``, ``run_events``), as the session that accepted it named it.
        self.run_id = feed.run_id or ""
        self._hive = hive
        self._op = op
        self._feed = feed
        self._on_confirmation = on_confirmation
        self._buffer: list[AgentEvent] = []
        self._outcome: m.Outcome | None = None

    async def _fetch(self, wait: float) -> None:
        events, done, outcome = await self._feed.next_events(wait)
        for event in events:
            if self._on_confirmation is not None and isinstance(event, ConfirmationRequired):
                await self._answer(event, self._on_confirmation)
        self._buffer.extend(events)
        if done:
            self._outcome = outcome or ("interrupted", "the stream ended without an outcome")

    async def _answer(self, event: ConfirmationRequired, callback: OnConfirmation) -> None:
        if inspect.iscoroutinefunction(callback):
            answer: object = callback(event)
        else:
            answer = await asyncio.to_thread(callback, event)
        decision = await read_confirmation_answer(answer, event.timeout_s)
        if decision is not None:  # unanswered: the session settles it by its policy's on_timeout
            # The session that asked: a task tool's child asks through its parent's stream.
            await self._hive.confirm_tool(event.session_id, event.tool_id, decision[0], decision[1])

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            while self._buffer:
                yield self._buffer.pop(0)
            if self._outcome is not None:
                return
            await self._fetch(FEED_POLL)

    async def result(self, timeout: float | None = None) -> AgentResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._outcome is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise CallTimeout(f"the turn of session {self.session_id!r} got no answer within {timeout} s")
            wait = FEED_POLL if deadline is None else max(0.0, min(FEED_POLL, deadline - time.monotonic()))
            await self._fetch(wait)
        result: AgentResult = judge_ended(self._op, self._outcome)
        return rebuild_output(result, self._output_model)

    async def cancel(self) -> bool:
        return await self._hive.cancel_operation(self.session_id)


class AsyncClusterSubscription:
    """A session's events from its shard, fetched in batches, until :meth:`close`."""

    def __init__(self, session_id: str, feed: Feed) -> None:
        self.session_id = session_id
        self._feed = feed
        self._buffer: list[AgentEvent] = []
        self._closed = False

    async def get(self, timeout: float | None = None) -> AgentEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            if self._closed:
                return None
            wait = FEED_POLL if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"no event of session {self.session_id!r} within {timeout} s")
            events, done, _ = await self._feed.next_events(min(wait, FEED_POLL))
            self._buffer.extend(events)
            self._closed = self._closed or done
        return self._buffer.pop(0)

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._feed.close()

    async def __aenter__(self) -> AsyncClusterSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class StartingCluster:
    """What ``AsyncClusterHive.start()`` returns: await it, or use it with ``async with``."""

    def __init__(self, start: Callable[[], Cluster]) -> None:
        self._start_cluster = start
        self._hive: AsyncClusterHive | None = None

    def blocking(self) -> Cluster:
        """Start the cluster on this thread (what ``ClusterHive.start`` does)."""
        return self._start_cluster()

    async def _start(self) -> AsyncClusterHive:
        self._hive = AsyncClusterHive(await asyncio.to_thread(self._start_cluster))
        return self._hive

    def __await__(self) -> Generator[Any, None, AsyncClusterHive]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncClusterHive:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        if self._hive is not None:
            await self._hive.stop()


class AsyncClusterHive:
    """The :class:`~sessionhive.AsyncHive` API over ``shards`` hive shards on a Ray cluster.

    ``hive = await AsyncClusterHive.start(shards=2, store=..., llm=...)`` or
    ``async with``; every session lives on one shard at a time (its tree with
    it), owned through a lease in the shared store. Awaiting never blocks the
    event loop.
    """

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._transport = Transport(cluster)

    @staticmethod
    def start(
        shards: int = 2,
        store: str = "sqlite:///sessionhive.db",
        llm: Any = None,
        ray_address: str | None = None,
        *,
        lease_ttl: float = 10.0,
        suspect_after: float | None = None,
        ping_interval: float = 0.5,
        audit_writes: bool = False,
        metrics_sd_file: str | os.PathLike[str] | None = None,
        metrics_addr: str = "127.0.0.1",
        metrics_advertise_host: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        ray_options: dict[str, Any] | None = None,
        **hive_options: Any,
    ) -> StartingCluster:
        """Start (or join, with ``ray_address="auto"`` or an address) Ray and ``shards`` shards.

        Await the answer, or use it with ``async with``; the start runs off the
        event loop. ``lease_ttl``: seconds a silent shard keeps its sessions;
        ``suspect_after`` (default 0.6 x ``lease_ttl``): seconds of silence
        after which its sessions move to other shards. ``metrics_sd_file``: a
        Prometheus ``file_sd`` targets file listing every shard's ``/metrics``
        (with a ``shard`` label; the job is the scrape config's). Each shard
        serves it on a free port of ``metrics_addr`` (``"0.0.0.0"``: every
        interface, listed at its node's address); ``metrics_advertise_host`` is
        the host the file lists instead, the one a Prometheus elsewhere
        reaches. ``audit_writes`` records each write's owner and epoch in
        ``sessionhive_write_log``. Extra keyword arguments are Hive options
        (``idle_timeout``, ``max_live_sessions``, ``workspace``...) for every shard.
        """
        settings = ClusterSettings(
            lease_ttl=lease_ttl,
            suspect_after=suspect_after,
            ping_interval=ping_interval,
            audit_writes=audit_writes,
            metrics_sd_file=metrics_sd_file,
            metrics_addr=metrics_addr,
            metrics_advertise_host=metrics_advertise_host,
            call_timeout=call_timeout,
            ray_options=ray_options,
            hive_options=hive_options,
        )
        return StartingCluster(lambda: start_cluster(store, llm, ray_address, shards, settings))

    async def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop every shard (each flushes and releases its leases); the local Ray too if this started it."""
        await asyncio.to_thread(self._cluster.stop, timeout)

    async def __aenter__(self) -> AsyncClusterHive:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def call_timeout(self) -> float:
        return self._cluster.call_timeout

    @property
    def cluster(self) -> Cluster:
        """Membership, placement and shard handles (shared with the sync facade)."""
        return self._cluster

    def _limit(self, timeout: Timeout) -> float | None:
        return resolve_timeout(timeout, self._cluster.call_timeout)

    async def _call(self, op: m.SessionOp, timeout: Timeout, *, root: str | None = None) -> Any:
        return await self._transport.call(op, self._limit(timeout), root=root)

    # ------------------------------------------------------------------ cluster

    @property
    def shards(self) -> list[str]:
        """The serving shards."""
        return list(self._cluster.membership.shard_ids)

    async def shard_of(self, session_id: str) -> str:
        """The shard that serves ``session_id`` now."""
        return self._cluster.membership.owner_of(await self._transport.root(session_id))

    async def add_shard(self) -> str:
        """Start one more shard; the sessions it now places are handed over to it. Returns its id."""
        return await asyncio.to_thread(self._cluster.add_shard)

    async def remove_shard(self, shard_id: str) -> None:
        """Hand a shard's sessions over to the others, then stop it."""
        await asyncio.to_thread(self._cluster.remove_shard, shard_id)

    async def shard_info(self) -> dict[str, dict[str, Any]]:
        """Per shard: its process id, metrics address, leases held, fenced writes, Hive restarts."""
        return await asyncio.to_thread(self._cluster.shard_info)

    # ------------------------------------------------------------------ sessions

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        check_instance("config", config, SessionConfig, optional=True)
        created: str = await self._call(m.CreateSession(session_id, config), timeout, root=session_id)
        self._cluster.remember_root(session_id, session_id)
        return created

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        """The session ``session_id``, created with ``config`` if it does not exist (live or stored)."""
        check_instance("config", config, SessionConfig, optional=True)
        check_id(session_id)
        root = await self._transport.root(session_id)  # an existing child is placed with its root
        got: str = await self._call(m.GetOrCreateSession(session_id, config), timeout, root=root)
        self._cluster.remember_root(session_id, root)
        return got

    async def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Let a session marked failed (it crashed too often) take work again; True if it was failed."""
        return bool(await self._call(m.ResetSession(session_id), timeout))

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        check_id(child_id)
        check_id(parent_id)
        check_instance("config", config, SessionConfig, optional=True)
        root = await self._transport.root(parent_id)
        created: str = await self._call(m.CreateChildSession(parent_id, child_id, config), timeout, root=root)
        self._cluster.remember_root(child_id, root)
        return created

    async def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._call(m.DestroySession(session_id), timeout)

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        children: list[str] = await self._call(m.GetChildSessions(parent_id), timeout)
        return children

    async def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(await self._call(m.IsChildSession(session_id), timeout))

    async def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return len(await self.list_sessions(timeout=timeout))

    async def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        """Live sessions summed over the serving shards."""
        return sum(await self._each_shard(m.LiveSessionCount(), timeout))

    async def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        membership = self._cluster.membership_arg()
        lists = await self._transport.each_shard(
            lambda handle: handle.owned_ids.remote(membership), "list_sessions", self._limit(timeout)
        )
        return sorted({sid for ids in lists for sid in ids})

    def list_tools(self) -> list[ToolDefinition]:
        """The tools every shard offers (the ``tools=`` executor, or the built-ins)."""
        return self._cluster.tool_definitions()

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._call(m.RestoreSession(session_id), timeout)

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        membership = self._cluster.membership_arg()
        counts = await self._transport.each_shard(
            lambda handle: handle.load_owned.remote(membership), "load_all_sessions", self._limit(timeout)
        )
        return sum(counts)

    async def _each_shard(self, op: m.ShardOp, timeout: Timeout) -> list[Any]:
        return await self._transport.each_shard(
            lambda handle: handle.hive_call.remote(op), type(op).__name__, self._limit(timeout)
        )

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
        """Run one turn; ``on_confirmation(event)`` answers its confirmations (a stream carries them)."""
        check_prompt(prompt)
        key, on_busy = check_idempotency_key(idempotency_key), check_on_busy(on_busy)
        schema, model = schema_to_send(output_schema)
        if on_confirmation is not None:
            limit = self._limit(timeout)
            started = time.monotonic()
            stream = await self.generate_streaming(
                session_id,
                prompt,
                timeout=timeout,
                on_confirmation=on_confirmation,
                idempotency_key=key,
                on_busy=on_busy,
                output_schema=output_schema,
            )
            async for _event in stream:
                pass
            left = None if limit is None else max(0.0, limit - (time.monotonic() - started))
            return await stream.result(left)
        result: AgentResult = await self._call(m.Turn(session_id, prompt, key, on_busy, schema), timeout)
        return rebuild_output(result, model)

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
    ) -> AsyncClusterTurnStream:
        check_prompt(prompt)
        key, on_busy = check_idempotency_key(idempotency_key), check_on_busy(on_busy)
        schema, model = schema_to_send(output_schema)  # the class stays here, its schema goes
        op = m.StartTurn(session_id, prompt, key, on_busy, schema)
        feed = await self._transport.start_feed(op, self._limit(timeout))
        return AsyncClusterTurnStream(self, op, feed, on_confirmation, model)

    # ------------------------------------------------------------------ runs (routed by their session)

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
        check_prompt(prompt)
        check_instance("webhook", webhook, Webhook, optional=True)
        key, policy = check_idempotency_key(idempotency_key), check_on_busy(on_busy)
        schema = schema_to_send(output_schema)[0]
        run: Run = await self._call(m.StartRun(session_id, prompt, key, policy, webhook, schema), timeout)
        return run

    async def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        run: Run = await self._call(m.GetRun(session_of_run(run_id), run_id), timeout)
        return run

    async def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        limit = self._limit(timeout)
        run: Run = await self._call(m.WaitRun(session_of_run(run_id), run_id, limit), limit)
        return run

    async def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        cancelled: bool = await self._call(m.CancelRun(session_of_run(run_id), run_id), timeout)
        return cancelled

    async def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        runs: list[Run] = await self._call(m.ListRuns(session_id), timeout)
        return runs

    async def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncIterator[AgentEvent]:
        """The run's events after ``after``, to its terminal one; a feed cut off (its shard gone)
        starts again on the session's new shard after the last event taken."""
        session_id = session_of_run(run_id)
        while True:
            op = m.RunEvents(session_id, run_id, after)
            feed = await self._transport.start_feed(op, self._limit(timeout))
            stream = AsyncClusterSubscription(session_id, feed)
            try:
                async for event in stream:
                    if event.event_id:
                        after = event.event_id
                    yield event
                    if isinstance(event, TERMINAL_EVENTS):
                        return
            finally:
                stream.close()
            run = await self.get_run(run_id)
            if run.done and (after or 0) >= run.last_event_id:
                return  # its terminal event is older than the session keeps: nothing more to send
            await asyncio.sleep(FEED_POLL)  # the session is moving to another shard: ask again shortly

    async def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        messages: list[Message] = await self._call(m.History(session_id), timeout)
        return messages

    async def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        usage: ContextUsage = await self._call(m.ContextUsage(session_id), timeout)
        return usage

    async def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        usage: Usage = await self._call(m.SessionUsage(session_id), timeout)
        return usage

    async def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._call(m.Clear(session_id), timeout)

    async def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        await self._call(m.Compact(session_id), timeout)

    async def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return bool(await self._call(m.MaybeAutoCompact(session_id), timeout))

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        await self._call(m.Configure(session_id, thinking, budget, model_config), timeout)

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        config: LlmConfig | None = await self._call(m.GetLlmForSession(session_id), timeout)
        return config

    async def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(await self._call(m.PauseSession(session_id), timeout))

    async def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(await self._call(m.ResumeSession(session_id), timeout))

    async def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(await self._call(m.CancelOperation(session_id), timeout))

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
        check_confirm_arguments(tool_id, approved, reason, decided_by)
        op = m.ConfirmTool(session_id, tool_id, approved, reason, decided_by)
        return bool(await self._call(op, timeout))

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        ids: list[str] = await self._call(m.PendingConfirmations(session_id), timeout)
        return ids

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        check_instance("policy", policy, ConfirmationPolicy)
        result: ConfirmationPolicy = await self._call(m.SetConfirmationPolicy(session_id, policy), timeout)
        return result

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        policy: ConfirmationPolicy = await self._call(m.GetConfirmationPolicy(session_id), timeout)
        return policy

    # ------------------------------------------------------------------ events and the store

    async def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncClusterSubscription:
        feed = await self._transport.start_feed(m.Subscribe(session_id, after), self._limit(timeout))
        return AsyncClusterSubscription(session_id, feed)

    async def flush(self, timeout: Timeout = None) -> None:
        """Durability barrier on every serving shard."""
        await self._each_shard(m.FlushShard(), timeout)

    async def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        """``[("shard-N: store", "ok" | "error: ...")]`` for every serving shard."""
        return [entry for entries in await self._each_shard(m.StoreHealth(), timeout) for entry in entries]


def cluster_hive_factory(
    shards: int, *, ray_address: str | None = None, **cluster_options: Any
) -> Callable[..., Awaitable[AsyncClusterHive]]:
    """A ``hive_factory`` for :func:`sessionhive.loadtest.run_loadtest`: the load test drives a cluster.

    The load test's store must be one every shard can open (its temporary
    SQLite file works on one machine; PostgreSQL anywhere); its scripted
    model is shipped to every shard.
    """

    async def start(
        options: Any, *, store: str, workspace: Path, llm: Any, metrics: bool
    ) -> AsyncClusterHive:
        # Every shard serves its own /metrics; only the driven cluster lists them in the
        # targets file, not the one that verifies the store afterwards.
        cluster = dict(cluster_options)
        if not metrics:
            cluster.pop("metrics_sd_file", None)
        hive_options: dict[str, Any] = dict(getattr(options, "hive_options", {}) or {})
        if getattr(options, "actor_backend", None) is not None:
            hive_options["actor_backend"] = options.actor_backend
        return await AsyncClusterHive.start(
            shards, store, llm, ray_address, workspace=str(workspace), **cluster, **hive_options
        )

    return start
