"""``RemoteHive`` and ``AsyncRemoteHive``: the Hive API over HTTP, so code moves between embedded and remote.

Every method has the name, arguments, result and exceptions of its
:class:`~sessionhive.Hive` / :class:`~sessionhive.AsyncHive` twin; the service's
problem documents come back as the same exception classes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import queue
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sessionhive import (
    AgentEvent,
    AgentResult,
    CallTimeout,
    ConfirmationNotFound,
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
    DEFAULT_STOP_TIMEOUT,
    Timeout,
    resolve_timeout,
)
from sessionhive.metrics import tracing
from sessionhive.model.confirmation import (
    check_confirm_arguments,
    decision_from_answer,
    read_confirmation_answer,
)
from sessionhive.model.validate import check_instance

from ._codec import (
    ServiceUnavailable,
    SseParser,
    context_from_dict,
    error_from_problem,
    event_from_dict,
    iter_sse,
    load,
    result_from_dict,
)

__all__ = [
    "AsyncRemoteHive",
    "AsyncRemoteSubscription",
    "AsyncRemoteTurnStream",
    "HistoryPage",
    "PendingConfirmation",
    "RemoteHive",
    "RemoteSubscription",
    "RemoteTurnStream",
    "SessionPage",
]

_PAGE = 1000
#: The page size of :meth:`RemoteHive.find_sessions` and :meth:`RemoteHive.history_page` by default.
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class SessionPage:
    """One page of :meth:`RemoteHive.find_sessions`: ``total`` sessions matched, ``ids`` from ``offset``."""

    total: int
    offset: int
    ids: list[str]


@dataclass(frozen=True)
class HistoryPage:
    """Messages ``offset`` to ``offset + len(messages)`` of a history of ``total``.

    Page back with ``history_page(session_id, before=page.offset)`` while ``offset > 0``.
    """

    total: int
    offset: int
    messages: list[Message]


@dataclass(frozen=True)
class PendingConfirmation:
    """A tool call waiting for a decision, as :meth:`RemoteHive.confirmation_inbox` lists it.

    ``prompt`` is the session's last prompt and ``recent`` its last messages (what led to the
    call); ``waiting_since`` is the Unix time it began waiting.
    """

    session_id: str
    tool_id: str
    tool_name: str
    arguments: dict[str, Any]
    timeout_s: float
    waiting_since: float
    prompt: str
    recent: list[Message]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingConfirmation:
        return cls(
            session_id=data["session_id"],
            tool_id=data["tool_id"],
            tool_name=data["tool_name"],
            arguments=dict(data["arguments"]),
            timeout_s=float(data["timeout_s"]),
            waiting_since=float(data["waiting_since"]),
            prompt=data["prompt"],
            recent=[Message.from_dict(m) for m in data["recent"]],
        )


def _find_params(prefix: str, state: str | None, offset: int, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if prefix:
        params["q"] = prefix
    if state is not None:
        params["state"] = state
    return params


def _history_params(before: int | None, limit: int) -> dict[str, Any]:
    return {"limit": limit} if before is None else {"before": before, "limit": limit}


def _history_page(data: dict[str, Any]) -> HistoryPage:
    return HistoryPage(
        int(data["total"]), int(data["offset"]), [Message.from_dict(m) for m in data["messages"]]
    )


_SSE = {"Accept": "text/event-stream"}


def _sid(session_id: str) -> str:
    if not isinstance(session_id, str):
        from sessionhive import InvalidSessionId

        raise InvalidSessionId(f"session id must be a string, got {type(session_id).__name__}")
    return quote(session_id, safe="")


def _session(session_id: str, tail: str = "") -> str:
    return f"/v1/sessions/{_sid(session_id)}{tail}"


def _config_json(config: SessionConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    check_instance("config", config, SessionConfig)
    data = config.to_dict()
    # Send only what differs from the defaults: the service fills in the rest.
    defaults = SessionConfig().to_dict()
    return {k: v for k, v in data.items() if v != defaults[k]}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)}
    raise error_from_problem(response.status_code, problem)


def _transport_error(exc: httpx.HTTPError, what: str) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        return CallTimeout(f"{what} got no answer in time (the work may still finish): {exc}")
    return ServiceUnavailable(
        0, {"detail": f"{what}: cannot reach the service: {exc}", "error": "Unreachable"}
    )


def _token(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("SESSIONHIVE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


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


def _stream_outcome(kind: str, data: str) -> tuple[AgentEvent | None, AgentResult | None, Exception | None]:
    payload = load(data)
    if kind == "result":
        return None, result_from_dict(payload), None
    if kind == "error":
        return None, None, error_from_problem(int(payload.get("status", 500)), payload)
    return event_from_dict(payload), None, None


class RemoteTurnStream:
    """A turn's events as they arrive over server-sent events; :meth:`result` for the outcome."""

    def __init__(
        self,
        hive: RemoteHive,
        session_id: str,
        response: httpx.Response,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self._hive = hive
        self._response = response
        self._on_confirmation = on_confirmation
        self._lines = response.iter_lines()
        self._result: AgentResult | None = None
        self._error: Exception | None = None
        self._finished = False

    def __iter__(self) -> Iterator[AgentEvent]:
        if self._finished:
            return
        try:
            for kind, data in iter_sse(self._lines):
                event, result, error = _stream_outcome(kind, data)
                if event is not None:
                    if self._on_confirmation is not None and isinstance(event, ConfirmationRequired):
                        decision = _decide_blocking(_ask(self._on_confirmation, event), event.timeout_s)
                        if decision is not None:
                            with contextlib.suppress(ConfirmationNotFound):  # timed out meanwhile
                                self._hive.confirm_tool(self.session_id, event.tool_id, *decision)
                    yield event
                    continue
                self._result, self._error = result, error
                break
            else:
                self._error = ServiceUnavailable(0, {"detail": "the turn's event stream ended early"})
        except httpx.HTTPError as exc:
            self._error = _transport_error(exc, f"the turn of session {self.session_id!r}")
        finally:
            self._finished = True
            self._response.close()

    def result(self, timeout: float | None = None) -> AgentResult:
        """The outcome, once the stream has been read to its end (``timeout`` as Hive's, unused:
        the service ends every turn's stream with its outcome)."""
        del timeout
        for _ in self:
            pass
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

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


class RemoteHive:
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
        self.base_url = base_url.rstrip("/")
        self.call_timeout = call_timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_token(token),
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

    def _t(self, timeout: Timeout) -> float | None:
        return resolve_timeout(timeout, self.call_timeout)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params, timeout=self._t(timeout))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, f"{method} {path}") from None
        _raise_for(response)
        return response.json() if response.content else None

    def _open_stream(self, method: str, path: str, json: Any, timeout: Timeout) -> httpx.Response:
        request = self._http.build_request(
            method, path, json=json, headers=_SSE, timeout=httpx.Timeout(self._t(timeout), read=None)
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, f"{method} {path}") from None
        if response.status_code >= 400:
            response.read()
            response.close()
            _raise_for(response)
        return response

    # sessions
    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        data = self._request(
            "POST", "/v1/sessions", json={"id": session_id, "config": _config_json(config)}, timeout=timeout
        )
        return str(data["id"])

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        body = {"id": session_id, "config": _config_json(config), "exist_ok": True}
        return str(self._request("POST", "/v1/sessions", json=body, timeout=timeout)["id"])

    def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(self._request("POST", _session(session_id, "/reset"), timeout=timeout)["changed"])

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        body = {"id": child_id, "config": _config_json(config)}
        return str(self._request("POST", _session(parent_id, "/children"), json=body, timeout=timeout)["id"])

    def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._request("DELETE", _session(session_id), timeout=timeout)

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return list(self._request("GET", _session(parent_id, "/children"), timeout=timeout)["ids"])

    def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(self._request("GET", _session(session_id), timeout=timeout)["is_child"])

    def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return int(self._request("GET", "/v1/stats", timeout=timeout)["sessions"])

    def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return int(self._request("GET", "/v1/stats", timeout=timeout)["live_sessions"])

    def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        ids: list[str] = []
        while True:
            page = self._request(
                "GET", "/v1/sessions", params={"offset": len(ids), "limit": _PAGE}, timeout=timeout
            )
            ids.extend(page["ids"])
            if not page["ids"] or len(ids) >= page["total"]:
                return ids

    def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(**t) for t in self._request("GET", "/v1/tools")["tools"]]

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._request("GET", _session(session_id, "/usage"), timeout=timeout)

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return int(self._request("POST", "/v1/load-all", timeout=timeout)["loaded"])

    # turns
    def generate(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = None,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
    ) -> AgentResult:
        """Run one turn; ``on_confirmation(event)`` answers its confirmations, as with ``Hive``."""
        if on_confirmation is not None:
            stream = self.generate_streaming(session_id, prompt, on_confirmation=on_confirmation)
            return stream.result(self._t(timeout))
        data = self._request("POST", _session(session_id, "/turns"), json={"prompt": prompt}, timeout=timeout)
        return result_from_dict(data)

    def generate_streaming(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
    ) -> RemoteTurnStream:
        response = self._open_stream("POST", _session(session_id, "/turns"), {"prompt": prompt}, timeout)
        return RemoteTurnStream(self, session_id, response, on_confirmation)

    def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        messages: list[Message] = []
        while True:
            page = self._request(
                "GET",
                _session(session_id, "/history"),
                params={"offset": len(messages), "limit": _PAGE},
                timeout=timeout,
            )
            messages.extend(Message.from_dict(m) for m in page["messages"])
            if not page["messages"] or len(messages) >= page["total"]:
                return messages

    def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return context_from_dict(self._request("GET", _session(session_id, "/context"), timeout=timeout))

    def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return Usage.from_dict(self._request("GET", _session(session_id, "/usage"), timeout=timeout))

    def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._request("POST", _session(session_id, "/clear"), timeout=timeout)

    def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        self._request("POST", _session(session_id, "/compact"), timeout=timeout)

    def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        data = self._request(
            "POST", _session(session_id, "/compact"), params={"auto": "true"}, timeout=timeout
        )
        return bool(data["compacted"])

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        body = {
            "thinking": thinking,
            "budget": budget,
            "model_config": model_config.to_dict() if model_config is not None else None,
        }
        self._request("PUT", _session(session_id, "/configure"), json=body, timeout=timeout)

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        data = self._request("GET", _session(session_id, "/llm"), timeout=timeout)
        return LlmConfig.from_dict(data) if data else None

    def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(self._request("POST", _session(session_id, "/pause"), timeout=timeout)["changed"])

    def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(self._request("POST", _session(session_id, "/resume"), timeout=timeout)["changed"])

    def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(self._request("POST", _session(session_id, "/cancel"), timeout=timeout)["changed"])

    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        # No decided_by: the service names who decided from the caller's token.
        check_confirm_arguments(tool_id, approved, reason, None)
        path = _session(session_id, f"/confirmations/{quote(tool_id, safe='')}")
        data = self._request("POST", path, json={"approved": approved, "reason": reason}, timeout=timeout)
        return bool(data["confirmed"])

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        data = self._request("GET", _session(session_id, "/confirmations"), timeout=timeout)
        return [p["tool_id"] for p in data["pending"]]

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        check_instance("policy", policy, ConfirmationPolicy)
        data = self._request("PUT", _session(session_id, "/policy"), json=policy.to_dict(), timeout=timeout)
        return ConfirmationPolicy.from_dict(data)

    def get_confirmation_policy(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ConfirmationPolicy:
        return ConfirmationPolicy.from_dict(
            self._request("GET", _session(session_id, "/policy"), timeout=timeout)
        )

    def subscribe(self, session_id: str, *, timeout: Timeout = DEFAULT) -> RemoteSubscription:
        """Receive the session's events from now on (returns once the service has subscribed)."""
        response = self._open_stream("GET", _session(session_id, "/events"), None, timeout)
        subscription = RemoteSubscription(session_id, response)
        if not subscription.ready.wait(self._t(timeout)):
            subscription.close()
            raise CallTimeout(f"subscribing to session {session_id!r} got no answer in time")
        return subscription

    # store
    def flush(self, timeout: Timeout = None) -> None:
        self._request("POST", "/v1/flush", timeout=timeout)

    def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        data = self._request("GET", "/v1/store/health", timeout=timeout)
        return [(s["name"], s["status"]) for s in data["stores"]]

    @property
    def metrics_url(self) -> str:
        """The service's Prometheus endpoint (``/metrics``, served without a token)."""
        return self.base_url + "/metrics"

    def find_sessions(
        self,
        prefix: str = "",
        *,
        state: str | None = None,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = "default",
    ) -> SessionPage:
        """One page of the sessions whose id starts with ``prefix``, waiting ones first.

        ``state`` (``waiting``, ``running``, ``paused``, ``idle``) keeps only those.
        """
        params = _find_params(prefix, state, offset, limit)
        data = self._request("GET", "/v1/sessions", params=params, timeout=timeout)
        return SessionPage(int(data["total"]), int(data["offset"]), list(data["ids"]))

    def history_page(
        self,
        session_id: str,
        *,
        before: int | None = None,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = "default",
    ) -> HistoryPage:
        """The ``limit`` messages before index ``before`` (default: the newest ``limit``)."""
        path = _session(session_id, "/history")
        params = _history_params(before, limit)
        return _history_page(self._request("GET", path, params=params, timeout=timeout))

    def confirmation_inbox(self, *, timeout: Timeout = "default") -> list[PendingConfirmation]:
        """Every tool call waiting for a decision in the sessions this token sees, oldest first."""
        data = self._request("GET", "/v1/confirmations", timeout=timeout)
        return [PendingConfirmation.from_dict(p) for p in data["pending"]]


class AsyncRemoteTurnStream:
    """A turn's events as an async iterator; ``await stream.result()`` for the outcome."""

    def __init__(
        self,
        hive: AsyncRemoteHive,
        session_id: str,
        response: httpx.Response,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self._hive = hive
        self._response = response
        self._on_confirmation = on_confirmation
        self._result: AgentResult | None = None
        self._error: Exception | None = None
        self._finished = False

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        if self._finished:
            return
        parser = SseParser()
        try:
            async for line in self._response.aiter_lines():
                found = parser.feed(line)
                if found is None:
                    continue
                event, result, error = _stream_outcome(*found)
                if event is not None:
                    if self._on_confirmation is not None and isinstance(event, ConfirmationRequired):
                        answer = _ask(self._on_confirmation, event)
                        decision = await read_confirmation_answer(answer, event.timeout_s)
                        if decision is not None:
                            with contextlib.suppress(ConfirmationNotFound):  # timed out meanwhile
                                await self._hive.confirm_tool(self.session_id, event.tool_id, *decision)
                    yield event
                    continue
                self._result, self._error = result, error
                return
            self._error = ServiceUnavailable(0, {"detail": "the turn's event stream ended early"})
        except httpx.HTTPError as exc:
            self._error = _transport_error(exc, f"the turn of session {self.session_id!r}")
        finally:
            self._finished = True
            await self._response.aclose()

    async def result(self, timeout: float | None = None) -> AgentResult:
        async def drain() -> None:
            async for _ in self:
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except TimeoutError:
            raise CallTimeout(f"the turn of session {self.session_id!r} did not end in time") from None
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

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
        parser = SseParser()
        try:
            async for line in self._response.aiter_lines():
                found = parser.feed(line)
                if found is None:
                    continue
                kind, data = found
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


class AsyncRemoteHive:
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
        self.base_url = base_url.rstrip("/")
        self.call_timeout = call_timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_token(token),
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

    def _t(self, timeout: Timeout) -> float | None:
        return resolve_timeout(timeout, self.call_timeout)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: Timeout = DEFAULT,
    ) -> Any:
        try:
            response = await self._http.request(
                method, path, json=json, params=params, timeout=self._t(timeout)
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, f"{method} {path}") from None
        _raise_for(response)
        return response.json() if response.content else None

    async def _open_stream(self, method: str, path: str, json: Any, timeout: Timeout) -> httpx.Response:
        request = self._http.build_request(
            method, path, json=json, headers=_SSE, timeout=httpx.Timeout(self._t(timeout), read=None)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, f"{method} {path}") from None
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            _raise_for(response)
        return response

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        body = {"id": session_id, "config": _config_json(config)}
        return str((await self._request("POST", "/v1/sessions", json=body, timeout=timeout))["id"])

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        body = {"id": session_id, "config": _config_json(config), "exist_ok": True}
        return str((await self._request("POST", "/v1/sessions", json=body, timeout=timeout))["id"])

    async def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool((await self._request("POST", _session(session_id, "/reset"), timeout=timeout))["changed"])

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        body = {"id": child_id, "config": _config_json(config)}
        return str(
            (await self._request("POST", _session(parent_id, "/children"), json=body, timeout=timeout))["id"]
        )

    async def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._request("DELETE", _session(session_id), timeout=timeout)

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return list((await self._request("GET", _session(parent_id, "/children"), timeout=timeout))["ids"])

    async def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool((await self._request("GET", _session(session_id), timeout=timeout))["is_child"])

    async def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return int((await self._request("GET", "/v1/stats", timeout=timeout))["sessions"])

    async def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        return int((await self._request("GET", "/v1/stats", timeout=timeout))["live_sessions"])

    async def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        ids: list[str] = []
        while True:
            page = await self._request(
                "GET", "/v1/sessions", params={"offset": len(ids), "limit": _PAGE}, timeout=timeout
            )
            ids.extend(page["ids"])
            if not page["ids"] or len(ids) >= page["total"]:
                return ids

    async def list_tools(self) -> list[ToolDefinition]:
        return [ToolDefinition(**t) for t in (await self._request("GET", "/v1/tools"))["tools"]]

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._request("GET", _session(session_id, "/usage"), timeout=timeout)

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return int((await self._request("POST", "/v1/load-all", timeout=timeout))["loaded"])

    async def generate(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = None,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
    ) -> AgentResult:
        """Run one turn; ``on_confirmation`` (a function or coroutine function) answers its confirmations."""
        if on_confirmation is not None:
            stream = await self.generate_streaming(session_id, prompt, on_confirmation=on_confirmation)
            return await stream.result(self._t(timeout))
        body = {"prompt": prompt}
        return result_from_dict(
            await self._request("POST", _session(session_id, "/turns"), json=body, timeout=timeout)
        )

    async def generate_streaming(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: Callable[[ConfirmationRequired], Any] | None = None,
    ) -> AsyncRemoteTurnStream:
        response = await self._open_stream(
            "POST", _session(session_id, "/turns"), {"prompt": prompt}, timeout
        )
        return AsyncRemoteTurnStream(self, session_id, response, on_confirmation)

    async def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        messages: list[Message] = []
        while True:
            page = await self._request(
                "GET",
                _session(session_id, "/history"),
                params={"offset": len(messages), "limit": _PAGE},
                timeout=timeout,
            )
            messages.extend(Message.from_dict(m) for m in page["messages"])
            if not page["messages"] or len(messages) >= page["total"]:
                return messages

    async def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return context_from_dict(
            await self._request("GET", _session(session_id, "/context"), timeout=timeout)
        )

    async def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return Usage.from_dict(await self._request("GET", _session(session_id, "/usage"), timeout=timeout))

    async def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        await self._request("POST", _session(session_id, "/clear"), timeout=timeout)

    async def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        await self._request("POST", _session(session_id, "/compact"), timeout=timeout)

    async def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        path = _session(session_id, "/compact")
        return bool(
            (await self._request("POST", path, params={"auto": "true"}, timeout=timeout))["compacted"]
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
        body = {
            "thinking": thinking,
            "budget": budget,
            "model_config": model_config.to_dict() if model_config is not None else None,
        }
        await self._request("PUT", _session(session_id, "/configure"), json=body, timeout=timeout)

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        data = await self._request("GET", _session(session_id, "/llm"), timeout=timeout)
        return LlmConfig.from_dict(data) if data else None

    async def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool((await self._request("POST", _session(session_id, "/pause"), timeout=timeout))["changed"])

    async def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(
            (await self._request("POST", _session(session_id, "/resume"), timeout=timeout))["changed"]
        )

    async def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(
            (await self._request("POST", _session(session_id, "/cancel"), timeout=timeout))["changed"]
        )

    async def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        check_confirm_arguments(tool_id, approved, reason, None)  # the service names who decided
        path = _session(session_id, f"/confirmations/{quote(tool_id, safe='')}")
        body = {"approved": approved, "reason": reason}
        return bool((await self._request("POST", path, json=body, timeout=timeout))["confirmed"])

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        data = await self._request("GET", _session(session_id, "/confirmations"), timeout=timeout)
        return [p["tool_id"] for p in data["pending"]]

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        check_instance("policy", policy, ConfirmationPolicy)
        path = _session(session_id, "/policy")
        return ConfirmationPolicy.from_dict(
            await self._request("PUT", path, json=policy.to_dict(), timeout=timeout)
        )

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        path = _session(session_id, "/policy")
        return ConfirmationPolicy.from_dict(await self._request("GET", path, timeout=timeout))

    async def subscribe(self, session_id: str, *, timeout: Timeout = DEFAULT) -> AsyncRemoteSubscription:
        response = await self._open_stream("GET", _session(session_id, "/events"), None, timeout)
        subscription = AsyncRemoteSubscription(session_id, response)
        try:
            await asyncio.wait_for(asyncio.shield(subscription.ready), self._t(timeout))
        except TimeoutError:
            subscription.close()
            raise CallTimeout(f"subscribing to session {session_id!r} got no answer in time") from None
        return subscription

    async def flush(self, timeout: Timeout = None) -> None:
        await self._request("POST", "/v1/flush", timeout=timeout)

    async def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        data = await self._request("GET", "/v1/store/health", timeout=timeout)
        return [(s["name"], s["status"]) for s in data["stores"]]

    @property
    def metrics_url(self) -> str:
        """The service's Prometheus endpoint (``/metrics``, served without a token)."""
        return self.base_url + "/metrics"

    async def find_sessions(
        self,
        prefix: str = "",
        *,
        state: str | None = None,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = "default",
    ) -> SessionPage:
        """One page of the sessions whose id starts with ``prefix``, waiting ones first.

        ``state`` (``waiting``, ``running``, ``paused``, ``idle``) keeps only those.
        """
        params = _find_params(prefix, state, offset, limit)
        data = await self._request("GET", "/v1/sessions", params=params, timeout=timeout)
        return SessionPage(int(data["total"]), int(data["offset"]), list(data["ids"]))

    async def history_page(
        self,
        session_id: str,
        *,
        before: int | None = None,
        limit: int = DEFAULT_PAGE,
        timeout: Timeout = "default",
    ) -> HistoryPage:
        """The ``limit`` messages before index ``before`` (default: the newest ``limit``)."""
        path = _session(session_id, "/history")
        params = _history_params(before, limit)
        return _history_page(await self._request("GET", path, params=params, timeout=timeout))

    async def confirmation_inbox(self, *, timeout: Timeout = "default") -> list[PendingConfirmation]:
        """Every tool call waiting for a decision in the sessions this token sees, oldest first."""
        data = await self._request("GET", "/v1/confirmations", timeout=timeout)
        return [PendingConfirmation.from_dict(p) for p in data["pending"]]
