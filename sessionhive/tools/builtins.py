"""The built-in tools: read, write, edit, list and search files, and run shell commands.

Each file tool is confined to the calling session's workspace (see
:mod:`sessionhive.tools._workspace`): paths are resolved, symlinks included,
and anything resolving outside the workspace is refused before it is touched.
File tools are plain blocking functions; the :class:`~sessionhive.tools.ToolExecutor`
runs them on its thread pool. ``bash`` is a coroutine around an asyncio
subprocess, so a running command holds no thread; on Linux it runs inside a
bubblewrap sandbox (see :mod:`sessionhive.tools._sandbox`), and where none is
available it refuses to run unless the executor was created with
``unsandboxed_bash=True``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionhive.model.messages import ToolResult
from sessionhive.tools._cgroup import CallCgroup
from sessionhive.tools._common import CappedText, ToolContext, ToolError
from sessionhive.tools._sandbox import SANDBOX_HOME, SandboxStatus, bwrap_command, command_environment
from sessionhive.tools._workspace import atomic_write_text, relative, resolve_inside

__all__ = ["BUILTIN_TOOLS", "BuiltinTool", "BuiltinTools", "SessionEnv"]

BUILTIN_TOOLS: tuple[str, ...] = ("read_file", "write_file", "edit_file", "list_dir", "grep", "bash")
"""Names of the built-in tools, in the order :meth:`ToolExecutor.definitions` lists them."""

_MAX_FILE_BYTES = 10 * 1024 * 1024  # read_file, edit_file and grep refuse or skip larger files
_SNIFF_BYTES = 8192  # a NUL byte in this prefix marks a file as binary
_GREP_MAX_MATCHES = 500
_GREP_LINE_CHARS = 300
_GREP_PRUNED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules"})
_MAX_BASH_TIMEOUT_S = 600.0
# After a command exits, how long its output pipe may stay open before we stop reading it.
_DRAIN_S = 1.0

SessionEnv = Callable[[str], Mapping[str, str]]
"""A per-session addition to ``bash``'s environment: called with the session id, returns variables."""


def _object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_PATH = {"type": "string", "description": "File path, relative to the workspace (or absolute inside it)."}


@dataclass(frozen=True)
class BuiltinTool:
    """A built-in tool as the executor registers it."""

    name: str
    func: Callable[..., Any]
    description: str
    schema: dict[str, Any]


def _read_text(path: Path, shown: str, *, action: str) -> str:
    """The UTF-8 text of a regular file; a :class:`ToolError` for missing, binary or huge files."""
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        raise ToolError(f"{shown} does not exist; use list_dir to see which files exist") from None
    if path.is_dir():
        raise ToolError(f"{shown} is a directory; use list_dir to see its contents")
    if size > _MAX_FILE_BYTES:
        raise ToolError(
            f"{shown} is {size} bytes, more than {action} handles ({_MAX_FILE_BYTES} bytes); "
            "inspect parts of it with bash (head, tail, sed -n) instead"
        )
    data = path.read_bytes()
    if b"\0" in data[:_SNIFF_BYTES]:
        raise ToolError(f"{shown} is a binary file ({size} bytes); {action} handles text files only")
    return data.decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    # The command runs in its own session, so its pid is the id of a group holding
    # everything it started (unless something detached itself with setsid).
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Collects a command's merged stdout/stderr and reports exit and end-of-output."""

    def __init__(self, output: CappedText, loop: asyncio.AbstractEventLoop) -> None:
        self.output = output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    # asyncio passes the callbacks' arguments positionally: the underscores only mark them unused.
    def pipe_data_received(self, _fd: int, data: bytes | str) -> None:
        self.output.feed(data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, _fd: int, _exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class BuiltinTools:
    """The built-in tool functions, bound to an executor's limits.

    ``output_cap`` bounds what ``read_file`` and ``bash`` collect (the executor
    caps every result again); ``bash_timeout_s`` is the default command
    timeout; commands see the allow-listed variables of this process's
    environment (see :func:`~sessionhive.tools._sandbox.command_environment`)
    plus ``bash_env`` plus what ``session_bash_env(session_id)`` returns.
    ``sandbox`` confines ``bash`` (``None``: the explicit opt-out, commands
    run unconfined); ``hidden_paths`` are masked inside the sandbox;
    ``bash_cpu_s``, ``bash_max_file_bytes`` and ``bash_max_processes`` limit
    each sandboxed command.
    """

    def __init__(
        self,
        *,
        output_cap: int,
        bash_timeout_s: float,
        bash_env: Mapping[str, str] | None,
        sandbox: SandboxStatus | None = None,
        bash_cpu_s: int = 300,
        bash_max_file_bytes: int = 1 << 30,
        bash_max_processes: int = 256,
        session_bash_env: SessionEnv | None = None,
    ) -> None:
        self.output_cap = output_cap
        self.bash_timeout_s = bash_timeout_s
        self.bash_env = dict(bash_env or {})
        self.session_bash_env = session_bash_env
        self.bash_max_processes = bash_max_processes
        self.shell = shutil.which("bash") or "/bin/sh"
        self.sandbox = sandbox
        self.hidden_paths: list[str] = []
        self.bash_cpu_s = bash_cpu_s
        self.bash_max_file_bytes = bash_max_file_bytes

    def _bash_env(self, context: ToolContext) -> dict[str, str]:
        added = dict(self.bash_env)
        if self.session_bash_env is not None:
            added.update(self.session_bash_env(context.session_id))
        # Unconfined, a command shares this process's home; sandboxed, it has its own.
        home = SANDBOX_HOME if self.sandbox is not None else os.environ.get("HOME", "/")
        return command_environment(os.environ, home=home, added=added)

    def _new_cgroup(self) -> CallCgroup | None:
        """The call's own pids cgroup where the sandbox has them, else None."""
        if self.sandbox is None or self.sandbox.cgroups is None:
            return None
        try:
            return self.sandbox.cgroups.new_call(self.bash_max_processes)
        except OSError as exc:
            # Running without the limit would let one command starve the host: refuse instead.
            raise ToolError(
                f"bash could not set up its process limit ({exc}); the command did not run"
            ) from None

    def _bash_argv(self, command: str, context: ToolContext, cgroup: CallCgroup | None) -> list[str]:
        """The command line for ``command``: sandboxed, or plain under the explicit opt-out."""
        argv = [self.shell, "-c", command]
        if self.sandbox is None:
            return argv
        if not self.sandbox.available:
            raise ToolError(
                f"bash is disabled on this host: {self.sandbox.reason}. Commands run only inside a "
                "sandbox; the operator can install bubblewrap, or create the ToolExecutor with "
                "unsandboxed_bash=True to run them unconfined. Use the file tools instead."
            )
        return bwrap_command(
            self.sandbox,
            context.workspace,
            argv,
            allow_network=context.allow_network,
            hidden=self.hidden_paths,
            cpu_seconds=self.bash_cpu_s,
            max_file_bytes=self.bash_max_file_bytes,
            max_processes=self.bash_max_processes,
            cgroup_procs=None if cgroup is None else cgroup.procs_file,
        )

    def tools(self) -> list[BuiltinTool]:
        """Every built-in, in :data:`BUILTIN_TOOLS` order."""
        tools = [
            BuiltinTool(
                "read_file",
                self.read_file,
                "Read a text file in the workspace. Returns its text; for long files pass offset "
                "(lines to skip) and limit (lines to return) to read a part.",
                _object_schema(
                    {
                        "path": _PATH,
                        "offset": {"type": "integer", "description": "Lines to skip first (default 0)."},
                        "limit": {
                            "type": ["integer", "null"],
                            "description": "Most lines to return (default: as many as fit).",
                        },
                    },
                    ["path"],
                ),
            ),
            BuiltinTool(
                "write_file",
                self.write_file,
                "Create or overwrite a text file in the workspace with the given content, creating "
                "missing parent directories.",
                _object_schema(
                    {"path": _PATH, "content": {"type": "string", "description": "The whole new file text."}},
                    ["path", "content"],
                ),
            ),
            BuiltinTool(
                "edit_file",
                self.edit_file,
                "Replace an exact string in a text file in the workspace. old_string must occur "
                "exactly once (include surrounding lines to make it unique), unless replace_all is true.",
                _object_schema(
                    {
                        "path": _PATH,
                        "old_string": {"type": "string", "description": "Exact text to replace."},
                        "new_string": {"type": "string", "description": "Text to put in its place."},
                        "replace_all": {
                            "type": "boolean",
                            "description": "Replace every occurrence (default false).",
                        },
                    },
                    ["path", "old_string", "new_string"],
                ),
            ),
            BuiltinTool(
                "list_dir",
                self.list_dir,
                "List a directory in the workspace, sorted by name; directories end with '/', "
                "symbolic links with '@'.",
                _object_schema(
                    {"path": {"type": "string", "description": "Directory (default: the workspace)."}}, []
                ),
            ),
            BuiltinTool(
                "grep",
                self.grep,
                "Search text files in the workspace for a Python regular expression. Returns "
                "'file:line: text' lines. Skips binary files and .git, node_modules, __pycache__.",
                _object_schema(
                    {
                        "pattern": {"type": "string", "description": "Python regular expression."},
                        "path": {
                            "type": "string",
                            "description": "File or directory to search (default: the workspace).",
                        },
                        "glob": {
                            "type": ["string", "null"],
                            "description": "Only files whose name (or path, if it has a '/') matches, "
                            "e.g. '*.py'.",
                        },
                    },
                    ["pattern"],
                ),
            ),
            BuiltinTool(
                "bash",
                self.bash,
                "Run a bash command in the workspace directory. Returns its combined stdout and "
                f"stderr and its exit code. It is killed after timeout_s seconds (default "
                f"{self.bash_timeout_s:g}); processes it leaves in the background are killed when it exits.",
                _object_schema(
                    {
                        "command": {"type": "string", "description": "The command line, run by bash -c."},
                        "timeout_s": {
                            "type": ["number", "null"],
                            "description": f"Seconds before the command is killed (at most "
                            f"{max(_MAX_BASH_TIMEOUT_S, self.bash_timeout_s):g}).",
                        },
                    },
                    ["command"],
                ),
            ),
        ]
        assert tuple(t.name for t in tools) == BUILTIN_TOOLS
        return tools

    def read_file(self, path: str, offset: int = 0, limit: int | None = None, *, context: ToolContext) -> str:
        """Return lines ``offset`` to ``offset + limit`` of a text file, as much as fits the output cap."""
        if offset < 0:
            raise ToolError("offset must be 0 or more (the number of lines to skip)")
        if limit is not None and limit < 1:
            raise ToolError("limit must be at least 1, or null for as many lines as fit")
        target = resolve_inside(context.workspace, path)
        shown = relative(context.workspace, target)
        lines = _read_text(target, shown, action="read_file").splitlines(keepends=True)
        if not lines:
            return f"({shown} is empty)"
        if offset >= len(lines):
            raise ToolError(f"offset {offset} is past the end of {shown}, which has {len(lines)} lines")
        end = len(lines) if limit is None else min(len(lines), offset + limit)
        budget = self.output_cap - 200  # room for the note below
        taken: list[str] = []
        size = 0
        for line in lines[offset:end]:
            if taken and size + len(line) > budget:
                break
            taken.append(line)
            size += len(line)
        text = "".join(taken)
        stop = offset + len(taken)
        if stop < len(lines):
            text += (
                f"\n[{shown}: showed lines {offset + 1}-{stop} of {len(lines)}; "
                f"read_file with offset={stop} for more]"
            )
        return text

    def write_file(self, path: str, content: str, *, context: ToolContext) -> str:
        """Atomically replace (or create) a file with ``content``."""
        target = resolve_inside(context.workspace, path)
        shown = relative(context.workspace, target)
        if target.is_dir():
            raise ToolError(f"{shown} is a directory; give the path of a file inside it")
        existed = target.exists()
        try:
            atomic_write_text(target, content)
        except (FileExistsError, NotADirectoryError):
            raise ToolError(
                f"cannot create {shown}: a file is in the way of its parent directories"
            ) from None
        verb = "overwrote" if existed else "created"
        return f"{verb} {shown} ({len(content)} characters, {content.count(chr(10))} newlines)"

    def edit_file(
        self, path: str, old_string: str, new_string: str, replace_all: bool = False, *, context: ToolContext
    ) -> str:
        """Replace ``old_string`` (which must be unique unless ``replace_all``) with ``new_string``."""
        if not old_string:
            raise ToolError("old_string is empty; give the exact text to replace (use write_file to create)")
        if old_string == new_string:
            raise ToolError("old_string and new_string are the same; there is nothing to change")
        target = resolve_inside(context.workspace, path)
        shown = relative(context.workspace, target)
        text = _read_text(target, shown, action="edit_file")
        count = text.count(old_string)
        if count == 0:
            raise ToolError(
                f"old_string was not found in {shown}; read_file it to see the current text and "
                "copy the exact characters, including whitespace"
            )
        if count > 1 and not replace_all:
            raise ToolError(
                f"old_string occurs {count} times in {shown}; include more surrounding text to make "
                "it unique, or set replace_all to true to replace every occurrence"
            )
        atomic_write_text(target, text.replace(old_string, new_string))
        return f"edited {shown}: replaced {count} occurrence{'s' if count > 1 else ''}"

    def list_dir(self, path: str = ".", *, context: ToolContext) -> str:
        """List a directory: one entry per line, sorted; ``name/`` for directories, ``name@`` for symlinks."""
        target = resolve_inside(context.workspace, path)
        shown = relative(context.workspace, target)
        if not target.is_dir():
            problem = "is not a directory" if target.exists() else "does not exist"
            raise ToolError(f"{shown} {problem}; list_dir needs a directory (try '.')")
        entries = []
        with os.scandir(target) as scan:
            for entry in scan:
                if entry.is_symlink():
                    entries.append(entry.name + "@")
                elif entry.is_dir():
                    entries.append(entry.name + "/")
                else:
                    entries.append(entry.name)
        if not entries:
            return f"({shown} is empty)"
        return "\n".join(sorted(entries))

    def grep(self, pattern: str, path: str = ".", glob: str | None = None, *, context: ToolContext) -> str:
        """Search text files for ``pattern``; one ``file:line: text`` line per match."""
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(
                f"pattern is not a valid Python regular expression ({exc}); escape special characters "
                "such as ( [ . * with a backslash"
            ) from None
        root = context.workspace
        start = resolve_inside(root, path)
        if not start.exists():
            raise ToolError(f"{relative(root, start)} does not exist; use list_dir to see what exists")
        matches: list[str] = []
        for file in self._files_to_search(root, start, glob):
            try:
                if file.stat().st_size > _MAX_FILE_BYTES:
                    continue
                data = file.read_bytes()
            except OSError:
                continue  # unreadable or vanished meanwhile: searching the rest is more useful
            if b"\0" in data[:_SNIFF_BYTES]:
                continue
            shown = relative(root, file)
            for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
                if regex.search(line):
                    matches.append(f"{shown}:{number}: {line[:_GREP_LINE_CHARS]}")
                    if len(matches) == _GREP_MAX_MATCHES:
                        matches.append(
                            f"[stopped after {_GREP_MAX_MATCHES} matches; narrow the pattern, path or glob]"
                        )
                        return "\n".join(matches)
        if not matches:
            return f"no matches for {pattern!r} in {relative(root, start)}"
        return "\n".join(matches)

    @staticmethod
    def _files_to_search(root: Path, start: Path, glob: str | None) -> Iterator[Path]:
        if start.is_file():
            yield start
            return
        for directory, dirnames, filenames in os.walk(start):
            # os.walk does not follow symlinked directories, so the walk stays inside.
            dirnames[:] = sorted(d for d in dirnames if d not in _GREP_PRUNED_DIRS)
            for name in sorted(filenames):
                candidate = Path(directory, name)
                if glob is not None:
                    subject = relative(start, candidate) if "/" in glob else name
                    if not fnmatch.fnmatchcase(subject, glob):
                        continue
                # A symlinked file may point outside: search it only if it resolves inside.
                real = Path(os.path.realpath(candidate))
                if os.path.commonpath([real, root]) == str(root) and real.is_file():
                    yield real

    def _bash_status(self, returncode: int | None, *, timed_out: bool, timeout: float, limit: float) -> str:
        """The bracketed line after a command's output: how it ended, and what to do about a timeout."""
        if timed_out:
            return (
                f"[timed out after {timeout:g} s: the command and every process it started were killed; "
                f"pass a larger timeout_s (at most {limit:g}) or make the command finish sooner]"
            )
        if returncode is None:
            return "[exit status unknown]"
        if returncode < 0:
            return f"[killed by signal {_signal_name(-returncode)}]"
        status = f"[exit code: {returncode}]"
        # The sandbox's soft CPU limit (ulimit -t) stops the command with SIGXCPU, which
        # the shell around it reports as 128 + the signal: say so, or the model sees only
        # an odd exit code.
        if self.sandbox is not None and returncode == 128 + signal.SIGXCPU:
            status += f"\n[the command used up its {self.bash_cpu_s} s of CPU time and was stopped]"
        return status

    async def _run_command(
        self, argv: list[str], env: dict[str, str], cwd: Path, timeout: float, cgroup: CallCgroup | None
    ) -> tuple[int | None, bool, _CommandProtocol]:
        """Run ``argv`` until it exits or ``timeout``; kill whatever of it is left either way."""

        def kill(pid: int) -> None:
            _kill_group(pid)
            if cgroup is not None:  # what left the group (the sandbox's own session) dies here
                cgroup.kill()

        loop = asyncio.get_running_loop()
        output = CappedText(self.output_cap)
        spawn = asyncio.ensure_future(
            loop.subprocess_exec(
                lambda: _CommandProtocol(output, loop),
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        )
        try:
            transport, protocol = await asyncio.shield(spawn)
        except OSError as exc:
            raise ToolError(f"could not start {argv[0]}: {exc}") from None
        except asyncio.CancelledError:
            # The command may already run (and have started children) before the spawn
            # returns; interrupted, asyncio would kill only the shell. Let the spawn finish,
            # which takes milliseconds, and kill the whole group.
            with suppress(Exception):
                started, _ = await spawn
                kill(started.get_pid())
                started.close()
            raise
        pid = transport.get_pid()
        try:
            done, _ = await asyncio.wait({protocol.exited}, timeout=timeout)
            timed_out = not done
            kill(pid)
            # Output may still sit in the pipe after the exit: read it, but do not wait on a
            # process that detached itself from the group while keeping the pipe open.
            await asyncio.wait({protocol.exited, protocol.eof}, timeout=_DRAIN_S)
            returncode = transport.get_returncode()
        except BaseException:
            kill(pid)  # cancelled: the turn stops, and so does the command
            # Reaped before the transport closes: a killed process not reaped yet stays a
            # zombie, and its Popen warns when collected (an error in the test suite).
            with suppress(asyncio.CancelledError):
                await asyncio.wait({protocol.exited}, timeout=_DRAIN_S)
            raise
        finally:
            transport.close()
        return returncode, timed_out, protocol

    async def bash(self, command: str, timeout_s: float | None = None, *, context: ToolContext) -> ToolResult:
        """Run ``command`` with ``bash -c`` in the workspace, killing its process group on timeout.

        In the sandbox (the default) the command sees only the system
        directories, a list of safe ``/etc`` files, its workspace (the only
        place it can write, store files masked) and private ``/tmp`` and home;
        it runs as ``nobody`` with an allow-listed environment, no network
        unless the session allows it, and limits on CPU time, file size and
        processes. Under the
        ``unsandboxed_bash=True`` opt-out it can reach anything the process
        can. Either way the default :class:`~sessionhive.ConfirmationPolicy`
        asks a human before each call. The command runs in a new session (process group) with stdin from
        ``/dev/null``; on timeout, on cancellation, and when it exits, that
        whole group is killed, so no call leaks processes. A non-zero exit code
        is reported, not treated as a tool error: the command ran.
        """
        limit = max(_MAX_BASH_TIMEOUT_S, self.bash_timeout_s)
        timeout = self.bash_timeout_s if timeout_s is None else float(timeout_s)
        if not 0 < timeout <= limit:
            raise ToolError(f"timeout_s must be more than 0 and at most {limit:g} seconds, got {timeout_s}")
        if not command.strip():
            raise ToolError("command is empty; give a bash command line to run")
        env = self._bash_env(context)
        cgroup = self._new_cgroup() if self.sandbox is not None and self.sandbox.available else None
        try:
            returncode, timed_out, protocol = await self._run_command(
                self._bash_argv(command, context, cgroup), env, context.workspace, timeout, cgroup
            )
        finally:
            if cgroup is not None:
                cgroup.remove()
        status = self._bash_status(returncode, timed_out=timed_out, timeout=timeout, limit=limit)
        if not protocol.eof.done():
            status += "\n[a detached process still holds the output open; later output is not shown]"
        text = protocol.output.render(self.output_cap - len(status) - 1)
        if not text:
            text = "(no output)"
        separator = "" if text.endswith("\n") else "\n"
        return ToolResult(f"{text}{separator}{status}", is_error=timed_out)
