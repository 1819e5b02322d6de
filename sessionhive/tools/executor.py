"""The :class:`ToolExecutor`: the registry of tools and the one way every tool call runs."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, overload

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import ToolDefinition, ToolResult
from sessionhive.model.validate import check_int, check_positive_int, check_positive_number
from sessionhive.tools._common import ToolContext, ToolError, truncate
from sessionhive.tools._sandbox import SandboxStatus, probe_sandbox
from sessionhive.tools._schema import CONTEXT_PARAMETER, ArgumentSpec
from sessionhive.tools._workspace import resolve_root
from sessionhive.tools.builtins import BUILTIN_TOOLS, BuiltinTools

__all__ = ["ToolContext", "ToolExecutor"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MIN_OUTPUT_CAP = 1000
_CLOSED = "the tool executor is closed (its Hive is stopping); the tool did not run"


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
    tools run on a thread pool of ``max_workers`` threads owned by the
    executor (:meth:`close` shuts it down), and ``bash`` uses an asyncio
    subprocess. Outputs longer than ``output_cap`` characters keep their head
    and tail around a marker that says how many characters were cut.

    The built-ins are :data:`BUILTIN_TOOLS`: ``read_file``, ``write_file``,
    ``edit_file``, ``list_dir`` and ``grep`` resolve every path (symlinks
    included) and refuse anything outside the workspace without touching it.
    ``bash`` runs ``bash -c`` with the workspace as its working directory,
    killed with its whole process group after ``bash_timeout_s`` (or the
    call's ``timeout_s``). On Linux it runs inside a bubblewrap sandbox: the
    workspace writable, the rest of the filesystem read-only, home
    directories and :meth:`hide_from_bash` paths hidden, no network unless
    the session allows it (``SessionConfig.allow_network``), at most
    ``bash_cpu_s`` CPU seconds and ``bash_max_file_bytes`` per file written.
    Whether the sandbox works is checked once, when the first executor is
    created; where it does not (no bubblewrap, not Linux, a container without
    user namespaces), ``bash`` refuses every command with a message saying
    why, unless the executor was created with ``unsandboxed_bash=True``
    (commands then reach anything the process can). The default
    :class:`~sessionhive.ConfirmationPolicy` asks a human before every
    ``bash`` call either way. Commands see this process's environment minus
    variables named like credentials (``*KEY*``, ``*TOKEN*``, ``*SECRET*``,
    ``*PASSWORD*``, ...), or exactly ``bash_env`` when given.

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
    :param max_workers: threads running blocking tool work.
    :param bash_env: the exact environment of ``bash`` commands (default: see above).
    :param unsandboxed_bash: run ``bash`` without a sandbox (the explicit opt-out; default False).
    :param bash_cpu_s: CPU seconds a sandboxed command (with its children) may use.
    :param bash_max_file_bytes: the largest file a sandboxed command may write.
    :raises InvalidConfig: on an out-of-range value or a missing workspace.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] = ".",
        *,
        bash_timeout_s: float = 30.0,
        output_cap: int = 64_000,
        max_workers: int = 16,
        bash_env: Mapping[str, str] | None = None,
        unsandboxed_bash: bool = False,
        bash_cpu_s: int = 300,
        bash_max_file_bytes: int = 1 << 30,
    ) -> None:
        check_positive_number("bash_timeout_s", bash_timeout_s, unit="seconds")
        check_int("output_cap", output_cap, minimum=_MIN_OUTPUT_CAP)
        check_positive_int("max_workers", max_workers)
        check_positive_int("bash_cpu_s", bash_cpu_s)
        check_positive_int("bash_max_file_bytes", bash_max_file_bytes)
        if not isinstance(unsandboxed_bash, bool):
            raise InvalidConfig(f"unsandboxed_bash must be a bool, got {unsandboxed_bash!r}")
        self._workspace = Path(os.path.abspath(workspace))
        if not self._workspace.is_dir():
            raise InvalidConfig(f"workspace {self._workspace} is not an existing directory; create it first")
        self._output_cap = output_cap
        self._tools: dict[str, _Tool] = {}
        self._definitions: tuple[ToolDefinition, ...] | None = None
        self._closed = False
        sandbox = None if unsandboxed_bash else probe_sandbox()
        if sandbox is not None and not sandbox.available:
            logger.warning(
                "bash will refuse to run: %s (see ToolExecutor(unsandboxed_bash=True))", sandbox.reason
            )
        builtins = BuiltinTools(
            output_cap=output_cap,
            bash_timeout_s=bash_timeout_s,
            bash_env=bash_env,
            sandbox=sandbox,
            bash_cpu_s=bash_cpu_s,
            bash_max_file_bytes=bash_max_file_bytes,
        )
        self._builtins = builtins
        for builtin in builtins.tools():
            self._add(builtin.name, builtin.func, builtin.schema, builtin.description)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sessionhive-tool")

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

        Home directories are always hidden. A path that contains a workspace
        hides everything in it but that workspace.
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
        return list(self._definitions)

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
        if tool is None:
            return self._error(f"unknown tool {name!r}; the available tools are: {', '.join(self._tools)}")
        if self._closed:
            return self._error(_CLOSED)
        try:
            kwargs = tool.arguments.parse(dict(arguments) if isinstance(arguments, Mapping) else arguments)
            result = await self._call(tool, kwargs, ToolPlace(workspace, session_id, allow_network))
            if isinstance(result, ToolResult):
                return ToolResult(truncate(result.output, self._output_cap), result.is_error)
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
        """Shut the thread pool down; later calls return an error result. Idempotent.

        Work not yet started is cancelled; with ``wait=True`` this returns once
        running tool functions have finished (a hung one would block it).
        """
        self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)

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
        self, name: str, func: Callable[..., Any], schema: Mapping[str, Any] | None, description: str
    ) -> None:
        arguments = ArgumentSpec.build(name, func, schema)
        # The second test catches objects whose class defines ``async def __call__``.
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
        definition = ToolDefinition(name, description, dict(arguments.schema))
        self._tools[name] = _Tool(definition, func, arguments, is_async)
        self._definitions = None

    async def _call(self, tool: _Tool, kwargs: dict[str, Any], place: ToolPlace) -> Any:
        if tool.is_async:
            if tool.arguments.wants_context:
                kwargs[CONTEXT_PARAMETER] = await self._offload(self._context, place)
            return await tool.func(**kwargs)
        result = await self._offload(self._call_sync, tool, kwargs, place)
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

    async def _offload(self, func: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        # Copy the context so context variables (tracing, request ids) reach the tool's thread.
        call = functools.partial(contextvars.copy_context().run, func, *args)
        try:
            future = loop.run_in_executor(self._pool, call)
        except RuntimeError:  # the pool was shut down after execute() checked
            raise ToolError(_CLOSED) from None
        try:
            return await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # close() cancels queued work, which surfaces here as a cancellation this task never got.
            if self._closed and task is not None and task.cancelling() == 0:
                raise ToolError(_CLOSED) from None
            raise

    def _error(self, message: str) -> ToolResult:
        return ToolResult(truncate(message, self._output_cap), is_error=True)
