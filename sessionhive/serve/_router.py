"""Routes declared where their handlers are defined: ``@router.post(path, scope=..., ...)``.

A :class:`Route` is everything the service, its OpenAPI document and the
HTTP client know of one operation: method, path, the scope a token needs,
the request body's schema, the success status and schema, the other statuses
it can answer and its query parameters. Each resource module
(``resources/sessions.py``...) fills a :class:`Router`; ``routes.ROUTES``
collects them, and the service, ``openapi_document()`` and ``RemoteHive``
all read that one table.

Handlers return what they answer, not a response object: JSON-able data
(sent with the route's ``ok`` status; nothing for a 204), an :class:`Answer`
for another success status, or an :class:`EventStream` of :class:`Frame` s. So this module and
the resource modules need no web framework, and the client can import the
table with only ``httpx`` installed.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar, Unpack
from urllib.parse import parse_qs, quote

from sessionhive.model.events import AgentEvent, event_to_dict
from sessionhive.persistence.audit import DEFAULT_TENANT

from ._auth import ALL_SCOPES, Principal
from ._schemas import MAX_OFFSET, MAX_PAGE
from .problems import HttpProblem

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._app import ServeApp

__all__ = [
    "NOBODY",
    "Answer",
    "Call",
    "EventStream",
    "Frame",
    "Handler",
    "Route",
    "RouteOptions",
    "Router",
    "StreamEnd",
    "event_frame",
    "keep_alive",
]

T = TypeVar("T")

#: Who calls when the service runs without a token (only allowed on loopback): the operator.
NOBODY = Principal("anonymous", DEFAULT_TENANT, frozenset(ALL_SCOPES))


@dataclass(frozen=True)
class Answer:
    """A success other than the route's ``ok`` status (``POST /v1/sessions`` with ``exist_ok``: 200)."""

    status: int
    data: Any


#: How often an idle SSE stream (``/events`` and turn streams) sends a keep-alive comment, so
#: idle-timeout proxies and clients see it is alive. Read at each wait: tests may shorten it.
SSE_KEEPALIVE_S = 15.0


class Frame(NamedTuple):
    """One server-sent event: its name, its JSON data and its ``id:`` (the session's event id).

    ``event_id`` is ``None`` for a frame that is not a session event (``subscribed``, ``run``,
    ``result``, ``end``): it carries no ``id:``, so a reconnecting client resumes after the last
    event it got, which is what ``Last-Event-ID`` names.
    """

    event: str
    data: Any
    event_id: int | None = None


def event_frame(event: AgentEvent) -> Frame:
    """An event's frame, with ``id:`` only when the event has an id of its own.

    An :class:`~sessionhive.EventsDropped` notice has none (0): were it sent as ``id: 0``, a
    client's ``Last-Event-ID`` would fall back to 0 and a reconnection replay everything again.
    """
    return Frame(event.type, event_to_dict(event), event.event_id or None)


@dataclass(frozen=True)
class EventStream:
    """Server-sent events: :class:`Frame` s, ``None`` for a keep-alive comment.

    The service encodes them, sets the headers and counts the stream as open.
    """

    events: AsyncIterator[Frame | None]


class StreamEnd:
    """Set by the service (``close()``) to end a live stream that would otherwise go on: at shutdown."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def close(self) -> None:
        self.closed.set()


async def keep_alive(source: AsyncIterator[T], end: StreamEnd | None = None) -> AsyncIterator[T | None]:
    """``source``'s items, and ``None`` whenever it says nothing for :data:`SSE_KEEPALIVE_S`.

    Stops when ``source`` does or ``end`` is closed (the caller then sends its
    last frame). The pending read is waited on, never cancelled by a timeout:
    that would cut the source (an async generator cancelled mid-read is closed for good).
    """
    pending: asyncio.Future[T] | None = None
    closed = asyncio.ensure_future(end.closed.wait()) if end is not None else None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            waits: set[asyncio.Future[Any]] = {pending} if closed is None else {pending, closed}
            await asyncio.wait(waits, timeout=SSE_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                if closed is not None and closed.done():
                    return
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
        if closed is not None:
            closed.cancel()


@dataclass(frozen=True)
class Call:
    """One API request as a handler sees it: the service, the request, the path's ids, the caller.

    ``owner`` is the tenant of the session the path names (``""`` on other routes); on a
    ``runs/{run_id}`` route, ``session`` is the session the run id names.
    """

    app: ServeApp
    request: Request
    params: list[str]
    principal: Principal = NOBODY
    owner: str = ""
    session: str = ""

    @property
    def session_id(self) -> str:
        return self.session or self.params[0]

    @property
    def run_id(self) -> str:
        """The run a ``runs/{run_id}`` route names."""
        return self.params[0]

    def last_event_id(self) -> int | None:
        """Where a stream resumes: ``Last-Event-ID`` (what a reconnecting client sends), else ``after=``."""
        header = self.request.headers.get("last-event-id")
        if header is not None:
            if not (header.isascii() and header.isdigit() and len(header) <= _MAX_EVENT_ID_DIGITS):
                raise HttpProblem(400, "InvalidBody", "Last-Event-ID must be an event id (digits)")
            return int(header)
        after = self.query.get("after")
        return None if after is None else _bounded("after", after, 0, MAX_OFFSET)

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query_params

    def page(self, default_limit: int) -> tuple[int, int]:
        """``offset`` and ``limit`` from the query, each within its documented range (else a 400)."""
        query = parse_qs(self.request.url.query, keep_blank_values=True)  # "offset=" is refused

        def number(name: str, default: int, low: int, high: int) -> int:
            raw = query.get(name, [str(default)])[-1]
            return _bounded(name, raw, low, high)

        return number("offset", 0, 0, MAX_OFFSET), number("limit", default_limit, 1, MAX_PAGE)

    def before(self, total: int) -> int:
        """Where a history page ends: ``before=`` (at most ``total``), else after the newest message."""
        raw = self.query.get("before")
        return total if raw is None else min(_bounded("before", raw, 0, MAX_OFFSET), total)


#: The longest Last-Event-ID read (an event id is below 2**62, 19 digits; 18 keeps the check one rule).
_MAX_EVENT_ID_DIGITS = 18


def _bounded(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise HttpProblem(400, "InvalidBody", f"query parameter {name} must be an integer") from None
    if not low <= value <= high:
        raise HttpProblem(400, "InvalidBody", f"query parameter {name} must be in [{low}, {high}]")
    return value


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """One operation of the /v1 API (``name`` is its OpenAPI operationId and its handler's name)."""

    method: str
    path: str  # under /v1, with {placeholders}
    name: str
    summary: str
    scope: str  # the scope a token needs; "" lets any valid token in
    handler: Handler = field(repr=False, compare=False)
    body: str | None = None  # a schema name under components/schemas
    ok: int = 200
    result: Mapping[str, Any] | None = None  # the success body's schema
    sse: bool = False
    errors: Mapping[str, str] = field(default_factory=dict)  # statuses beyond those every route has
    also_ok: Mapping[str, str] = field(default_factory=dict)  # other successes, with ``result``
    query: tuple[Mapping[str, Any], ...] = ()

    @cached_property  # matched against every /v1 request: split once
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    @property
    def names_session(self) -> bool:
        return self.path.startswith("sessions/{session_id}")

    @property
    def names_run(self) -> bool:
        """The path names a run, and through its id the session it belongs to."""
        return self.path.startswith("runs/{run_id}")

    def url(self, *ids: str) -> str:
        """The path with ``ids`` percent-encoded in its placeholders (a ``/`` in an id as ``%2F``)."""
        it = iter(ids)
        parts = [quote(next(it), safe="") if s.startswith("{") else s for s in self.segments]
        return "/v1/" + "/".join(parts)

    def match(self, segments: list[str]) -> list[str] | None:
        """The ids in ``segments`` (decoded path segments after /v1/), or ``None`` if not this path."""
        pattern = self.segments
        if len(pattern) != len(segments):
            return None
        params: list[str] = []
        for expected, actual in zip(pattern, segments, strict=True):
            if expected.startswith("{"):
                params.append(actual)
            elif expected != actual:
                return None
        return params


class RouteOptions(TypedDict, total=False):
    """What a route may declare besides its method, path and scope (see :class:`Route`)."""

    body: str | None
    ok: int
    result: Mapping[str, Any] | None
    sse: bool
    errors: Mapping[str, str]
    also_ok: Mapping[str, str]
    query: tuple[Mapping[str, Any], ...]


class Router:
    """The routes of one resource module, in the order they are declared."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self, method: str, path: str, *, scope: str, **options: Unpack[RouteOptions]
    ) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as ``method path``; its docstring is the summary."""
        if scope and scope not in ALL_SCOPES:
            raise ValueError(f"unknown scope {scope!r}")

        def declare(handler: Handler) -> Handler:
            summary = " ".join((inspect.getdoc(handler) or handler.__name__).split("\n\n")[0].split())
            name = handler.__name__.removesuffix("_")  # list_ declares "list"
            self.routes.append(Route(method, path, name, summary, scope, handler, **options))
            return handler

        return declare

    def get(self, path: str, *, scope: str, **options: Unpack[RouteOptions]) -> Callable[[Handler], Handler]:
        return self.route("GET", path, scope=scope, **options)

    def post(self, path: str, *, scope: str, **options: Unpack[RouteOptions]) -> Callable[[Handler], Handler]:
        return self.route("POST", path, scope=scope, **options)

    def put(self, path: str, *, scope: str, **options: Unpack[RouteOptions]) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, scope=scope, **options)

    def delete(
        self, path: str, *, scope: str, **options: Unpack[RouteOptions]
    ) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, scope=scope, **options)
