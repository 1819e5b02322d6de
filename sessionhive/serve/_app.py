"""The ASGI shell of the /v1 API over an :class:`~sessionhive.AsyncHive`: routing, auth, bodies, SSE, drain.

The handlers live in ``resources/``, one module per resource, each declaring
its route; this module dispatches to them through ``routes.ROUTES`` and turns
what they return into responses. Routing is done on the raw (still
percent-encoded) path, segment by segment, because session ids may contain
``/`` (``alice/researcher``): a client sends it as ``alice%2Fresearcher`` and
it must stay one segment. Health, metrics and the console are served here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from sessionhive import AsyncHive, Hive, InvalidConfig, SessionNotFound
from sessionhive.metrics import tracing
from sessionhive.metrics.exporter import exposition
from sessionhive.model.runs import RunNotFound, session_of_run
from sessionhive.model.urls import BaseUrlPolicy
from sessionhive.persistence.audit import AuditLog

from ._auth import Principal, TokenTable
from ._bodies import parse_json_object
from ._info import public_health
from ._openapi import openapi_document
from ._router import NOBODY, Answer, Call, EventStream, Frame, Route
from ._tenancy import Tenancy
from ._view import SessionView, Turn
from .problems import PROBLEM_MEDIA_TYPE, HttpProblem, problem_for
from .routes import ROUTES

__all__ = ["DEFAULT_MAX_BODY", "SHUTDOWN_REASON", "ServeApp", "serve_app"]

log = logging.getLogger("sessionhive.serve")

DEFAULT_MAX_BODY = 1 << 20
#: What a turn cancelled by the drain says (its TurnCancelled reason).
SHUTDOWN_REASON = "cancelled by shutdown"
_STATIC = ("index.html", "console.js", "console.css")
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status)


def _sse(frame: Frame) -> bytes:
    # The id line first: a client that reads up to a cut keeps the id of the last whole frame only.
    head = f"id: {frame.event_id}\n" if frame.event_id is not None else ""
    return f"{head}event: {frame.event}\ndata: {json.dumps(frame.data, default=str)}\n\n".encode()


def problem_response(exc: BaseException) -> Response:
    status, body, headers = problem_for(exc)
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


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
        allow_webhook_urls: Sequence[str] = (),
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
        # A child the Hive made itself (a task tool's) belongs to its parent's tenant.
        self.tenancy.parent_of = self.hive.core.services.directory.parents.get
        if tokens is not None:
            self.tenancy.budget_per_tenant(self.hive.core.services.budgets)
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
            raise InvalidConfig(f"max_body must be a positive number of bytes, got {max_body!r}")
        self.max_body = max_body
        self.workspace_root = Path(workspace_root).resolve() if workspace_root is not None else None
        self.cors_origins = tuple(cors_origins)
        # Where a run's webhook may point (``serve --allow-webhook-url``): none unless the operator
        # names them, as for model endpoints, so a caller cannot make the service POST anywhere.
        self.webhook_urls = BaseUrlPolicy(tuple(allow_webhook_urls)) if allow_webhook_urls else None
        self.draining = False
        self.view = SessionView()
        self.turns: set[Turn] = set()
        # The live event streams open now, so the drain can end them.
        self.subscriptions: set[Any] = set()
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
                allow_headers=["Authorization", "Content-Type", "Accept", "Idempotency-Key", "Last-Event-ID"],
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
        for route in ROUTES:
            params = route.match(segments)
            if params is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            # The scope first: a refusal for want of a scope says nothing about any session.
            self.tenancy.require(principal, route.scope, route.name)
            session, owner = self._session_of(principal, route, params)
            answer = await route.handler(Call(self, request, params, principal, owner, session))
            return self._respond(route, answer), f"/v1/{route.path}"
        if allowed:
            raise HttpProblem(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed here",
                {"Allow": ", ".join(sorted(allowed))},
            )
        raise HttpProblem(404, "NotFound", f"no route {path} (see /openapi.json)")

    def _session_of(self, principal: Principal, route: Route, params: list[str]) -> tuple[str, str]:
        """The session the path names (by its id or its run's) and its tenant, if ``principal`` may see it."""
        if route.names_session:
            return params[0], self.tenancy.check(principal, params[0])
        if not route.names_run:
            return "", ""
        session = session_of_run(params[0])
        try:
            return session, self.tenancy.check(principal, session)
        except SessionNotFound:
            # Another tenant's run reads as no run at all, as its session does.
            raise RunNotFound(params[0]) from None

    def _authorize(self, request: Request) -> Principal:
        if self._tokens is None:
            return NOBODY
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

    def _respond(self, route: Route, answer: Any) -> Response:
        """The response for what a handler returned (see :mod:`._router`)."""
        if isinstance(answer, EventStream):
            return StreamingResponse(
                self._encode(answer), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        if route.ok == 204:
            return Response(status_code=204)
        if isinstance(answer, Answer):
            return _json(answer.data, answer.status)
        return _json(answer, route.ok)

    async def _encode(self, stream: EventStream) -> AsyncIterator[bytes]:
        self.open_streams.inc()
        try:
            async for item in stream.events:
                yield b": keep-alive\n\n" if item is None else _sse(item)
        finally:
            self.open_streams.dec()

    async def audit(self, call: Call, action: str, detail: dict[str, Any] | None = None) -> None:
        """Record ``action`` by the caller on the session the call names."""
        await self.tenancy.record(call.principal, action, call.session_id, call.owner, detail)

    async def body(self, request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
        """The request's JSON object, refused past ``max_body`` bytes (read no further than that)."""
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
        failing = [f"{s['name']}: {s['status']}" for s in public_health(health) if s["status"] != "ok"]
        if failing:
            raise HttpProblem(503, "StoreUnavailable", "; ".join(failing))
        return _json({"status": "ready", "stores": public_health(health)})

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
        for subscription in list(self.subscriptions):
            subscription.close()


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
    allow_webhook_urls: Sequence[str] = (),
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
    those origins only; ``allow_webhook_urls`` are the URL prefixes a run's
    webhook may name (none: every webhook is refused).
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
        allow_webhook_urls=allow_webhook_urls,
    )
