"""Running the service under uvicorn: one port, bearer token, and a graceful drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import ProcessCollector

from sessionhive import Hive, InvalidConfig
from sessionhive.model.urls import BaseUrlPolicy
from sessionhive.persistence import open_store
from sessionhive.persistence.audit import AuditLog

from ._app import DEFAULT_MAX_BODY, SHUTDOWN_REASON, ServeApp
from ._auth import TokenTable

__all__ = [
    "ServeOptions",
    "is_loopback",
    "read_token",
    "read_webhook_secret",
    "run_service",
    "uvicorn_config",
]


@dataclass
class ServeOptions:
    store: str
    llm: Any
    workspace: str = "."
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    #: A TOML token file (``--tokens``): tokens with tenants and scopes, instead of ``token``.
    tokens_file: str | None = None
    drain_timeout: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    cors_origins: Sequence[str] = field(default_factory=tuple)
    #: Endpoints a session's base_url may name besides the Hive's own (``--allow-base-url``).
    allow_base_urls: Sequence[str] = field(default_factory=tuple)
    #: URL prefixes a run's webhook may name (``--allow-webhook-url``); none: webhooks are refused.
    allow_webhook_urls: Sequence[str] = field(default_factory=tuple)
    #: Signs webhook deliveries (``--webhook-secret-file``): never shown, stored or logged.
    webhook_secret: str | None = field(default=None, repr=False)
    say: Callable[[str], None] = field(default=lambda text: print(text, flush=True))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None, environ: dict[str, str]) -> str | None:
    """The token from ``--token-file`` (first line) or ``SESSIONHIVE_TOKEN``; ``None`` if neither."""
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(f"cannot read the token file {token_file!r}: {exc.strerror}") from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise InvalidConfig(f"the token file {token_file!r} is empty")
        return token
    return environ.get("SESSIONHIVE_TOKEN") or None


def read_webhook_secret(secret_file: str | None) -> str | None:
    """The key of ``--webhook-secret-file`` (its first line), or ``None`` without the flag."""
    if not secret_file:
        return None
    try:
        text = Path(secret_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig(f"cannot read the webhook secret file {secret_file!r}: {exc.strerror}") from None
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise InvalidConfig(f"the webhook secret file {secret_file!r} is empty")
    return secret


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it a response written in two sends waits ~40 ms for a delayed ACK on a reused connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        # A busy port or a foreign address is the operator's to fix: one line, exit 2, no traceback.
        raise InvalidConfig(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


#: Seconds a second signal gives the cancelled turns to send their last event.
_STOP_NOW_TIMEOUT = 5.0


async def end_every_stream(app: ServeApp, timeout: float = _STOP_NOW_TIMEOUT) -> None:
    """Cancel the running turns "by shutdown" and end the event streams, so each gets its last event.

    A turn's stream then carries its TurnCancelled error (given ``timeout``
    seconds to be sent); an event stream gets ``end``. Nothing is left for
    the server to cancel, hence no CancelledError tracebacks when it stops.
    """
    running = [turn for turn in list(app.turns) if turn.task is not None]
    sessions = sorted({turn.session_id for turn in running})
    try:
        await asyncio.gather(
            *(app.hive.cancel_operation(sid, reason=SHUTDOWN_REASON) for sid in sessions),
            return_exceptions=True,
        )
        tasks = [turn.task for turn in running if turn.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
    finally:
        app.close_streams()


class _DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM/SIGINT drains the app before the server stops.

    A second signal cancels the running turns (their streams end with the
    TurnCancelled error) and ends the event streams, then stops; a third exits
    without waiting for any stream.
    """

    def __init__(
        self, config: uvicorn.Config, app: ServeApp, drain_timeout: float, say: Callable[[str], None]
    ):
        super().__init__(config)
        self._app = app
        self._drain_timeout = drain_timeout
        self._say = say
        self._drain_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT)
        for sig in handled:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self._drain_task is None:
            self._say(f"sessionhive serve: {signal.Signals(sig).name} received, draining")
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        elif self._stop_task is None:
            # A second signal: stop now, but still end every stream with its last event: the turns
            # are cancelled (their streams get the TurnCancelled error), the event streams get `end`.
            self._say("sessionhive serve: second signal, cancelling the running turns and stopping")
            self._stop_task = asyncio.get_running_loop().create_task(self._stop_now())
        else:
            self._say("sessionhive serve: third signal, exiting without waiting for streams")
            self.should_exit = True
            self.force_exit = True

    async def _stop_now(self) -> None:
        try:
            await end_every_stream(self._app)
        finally:
            self.should_exit = True

    async def _drain(self) -> None:
        try:
            await self._app.drain(self._drain_timeout, log_to=self._say)
        except Exception as exc:  # noqa: BLE001 - stopping must go on; Hive.stop() flushes again
            self._say(f"sessionhive serve: draining failed: {exc}")
        self.should_exit = True


def uvicorn_config(app: Any, *, graceful_s: int) -> uvicorn.Config:
    """How sessionhive runs an app under uvicorn: quiet, with lifespan, no server header."""
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_s,
        server_header=False,
    )


def run_service(options: ServeOptions) -> int:
    """Host a Hive behind the HTTP API until SIGTERM/SIGINT; returns the exit code."""
    say = options.say
    token = options.token
    tokens = None
    if options.tokens_file is not None:
        if token is not None:
            raise InvalidConfig(
                "--tokens replaces --token-file and SESSIONHIVE_TOKEN: give one or the other "
                "(a token file's [[token]] with every scope stands for the single token)"
            )
        tokens = TokenTable.load(options.tokens_file)
    elif token is None:
        if not is_loopback(options.host):
            raise InvalidConfig(
                f"refusing to listen on {options.host} without a bearer token: set SESSIONHIVE_TOKEN "
                "or pass --token-file (a server without auth listens on loopback only)"
            )
        token = secrets.token_urlsafe(24)
        say(f"sessionhive serve: no token configured; this run's token is {token}")
    if options.drain_timeout < 0:
        raise InvalidConfig(f"--drain-timeout must be >= 0 seconds, got {options.drain_timeout}")
    # Over HTTP the allow-list is always closed: an endpoint is the operator's decision.
    allowed = tuple(options.allow_base_urls)
    try:
        BaseUrlPolicy(allowed)  # a malformed --allow-base-url fails here, before the port is taken
    except InvalidConfig as exc:
        raise InvalidConfig(f"--allow-base-url: {exc}") from None
    try:
        BaseUrlPolicy(tuple(options.allow_webhook_urls))
    except InvalidConfig as exc:
        raise InvalidConfig(f"--allow-webhook-url: {exc}") from None
    sock = _bind(options.host, options.port)
    # Opened here so that owners and the audit log go to the same database as the sessions.
    store = open_store(options.store)
    hive = Hive.start(
        store=store,
        llm=options.llm,
        workspace=options.workspace,
        allow_base_urls=allowed,
        webhook_secret=options.webhook_secret,
    )
    try:
        audit = AuditLog.for_store(store)
        if tokens is not None and not audit.persistent:
            say(
                "sessionhive serve: the store is not SQL; session owners and the audit log last only this run"
            )
        app = ServeApp(
            hive,
            token=token,
            tokens=tokens,
            audit=audit,
            max_body=options.max_body,
            workspace_root=options.workspace,
            cors_origins=options.cors_origins,
            allow_webhook_urls=options.allow_webhook_urls,
        )
        # The process's memory and CPU on /metrics: a load test reports the service's, not its own.
        ProcessCollector(registry=app.serve_registry)
        server = _DrainingServer(uvicorn_config(app, graceful_s=10), app, options.drain_timeout, say)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        say(
            f"sessionhive serve: {hive.session_count()} stored session(s); "
            f"listening on http://{shown}:{port}/ (console at /, API under /v1, metrics at /metrics)"
        )
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        hive.stop()
    say("sessionhive serve: stopped; every session flushed")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: sessionhive serve")
