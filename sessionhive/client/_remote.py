"""``RemoteHive`` and ``AsyncRemoteHive``: the Hive API over HTTP, so code moves between embedded and remote.

Every method has the name, arguments, result and exceptions of its
:class:`~sessionhive.Hive` / :class:`~sessionhive.AsyncHive` twin; the service's
problem documents come back as the same exception classes. Each method is one
line here: its request and its answer are written once, in
:class:`._core.RemoteCore`; the twins only send (``httpx.Client``) or await
(``httpx.AsyncClient``) what the core plans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx

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
from sessionhive.api import DEFAULT, DEFAULT_CALL_TIMEOUT, DEFAULT_ON_BUSY, DEFAULT_STOP_TIMEOUT, Timeout
from sessionhive.metrics import tracing
from sessionhive.model.content import Prompt
from sessionhive.model.output import OutputSchema, output_model
from sessionhive.model.runs import OnBusy, Run, Webhook

from ._core import (
    DEFAULT_PAGE,
    HistoryPage,
    HttpCall,
    PendingConfirmation,
    Plan,
    RemoteCore,
    Resumption,
    SessionPage,
    answer_of,
    auth_headers,
    raise_for,
    transport_error,
)
from ._streams import (
    AsyncRemoteSubscription,
    AsyncRemoteTurnStream,
    RemoteSubscription,
    RemoteTurnStream,
    afollow_run,
    follow_run,
)

__all__ = ["AsyncRemoteHive", "RemoteHive"]

T = TypeVar("T")


class _RemoteBase:
    """What both twins hold: the service's address, the call timeout and the core that plans calls."""

    def __init__(self, base_url: str, call_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.call_timeout = call_timeout
        self._core = RemoteCore(call_timeout)

    def _t(self, timeout: Timeout) -> float | None:
        return self._core.timeout(timeout)

    @property
    def metrics_url(self) -> str:
        """The service's Prometheus endpoint (``/metrics``, served without a token)."""
        return self.base_url + "/metrics"


class RemoteHive(_RemoteBase):
    """:class:`~sessionhive.Hive`'s API against a ``sessionhive serve`` at ``base_url``.

    ``token`` defaults to ``SESSIONHIVE_TOKEN``. ``timeout=`` works as in Hive
    (``"default"`` is ``call_timeout``); a call that gets no answer in time
    raises :class:`~sessionhive.CallTimeout`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, call_timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=auth_headers(token),
            timeout=call_timeout,
            transport=transport,
            event_hooks={"request": [tracing.inject_request]},  # the caller's span reaches the service
        )

    def close(self) -> None:
        self._http.close()

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:  # noqa: ARG002 - nothing to wait for
        """Close the connections; the service runs on. ``timeout`` is there because ``Hive.stop`` takes it."""
        self.close()

    def __enter__(self) -> RemoteHive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: HttpCall) -> httpx.Response:
        request = self._http.build_request(call.method, call.path, **call.options())
        try:
            return self._http.send(request, stream=call.stream)
        except httpx.HTTPError as exc:
            raise transport_error(exc, call.what) from None

    def _run(self, plan: Plan[T]) -> T:
        """Send each call ``plan`` yields, hand it the answer, return what it returns."""
        try:
            call = next(plan)
            while True:
                call = plan.send(answer_of(self._send(call)))
        except StopIteration as done:
            result: T = done.value
            return result

    def _open_stream(self, call: HttpCall) -> httpx.Response:
        response = self._send(call)
        if response.status_code >= 400:
            response.read()
            response.close()
            raise_for(response)
        return response

    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return self._run(self._core.create_session(session_id, config, timeout))

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return self._run(self._core.get_or_create_session(session_id, config, timeout))

    def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._run(self._core.changed("reset", session_id, timeout))

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        return self._run(self._core.create_child_session(parent_id, child_id, config, timeout))

    def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        return self._run(self._core.session_only("destroy", session_id, timeout))

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._run(self._core.get_child_sessions(parent_id, timeout))

    def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._run(self._core.is_child_session(session_id, timeout))

    def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return self._run(self._core.stat("sessions", timeout))

    def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return self._run(self._core.stat("live_sessions", timeout))

    def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._run(self._core.list_sessions(timeout))

    def list_tools(self) -> list[ToolDefinition]:
        return self._run(self._core.list_tools())

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        return self._run(self._core.session_only("usage", session_id, timeout))

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return self._run(self._core.load_all_sessions(timeout))

    def generate(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = None,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AgentResult:
        """Run one turn; ``on_confirmation(event)`` answers its confirmations, as with ``Hive``."""
        if on_confirmation is not None:
            stream = self.generate_streaming(
                session_id,
                prompt,
                on_confirmation=on_confirmation,
                idempotency_key=idempotency_key,
                on_busy=on_busy,
                output_schema=output_schema,
            )
            return stream.result(self._t(timeout))
        plan = self._core.generate(session_id, prompt, idempotency_key, on_busy, timeout, output_schema)
        return self._run(plan)

    def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> RemoteTurnStream:
        call = self._core.turn_stream(session_id, prompt, idempotency_key, on_busy, timeout, output_schema)
        model = output_model(output_schema)
        return RemoteTurnStream(self, session_id, self._open_stream(call), on_confirmation, model).accepted()

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
        """Start a run and return once the service accepted it (``POST .../runs``, 202)."""
        plan = self._core.start_run(
            session_id, prompt, idempotency_key, on_busy, webhook, timeout, output_schema
        )
        return self._run(plan)

    def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        return self._run(self._core.get_run(run_id, timeout))

    def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        """The run once finished, followed over its event stream; CallTimeout after ``timeout``."""
        limit = self._t(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            run = self.get_run(run_id)
            if run.done:
                return run
            resumption = Resumption(run_id, run.last_event_id, self.call_timeout)
            for _event in follow_run(self._open_stream, self._core, resumption, deadline):
                pass

    def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._run(self._core.cancel_run(run_id, timeout))

    def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        return self._run(self._core.list_runs(session_id, timeout))

    def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> Iterator[AgentEvent]:
        """The run's events after ``after`` to its terminal one; a dropped stream resumes where it broke.

        Reconnections send ``Last-Event-ID``; the iterator gives up (raising the
        last error) when ``call_timeout`` seconds pass without an event.
        ``timeout`` bounds each connection's wait for the service's answer.
        """
        resumption = Resumption(run_id, after, self.call_timeout, timeout)
        return follow_run(self._open_stream, self._core, resumption)

    def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        return self._run(self._core.history(session_id, timeout))

    def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return self._run(self._core.context_usage(session_id, timeout))

    def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return self._run(self._core.usage(session_id, timeout))

    def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        return self._run(self._core.session_only("clear", session_id, timeout))

    def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        return self._run(self._core.session_only("compact", session_id, timeout))

    def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return self._run(self._core.maybe_auto_compact(session_id, timeout))

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        return self._run(self._core.configure(session_id, thinking, budget, model_config, timeout))

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        return self._run(self._core.get_llm_for_session(session_id, timeout))

    def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._run(self._core.changed("pause", session_id, timeout))

    def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._run(self._core.changed("resume", session_id, timeout))

    def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._run(self._core.changed("cancel", session_id, timeout))

    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        return self._run(self._core.confirm_tool(session_id, tool_id, approved, reason, timeout))

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._run(self._core.pending_confirmations(session_id, timeout))

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return self._run(self._core.set_confirmation_policy(session_id, policy, timeout))

    def get_confirmation_policy(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ConfirmationPolicy:
        return self._run(self._core.get_confirmation_policy(session_id, timeout))

    def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> RemoteSubscription:
        """Receive the session's events from now on (returns once the service has subscribed);
        with ``after``, the kept events with a larger ``event_id`` first (``Last-Event-ID``)."""
        subscription = RemoteSubscription(
            session_id, self._open_stream(self._core.events_stream(session_id, after, timeout))
        )
        if not subscription.ready.wait(self._t(timeout)):
            subscription.close()
            raise CallTimeout(f"subscribing to session {session_id!r} got no answer in time")
        return subscription

    def flush(self, timeout: Timeout = None) -> None:
        return self._run(self._core.flush(timeout))

    def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        return self._run(self._core.store_health(timeout))

    def find_sessions(
        self,
        prefix: str = "",
        *,
        state: str | None = None,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = DEFAULT,
    ) -> SessionPage:
        """One page of the sessions whose id starts with ``prefix``, waiting ones first.

        ``state`` (``waiting``, ``running``, ``paused``, ``idle``) keeps only those.
        """
        return self._run(self._core.find_sessions(prefix, state, offset, limit, timeout))

    def history_page(
        self,
        session_id: str,
        *,
        before: int | None = None,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = DEFAULT,
    ) -> HistoryPage:
        """The ``limit`` messages before index ``before`` (default: the newest ``limit``)."""
        return self._run(self._core.history_page(session_id, before, limit, timeout))

    def confirmation_inbox(self, *, timeout: Timeout = DEFAULT) -> list[PendingConfirmation]:
        """Every tool call waiting for a decision in the sessions this token sees, oldest first."""
        return self._run(self._core.confirmation_inbox(timeout))


class AsyncRemoteHive(_RemoteBase):
    """:class:`~sessionhive.AsyncHive`'s API against a ``sessionhive serve``, on ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, call_timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=auth_headers(token),
            timeout=call_timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            event_hooks={"request": [tracing.ainject_request]},  # the caller's span reaches the service
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:  # noqa: ARG002 - nothing to wait for
        """Close the connections; the service runs on. ``timeout`` is AsyncHive.stop's, unused here."""
        await self.close()

    async def __aenter__(self) -> AsyncRemoteHive:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, call: HttpCall) -> httpx.Response:
        request = self._http.build_request(call.method, call.path, **call.options())
        try:
            return await self._http.send(request, stream=call.stream)
        except httpx.HTTPError as exc:
            raise transport_error(exc, call.what) from None

    async def _run(self, plan: Plan[T]) -> T:
        """Send each call ``plan`` yields, hand it the answer, return what it returns."""
        try:
            call = next(plan)
            while True:
                call = plan.send(answer_of(await self._send(call)))
        except StopIteration as done:
            result: T = done.value
            return result

    async def _open_stream(self, call: HttpCall) -> httpx.Response:
        response = await self._send(call)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise_for(response)
        return response

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return await self._run(self._core.create_session(session_id, config, timeout))

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return await self._run(self._core.get_or_create_session(session_id, config, timeout))

    async def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._run(self._core.changed("reset", session_id, timeout))

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        return await self._run(self._core.create_child_session(parent_id, child_id, config, timeout))

    async def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        return await self._run(self._core.session_only("destroy", session_id, timeout))

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return await self._run(self._core.get_child_sessions(parent_id, timeout))

    async def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._run(self._core.is_child_session(session_id, timeout))

    async def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return await self._run(self._core.stat("sessions", timeout))

    async def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return await self._run(self._core.stat("live_sessions", timeout))

    async def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        return await self._run(self._core.list_sessions(timeout))

    async def list_tools(self) -> list[ToolDefinition]:
        return await self._run(self._core.list_tools())

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        return await self._run(self._core.session_only("usage", session_id, timeout))

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return await self._run(self._core.load_all_sessions(timeout))

    async def generate(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = None,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AgentResult:
        """Run one turn; ``on_confirmation`` (a function or coroutine function) answers its confirmations."""
        if on_confirmation is not None:
            stream = await self.generate_streaming(
                session_id,
                prompt,
                on_confirmation=on_confirmation,
                idempotency_key=idempotency_key,
                on_busy=on_busy,
                output_schema=output_schema,
            )
            return await stream.result(self._t(timeout))
        plan = self._core.generate(session_id, prompt, idempotency_key, on_busy, timeout, output_schema)
        return await self._run(plan)

    async def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AsyncRemoteTurnStream:
        call = self._core.turn_stream(session_id, prompt, idempotency_key, on_busy, timeout, output_schema)
        response = await self._open_stream(call)
        model = output_model(output_schema)
        return await AsyncRemoteTurnStream(self, session_id, response, on_confirmation, model).accepted()

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
        """Start a run and return once the service accepted it (``POST .../runs``, 202)."""
        plan = self._core.start_run(
            session_id, prompt, idempotency_key, on_busy, webhook, timeout, output_schema
        )
        return await self._run(plan)

    async def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        return await self._run(self._core.get_run(run_id, timeout))

    async def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        """The run once finished, followed over its event stream; CallTimeout after ``timeout``."""
        limit = self._t(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            run = await self.get_run(run_id)
            if run.done:
                return run
            resumption = Resumption(run_id, run.last_event_id, self.call_timeout)
            async for _event in afollow_run(self._open_stream, self._core, resumption, deadline):
                pass

    async def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._run(self._core.cancel_run(run_id, timeout))

    async def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        return await self._run(self._core.list_runs(session_id, timeout))

    def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncIterator[AgentEvent]:
        """The run's events after ``after`` to its terminal one; a dropped stream resumes where it broke."""
        resumption = Resumption(run_id, after, self.call_timeout, timeout)
        return afollow_run(self._open_stream, self._core, resumption)

    async def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        return await self._run(self._core.history(session_id, timeout))

    async def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return await self._run(self._core.context_usage(session_id, timeout))

    async def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return await self._run(self._core.usage(session_id, timeout))

    async def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        return await self._run(self._core.session_only("clear", session_id, timeout))

    async def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        return await self._run(self._core.session_only("compact", session_id, timeout))

    async def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return await self._run(self._core.maybe_auto_compact(session_id, timeout))

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        return await self._run(self._core.configure(session_id, thinking, budget, model_config, timeout))

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        return await self._run(self._core.get_llm_for_session(session_id, timeout))

    async def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._run(self._core.changed("pause", session_id, timeout))

    async def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._run(self._core.changed("resume", session_id, timeout))

    async def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return await self._run(self._core.changed("cancel", session_id, timeout))

    async def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        return await self._run(self._core.confirm_tool(session_id, tool_id, approved, reason, timeout))

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return await self._run(self._core.pending_confirmations(session_id, timeout))

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return await self._run(self._core.set_confirmation_policy(session_id, policy, timeout))

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return await self._run(self._core.get_confirmation_policy(session_id, timeout))

    async def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncRemoteSubscription:
        """Receive the session's events from now on (returns once the service has subscribed);
        with ``after``, the kept events with a larger ``event_id`` first (``Last-Event-ID``)."""
        response = await self._open_stream(self._core.events_stream(session_id, after, timeout))
        subscription = AsyncRemoteSubscription(session_id, response)
        try:
            await asyncio.wait_for(asyncio.shield(subscription.ready), self._t(timeout))
        except TimeoutError:
            subscription.close()
            raise CallTimeout(f"subscribing to session {session_id!r} got no answer in time") from None
        return subscription

    async def flush(self, timeout: Timeout = None) -> None:
        return await self._run(self._core.flush(timeout))

    async def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        return await self._run(self._core.store_health(timeout))

    async def find_sessions(
        self,
        prefix: str = "",
        *,
        state: str | None = None,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = DEFAULT,
    ) -> SessionPage:
        """One page of the sessions whose id starts with ``prefix``, waiting ones first.

        ``state`` (``waiting``, ``running``, ``paused``, ``idle``) keeps only those.
        """
        return await self._run(self._core.find_sessions(prefix, state, offset, limit, timeout))

    async def history_page(
        self,
        session_id: str,
        *,
        before: int | None = None,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = DEFAULT,
    ) -> HistoryPage:
        """The ``limit`` messages before index ``before`` (default: the newest ``limit``)."""
        return await self._run(self._core.history_page(session_id, before, limit, timeout))

    async def confirmation_inbox(self, *, timeout: Timeout = DEFAULT) -> list[PendingConfirmation]:
        """Every tool call waiting for a decision in the sessions this token sees, oldest first."""
        return await self._run(self._core.confirmation_inbox(timeout))
