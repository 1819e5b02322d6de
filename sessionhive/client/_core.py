"""What ``RemoteHive`` and ``AsyncRemoteHive`` share: every request built and every answer read once, no I/O.

Each API method is written here once, as a *plan*: a generator that yields
the :class:`HttpCall` s it needs and receives each one's JSON answer, then
returns the method's result (``list_sessions`` yields one call per page). The
sync twin sends each call with ``httpx.Client``, the async one awaits
``httpx.AsyncClient``; that is all they differ in (httpx's own
``BaseClient`` split). Paths come from the service's route table
(:data:`sessionhive.serve.routes.ROUTE`), so a route is written in one place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from sessionhive import (
    AgentResult,
    CallTimeout,
    ConfirmationPolicy,
    ContextUsage,
    InvalidConfig,
    InvalidSessionId,
    LlmConfig,
    Message,
    SessionConfig,
    ToolDefinition,
    Usage,
)
from sessionhive.api import DEFAULT, Timeout, resolve_timeout
from sessionhive.model.confirmation import check_confirm_arguments
from sessionhive.model.content import Prompt
from sessionhive.model.events import AgentEvent
from sessionhive.model.output import OutputSchema, rebuild_output, schema_to_send
from sessionhive.model.runs import Run, Webhook, check_idempotency_key, check_on_busy, session_of_run
from sessionhive.model.validate import check_instance, check_prompt
from sessionhive.serve.routes import ROUTE

from ._codec import ServiceUnavailable, context_from_dict, error_from_problem, result_from_dict

__all__ = [
    "DEFAULT_PAGE",
    "HistoryPage",
    "HttpCall",
    "PendingConfirmation",
    "Plan",
    "RemoteCore",
    "Resumption",
    "SessionPage",
    "raise_for",
    "transport_error",
]

T = TypeVar("T")
#: How many ids or messages ``list_sessions`` and ``history`` fetch per request.
_PAGE = 1000
#: The page size of :meth:`RemoteHive.find_sessions` and :meth:`RemoteHive.history_page` by default.
DEFAULT_PAGE = 100
_SSE = {"Accept": "text/event-stream"}


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


@dataclass(frozen=True)
class HttpCall:
    """One request to send: a route's method and path, its body, query and timeout.

    ``stream`` asks for the body as server-sent events: read without a read timeout.
    """

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    timeout: float | None = None
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx`` ``build_request`` for this call."""
        if self.stream:
            timeout = httpx.Timeout(self.timeout, read=None)
            headers = {**_SSE, **self.headers}
            return {"json": self.json, "params": self.params, "headers": headers, "timeout": timeout}
        return {"json": self.json, "params": self.params, "timeout": self.timeout, "headers": self.headers}


#: Seconds between reconnections of a run's event stream, doubling up to the last.
_RESUME_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


@dataclass
class Resumption:
    """Where a run's event stream resumes after a drop, and whether it still may (no I/O).

    ``after`` is the id of the last event handed out; a reconnection asks for the
    events after it (``Last-Event-ID``), so none is missed or repeated. The stream
    gives up when ``patience`` seconds pass without an event arriving (a service
    restarting has that long to come back).
    """

    run_id: str
    after: int | None
    patience: float
    #: How long each (re)connection waits for the service to answer.
    timeout: Timeout = DEFAULT
    failures: int = 0
    last_progress: float = field(default_factory=time.monotonic)

    def took(self, event: AgentEvent) -> None:
        if event.event_id and (self.after is None or event.event_id > self.after):
            self.after = event.event_id
        self.failures = 0
        self.last_progress = time.monotonic()

    def retry_delay(self, error: Exception) -> float:
        """Seconds to wait before reconnecting; ``error`` raised once patience is spent."""
        if time.monotonic() - self.last_progress > self.patience:
            raise error
        delay = _RESUME_DELAYS[min(self.failures, len(_RESUME_DELAYS) - 1)]
        self.failures += 1
        return delay

    def headers(self) -> dict[str, str]:
        return {} if self.after is None else {"Last-Event-ID": str(check_event_id(self.after))}


#: A method's plan: the calls it sends, each answered with its JSON, and what it returns.
Plan = Generator[HttpCall, Any, T]


def raise_for(response: httpx.Response) -> None:
    """Raise the exception the embedded Hive would have raised, if the service answered a problem."""
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)}
    raise error_from_problem(response.status_code, problem)


def answer_of(response: httpx.Response) -> Any:
    """The JSON an answered call carries (``None`` for an empty body), or its problem raised."""
    raise_for(response)
    return response.json() if response.content else None


def transport_error(exc: httpx.HTTPError, what: str) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        return CallTimeout(f"{what} got no answer in time (the work may still finish): {exc}")
    return ServiceUnavailable(
        0, {"detail": f"{what}: cannot reach the service: {exc}", "error": "Unreachable"}
    )


def auth_headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("SESSIONHIVE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _run_request(
    prompt: Prompt, key: str | None, on_busy: str, output_schema: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of a turn or run: ``on_busy`` in the body, the key as ``Idempotency-Key``."""
    text, parts = check_prompt(prompt)
    checked = check_idempotency_key(key)
    # A prompt of parts travels as a JSON array of them (bytes in base64), text as a string.
    wire: str | list[dict[str, Any]] = [part.to_dict() for part in parts] if parts else text
    body: dict[str, Any] = {"prompt": wire, "on_busy": check_on_busy(on_busy)}
    if output_schema is not None:
        body["output_schema"] = output_schema
    return body, ({} if checked is None else {"Idempotency-Key": checked})


def check_event_id(after: object) -> int:
    """``after`` as an event id (a count from 0), else InvalidConfig."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidConfig(f"after must be an event id (an integer >= 0), got {after!r}")
    return after


def _run(run_id: str) -> str:
    """``run_id``, refused here (RunNotFound) when it is not a run id: no request for it."""
    session_of_run(run_id)
    return run_id


def _config_json(config: SessionConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    check_instance("config", config, SessionConfig)
    data = config.to_dict()
    # Send only what differs from the defaults: the service fills in the rest.
    defaults = SessionConfig().to_dict()
    return {k: v for k, v in data.items() if v != defaults[k]}


class RemoteCore:
    """The Hive API as plans against one service (no connection: the twins own theirs)."""

    def __init__(self, call_timeout: float) -> None:
        self.call_timeout = call_timeout

    def timeout(self, timeout: Timeout) -> float | None:
        return resolve_timeout(timeout, self.call_timeout)

    def call(
        self,
        route: str,
        *ids: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: Timeout = DEFAULT,
        stream: bool = False,
        headers: dict[str, str] | None = None,
    ) -> HttpCall:
        """The request of the route named ``route``, its path holding ``ids``."""
        for value in ids:
            if not isinstance(value, str):
                raise InvalidSessionId(f"session id must be a string, got {type(value).__name__}")
        found = ROUTE[route]
        return HttpCall(
            found.method, found.url(*ids), json, params, self.timeout(timeout), stream, headers or {}
        )

    # sessions
    def create_session(self, session_id: str, config: SessionConfig | None, timeout: Timeout) -> Plan[str]:
        body = {"id": session_id, "config": _config_json(config)}
        return str((yield self.call("create", json=body, timeout=timeout))["id"])

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None, timeout: Timeout
    ) -> Plan[str]:
        body = {"id": session_id, "config": _config_json(config), "exist_ok": True}
        return str((yield self.call("create", json=body, timeout=timeout))["id"])

    def create_child_session(
        self, parent_id: str, child_id: str, config: SessionConfig | None, timeout: Timeout
    ) -> Plan[str]:
        body = {"id": child_id, "config": _config_json(config)}
        return str((yield self.call("create_child", parent_id, json=body, timeout=timeout))["id"])

    def changed(self, route: str, session_id: str, timeout: Timeout) -> Plan[bool]:
        """reset, pause, resume, cancel: whether the session's state changed."""
        return bool((yield self.call(route, session_id, timeout=timeout))["changed"])

    def session_only(self, route: str, session_id: str, timeout: Timeout) -> Plan[None]:
        """destroy, clear, compact, restore: a call whose answer says nothing more."""
        yield self.call(route, session_id, timeout=timeout)

    def get_child_sessions(self, parent_id: str, timeout: Timeout) -> Plan[list[str]]:
        return list((yield self.call("children", parent_id, timeout=timeout))["ids"])

    def is_child_session(self, session_id: str, timeout: Timeout) -> Plan[bool]:
        return bool((yield self.call("show", session_id, timeout=timeout))["is_child"])

    def stat(self, field: str, timeout: Timeout) -> Plan[int]:
        return int((yield self.call("stats", timeout=timeout))[field])

    def list_sessions(self, timeout: Timeout) -> Plan[list[str]]:
        ids: list[str] = []
        while True:
            params = {"offset": len(ids), "limit": _PAGE}
            page = yield self.call("list", params=params, timeout=timeout)
            ids.extend(page["ids"])
            if not page["ids"] or len(ids) >= page["total"]:
                return ids

    def list_tools(self) -> Plan[list[ToolDefinition]]:
        return [ToolDefinition(**t) for t in (yield self.call("tools"))["tools"]]

    def load_all_sessions(self, timeout: Timeout) -> Plan[int]:
        return int((yield self.call("load_all", timeout=timeout))["loaded"])

    # turns and runs
    def generate(
        self,
        session_id: str,
        prompt: Prompt,
        key: str | None,
        on_busy: str,
        timeout: Timeout,
        output_schema: OutputSchema | None = None,
    ) -> Plan[AgentResult]:
        """A model class's JSON Schema is sent; the returned output is validated into the class here."""
        schema, model = schema_to_send(output_schema)
        body, headers = _run_request(prompt, key, on_busy, schema)
        call = self.call("turn", session_id, json=body, timeout=timeout, headers=headers)
        return rebuild_output(result_from_dict((yield call)), model)

    def turn_stream(
        self,
        session_id: str,
        prompt: Prompt,
        key: str | None,
        on_busy: str,
        timeout: Timeout,
        output_schema: OutputSchema | None = None,
    ) -> HttpCall:
        body, headers = _run_request(prompt, key, on_busy, schema_to_send(output_schema)[0])
        return self.call("turn", session_id, json=body, timeout=timeout, stream=True, headers=headers)

    def start_run(
        self,
        session_id: str,
        prompt: Prompt,
        key: str | None,
        on_busy: str,
        webhook: Webhook | None,
        timeout: Timeout,
        output_schema: OutputSchema | None = None,
    ) -> Plan[Run]:
        body, headers = _run_request(prompt, key, on_busy, schema_to_send(output_schema)[0])
        if webhook is not None:
            check_instance("webhook", webhook, Webhook)
            if webhook.secret is not None:
                raise InvalidConfig(
                    "a webhook secret is not sent over HTTP: the service signs with its own key "
                    "(serve --webhook-secret-file); pass Webhook(url) alone"
                )
            body["webhook"] = webhook.to_dict()
        call = self.call("start_run", session_id, json=body, timeout=timeout, headers=headers)
        return Run.from_dict((yield call))

    def get_run(self, run_id: str, timeout: Timeout) -> Plan[Run]:
        return Run.from_dict((yield self.call("get_run", _run(run_id), timeout=timeout)))

    def cancel_run(self, run_id: str, timeout: Timeout) -> Plan[bool]:
        return bool((yield self.call("cancel_run", _run(run_id), timeout=timeout))["cancelled"])

    def list_runs(self, session_id: str, timeout: Timeout) -> Plan[list[Run]]:
        data = yield self.call("list_runs", session_id, timeout=timeout)
        return [Run.from_dict(r) for r in data["runs"]]

    def run_events_stream(self, resumption: Resumption) -> HttpCall:
        """The request that (re)opens a run's event stream after the last event taken."""
        run_id = _run(resumption.run_id)
        headers = resumption.headers()
        return self.call("run_events", run_id, timeout=resumption.timeout, stream=True, headers=headers)

    def history(self, session_id: str, timeout: Timeout) -> Plan[list[Message]]:
        messages: list[Message] = []
        while True:
            params = {"offset": len(messages), "limit": _PAGE}
            page = yield self.call("history", session_id, params=params, timeout=timeout)
            messages.extend(Message.from_dict(m) for m in page["messages"])
            if not page["messages"] or len(messages) >= page["total"]:
                return messages

    def context_usage(self, session_id: str, timeout: Timeout) -> Plan[ContextUsage]:
        return context_from_dict((yield self.call("context", session_id, timeout=timeout)))

    def usage(self, session_id: str, timeout: Timeout) -> Plan[Usage]:
        return Usage.from_dict((yield self.call("usage", session_id, timeout=timeout)))

    def maybe_auto_compact(self, session_id: str, timeout: Timeout) -> Plan[bool]:
        call = self.call("compact", session_id, params={"auto": "true"}, timeout=timeout)
        return bool((yield call)["compacted"])

    def configure(
        self,
        session_id: str,
        thinking: bool | None,
        budget: int | None,
        model_config: LlmConfig | None,
        timeout: Timeout,
    ) -> Plan[None]:
        body = {
            "thinking": thinking,
            "budget": budget,
            "model_config": model_config.to_dict() if model_config is not None else None,
        }
        yield self.call("configure", session_id, json=body, timeout=timeout)

    def get_llm_for_session(self, session_id: str, timeout: Timeout) -> Plan[LlmConfig | None]:
        data = yield self.call("llm", session_id, timeout=timeout)
        return LlmConfig.from_dict(data) if data else None

    # confirmations
    def confirm_tool(
        self, session_id: str, tool_id: str, approved: bool, reason: str | None, timeout: Timeout
    ) -> Plan[bool]:
        # No decided_by: the service names who decided from the caller's token.
        check_confirm_arguments(tool_id, approved, reason, None)
        body = {"approved": approved, "reason": reason}
        return bool(
            (yield self.call("confirm", session_id, tool_id, json=body, timeout=timeout))["confirmed"]
        )

    def pending_confirmations(self, session_id: str, timeout: Timeout) -> Plan[list[str]]:
        data = yield self.call("confirmations", session_id, timeout=timeout)
        return [p["tool_id"] for p in data["pending"]]

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, timeout: Timeout
    ) -> Plan[ConfirmationPolicy]:
        check_instance("policy", policy, ConfirmationPolicy)
        call = self.call("put_policy", session_id, json=policy.to_dict(), timeout=timeout)
        return ConfirmationPolicy.from_dict((yield call))

    def get_confirmation_policy(self, session_id: str, timeout: Timeout) -> Plan[ConfirmationPolicy]:
        return ConfirmationPolicy.from_dict((yield self.call("get_policy", session_id, timeout=timeout)))

    def confirmation_inbox(self, timeout: Timeout) -> Plan[list[PendingConfirmation]]:
        data = yield self.call("inbox", timeout=timeout)
        return [PendingConfirmation.from_dict(p) for p in data["pending"]]

    def events_stream(self, session_id: str, after: int | None, timeout: Timeout) -> HttpCall:
        headers = {} if after is None else {"Last-Event-ID": str(check_event_id(after))}
        return self.call("events", session_id, timeout=timeout, stream=True, headers=headers)

    # the service
    def flush(self, timeout: Timeout) -> Plan[None]:
        yield self.call("flush", timeout=timeout)

    def store_health(self, timeout: Timeout) -> Plan[list[tuple[str, str]]]:
        data = yield self.call("health", timeout=timeout)
        return [(s["name"], s["status"]) for s in data["stores"]]

    def find_sessions(
        self, prefix: str, state: str | None, offset: int, limit: int, timeout: Timeout
    ) -> Plan[SessionPage]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if prefix:
            params["q"] = prefix
        if state is not None:
            params["state"] = state
        data = yield self.call("list", params=params, timeout=timeout)
        return SessionPage(int(data["total"]), int(data["offset"]), list(data["ids"]))

    def history_page(
        self, session_id: str, before: int | None, limit: int, timeout: Timeout
    ) -> Plan[HistoryPage]:
        params = {"limit": limit} if before is None else {"before": before, "limit": limit}
        data = yield self.call("history", session_id, params=params, timeout=timeout)
        messages = [Message.from_dict(m) for m in data["messages"]]
        return HistoryPage(int(data["total"]), int(data["offset"]), messages)
