"""The :class:`ToolExecutor`: the registry of tools and the one way every tool call runs."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import ToolDefinition, ToolResult
from sessionhive.model.validate import check_int, check_positive_int, check_positive_number
from sessionhive.tools._common import ToolContext, ToolError, truncate
from sessionhive.tools._pool import LaneClosed, ToolLane, run_on_thread
from sessionhive.tools._sandbox import SandboxStatus, probe_sandbox
from sessionhive.tools._schema import CONTEXT_PARAMETER, ArgumentSpec
from sessionhive.tools._workspace import resolve_root
from sessionhive.tools.builtins import BUILTIN_TOOLS, BuiltinTools, SessionEnv
from sessionhive.tools.mcp import McpHub

__all__ = ["ToolContext", "ToolExecutor"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MIN_OUTPUT_CAP = 1000
_CLOSED = "the tool executor is closed (its Hive is stopping); the tool did not run"
DEFAULT_MAX_WORKERS = 16
DEFAULT_BUILTIN_WORKERS = 8
DEFAULT_BASH_MAX_PROCESSES = 256
# A session may hold a quarter of a lane: four sessions with every call stuck still leave
# nothing for a fifth, but one stuck session leaves three quarters to everyone else.
_SESSION_SHARE = 4


def _default_share(workers: int) -> int:
    """The slots of a lane of ``workers`` that one session may hold by default."""
    return max(1, workers // _SESSION_SHARE)


@dataclass(frozen=True)
class ToolPlace:
    """Where and for whom one call runs, before the workspace is resolved into a ToolContext."""

    workspace: str | os.PathLike[str] | None
    session_id: str
    allow_network: bool


@dataclass(frozen=True)
class _Tool:
    definition: ToolDefinition
    func: Callable[..., Any]
    arguments: ArgumentSpec
    is_async: bool
    builtin: bool = False


class ToolExecutor:
    """Runs the tools an LLM calls: the built-ins and any the embedding service registers.

    One executor serves every session of a Hive. Each call runs in the
    calling session's workspace (``execute(..., workspace=...)``), or the
    executor's own ``workspace`` when the session has none; a relative session
    workspace is taken relative to the executor's.

    :meth:`execute` never raises for what a tool call gets wrong: an unknown
    tool, malformed or ill-typed arguments, a path outside the workspace, a
    tool raising. Each comes back as ``ToolResult(message, is_error=True)``
    that tells the LLM what was wrong and how to retry. Only
    :class:`asyncio.CancelledError` propagates, so a cancelled turn stops
    promptly (a running ``bash`` command is killed).

    Nothing blocking runs on the event loop: file tools and synchronous user
    tools run on threads, and ``bash`` uses an asyncio subprocess. Threads
    come in two lanes, so a stuck tool holds only its own session: user tools
    get ``max_workers`` slots, at most ``max_workers_per_session`` of them per
    session, and the built-in file tools ``builtin_workers`` slots of their
    own (a quarter of them per session). A call that is cancelled (its turn
    was) or runs past ``tool_timeout_s`` gives its slot back at once; its
    thread is abandoned (a daemon: it never keeps the process alive at exit),
    counted in ``sessionhive_tool_threads_abandoned`` and named in a warning
    log with its session and tool. Outputs longer than ``output_cap``
    characters keep their head and tail around a marker that says how many
    characters were cut.

    The built-ins are :data:`BUILTIN_TOOLS`: ``read_file``, ``write_file``,
    ``edit_file``, ``list_dir`` and ``grep`` resolve every path (symlinks
    included) and refuse anything outside the workspace without touching it.
    ``bash`` runs ``bash -c`` with the workspace as its working directory,
    killed with its whole process tree after ``bash_timeout_s`` (or the
    call's ``timeout_s``). On Linux it runs inside a bubblewrap sandbox that
    holds only what it was given: the system directories and a list of
    ``/etc`` files that hold no secrets, read-only; the workspace, writable
    (:meth:`hide_from_bash` paths masked); a private ``/tmp`` and home. No
    Unix socket of the host is reachable, and no network unless the session
    allows it (``SessionConfig.allow_network``). The command runs as
    ``nobody`` with at most ``bash_cpu_s`` CPU seconds, ``bash_max_file_bytes``
    per file written and ``bash_max_processes`` processes (a ``pids`` cgroup
    per call where one can be made, which holds for root too; else
    ``RLIMIT_NPROC``). Its environment is ``PATH``, ``LANG``, ``LC_*``,
    ``TERM``, ``TZ`` and ``HOME`` (its own), plus ``bash_env`` and what
    ``session_bash_env(session_id)`` returns; nothing else of this process's
    environment passes. Whether the sandbox works is checked once, when the
    first executor is created; where it does not (no bubblewrap, not Linux, a
    container without user namespaces), ``bash`` refuses every command with a
    message saying why, unless the executor was created with
    ``unsandboxed_bash=True`` (commands then reach anything the process can).
    The default :class:`~sessionhive.ConfirmationPolicy` asks a human before
    every ``bash`` call either way.

    User tools are plain or ``async`` functions taking the tool's arguments as
    keywords, plus ``context: ToolContext`` if they declare it::

        executor = ToolExecutor("/srv/workspaces")

        @executor.tool
        async def order_status(order_id: str, context: ToolContext) -> str:
            \"\"\"Look up the status of an order.\"\"\"
            return await orders.status(order_id, asked_by=context.session_id)

        result = await executor.execute("order_status", {"order_id": "A-17"}, session_id="s1")

    The return value becomes the output (``str()`` of it); returning a
    :class:`~sessionhive.ToolResult` sets ``is_error`` too. Register tools
    before sessions start: the registry is read, not locked, by running turns.

    :param workspace: the default workspace; must be an existing directory.
    :param bash_timeout_s: seconds before a ``bash`` command without ``timeout_s`` is killed.
    :param output_cap: the most characters of a tool output the LLM sees (at least 1000).
    :param max_workers: synchronous user tool calls running at once, all sessions together.
    :param bash_env: variables added, by name, to the environment of ``bash`` commands.
    :param unsandboxed_bash: run ``bash`` without a sandbox (the explicit opt-out; default False).
    :param bash_cpu_s: CPU seconds a sandboxed command (with its children) may use.
    :param bash_max_file_bytes: the largest file a sandboxed command may write.
    :param bash_max_processes: processes a sandboxed command (with its children, and the two of
        bubblewrap itself) may run at once.
    :param session_bash_env: called with a session id, returns variables added for that
        session's ``bash`` commands (after ``bash_env``).
    :param max_workers_per_session: of ``max_workers``, how many one session may hold
        (default: a quarter, at least 1).
    :param builtin_workers: threads for the built-in file tools, apart from user tools.
    :param tool_timeout_s: seconds a synchronous user tool may run before its call fails
        and its thread is abandoned (default: no limit).
    :raises InvalidConfig: on an out-of-range value or a missing workspace.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] = ".",
        *,
        bash_timeout_s: float = 30.0,
        output_cap: int = 64_000,
        max_workers: int = DEFAULT_MAX_WORKERS,
        bash_env: Mapping[str, str] | None = None,
        unsandboxed_bash: bool = False,
        bash_cpu_s: int = 300,
        bash_max_file_bytes: int = 1 << 30,
        bash_max_processes: int = DEFAULT_BASH_MAX_PROCESSES,
        session_bash_env: SessionEnv | None = None,
        max_workers_per_session: int | None = None,
        builtin_workers: int = DEFAULT_BUILTIN_WORKERS,
        tool_timeout_s: float | None = None,
    ) -> None:
        check_positive_number("bash_timeout_s", bash_timeout_s, unit="seconds")
        check_int("output_cap", output_cap, minimum=_MIN_OUTPUT_CAP)
        check_positive_int("max_workers", max_workers)
        check_positive_int("bash_cpu_s", bash_cpu_s)
        check_positive_int("bash_max_file_bytes", bash_max_file_bytes)
        check_positive_int("bash_max_processes", bash_max_processes)
        check_positive_int("builtin_workers", builtin_workers)
        if max_workers_per_session is not None:
            check_positive_int("max_workers_per_session", max_workers_per_session)
        if tool_timeout_s is not None:
            check_positive_number("tool_timeout_s", tool_timeout_s, unit="seconds")
        if not isinstance(unsandboxed_bash, bool):
            raise InvalidConfig(f"unsandboxed_bash must be a bool, got {unsandboxed_bash!r}")
        if session_bash_env is not None and not callable(session_bash_env):
            raise InvalidConfig(
                f"session_bash_env must be a callable(session_id) -> dict, got {session_bash_env!r}"
            )
        for name, value in (bash_env or {}).items():
            if not isinstance(name, str) or not isinstance(value, str) or not name or "=" in name:
                raise InvalidConfig(f"bash_env entries must be NAME: value strings, got {name!r}: {value!r}")
        self._workspace = Path(os.path.abspath(workspace))
        if not self._workspace.is_dir():
            raise InvalidConfig(f"workspace {self._workspace} is not an existing directory; create it first")
        self._output_cap = output_cap
        self._tools: dict[str, _Tool] = {}
        self._definitions: tuple[ToolDefinition, ...] | None = None
        self._closed = False
        self._mcp: McpHub | None = None
        sandbox = None if unsandboxed_bash else probe_sandbox()
        if sandbox is not None and not sandbox.available:
            logger.warning(
                "bash will refuse to run: %s (see ToolExecutor(unsandboxed_bash=True))", sandbox.reason
            )
        elif sandbox is not None and sandbox.cgroups is None and os.geteuid() == 0:
            logger.warning("bash runs as root without a process limit: %s", sandbox.process_limit)
        builtins = BuiltinTools(
            output_cap=output_cap,
            bash_timeout_s=bash_timeout_s,
            bash_env=bash_env,
            sandbox=sandbox,
            bash_cpu_s=bash_cpu_s,
            bash_max_file_bytes=bash_max_file_bytes,
            bash_max_processes=bash_max_processes,
            session_bash_env=session_bash_env,
        )
        self._builtins = builtins
        for builtin in builtins.tools():
            self._add(builtin.name, builtin.func, builtin.schema, builtin.description, builtin=True)
        per_session = (
            _default_share(max_workers) if max_workers_per_session is None else max_workers_per_session
        )
        self._user_lane = ToolLane("user tools", max_workers, per_session)
        self._builtin_lane = ToolLane("built-in tools", builtin_workers, _default_share(builtin_workers))
        self._tool_timeout_s = tool_timeout_s

    @property
    def workspace(self) -> Path:
        """The default workspace (absolute), used by calls that name none."""
        return self._workspace

    @property
    def output_cap(self) -> int:
        """The most characters of a tool's output the LLM sees."""
        return self._output_cap

    def register(
        self,
        name: str,
        func: Callable[..., Any],
        schema: Mapping[str, Any] | None = None,
        description: str = "",
        *,
        replace: bool = False,
    ) -> None:
        """Add a tool named ``name`` that calls ``func`` with the LLM's arguments as keywords.

        ``schema`` is the JSON schema of the arguments (an ``object`` schema);
        without one it is derived from the signature: a property per
        parameter (typed from simple annotations), ``required`` for those
        without a default, no other keys. ``description`` defaults to the
        function's docstring.

        :raises InvalidConfig: ``name`` is not 1-64 of ``[A-Za-z0-9_-]``, is
            taken (built-in or registered; ``replace=True`` overrides), or the
            schema does not fit the function.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidConfig(f"tool name {name!r} is invalid; use 1-64 letters, digits, '_' or '-'")
        if not callable(func):
            raise InvalidConfig(f"tool {name!r}: {func!r} is not callable")
        if name in self._tools and not replace:
            kind = "a built-in tool" if name in BUILTIN_TOOLS else "already registered"
            raise InvalidConfig(f"tool {name!r} is {kind}; pass replace=True to replace it")
        self._add(name, func, schema, description or inspect.getdoc(func) or "")

    @overload
    def tool(self, func: _F, /) -> _F: ...

    @overload
    def tool(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        schema: Mapping[str, Any] | None = None,
        description: str | None = None,
        replace: bool = False,
    ) -> Callable[[_F], _F]: ...

    def tool(
        self,
        func: _F | None = None,
        /,
        *,
        name: str | None = None,
        schema: Mapping[str, Any] | None = None,
        description: str | None = None,
        replace: bool = False,
    ) -> _F | Callable[[_F], _F]:
        """Decorator form of :meth:`register`: ``@executor.tool`` or ``@executor.tool(name=...)``.

        The name defaults to the function's ``__name__``; the function is
        returned unchanged.
        """

        def decorate(f: _F) -> _F:
            self.register(name or f.__name__, f, schema, description or "", replace=replace)
            return f

        return decorate if func is None else decorate(func)

    @property
    def bash_sandbox(self) -> SandboxStatus | None:
        """How ``bash`` is confined: ``None`` under the opt-out, else the probed sandbox."""
        return self._builtins.sandbox

    def hide_from_bash(self, *paths: str | os.PathLike[str]) -> None:
        """Mask ``paths`` (directories or files, e.g. the store's) inside the ``bash`` sandbox.

        Only paths the sandbox would show need this (the sandbox holds the
        system directories, some of ``/etc`` and the workspace, nothing else of
        the host): a store file inside a workspace is the usual case. A path
        that contains a workspace hides everything in it but that workspace.
        """
        for path in paths:
            resolved = os.path.realpath(path)
            if resolved not in self._builtins.hidden_paths:
                self._builtins.hidden_paths.append(resolved)

    def definitions(self) -> list[ToolDefinition]:
        """Every tool as the LLM sees it: built-ins first, then user tools in registration order.

        The ``parameters`` dicts are shared; treat them as read-only.
        """
        if self._definitions is None:
            self._definitions = tuple(t.definition for t in self._tools.values())
        if self._mcp is not None:
            return [*self._definitions, *self._mcp.definitions()]
        return list(self._definitions)

    @property
    def mcp(self) -> McpHub | None:
        """The MCP servers whose tools this executor offers (see :mod:`sessionhive.tools.mcp`)."""
        return self._mcp

    def attach_mcp(self, hub: McpHub) -> None:
        """Offer ``hub``'s tools as ``<server>__<tool>``, after the built-in and user tools."""
        self._mcp = hub

    async def prepare(self) -> None:
        """Before a turn lists the tools: open the MCP servers on first use, refresh changed lists."""
        if self._mcp is not None:
            await self._mcp.prepare()

    async def execute(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        workspace: str | os.PathLike[str] | None = None,
        session_id: str = "",
        allow_network: bool = False,
    ) -> ToolResult:
        """Run tool ``name`` with ``arguments`` (a dict, or the JSON text of one).

        Returns the tool's output, or an error result the LLM can act on; see
        the class docstring. ``workspace`` is the calling session's
        workspace (default: the executor's); ``session_id`` and
        ``allow_network`` (may sandboxed ``bash`` use the network) are passed
        on in the :class:`ToolContext`.

        :raises asyncio.CancelledError: the calling task was cancelled.
        """
        tool = self._tools.get(name)
        if tool is None and self._mcp is not None and self._mcp.owns(name) and not self._closed:
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments or "{}")
                except ValueError as exc:
                    return self._error(f"the arguments of {name!r} are not JSON: {exc}")
            if not isinstance(arguments, Mapping):
                return self._error(f"the arguments of {name!r} must be a JSON object")
            result = await self._mcp.execute(name, arguments)
            return dataclasses.replace(result, output=truncate(result.output, self._output_cap))
        if tool is None:
            return self._error(f"unknown tool {name!r}; the available tools are: {', '.join(self._tools)}")
        if self._closed:
            return self._error(_CLOSED)
        try:
            kwargs = tool.arguments.parse(dict(arguments) if isinstance(arguments, Mapping) else arguments)
            result = await self._call(tool, kwargs, ToolPlace(workspace, session_id, allow_network))
            if isinstance(result, ToolResult):
                return dataclasses.replace(result, output=truncate(result.output, self._output_cap))
            return ToolResult(truncate(result if isinstance(result, str) else str(result), self._output_cap))
        except ToolError as exc:
            return self._error(str(exc))
        except Exception as exc:
            # OSError is the environment speaking (permissions, a full disk), not a bug to trace.
            logger.log(
                logging.DEBUG if isinstance(exc, OSError) else logging.WARNING,
                "tool %r raised %s",
                name,
                type(exc).__name__,
                exc_info=True,
            )
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return self._error(f"tool {name!r} failed: {detail}")

    def close(self, *, wait: bool = False) -> None:
        """Stop taking calls; later and still waiting ones return an error result. Idempotent.

        Calls waiting for a thread get the error; running ones go on. With
        ``wait=True`` this returns once running tool functions have finished
        (abandoned ones excepted; a hung one still running would block it).
        """
        self._closed = True
        for lane in (self._user_lane, self._builtin_lane):
            lane.close()
        if wait:
            for lane in (self._user_lane, self._builtin_lane):
                lane.wait_idle()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _add(
        self,
        name: str,
        func: Callable[..., Any],
        schema: Mapping[str, Any] | None,
        description: str,
        *,
        builtin: bool = False,
    ) -> None:
        arguments = ArgumentSpec.build(name, func, schema)
        # The second test catches objects whose class defines ``async def __call__``.
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
        definition = ToolDefinition(name, description, dict(arguments.schema))
        self._tools[name] = _Tool(definition, func, arguments, is_async, builtin)
        self._definitions = None

    async def _call(self, tool: _Tool, kwargs: dict[str, Any], place: ToolPlace) -> Any:
        name = tool.definition.name
        if tool.is_async:
            if tool.arguments.wants_context:
                # Resolving the workspace touches the filesystem: a built-in lane's job.
                context = functools.partial(self._context, place)
                kwargs[CONTEXT_PARAMETER] = await self._offload(self._builtin_lane, place, name, context)
            return await tool.func(**kwargs)
        lane = self._builtin_lane if tool.builtin else self._user_lane
        # A built-in's own work is bounded (file sizes are capped); a user tool may hang.
        timeout_s = None if tool.builtin else self._tool_timeout_s
        call = functools.partial(self._call_sync, tool, kwargs, place)
        try:
            result = await self._offload(lane, place, name, call, timeout_s=timeout_s)
        except TimeoutError:
            raise ToolError(
                f"tool {name!r} did not return within {timeout_s:g} s and was abandoned; "
                "try again with a smaller request, or do without it"
            ) from None
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            result = await result
        return result

    def _call_sync(self, tool: _Tool, kwargs: dict[str, Any], place: ToolPlace) -> Any:
        # Runs on the pool, so resolving the workspace (filesystem calls) happens there too.
        if tool.arguments.wants_context:
            kwargs[CONTEXT_PARAMETER] = self._context(place)
        return tool.func(**kwargs)

    def _context(self, place: ToolPlace) -> ToolContext:
        root = self._workspace if place.workspace is None else self._workspace / place.workspace
        return ToolContext(resolve_root(root), place.session_id, place.allow_network)

    async def _offload(
        self,
        lane: ToolLane,
        place: ToolPlace,
        name: str,
        func: Callable[[], _T],
        *,
        timeout_s: float | None = None,
    ) -> _T:
        # Copy the context so context variables (tracing, request ids) reach the tool's thread.
        call = functools.partial(contextvars.copy_context().run, func)
        try:
            return await run_on_thread(lane, place.session_id, name, call, timeout_s=timeout_s)
        except LaneClosed:  # close() came while the call waited for a thread
            raise ToolError(_CLOSED) from None

    def _error(self, message: str) -> ToolResult:
        return ToolResult(truncate(message, self._output_cap), is_error=True)
