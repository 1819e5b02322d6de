"""``ServerThread``: an ASGI app under uvicorn in a background thread, for tests and embedding."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Any

import uvicorn

from ._app import ServeApp
from ._server import end_every_stream, uvicorn_config

__all__ = ["ServerThread"]


class ServerThread:
    """Serve ``app`` on ``host:port`` (0: a free port) until :meth:`stop`; ``url`` says where.

    ``with ServerThread(serve_app(hive, token=...)) as server: RemoteHive(server.url, ...)``
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections (see _server._bind).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(512)
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, graceful_s=5))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="sessionhive-serve", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self.server.started:
            raise RuntimeError(f"the server on {self.url} did not start")

    def _run(self) -> None:
        # uvicorn leaves signals alone off the main thread: this server stops through stop().
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self._socket])

        asyncio.run(serve())

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        """Run ``coroutine`` on the server's event loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        app = self.server.config.app
        if isinstance(app, ServeApp) and self.loop is not None and self._thread.is_alive():
            # Running turns and live event streams would hold the shutdown: each ends with its last
            # event (a turn "cancelled by shutdown", an event stream `end`) before the server stops.
            done = asyncio.run_coroutine_threadsafe(end_every_stream(app), self.loop)
            with contextlib.suppress(Exception):
                done.result(30)
        else:
            close_streams = getattr(app, "close_streams", None)
            if callable(close_streams) and self.loop is not None:
                self.loop.call_soon_threadsafe(close_streams)
        self.server.should_exit = True
        self._thread.join(30)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
