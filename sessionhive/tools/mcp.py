"""MCP tool servers: one shared connection per server, its tools offered as ``<server>__<tool>``.

:class:`McpHub` owns a :class:`McpConnection` per configured
:class:`~sessionhive.McpServer`. A connection is opened on first use by
whichever session needs it and then shared by every session (one server
process, or one HTTP session, for the whole Hive); it closes after
``idle_s`` without calls and reopens, after a backoff, when the server dies.
A call in flight when the server dies gets an "effects unknown" result:
a tool the server annotates ``readOnlyHint`` is retried once on a fresh
connection, any other is not (it may have acted). Image and resource
results are described in text for now (content parts come later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.content import (
    FILE_MEDIA_TYPES,
    IMAGE_MEDIA_TYPES,
    ContentPart,
    FilePart,
    ImagePart,
    TextPart,
    decode_b64,
)
from sessionhive.model.errors import InvalidConfig
from sessionhive.model.mcp import McpServer
from sessionhive.model.messages import ToolDefinition, ToolResult
from sessionhive.model.urls import BaseUrlPolicy
from sessionhive.tools._sandbox import (
    SANDBOX_HOME,
    SandboxStatus,
    bwrap_command,
    command_environment,
    probe_sandbox,
)

__all__ = ["EFFECTS_UNKNOWN", "McpConnection", "McpHub"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

SEPARATOR = "__"
EFFECTS_UNKNOWN = (
    "the MCP server {server!r} went away while tool {tool!r} was running: its effects are unknown "
    "(it may or may not have acted). Check before calling it again; the next call reconnects."
)
_BACKOFF_S = (0.0, 0.2, 1.0, 5.0)
# A server lives long, unlike one bash command: its limits are per process lifetime.
_SANDBOX_CPU_S = 24 * 3600
_SANDBOX_FILE_BYTES = 1 << 30
_SANDBOX_PROCESSES = 256


@dataclass(frozen=True)
class _McpTool:
    server: str
    name: str
    definition: ToolDefinition
    read_only: bool


class _Live:
    """One open connection: the task that holds the transport, and its client session."""

    def __init__(self, task: asyncio.Task[None], session: Any, stop: asyncio.Event) -> None:
        self.loop = task.get_loop()
        self.task = task
        self.session = session
        self.stop = stop
        self.in_flight = 0
        self.last_used = time.monotonic()


class McpConnection:
    """The one connection to one server, shared by every session; see the module docstring."""

    def __init__(
        self,
        server: McpServer,
        workspace: Path,
        sandbox: SandboxStatus | None,
        *,
        idle_s: float | None = None,
        metrics: HiveMetrics | None = None,
    ) -> None:
        self.server = server
        self._metrics = metrics
        self._workspace = workspace
        self._sandbox = sandbox
        self._idle_s = server.idle_s if idle_s is None else idle_s
        self._live: _Live | None = None
        self._opening: asyncio.Lock | None = None
        self._tools: dict[str, _McpTool] = {}
        self._stale = True
        self.opened = 0  # connections made over the lifetime (restarts are opened - 1)
        self._failures = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def tools(self) -> Mapping[str, _McpTool]:
        return self._tools

    def _stdio_parameters(self) -> Any:
        from mcp.client.stdio import StdioServerParameters

        server = self.server
        cwd = str(Path(server.cwd).resolve()) if server.cwd else str(self._workspace)
        if not server.sandboxed:
            argv = list(server.command)
            return StdioServerParameters(command=argv[0], args=argv[1:], env=dict(server.env), cwd=cwd)
        if self._sandbox is None or not self._sandbox.available:
            reason = self._sandbox.reason if self._sandbox else "no sandbox"
            raise InvalidConfig(f"MCP server {server.name!r} cannot be sandboxed here: {reason}")
        shell_line = " ".join(_quote(a) for a in server.command)
        cmd = bwrap_command(
            self._sandbox,
            self._workspace,
            ["/bin/sh", "-c", f"cd {_quote(cwd)} && exec {shell_line}"],
            allow_network=server.allow_network,
            cpu_seconds=_SANDBOX_CPU_S,
            max_file_bytes=_SANDBOX_FILE_BYTES,
            max_processes=_SANDBOX_PROCESSES,
        )
        # Host paths the server needs to read (an interpreter's libraries) go in read-only,
        # before the root is remounted read-only.
        extra: list[str] = []
        for path in server.readable:
            real = str(Path(path).resolve())
            extra += ["--ro-bind", real, real]
        at = cmd.index("--remount-ro")
        cmd[at:at] = extra
        env = command_environment(_host_environment(), home=SANDBOX_HOME, added=server.env)
        return StdioServerParameters(command=cmd[0], args=cmd[1:], env=env)

    async def _hold(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Open the transport and the client session, and keep them open until ``stop``."""
        from mcp.client.session import ClientSession

        async def on_message(message: Any) -> None:
            kind = type(getattr(message, "root", message)).__name__
            if kind == "ToolListChangedNotification":
                self._stale = True

        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.server.url is not None:
                    from mcp.client.streamable_http import streamable_http_client

                    read, write = await stack.enter_async_context(streamable_http_client(self.server.url))
                else:
                    from mcp.client.stdio import stdio_client

                    read, write = await stack.enter_async_context(stdio_client(self._stdio_parameters()))
                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=on_message)
                )
                await session.initialize()
                ready.set_result(session)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _session(self) -> Any:
        """The live client session, opening (or reopening, with backoff) the connection."""
        live = self._live
        if live is not None and not live.task.done():
            return live.session
        if self._opening is None:
            # Not session state: one connection opening at a time for every session that uses this
            # server (coroutines on the hub's own loop), so a dead server is reopened once, not per call.
            self._opening = asyncio.Lock()
        async with self._opening:
            live = self._live
            if live is not None and not live.task.done():
                return live.session
            if self._failures:
                if self._metrics is not None:
                    self._metrics.mcp_restarts.labels(self.server.name).inc()
                await asyncio.sleep(_BACKOFF_S[min(self._failures, len(_BACKOFF_S) - 1)])
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[Any] = loop.create_future()
            stop = asyncio.Event()
            task = loop.create_task(self._hold(ready, stop), name=f"mcp:{self.server.name}")
            try:
                session = await ready
            except Exception:
                self._failures += 1
                raise
            self.opened += 1
            self._live = _Live(task, session, stop)
            self._stale = True
            return session

    async def refresh(self) -> None:
        """List the server's tools if never listed, or if it said they changed."""
        session = await self._session()
        if not self._stale:
            return
        self._stale = False
        listed = await session.list_tools()
        tools: dict[str, _McpTool] = {}
        for tool in listed.tools:
            full = f"{self.server.name}{SEPARATOR}{tool.name}"
            schema = dict(tool.input_schema or {"type": "object", "properties": {}})
            annotations = getattr(tool, "annotations", None)
            read_only = bool(annotations is not None and getattr(annotations, "read_only_hint", False))
            tools[full] = _McpTool(
                self.server.name, tool.name, ToolDefinition(full, tool.description or "", schema), read_only
            )
        self._tools = tools

    async def call(self, tool: _McpTool, arguments: Mapping[str, Any]) -> ToolResult:
        """Call ``tool``; a dead server gives "effects unknown" (a read-only tool is retried once)."""
        labels = (self.server.name, tool.name)
        metrics = self._metrics
        if metrics is not None:
            metrics.mcp_calls.labels(*labels).inc()
        started = time.perf_counter()
        try:
            for attempt in (1, 2):
                session = await self._session()
                live = self._live
                assert live is not None
                live.in_flight += 1
                try:
                    result = await session.call_tool(tool.name, dict(arguments))
                    self._failures = 0
                    break
                except Exception as exc:
                    if not live.task.done() and not _is_disconnect(exc):
                        raise
                    logger.warning("MCP server %r died during %r: %s", self.server.name, tool.name, exc)
                    self._failures += 1
                    self._drop(live)
                    if tool.read_only and attempt == 1:
                        continue
                    if metrics is not None:
                        metrics.mcp_errors.labels(*labels).inc()
                    return ToolResult(EFFECTS_UNKNOWN.format(server=self.server.name, tool=tool.name), True)
                finally:
                    live.in_flight -= 1
                    live.last_used = time.monotonic()
                    self._watch_idle()
        finally:
            if metrics is not None:
                metrics.mcp_call_duration.labels(*labels).observe(time.perf_counter() - started)
        if result.is_error and metrics is not None:
            metrics.mcp_errors.labels(*labels).inc()
        return _result(result.content, bool(result.is_error))

    def _drop(self, live: _Live) -> None:
        if self._live is live:
            self._live = None
        live.stop.set()

    def _watch_idle(self) -> None:
        # One timer per connection, re-armed for the rest of the idle time when it fires early.
        if self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_later(self._idle_s, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        live = self._live
        if live is None:
            return
        idle_for = time.monotonic() - live.last_used
        if live.in_flight or idle_for < self._idle_s:
            self._idle_timer = asyncio.get_running_loop().call_later(
                self._idle_s - idle_for, self._idle_check
            )
            return
        logger.info("MCP server %r idle for %.0f s: closing its connection", self.server.name, idle_for)
        self._drop(live)

    def close_soon(self) -> None:
        """Ask the connection to close from any thread (the Hive stopping); its process ends with it."""
        live, self._live = self._live, None
        if live is not None and not live.loop.is_closed():
            live.loop.call_soon_threadsafe(live.stop.set)

    async def close(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop.set()
            with contextlib.suppress(Exception):
                await live.task


def _is_disconnect(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc).lower()
    return name in {"ClosedResourceError", "EndOfStream", "BrokenResourceError"} or "closed" in text


def _result(content: Sequence[Any], is_error: bool) -> ToolResult:
    """A tool result: its text blocks as text; its images (and PDF/image resources) as content parts.

    The text holds a line per image too, so a caller that reads text alone
    (or a model that takes no images) still learns the tool answered with one.
    """
    lines: list[str] = []
    parts: list[ContentPart] = []
    for block in content:
        text = getattr(block, "text", None)
        kind = getattr(block, "type", "unknown")
        media_type = getattr(block, "mime_type", None) or getattr(block, "mimeType", None)
        if kind == "resource":  # an embedded resource: its blob (base64) when it has one
            resource = getattr(block, "resource", None)
            text = getattr(resource, "text", None)
            media_type = getattr(resource, "mime_type", None) or getattr(resource, "mimeType", None)
            raw = getattr(resource, "blob", None)
        else:
            raw = getattr(block, "data", None)
        if isinstance(text, str):
            lines.append(text)
            parts.append(TextPart(text))
            continue
        part = _binary_part(raw, media_type)
        if part is None:
            lines.append(f"[{kind} result ({media_type or '?'}), not shown: no content part holds it]")
            continue
        lines.append(f"[{kind} result ({media_type})]")
        parts.append(part)
    has_binary = any(not isinstance(part, TextPart) for part in parts)
    return ToolResult("\n".join(lines), is_error, tuple(parts) if has_binary else ())


def _binary_part(raw: object, media_type: str | None) -> ContentPart | None:
    """The content part of a block's base64 ``raw`` bytes, or None when no part type holds them."""
    if not isinstance(raw, str) or media_type is None:
        return None
    try:
        data = decode_b64(raw, "MCP result data")
    except ValueError:
        return None
    if media_type in IMAGE_MEDIA_TYPES:
        return ImagePart(data, media_type)
    if media_type in FILE_MEDIA_TYPES:
        return FilePart(data, media_type)
    return None


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _host_environment() -> Mapping[str, str]:
    import os

    return os.environ


async def _stop_after_close(hub: McpHub, loop: asyncio.AbstractEventLoop) -> None:
    await hub.close()
    loop.stop()


class McpHub:
    """Every MCP server of a Hive, and the tools they offer; shared by all sessions."""

    def __init__(
        self,
        servers: Sequence[McpServer],
        workspace: Path,
        sandbox: SandboxStatus | None = None,
        *,
        allow_urls: Sequence[str] | None = None,
        idle_s: float | None = None,
        metrics: HiveMetrics | None = None,
    ) -> None:
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise InvalidConfig(f"MCP server names must be unique: {names}")
        policy = BaseUrlPolicy(tuple(allow_urls) if allow_urls is not None else ())
        for server in servers:
            if server.url is not None and not policy.allows_explicitly(server.url):
                raise InvalidConfig(
                    f"MCP server {server.name!r} at {server.url!r} is not in the operator's allow_base_urls"
                )
        sandbox = sandbox or probe_sandbox()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections = {
            s.name: McpConnection(s, workspace, sandbox, idle_s=idle_s, metrics=metrics) for s in servers
        }

    def definitions(self) -> list[ToolDefinition]:
        return [t.definition for c in self.connections.values() for t in c.tools.values()]

    async def prepare(self) -> list[str]:
        """Open (on first use) every server and refresh its tools; returns the servers that failed."""
        return await self._on_own_loop(self._prepare_here())

    async def execute(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Call MCP tool ``name`` (``<server>__<tool>``) from any session's loop."""
        return await self._on_own_loop(self._execute_here(name, arguments))

    async def _on_own_loop(self, work: Coroutine[Any, Any, _T]) -> _T:
        # Every connection lives on the hub's own loop, whatever loop (actor backend) the
        # calling session runs on: one connection serves sessions of every thread.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="sessionhive-mcp", daemon=True).start()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))

    async def _prepare_here(self) -> list[str]:
        """Open (on first use) every server and refresh its tools; returns the servers that failed."""
        failed: list[str] = []
        for name, connection in self.connections.items():
            try:
                await connection.refresh()
            except Exception as exc:  # noqa: BLE001 - any failure to start a server is logged, not fatal
                logger.warning("MCP server %r unavailable: %s", name, exc)
                failed.append(name)
        return failed

    def owns(self, name: str) -> bool:
        server, sep, _ = name.partition(SEPARATOR)
        return bool(sep) and server in self.connections

    async def _execute_here(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        server, _, _ = name.partition(SEPARATOR)
        connection = self.connections[server]
        try:
            await connection.refresh()
        except Exception as exc:  # noqa: BLE001 - the model is told the server is down, whatever broke
            return ToolResult(f"MCP server {server!r} is unavailable: {exc}; try again later", True)
        tool = connection.tools.get(name)
        if tool is None:
            return ToolResult(
                f"unknown tool {name!r}; server {server!r} offers: {', '.join(connection.tools)}", True
            )
        return await connection.call(tool, arguments)

    async def close(self) -> None:
        for connection in self.connections.values():
            await connection.close()

    def close_soon(self) -> None:
        """Close every connection (their processes end) and then the hub's loop; from any thread."""
        for connection in self.connections.values():
            connection.close_soon()
        loop, self._loop = self._loop, None
        if loop is not None:
            # After the connections' own stop callbacks: they run first, in order.
            loop.call_soon_threadsafe(lambda: loop.create_task(_stop_after_close(self, loop)))
