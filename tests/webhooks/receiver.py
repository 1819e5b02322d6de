"""A real webhook receiver for the tests: HTTP on 127.0.0.1, failing for a while, then answering 200.

PYTEST_DONT_REWRITE (it asserts nothing).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and the status it was answered with."""

    headers: dict[str, str]
    body: bytes
    status: int
    path: str


class Receiver:
    """Answers ``fail_status`` for ``fail_for`` seconds after it starts listening, then 200.

    The port is bound at once but, with ``listening=False``, not listened on
    until :meth:`listen`: until then a connection is refused, as to a
    receiver that is down, and the URL stays the same. ``delivered`` is set
    once a 2xx has been written back. ``location`` is sent with a failing
    answer (a redirect to follow, for a test that it is not followed).
    """

    def __init__(
        self,
        *,
        fail_for: float = 0.0,
        fail_status: int = 500,
        location: str | None = None,
        listening: bool = True,
    ) -> None:
        self.requests: list[Received] = []
        self.delivered = threading.Event()
        self._fail_for = fail_for
        self._fail_status = fail_status
        self.location = location
        self._fail_until = float("inf")
        self._thread: threading.Thread | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status_now()
                self.send_response(status)
                if status >= 300 and receiver.location is not None:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
                receiver.requests.append(Received(dict(self.headers.items()), body, status, self.path))
                if 200 <= status < 300:
                    receiver.delivered.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.server_bind()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}/hook/path?token=in-the-url"
        if listening:
            self.listen()

    def status_now(self) -> int:
        return self._fail_status if time.monotonic() < self._fail_until else 200

    def listen(self) -> None:
        """Start accepting connections; the failing window starts now."""
        self._fail_until = time.monotonic() + self._fail_for
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
