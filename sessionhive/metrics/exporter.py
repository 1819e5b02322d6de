"""Serving ``/metrics``: a small HTTP server per Hive, or an ASGI app to route to in your own server."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, make_asgi_app, start_http_server
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from sessionhive.model.errors import InvalidConfig

__all__ = ["MetricsAsgiApp", "MetricsServer", "exposition"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Joined(Collector):
    """Several registries read as one, so that one OpenMetrics exposition ends with one ``# EOF``."""

    def __init__(self, registries: tuple[CollectorRegistry, ...]) -> None:
        self._registries = registries

    def collect(self) -> Any:
        for registry in self._registries:
            yield from registry.collect()


def exposition(accept: str | None, *registries: CollectorRegistry) -> tuple[bytes, str]:
    """The registries' samples and their content type: OpenMetrics (with exemplars) when ``accept`` asks.

    Prometheus asks for ``application/openmetrics-text`` when it scrapes
    exemplars; anything else gets the classic text format, which has none.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Joined(registries)), content_type


class MetricsAsgiApp:
    """An ASGI app answering every HTTP request with the registry's exposition.

    It is an object, not a function, so that Starlette's ``Route("/metrics",
    app)`` serves it as an ASGI app at exactly ``/metrics`` (200, no redirect;
    a ``Mount("/metrics", app)`` only matches ``/metrics/`` and redirects
    ``/metrics`` there with a 307). It answers the ``lifespan`` protocol too,
    so an ASGI server can run it on its own.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._expose = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await self._expose(scope, receive, send)
        else:  # a websocket: nothing to offer it
            await send({"type": "websocket.close", "code": 1000})


class MetricsServer:
    """``GET /metrics`` for one registry on ``addr:port`` (``port=0`` picks a free port)."""

    def __init__(self, registry: CollectorRegistry, addr: str = "127.0.0.1", port: int = 9464) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidConfig(f"the metrics port must be 0..65535 (MetricsConfig.port), got {port!r}")
        try:
            server, thread = start_http_server(port, addr, registry)
        except OSError as exc:
            raise InvalidConfig(f"cannot serve metrics on {addr}:{port}: {exc}") from exc
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.addr = addr
        self.port = int(server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
