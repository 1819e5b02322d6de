"""Serving ``/metrics``: a small HTTP server per Hive, or apps to mount elsewhere."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from sessionhive.model.errors import InvalidConfig

__all__ = ["MetricsServer"]


class MetricsServer:
    """``GET /metrics`` for one registry on ``addr:port`` (``port=0`` picks a free port)."""

    def __init__(self, registry: CollectorRegistry, addr: str = "127.0.0.1", port: int = 9464) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidConfig(f"MetricsConfig.port must be 0..65535, got {port!r}")
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
