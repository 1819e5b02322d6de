"""The metrics ASGI app in a real Starlette server over real HTTP: /metrics answers 200, no redirect."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionhive import Hive
from sessionhive.metrics.exporter import MetricsAsgiApp

starlette_routing = pytest.importorskip("starlette.routing", reason="starlette comes with the serve extra")
starlette_applications = pytest.importorskip("starlette.applications")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Hive]]:
    """A Starlette app on 127.0.0.1 (a free port) with the Hive's metrics routed at /metrics and mounted."""
    with Hive.start(store="memory", workspace=tmp_path) as hive:
        hive.create_session("s")
        metrics = MetricsAsgiApp(hive.metrics.registry)
        app = starlette_applications.Starlette(
            routes=[
                starlette_routing.Route("/metrics", metrics),
                starlette_routing.Mount("/mounted", metrics),
            ]
        )
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started and time.monotonic() < deadline:  # uvicorn says when it listens
                time.sleep(0.01)
            assert server.started, "uvicorn did not start"
            port = server.servers[0].sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}", hive
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_metrics_route_answers_200_without_a_redirect(served: tuple[str, Hive]) -> None:
    base, _ = served
    response = httpx.get(f"{base}/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert 'sessionhive_session_lifecycle_total{event="created"} 1.0' in response.text
    assert response.headers["content-type"].startswith("text/plain")


def test_a_mount_serves_below_its_path(served: tuple[str, Hive]) -> None:
    base, _ = served
    assert httpx.get(f"{base}/mounted/", follow_redirects=False).status_code == 200


def test_the_app_runs_alone_under_an_asgi_server_lifespan(tmp_path: Path) -> None:
    with Hive.start(store="memory", workspace=tmp_path) as hive:
        app = MetricsAsgiApp(hive.metrics.registry)
        sent: list[str] = []
        incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, str]:
            return next(incoming)

        async def send(message: object) -> None:
            assert isinstance(message, dict)
            sent.append(message["type"])

        asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
