"""The ASGI application: the /v1 API over an :class:`~sessionhive.AsyncHive`, health, metrics, console.

Routing is done on the raw (still percent-encoded) path, segment by segment,
because session ids may contain ``/`` (``alice/researcher``): a client sends
it as ``alice%2Fresearcher`` and it must stay one segment.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import posixpath
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sessionhive import (
    AgentEvent,
    AgentResult,
    AsyncHive,
    AsyncTurnStream,
    ConfirmationRequired,
    ConfirmationResolved,
    Hive,
    InvalidConfig,
    Message,
    SessionExists,
    SessionPaused,
    SessionResumed,
    TurnStart,
    event_to_dict,
)
from sessionhive.metrics import tracing
from sessionhive.metrics.exporter import exposition
from sessionhive.model.ids import check_id
from sessionhive.persistence.audit import DEFAULT_TENANT, AuditLog

from ._auth import ALL_SCOPES, Principal, TokenTable
from ._bodies import (
    llm_config_from_json,
    parse_json_object,
    policy_from_json,
    session_config_from_json,
    tool_id_from_path,
)
from ._info import service_info
from ._openapi import MAX_OFFSET, MAX_PAGE, ROUTE_DOCS, openapi_document
from ._problems import HttpProblem, problem_for, problem_response
from ._tenancy import Tenancy

__all__ = ["DEFAULT_MAX_BODY", "ServeApp", "serve_app"]

log = logging.getLogger("sessionhive.serve")

DEFAULT_MAX_BODY = 1 << 20
SSE_KEEPALIVE_S = 15.0
#: What a turn cancelled by the drain says (its TurnCancelled reason).
SHUTDOWN_REASON = "cancelled by shutdown"
#: How many of a session's last messages the confirmation inbox shows with each confirmation.
INBOX_RECENT = 6
_STATES = ("waiting", "running", "paused", "idle")
_STATIC = ("index.html", "console.js", "console.css")
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _result_json(result: AgentResult) -> dict[str, Any]:
    return result.to_dict()


@dataclass(eq=False)
class _Turn:
    """One turn this service runs: its events fan out to the HTTP response, if anyone still listens."""

    session_id: str
    tenant: str
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    outcome: asyncio.Future[AgentResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _SessionView:
    """What this service has seen of each session: paused, running turns, waiting confirmations.

    The Hive does not report a session's state, so the service keeps what it
    observed: pauses and resumes made through it, turns it runs, and the
    ConfirmationRequired events of those turns (the Hive lists only the ids).
    """

    def __init__(self) -> None:
        self.paused: set[str] = set()
        self.running: dict[str, int] = {}
        self.confirmations: dict[str, dict[str, ConfirmationRequired]] = {}
        # When each confirmation began waiting (wall clock), so the inbox lists the oldest first.
        self.waiting_since: dict[tuple[str, str], float] = {}
        # The prompt of each session's running turn: the history holds it only once the turn ends.
        self.prompts: dict[str, str] = {}

    def observe(self, event: AgentEvent) -> None:
        sid = event.session_id
        if isinstance(event, TurnStart):
            self.prompts[sid] = event.prompt
        elif isinstance(event, ConfirmationRequired):
            self.confirmations.setdefault(sid, {})[event.tool_id] = event
            self.waiting_since.setdefault((sid, event.tool_id), time.time())
        elif isinstance(event, ConfirmationResolved):
            waiting = self.confirmations.get(sid)
            self.waiting_since.pop((sid, event.tool_id), None)
            if waiting is not None:
                waiting.pop(event.tool_id, None)
                if not waiting:
                    del self.confirmations[sid]
        elif isinstance(event, SessionPaused):
            self.paused.add(sid)
        elif isinstance(event, SessionResumed):
            self.paused.discard(sid)

    def turn_started(self, sid: str) -> None:
        self.running[sid] = self.running.get(sid, 0) + 1

    def turn_ended(self, sid: str) -> None:
        left = self.running.get(sid, 0) - 1
        if left > 0:
            self.running[sid] = left
        else:
            self.running.pop(sid, None)
            self.prompts.pop(sid, None)
            self._drop_confirmations(sid)

    def forget(self, sid: str) -> None:
        self.paused.discard(sid)
        self.running.pop(sid, None)
        self.prompts.pop(sid, None)
        self._drop_confirmations(sid)

    def _drop_confirmations(self, sid: str) -> None:
        for tool_id in self.confirmations.pop(sid, {}):
            self.waiting_since.pop((sid, tool_id), None)

    def in_state(self, state: str) -> set[str]:
        """The sessions in ``state``, other than idle (which is every session not in another)."""
        if state == "paused":
            return set(self.paused)
        if state == "waiting":
            return {sid for sid, waiting in self.confirmations.items() if waiting} - self.paused
        return set(self.running) - self.paused - self.in_state("waiting")

    def state(self, sid: str) -> str:
        if sid in self.paused:
            return "paused"
        if self.confirmations.get(sid):
            return "waiting"
        if self.running.get(sid):
            return "running"
        return "idle"


#: Who calls when the service runs without a token (only allowed on loopback): the operator.
_NOBODY = Principal("anonymous", DEFAULT_TENANT, frozenset(ALL_SCOPES))


@dataclass(frozen=True)
class _Call:
    """One API request as a handler sees it: the request, the path's decoded parameters, the caller.

    ``owner`` is the tenant of the session the path names (``""`` on other routes).
    """

    request: Request
    p: list[str]
    principal: Principal = _NOBODY
    owner: str = ""


Handler = Callable[[_Call], Awaitable[Response]]


class ServeApp:
    """The ASGI callable; ``drain()`` and ``close_streams()`` are for the server that runs it."""

    def __init__(
        self,
        hive: Hive | AsyncHive,
        *,
        token: str | None,
        max_body: int = DEFAULT_MAX_BODY,
        workspace_root: str | Path | None = None,
        cors_origins: Sequence[str] = (),
        tokens: TokenTable | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.hive = hive if isinstance(hive, AsyncHive) else AsyncHive(hive)
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise InvalidConfig("the bearer token must be a string of at least 16 characters")
        if token is not None and tokens is not None:
            raise InvalidConfig(
                "pass either token= (one token, every scope) or tokens= (a token file), not both"
            )
        self._tokens = (
            tokens if tokens is not None else TokenTable.single(token) if token is not None else None
        )
        self.tenancy = Tenancy(self._tokens, audit if audit is not None else AuditLog.in_memory())
        if tokens is not None:
            self.tenancy.budget_per_tenant(self.hive.core.services.budgets)
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise InvalidConfig(f"max_body must be a positive number of bytes, got {max_body!r}")
        self.max_body = max_body
        self.workspace_root = Path(workspace_root).resolve() if workspace_root is not None else None
        self.cors_origins = tuple(cors_origins)
        self.draining = False
        self.view = _SessionView()
        self.turns: set[_Turn] = set()
        self._subscriptions: set[Any] = set()
        self.serve_registry = CollectorRegistry()
        self.http_requests = Counter(
            "sessionhive_http_requests_total",
            "HTTP requests answered by sessionhive serve, by route and status.",
            ["method", "route", "status"],
            registry=self.serve_registry,
        )
        self.draining_gauge = Gauge(
            "sessionhive_serve_draining",
            "1 while the service drains before stopping.",
            registry=self.serve_registry,
        )
        self.open_streams = Gauge(
            "sessionhive_serve_open_streams",
            "Server-sent event streams open now.",
            registry=self.serve_registry,
        )
        self._routes = self._route_table()
        self._asgi = self._build_asgi()

    # ------------------------------------------------------------------ ASGI plumbing

    def _build_asgi(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        app: Callable[[Scope, Receive, Send], Awaitable[None]] = tracing.server_spans(self._dispatch)
        if self.cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            app = CORSMiddleware(
                app,
                allow_origins=list(self.cors_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Accept"],
            )
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.close_streams()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await self._asgi(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        route_name = "other"
        try:
            response, route_name = await self._route(request, path)
        except Exception as exc:  # every failure becomes a problem document
            if not isinstance(exc, HttpProblem) and problem_for(exc)[0] == 500:
                log.exception("sessionhive serve: %s %s failed", request.method, path)
            response = problem_response(exc)
        self.http_requests.labels(request.method, route_name, str(response.status_code)).inc()
        tracing.name_server_span(request.method, route_name, response.status_code)
        await response(scope, receive, send)

    async def _route(self, request: Request, path: str) -> tuple[Response, str]:
        method = request.method
        if path == "/healthz":
            return _json({"status": "ok"}), "/healthz"
        if path == "/readyz":
            return await self._readyz(), "/readyz"
        if path == "/metrics":
            body, media_type = exposition(
                request.headers.get("accept"), self.hive.metrics.registry, self.serve_registry
            )
            return Response(body, media_type=media_type), "/metrics"
        if path == "/openapi.json":
            return _json(openapi_document()), "/openapi.json"
        if path in ("/", "/index.html") or path.lstrip("/") in _STATIC:
            return self._static(path.lstrip("/") or "index.html"), "/static"
        if not path.startswith("/v1/"):
            raise HttpProblem(
                404, "NotFound", f"no route {path}; the API lives under /v1 (see /openapi.json)"
            )
        principal = self._authorize(request)
        segments = [unquote(s) for s in path[len("/v1/") :].split("/")]
        allowed: list[str] = []
        for route_method, pattern, name, handler in self._routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            # The scope first: a refusal for want of a scope says nothing about any session.
            self.tenancy.require(principal, name)
            owner = ""
            if pattern[0] == "sessions" and params:
                owner = self.tenancy.check(principal, params[0])
            return await handler(_Call(request, params, principal, owner)), f"/v1/{'/'.join(pattern)}"
        if allowed:
            raise HttpProblem(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed here",
                {"Allow": ", ".join(sorted(allowed))},
            )
        raise HttpProblem(404, "NotFound", f"no route {path} (see /openapi.json)")

    def _authorize(self, request: Request) -> Principal:
        if self._tokens is None:
            return _NOBODY
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        principal = self._tokens.authenticate(given.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise HttpProblem(
                401,
                "Unauthorized",
                "a valid bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": 'Bearer realm="sessionhive"'},
            )
        return principal

    async def _body(self, request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise HttpProblem(413, "PayloadTooLarge", f"the body is larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise HttpProblem(413, "PayloadTooLarge", f"the body is larger than {self.max_body} bytes")
            chunks.append(chunk)
        return parse_json_object(b"".join(chunks), allow_empty=allow_empty)

    def _static(self, name: str) -> Response:
        if name not in _STATIC:
            raise HttpProblem(404, "NotFound", f"no file {name}")
        data = resources.files("sessionhive.serve").joinpath("static", name).read_bytes()
        media = _STATIC_TYPES[Path(name).suffix]
        # The console must not be framed by another site, nor load anything from elsewhere.
        headers = {
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        }
        return Response(data, media_type=media, headers=headers)

    async def _readyz(self) -> Response:
        if self.draining:
            raise HttpProblem(503, "Draining", "the service is draining before it stops")
        health = await self.hive.store_health(timeout=5.0)
        failing = [f"{s['name']}: {s['status']}" for s in _public_health(health) if s["status"] != "ok"]
        if failing:
            raise HttpProblem(503, "StoreUnavailable", "; ".join(failing))
        return _json({"status": "ready", "stores": _public_health(health)})

    # ------------------------------------------------------------------ routes

    def _route_table(self) -> list[tuple[str, tuple[str, ...], str, Handler]]:
        return [
            (route.method, tuple(route.path.split("/")), route.name, getattr(self, "_h_" + route.name))
            for route in ROUTE_DOCS
        ]

    async def _h_create(self, call: _Call) -> Response:
        body = await self._body(call.request)
        session_id = body.get("id")
        config = session_config_from_json(body.get("config"), self.workspace_root)
        exist_ok = body.get("exist_ok", False)
        if not isinstance(exist_ok, bool):
            raise InvalidConfig("exist_ok must be true or false")
        principal = call.principal
        tenant = principal.tenant
        if exist_ok and isinstance(session_id, str) and self.tenancy.claimed_by(session_id) == tenant:
            # Already this tenant's: get_or_create must answer even when the tenant is at quota.
            found = await self.hive.get_or_create_session(session_id, config)
            return _json({"id": found})
        created = await self._create_owned(principal, tenant, session_id, config, exist_ok=exist_ok)
        return _json({"id": created}, 200 if exist_ok else 201)

    async def _create_owned(
        self,
        principal: Principal,
        tenant: str,
        session_id: Any,
        config: Any,
        *,
        exist_ok: bool,
        parent: str = "",
    ) -> str:
        """Create a session of ``tenant`` within its quota, claim it and audit it."""
        self.tenancy.reserve_session(tenant)
        try:
            if parent:
                created = await self.hive.create_child_session(parent, session_id, config)
            else:
                created = await self.hive.create_session(session_id, config)
        except SessionExists:
            # get_or_create of a session that exists: the same answer, if the caller may see it.
            if exist_ok and (principal.is_admin or self.tenancy.owner(session_id) == tenant):
                return str(session_id)
            raise
        finally:
            self.tenancy.unreserve_session(tenant)
        await self.tenancy.claim([created], tenant)
        detail = {"parent_id": parent} if parent else {}
        await self.tenancy.record(principal, "create", created, tenant, detail)
        return created

    async def _h_list(self, call: _Call) -> Response:
        offset, limit = _page(call.request, 100)
        query = call.request.query_params
        prefix = query.get("q", "")
        state = query.get("state")
        if state is not None and state not in _STATES:
            raise HttpProblem(400, "InvalidBody", f"state must be one of {', '.join(_STATES)}")
        # Ids only (the Hive's directory, sorted): no session is activated to be listed, so the
        # cost is one pass over the ids, whatever their number; only the page gets details.
        ids = _with_prefix(await self.hive.list_sessions(), prefix)
        ids = self.tenancy.visible(call.principal, ids)
        if state == "idle":
            busy = set().union(*(self.view.in_state(other) for other in _STATES if other != "idle"))
            ordered = [sid for sid in ids if sid not in busy]
        elif state is not None:
            chosen = self.view.in_state(state)
            ordered = [sid for sid in ids if sid in chosen]
        else:  # the sessions waiting for a decision first, then the rest, each by id
            waiting = self.view.in_state("waiting")
            ordered = [sid for sid in ids if sid in waiting] + [sid for sid in ids if sid not in waiting]
        page = ordered[offset : offset + limit]
        data: dict[str, Any] = {"total": len(ordered), "offset": offset, "limit": limit, "ids": page}
        if query.get("details") in ("1", "true"):
            data["sessions"] = list(await asyncio.gather(*(self._summary(sid) for sid in page)))
        return _json(data)

    async def _summary(self, sid: str) -> dict[str, Any]:
        usage, context = await asyncio.gather(self.hive.usage(sid), self.hive.context_usage(sid))
        return {
            "id": sid,
            "state": self.view.state(sid),
            "usage": usage.to_dict(),
            "context": context.to_dict(),
            "pending_confirmations": len(self.view.confirmations.get(sid, {})),
        }

    async def _h_show(self, call: _Call) -> Response:
        sid = call.p[0]
        usage = await self.hive.usage(sid)
        context = await self.hive.context_usage(sid)
        pending = await self.hive.pending_confirmations(sid)
        is_child = await self.hive.is_child_session(sid)
        children = await self.hive.get_child_sessions(sid)
        llm = await self.hive.get_llm_for_session(sid)
        policy = await self.hive.get_confirmation_policy(sid)
        return _json(
            {
                "id": sid,
                "state": self.view.state(sid),
                "is_child": is_child,
                "children": children,
                "usage": usage.to_dict(),
                "context": context.to_dict(),
                "pending_confirmations": pending,
                "llm": llm.to_dict() if llm is not None else None,
                "confirmation_policy": policy.to_dict(),
            }
        )

    async def _h_destroy(self, call: _Call) -> Response:
        # Every depth: the session's descendants go with it, and so do their owner rows (else
        # they would count against the tenant's max_sessions for ever).
        descendants: list[str] = []
        parents = [call.p[0]]
        while parents:
            children = await asyncio.gather(*(self.hive.get_child_sessions(p) for p in parents))
            parents = [child for found in children for child in found]
            descendants.extend(parents)
        await self.hive.destroy_session(call.p[0])
        for sid in [call.p[0], *descendants]:
            self.view.forget(sid)
        await self.tenancy.release([call.p[0], *descendants])
        await self._audit(call, "delete", {"descendants": descendants})
        return Response(status_code=204)

    async def _h_create_child(self, call: _Call) -> Response:
        body = await self._body(call.request)
        config = session_config_from_json(body.get("config"), self.workspace_root)
        # A child belongs to its parent's tenant (an admin creating it does not take it over).
        created = await self._create_owned(
            call.principal, call.owner, body.get("id"), config, exist_ok=False, parent=call.p[0]
        )
        return _json({"id": created, "parent_id": call.p[0]}, 201)

    async def _h_children(self, call: _Call) -> Response:
        return _json({"ids": await self.hive.get_child_sessions(call.p[0])})

    async def _h_turn(self, call: _Call) -> Response:
        sid = call.p[0]
        if self.draining:
            raise HttpProblem(503, "Draining", "the service is draining before it stops; no new turns")
        body = await self._body(call.request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise InvalidConfig("the turn body needs a string field 'prompt'")
        # Counted against the session's tenant: the quota bounds what its sessions cost the machine.
        self.tenancy.turn_started(call.owner)
        try:
            stream = await self.hive.generate_streaming(sid, prompt)
        except BaseException as exc:
            self.tenancy.turn_ended(call.owner)
            if isinstance(exc, SessionPaused):
                self.view.paused.add(sid)
            raise
        turn = self._watch(sid, call.owner, stream)
        await self.tenancy.record(call.principal, "turn", sid, call.owner, {"prompt_chars": len(prompt)})
        if "text/event-stream" in call.request.headers.get("accept", ""):
            return StreamingResponse(
                self._turn_events(turn),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return _json(_result_json(await asyncio.shield(turn.outcome)))

    def _watch(self, sid: str, tenant: str, stream: AsyncTurnStream) -> _Turn:
        turn = _Turn(sid, tenant)
        self.view.turn_started(sid)
        self.turns.add(turn)

        async def follow() -> None:
            try:
                async for event in stream:
                    self.view.observe(event)
                    turn.queue.put_nowait(("event", event))
                try:
                    result = await stream.result()
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                    turn.outcome.set_exception(exc)
                    turn.queue.put_nowait(("error", exc))
                else:
                    turn.outcome.set_result(result)
                    turn.queue.put_nowait(("result", result))
            finally:
                self.view.turn_ended(sid)
                self.tenancy.turn_ended(tenant)
                self.turns.discard(turn)
                if not turn.outcome.done():
                    turn.outcome.cancel()
                # Nobody may ever read it (a JSON turn, a client gone): do not warn about it.
                if turn.outcome.done() and not turn.outcome.cancelled():
                    turn.outcome.exception()

        turn.task = asyncio.get_running_loop().create_task(follow())
        return turn

    async def _turn_events(self, turn: _Turn) -> AsyncIterator[bytes]:
        self.open_streams.inc()
        try:
            while True:
                kind, value = await turn.queue.get()
                if kind == "event":
                    yield _sse(value.type, event_to_dict(value))
                elif kind == "result":
                    yield _sse("result", _result_json(value))
                    return
                else:
                    yield _sse("error", problem_for(value)[1])
                    return
        finally:
            self.open_streams.dec()

    async def _h_events(self, call: _Call) -> Response:
        sid = call.p[0]
        subscription = await self.hive.subscribe(sid)
        self._subscriptions.add(subscription)

        async def events() -> AsyncIterator[bytes]:
            self.open_streams.inc()
            try:
                yield _sse("subscribed", {"session_id": sid})
                while True:
                    try:
                        event = await subscription.get(timeout=SSE_KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if event is None:
                        yield _sse("end", {"session_id": sid, "draining": self.draining})
                        return
                    self.view.observe(event)
                    yield _sse(event.type, event_to_dict(event))
            finally:
                self.open_streams.dec()
                self._subscriptions.discard(subscription)
                subscription.close()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _h_history(self, call: _Call) -> Response:
        offset, limit = _page(call.request, 200)
        messages = await self.hive.history(call.p[0])
        before = _before(call.request, len(messages))
        if "offset" in call.request.query_params:  # forward from offset, stopping short of before
            shown = messages[offset : min(offset + limit, before)]
        else:  # the page that ends where the caller's oldest loaded page began (the newest first)
            offset = max(0, before - limit)
            shown = messages[offset:before]
        return _json(
            {
                "total": len(messages),
                "offset": offset,
                "limit": limit,
                "messages": [m.to_dict() for m in shown],
            }
        )

    async def _h_inbox(self, call: _Call) -> Response:
        sessions = self.tenancy.visible(call.principal, list(self.view.confirmations))
        # The Hive says what still waits (a call answered by someone this service did not see
        # leaves); the history says what led to it.
        asked = await asyncio.gather(*(self._waiting_in(sid) for sid in sessions), return_exceptions=True)
        pending = [item for found in asked if isinstance(found, list) for item in found]
        pending.sort(key=lambda item: (item["waiting_since"], item["session_id"], item["tool_id"]))
        return _json({"pending": pending})

    async def _waiting_in(self, sid: str) -> list[dict[str, Any]]:
        """One session's inbox entries: its waiting calls, with the prompt and the messages before."""
        still, messages = await asyncio.gather(self.hive.pending_confirmations(sid), self.hive.history(sid))
        prompts = [m.text for m in messages if m.role == "user"]
        prompt = self.view.prompts.get(sid)
        if prompt is not None and prompt != (prompts[-1] if prompts else None):
            # The running turn's prompt reaches the history when the turn ends: it led to the call.
            messages = [*messages, Message.user(prompt)]
        elif prompt is None:
            prompt = prompts[-1] if prompts else ""
        recent = [m.to_dict() for m in messages[-INBOX_RECENT:]]
        known = self.view.confirmations.get(sid, {})
        return [
            {
                "session_id": sid,
                "tool_id": tool_id,
                "tool_name": event.tool_name,
                "arguments": event.arguments,
                "timeout_s": event.timeout_s,
                "waiting_since": self.view.waiting_since.get((sid, tool_id), 0.0),
                "prompt": prompt,
                "recent": recent,
            }
            for tool_id, event in known.items()
            if tool_id in still
        ]

    async def _h_usage(self, call: _Call) -> Response:
        return _json((await self.hive.usage(call.p[0])).to_dict())

    async def _h_context(self, call: _Call) -> Response:
        return _json((await self.hive.context_usage(call.p[0])).to_dict())

    async def _audit(self, call: _Call, action: str, detail: dict[str, Any] | None = None) -> None:
        await self.tenancy.record(call.principal, action, call.p[0], call.owner, detail)

    async def _h_pause(self, call: _Call) -> Response:
        changed = await self.hive.pause_session(call.p[0])
        self.view.paused.add(call.p[0])
        await self._audit(call, "pause", {"changed": changed})
        return _json({"changed": changed, "state": self.view.state(call.p[0])})

    async def _h_resume(self, call: _Call) -> Response:
        changed = await self.hive.resume_session(call.p[0])
        self.view.paused.discard(call.p[0])
        await self._audit(call, "resume", {"changed": changed})
        return _json({"changed": changed, "state": self.view.state(call.p[0])})

    async def _h_cancel(self, call: _Call) -> Response:
        changed = await self.hive.cancel_operation(call.p[0])
        await self._audit(call, "cancel", {"changed": changed})
        return _json({"changed": changed})

    async def _h_compact(self, call: _Call) -> Response:
        if call.request.query_params.get("auto") in ("1", "true"):
            compacted = await self.hive.maybe_auto_compact(call.p[0])
        else:
            await self.hive.compact(call.p[0])
            compacted = True
        await self._audit(call, "compact", {"compacted": compacted})
        return _json({"compacted": compacted})

    async def _h_clear(self, call: _Call) -> Response:
        await self.hive.clear(call.p[0])
        await self._audit(call, "clear")
        return Response(status_code=204)

    async def _h_reset(self, call: _Call) -> Response:
        changed = await self.hive.reset_session(call.p[0])
        await self._audit(call, "reset", {"changed": changed})
        return _json({"changed": changed})

    async def _h_get_policy(self, call: _Call) -> Response:
        return _json((await self.hive.get_confirmation_policy(call.p[0])).to_dict())

    async def _h_put_policy(self, call: _Call) -> Response:
        policy = policy_from_json(await self._body(call.request))
        stored = (await self.hive.set_confirmation_policy(call.p[0], policy)).to_dict()
        await self._audit(call, "policy", {"confirmation_policy": stored})
        return _json(stored)

    async def _h_configure(self, call: _Call) -> Response:
        body = await self._body(call.request)
        unknown = sorted(set(body) - {"thinking", "budget", "model_config"})
        if unknown:
            raise InvalidConfig(
                f"configure has unknown field(s) {unknown}; known: thinking, budget, model_config"
            )
        thinking, budget = body.get("thinking"), body.get("budget")
        if thinking is not None and not isinstance(thinking, bool):
            raise InvalidConfig("thinking must be true, false or null")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise InvalidConfig("budget must be an integer number of tokens or null")
        model = body.get("model_config")
        model_config = llm_config_from_json(model) if model is not None else None
        await self.hive.configure(call.p[0], thinking, budget, model_config)
        # to_dict() never holds the API key (and a body's api_key is refused before this).
        model = model_config.to_dict() if model_config is not None else None
        await self._audit(call, "configure", {"thinking": thinking, "budget": budget, "model_config": model})
        return Response(status_code=204)

    async def _h_llm(self, call: _Call) -> Response:
        config = await self.hive.get_llm_for_session(call.p[0])
        return _json(config.to_dict() if config is not None else None)

    async def _h_confirmations(self, call: _Call) -> Response:
        ids = await self.hive.pending_confirmations(call.p[0])
        known = self.view.confirmations.get(call.p[0], {})
        pending = []
        for tool_id in ids:
            event = known.get(tool_id)
            pending.append(
                {"tool_id": tool_id}
                if event is None
                else {
                    "tool_id": tool_id,
                    "tool_name": event.tool_name,
                    "arguments": event.arguments,
                    "timeout_s": event.timeout_s,
                }
            )
        return _json({"pending": pending})

    async def _h_confirm(self, call: _Call) -> Response:
        body = await self._body(call.request)
        approved, reason = body.get("approved"), body.get("reason")
        if not isinstance(approved, bool):
            raise InvalidConfig("the confirmation body needs a boolean field 'approved'")
        if reason is not None and not isinstance(reason, str):
            raise InvalidConfig("reason must be a string or null")
        tool_id = tool_id_from_path(call.p[1])
        # ConfirmationResolved names the token that decided, as the audit record below does.
        confirmed = await self.hive.confirm_tool(
            call.p[0], tool_id, approved, reason, decided_by=call.principal.name
        )
        await self._audit(
            call,
            "confirm",
            {"tool_id": tool_id, "approved": approved, "reason": reason, "confirmed": confirmed},
        )
        return _json({"confirmed": confirmed})

    async def _h_tools(self, _call: _Call) -> Response:
        return _json({"tools": [t.to_dict() for t in self.hive.list_tools()]})

    async def _h_stats(self, call: _Call) -> Response:
        count, live = await asyncio.gather(self.hive.session_count(), self.hive.live_session_count())
        if call.principal.is_admin:
            return _json({"sessions": count, "live_sessions": live, "turns_in_flight": len(self.turns)})
        # A tenant counts its own sessions and turns; how many are resident in memory is the
        # service's figure (it tells nothing of whose they are).
        own = self.tenancy.visible(call.principal, await self.hive.list_sessions())
        running = self.tenancy.turns_running(call.principal.tenant)
        return _json({"sessions": len(own), "live_sessions": live, "turns_in_flight": running})

    async def _h_flush(self, _call: _Call) -> Response:
        await self.hive.flush(timeout=60.0)
        return Response(status_code=204)

    async def _h_health(self, _call: _Call) -> Response:
        # Remote callers learn the store's kind and file name, not where it lives on the server.
        return _json({"stores": _public_health(await self.hive.store_health())})

    async def _h_load_all(self, _call: _Call) -> Response:
        return _json({"loaded": await self.hive.load_all_sessions()})

    async def _h_audit(self, call: _Call) -> Response:
        offset, limit = _page(call.request, 100)
        session_id = call.request.query_params.get("session_id")
        if session_id is not None:
            check_id(session_id)  # 400 for what no session id can be (empty, NUL, control characters...)
        total, records = await self.tenancy.records(call.principal, session_id, limit, offset)
        return _json(
            {"total": total, "offset": offset, "limit": limit, "records": [r.to_dict() for r in records]}
        )

    async def _h_info(self, _call: _Call) -> Response:
        return _json(service_info(self.hive))

    async def _h_whoami(self, call: _Call) -> Response:
        quota = self.tenancy.quota(call.principal.tenant)
        return _json(
            {
                **call.principal.to_dict(),
                "quota": {
                    "max_sessions": quota.max_sessions,
                    "max_concurrent_turns": quota.max_concurrent_turns,
                },
            }
        )

    # ------------------------------------------------------------------ draining

    async def drain(self, timeout: float, *, log_to: Callable[[str], None] = log.info) -> None:
        """Refuse new turns, give running ones ``timeout`` seconds, cancel the rest, flush."""
        self.draining = True
        self.draining_gauge.set(1)
        running = [t.task for t in list(self.turns) if t.task is not None]
        log_to(f"draining: {len(running)} turn(s) running, waiting up to {timeout:g} s")
        if running:
            _done, late = await asyncio.wait(running, timeout=timeout)
            if late:
                sessions = sorted({t.session_id for t in list(self.turns)})
                log_to(f"draining: cancelling the turns of {len(sessions)} session(s) still running")
                await asyncio.gather(
                    *(self.hive.cancel_operation(sid, reason=SHUTDOWN_REASON) for sid in sessions),
                    return_exceptions=True,
                )
                await asyncio.wait(late, timeout=30.0)
        started = time.monotonic()
        await self.hive.flush(timeout=60.0)
        log_to(f"draining: flushed in {time.monotonic() - started:.3f} s")
        self.close_streams()

    def close_streams(self) -> None:
        """End every live event stream (their clients see an ``end`` event)."""
        for subscription in list(self._subscriptions):
            subscription.close()


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    if len(pattern) != len(segments):
        return None
    params: list[str] = []
    for expected, actual in zip(pattern, segments, strict=True):
        if expected.startswith("{"):
            params.append(actual)
        elif expected != actual:
            return None
    return params


def _page(request: Request, default_limit: int) -> tuple[int, int]:
    query = parse_qs(request.url.query, keep_blank_values=True)  # "offset=" is refused, not ignored

    def number(name: str, default: int, low: int, high: int) -> int:
        raw = query.get(name, [str(default)])[-1]
        try:
            value = int(raw)
        except ValueError:
            raise HttpProblem(400, "InvalidBody", f"query parameter {name} must be an integer") from None
        if not low <= value <= high:
            raise HttpProblem(400, "InvalidBody", f"query parameter {name} must be in [{low}, {high}]")
        return value

    return number("offset", 0, 0, MAX_OFFSET), number("limit", default_limit, 1, MAX_PAGE)


def _with_prefix(sorted_ids: list[str], prefix: str) -> list[str]:
    """The ids that start with ``prefix``: a contiguous run of a sorted list, found by bisection."""
    if not prefix:
        return sorted_ids
    start = bisect.bisect_left(sorted_ids, prefix)
    end = start
    while end < len(sorted_ids) and sorted_ids[end].startswith(prefix):
        end += 1
    return sorted_ids[start:end]


def _before(request: Request, total: int) -> int:
    """Where a history page ends: ``before=`` (at most ``total``), else after the newest message."""
    raw = request.query_params.get("before")
    if raw is None:
        return total
    try:
        before = int(raw)
    except ValueError:
        raise HttpProblem(400, "InvalidBody", "query parameter before must be an integer") from None
    if not 0 <= before <= MAX_OFFSET:
        raise HttpProblem(400, "InvalidBody", f"query parameter before must be in [0, {MAX_OFFSET}]")
    return min(before, total)


def _public_store_name(name: str) -> str:
    """A store's name as remote callers see it: its kind and file name, never a path on the server."""
    kind, sep, where = name.partition(":")
    if sep and where.startswith("/"):
        return f"{kind}:{posixpath.basename(where.rstrip('/')) or '/'}"
    return name


def _public_health(health: list[tuple[str, str]]) -> list[dict[str, str]]:
    stores = []
    for name, status in health:
        shown = _public_store_name(name)
        stores.append({"name": shown, "status": status.replace(name, shown)})
    return stores


def serve_app(
    hive: Hive | AsyncHive,
    *,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    workspace_root: str | Path | None = None,
    cors_origins: Sequence[str] = (),
    require_token: bool = True,
    tokens: TokenTable | None = None,
    audit: AuditLog | None = None,
) -> ServeApp:
    """The service as an ASGI app, for running under your own server.

    ``token`` (default: ``SESSIONHIVE_TOKEN``) is the bearer token every /v1
    route requires, with every scope; ``tokens`` (``TokenTable.load(path)``)
    instead admits the tokens of a token file, each with its tenant and
    scopes; ``audit`` keeps owners and the audit log (default: in memory;
    ``AuditLog.for_store(store)`` keeps them in a SQL store). Without a token,
    pass ``require_token=False`` knowingly (the ``serve`` command allows that
    only on a loopback address). ``workspace_root``
    lets sessions pick a workspace inside it; ``cors_origins`` enables CORS for
    those origins only.
    """
    import os

    if token is None and tokens is None:
        token = os.environ.get("SESSIONHIVE_TOKEN") or None
    if token is None and tokens is None and require_token:
        raise InvalidConfig(
            "serve_app needs a bearer token: pass token= or set SESSIONHIVE_TOKEN "
            "(or require_token=False for a server only this machine can reach)"
        )
    return ServeApp(
        hive,
        token=token,
        max_body=max_body,
        workspace_root=workspace_root,
        cors_origins=cors_origins,
        tokens=tokens,
        audit=audit,
    )
