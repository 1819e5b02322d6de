"""Accepted connections have TCP_NODELAY: a reused keep-alive connection is not held ~40 ms per request.

uvicorn writes a response's head and body in two sends; without TCP_NODELAY
the body waits for the client's delayed ACK on every request after the first
of a connection. bench/bench_http_keepalive.py measures the latency itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from sessionhive.serve import ServerThread
from sessionhive.serve._server import _bind

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def healthz_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


def test_server_thread_connections_have_tcp_nodelay() -> None:
    with ServerThread(healthz_app) as server, httpx.Client(base_url=server.url) as client:
        for _ in range(3):  # the same kept-alive connection, reused
            assert client.get("/healthz").json() == {"status": "ok"}

        async def nodelay_of_open_connections() -> list[int]:
            connections: Any = server.server.server_state.connections
            return [
                connection.transport.get_extra_info("socket").getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY
                )
                for connection in connections
            ]

        flags = server.call(nodelay_of_open_connections())
    assert len(flags) == 1
    assert flags[0] != 0


def test_serve_listening_socket_gives_asyncio_connections_tcp_nodelay() -> None:
    """The socket ``sessionhive serve`` binds and hands to uvicorn, served by asyncio as uvicorn does."""

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(
                writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            )
            writer.close()

        listening = _bind("127.0.0.1", 0)
        server = await asyncio.start_server(on_connection, sock=listening)
        async with server:
            port = listening.getsockname()[1]
            _, client = await asyncio.open_connection("127.0.0.1", port)
            flag = await asyncio.wait_for(accepted, 10)
            client.close()
        return flag

    assert asyncio.run(accept_one()) != 0
