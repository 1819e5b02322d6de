"""The tools layer: ToolExecutor, the built-in workspace tools, and their confinement.

Real directories, real files, real subprocesses. Coroutines run with
``asyncio.run`` (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import ToolResult
from sessionhive.tools import BUILTIN_TOOLS, ToolContext, ToolExecutor

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def call(executor: ToolExecutor, name: str, arguments: dict[str, Any] | str, **kw: Any) -> ToolResult:
    return run(executor.execute(name, arguments, **kw))


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll an OS-level condition (a file appearing, a process dying); not used for actors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


async def async_wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def search(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    assert match is not None, f"{pattern!r} not found in {text[:200]!r}"
    return match


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def ends(pid: int) -> bool:
    """Whether process ``pid`` is gone within a few seconds (SIGKILL is not instantaneous)."""
    return wait_until(lambda: not alive(pid))


def unique_seconds() -> str:
    """A sleep duration no other process on the host has in its command line (e.g. ``30.4821937``)."""
    return f"30.{uuid.uuid4().int % 10**9:09d}"


def running_with(token: str) -> list[int]:
    """Host pids of live processes whose command line holds ``token``.

    Found by command line, not by ``$$``: inside the bash sandbox's PID
    namespace a command sees other pids than the host.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if token.encode() in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def all_end(token: str) -> bool:
    """Whether every process started with ``token`` is gone within a few seconds."""
    return wait_until(lambda: not running_with(token))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_text("secret\n")
    return directory


@pytest.fixture
def executor(ws: Path) -> Iterator[ToolExecutor]:
    with ToolExecutor(ws, bash_timeout_s=10.0) as ex:
        yield ex


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- definitions and registration -------------------------------------------------------------


def test_definitions_list_builtins_first_then_user_tools_in_registration_order(
    executor: ToolExecutor,
) -> None:
    executor.register("zeta", lambda: "z")
    executor.register("alpha", lambda: "a")
    names = [d.name for d in executor.definitions()]
    assert names == [*BUILTIN_TOOLS, "zeta", "alpha"]
    read_file = executor.definitions()[0]
    assert read_file.parameters["required"] == ["path"]
    assert read_file.description


def test_schema_is_derived_from_the_signature(executor: ToolExecutor) -> None:
    def search(query: str, limit: int = 10, tags: list[str] | None = None, *, context: ToolContext) -> str:
        """Search the notes."""
        return query

    executor.register("search", search)
    definition = executor.definitions()[-1]
    assert definition.description == "Search the notes."
    assert definition.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer"},
            "tags": {"type": ["array", "null"]},
        },
        "required": ["query"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dot.name", "trailing\n", "ünï"])
def test_invalid_tool_names_are_refused(executor: ToolExecutor, name: str) -> None:
    with pytest.raises(InvalidConfig, match="tool name"):
        executor.register(name, lambda: "x")


def test_duplicate_registration_and_builtin_override_need_replace(executor: ToolExecutor) -> None:
    executor.register("echo", lambda text: text, description="first")
    with pytest.raises(InvalidConfig, match="already registered"):
        executor.register("echo", lambda text: text)
    with pytest.raises(InvalidConfig, match="built-in"):
        executor.register("bash", lambda command: "no shell here")

    executor.register("bash", lambda command: f"pretend: {command}", replace=True)
    assert call(executor, "bash", {"command": "ls"}) == ToolResult("pretend: ls")
    # A replaced built-in keeps its place in the listing.
    assert [d.name for d in executor.definitions()][: len(BUILTIN_TOOLS)] == list(BUILTIN_TOOLS)


def test_schema_that_does_not_fit_the_function_is_refused(executor: ToolExecutor) -> None:
    def tool(a: str) -> str:
        return a

    with pytest.raises(InvalidConfig, match="requires 'b'"):
        executor.register("t1", tool, {"type": "object", "properties": {}, "required": ["a", "b"]})
    with pytest.raises(InvalidConfig, match="'a' has no default"):
        executor.register("t2", tool, {"type": "object", "properties": {"a": {"type": "string"}}})
    with pytest.raises(InvalidConfig, match="'type' must be 'object'"):
        executor.register("t3", tool, {"type": "array"})


def test_decorator_forms(executor: ToolExecutor) -> None:
    @executor.tool
    def shout(text: str) -> str:
        return text.upper()

    @executor.tool(name="whisper", description="Lower-case the text.")
    async def quiet(text: str) -> str:
        return text.lower()

    assert shout("a") == "A"  # the decorator returns the function itself
    assert call(executor, "shout", {"text": "hi"}).output == "HI"
    assert call(executor, "whisper", {"text": "HI"}).output == "hi"
    assert executor.definitions()[-1].description == "Lower-case the text."


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bash_timeout_s": 0},
        {"bash_timeout_s": float("nan")},
        {"output_cap": 10},
        {"max_workers": 0},
        {"max_workers_per_session": 0},
        {"builtin_workers": 0},
        {"tool_timeout_s": -1},
        {"bash_max_processes": 0},
        {"bash_env": {"A=B": "c"}},
        {"bash_env": {"A": 1}},
        {"session_bash_env": "not callable"},
    ],
)
def test_invalid_executor_settings_are_refused(ws: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig):
        ToolExecutor(ws, **kwargs)


def test_missing_default_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="not an existing directory"):
        ToolExecutor(tmp_path / "nope")


# --- user tools ---------------------------------------------------------------------------------


def test_sync_and_async_user_tools_with_and_without_context(executor: ToolExecutor, ws: Path) -> None:
    def sync_plain(a: int, b: int) -> int:
        return a + b

    def sync_ctx(name: str, context: ToolContext) -> str:
        return f"{name}@{context.session_id}:{context.workspace}"

    async def async_plain(text: str) -> str:
        await asyncio.sleep(0)
        return text[::-1]

    async def async_ctx(context: ToolContext) -> str:
        return f"{context.session_id}:{context.workspace}"

    for func in (sync_plain, sync_ctx, async_plain, async_ctx):
        executor.register(func.__name__, func)

    assert call(executor, "sync_plain", {"a": 2, "b": 3}) == ToolResult("5")
    assert call(executor, "sync_ctx", {"name": "n"}, session_id="s1") == ToolResult(f"n@s1:{ws.resolve()}")
    assert call(executor, "async_plain", {"text": "abc"}) == ToolResult("cba")
    assert call(executor, "async_ctx", {}, session_id="s2") == ToolResult(f"s2:{ws.resolve()}")


def test_user_tool_that_raises_becomes_an_error_result(executor: ToolExecutor) -> None:
    def explode(x: int) -> str:
        raise ValueError(f"cannot handle {x}")

    async def explode_async() -> str:
        raise KeyError("missing-key")

    executor.register("explode", explode)
    executor.register("explode_async", explode_async)
    result = call(executor, "explode", {"x": 7})
    assert result.is_error
    assert "explode" in result.output and "ValueError: cannot handle 7" in result.output
    result = call(executor, "explode_async", {})
    assert result.is_error and "KeyError" in result.output and "missing-key" in result.output


def test_user_tool_can_return_a_tool_result(executor: ToolExecutor) -> None:
    executor.register("refuse", lambda: ToolResult("not today", is_error=True))
    assert call(executor, "refuse", {}) == ToolResult("not today", is_error=True)


def test_sync_tools_run_off_the_event_loop_with_context_variables(executor: ToolExecutor) -> None:
    started, release = threading.Event(), threading.Event()
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    def blocking() -> str:
        started.set()
        # Were this running on the event loop, the loop could not set `release`: it would time out.
        released = release.wait(5)
        return f"{'released' if released else 'timed out'} {request_id.get('?')}"

    executor.register("blocking", blocking)

    async def scenario() -> ToolResult:
        request_id.set("req-42")
        task = asyncio.create_task(executor.execute("blocking", {}))
        await asyncio.to_thread(started.wait, 5)
        release.set()
        return await task

    assert run(scenario()) == ToolResult("released req-42")


def test_closing_the_executor_turns_queued_and_later_calls_into_errors(ws: Path) -> None:
    executor = ToolExecutor(ws, max_workers=1)
    started, release = threading.Event(), threading.Event()

    def occupy() -> str:
        started.set()
        release.wait(5)
        return "done"

    executor.register("occupy", occupy)
    executor.register("quick", lambda: "quick")

    async def scenario() -> tuple[ToolResult, ToolResult]:
        busy = asyncio.create_task(executor.execute("occupy", {}))
        await asyncio.to_thread(started.wait, 5)
        queued = asyncio.create_task(executor.execute("quick", {}))
        await asyncio.sleep(0)  # let `queued` submit its work behind `occupy`
        executor.close()
        release.set()
        return await busy, await queued

    busy, queued = run(scenario())
    assert busy == ToolResult("done")
    assert queued.is_error and "closed" in queued.output
    later = call(executor, "quick", {})
    assert later.is_error and "closed" in later.output


def test_generic_output_cap_keeps_head_and_tail_and_counts_the_cut(ws: Path) -> None:
    text = "".join(f"{i:05d}\n" for i in range(2000))  # 12000 characters
    with ToolExecutor(ws, output_cap=1000) as executor:
        executor.register("big", lambda: text)
        output = call(executor, "big", {}).output
    assert len(output) <= 1000
    head, cut, tail = search(
        r"\A(.*)\n\[\.\.\. (\d+) characters cut \.\.\.\]\n(.*)\Z", output, re.DOTALL
    ).groups()
    assert text.startswith(head) and text.endswith(tail)
    assert len(head) + int(cut) + len(tail) == len(text)


# --- malformed calls ----------------------------------------------------------------------------


def test_unknown_tool_names_the_available_ones(executor: ToolExecutor) -> None:
    result = call(executor, "rm_rf", {})
    assert result.is_error
    assert "unknown tool 'rm_rf'" in result.output and "read_file" in result.output


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"path": ', "not valid JSON"),
        ('["a.txt"]', "must be a JSON object, got list"),
        ("42", "must be a JSON object, got int"),
        ({}, "missing required argument(s) 'path'"),
        ({"path": 3}, "argument 'path' must be string, got 3"),
        ({"path": "a.txt", "offset": True}, "argument 'offset' must be integer"),
        ({"path": "a.txt", "offset": "2"}, "argument 'offset' must be integer"),
        ({"path": "a.txt", "bogus": 1}, "unknown argument(s) 'bogus'"),
    ],
)
def test_malformed_arguments_say_what_is_wrong_and_how_to_call(
    executor: ToolExecutor, ws: Path, arguments: dict[str, Any] | str, problem: str
) -> None:
    (ws / "a.txt").write_text("x\n")
    result = call(executor, "read_file", arguments)
    assert result.is_error
    assert problem in result.output
    assert "path (string, required), offset (integer), limit (integer or null)" in result.output


def test_context_is_reserved_for_tools_that_take_it(executor: ToolExecutor) -> None:
    executor.register("where", lambda context: str(context.workspace))
    result = call(executor, "where", {"context": "/etc"})
    assert result.is_error and "context" in result.output


def test_lenient_argument_forms_are_accepted(executor: ToolExecutor, ws: Path) -> None:
    (ws / "f.txt").write_text("one\ntwo\nthree\n")
    assert call(executor, "list_dir", "").output == "f.txt"  # empty text means no arguments
    assert call(executor, "read_file", '{"path": "f.txt", "offset": 2.0}').output.startswith("three")


# --- built-ins: happy paths ---------------------------------------------------------------------


def test_write_then_read_file_creating_parent_directories(executor: ToolExecutor, ws: Path) -> None:
    content = "first line\nsecond line, ünïcödé\n"
    result = call(executor, "write_file", {"path": "deep/er/notes.md", "content": content})
    assert result == ToolResult("created deep/er/notes.md (32 characters, 2 newlines)")
    assert (ws / "deep/er/notes.md").read_text(encoding="utf-8") == content
    assert call(executor, "read_file", {"path": "deep/er/notes.md"}) == ToolResult(content)
    # Absolute paths inside the workspace are fine too.
    assert call(executor, "read_file", {"path": str(ws / "deep/er/notes.md")}).output == content


def test_write_file_overwrites_atomically_keeping_the_mode(executor: ToolExecutor, ws: Path) -> None:
    target = ws / "script.sh"
    target.write_text("old")
    target.chmod(0o750)
    result = call(executor, "write_file", {"path": "script.sh", "content": "new"})
    assert result.output.startswith("overwrote script.sh")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert sorted(os.listdir(ws)) == ["script.sh"]  # no temporary file left behind


def test_read_file_offset_limit_and_continuation(ws: Path) -> None:
    (ws / "lines.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    long = "".join(f"{i:04d}" + "x" * 95 + "\n" for i in range(100))  # 100 lines of 100 characters
    (ws / "long.txt").write_text(long)
    with ToolExecutor(ws, output_cap=2000) as executor:
        part = call(executor, "read_file", {"path": "lines.txt", "offset": 2, "limit": 3}).output
        assert part.startswith("line 3\nline 4\nline 5\n")
        assert "showed lines 3-5 of 10; read_file with offset=5 for more" in part

        first = call(executor, "read_file", {"path": "long.txt"}).output
        stop = int(search(r"offset=(\d+)", first).group(1))
        assert first.startswith(long[: stop * 100]) and len(first) <= 2000
        second = call(executor, "read_file", {"path": "long.txt", "offset": stop}).output
        assert second.startswith(f"{stop:04d}")

        past = call(executor, "read_file", {"path": "lines.txt", "offset": 10})
        assert past.is_error and "past the end" in past.output


def test_read_file_refuses_missing_directory_binary_and_huge_files(executor: ToolExecutor, ws: Path) -> None:
    (ws / "sub").mkdir()
    (ws / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    with open(ws / "huge.log", "wb") as f:
        f.truncate(11 * 1024 * 1024)  # sparse: costs no disk
    for path, problem in [
        ("nope.txt", "does not exist"),
        ("sub", "is a directory"),
        ("image.png", "binary file"),
        ("huge.log", "more than read_file handles"),
    ]:
        result = call(executor, "read_file", {"path": path})
        assert result.is_error and problem in result.output, (path, result)


def test_edit_file_replaces_a_unique_string(executor: ToolExecutor, ws: Path) -> None:
    (ws / "app.py").write_text("x = 1\ny = 2\n")
    result = call(executor, "edit_file", {"path": "app.py", "old_string": "y = 2", "new_string": "y = 3"})
    assert result == ToolResult("edited app.py: replaced 1 occurrence")
    assert (ws / "app.py").read_text() == "x = 1\ny = 3\n"


def test_edit_file_not_found_and_ambiguous_leave_the_file_alone(executor: ToolExecutor, ws: Path) -> None:
    original = "a = 1\na = 1\n"
    (ws / "dup.py").write_text(original)
    missing = call(executor, "edit_file", {"path": "dup.py", "old_string": "b = 1", "new_string": "b = 2"})
    assert missing.is_error and "not found" in missing.output
    ambiguous = call(executor, "edit_file", {"path": "dup.py", "old_string": "a = 1", "new_string": "a = 2"})
    assert ambiguous.is_error and "occurs 2 times" in ambiguous.output and "replace_all" in ambiguous.output
    assert (ws / "dup.py").read_text() == original

    args = {"path": "dup.py", "old_string": "a = 1", "new_string": "a = 2", "replace_all": True}
    assert call(executor, "edit_file", args).output == "edited dup.py: replaced 2 occurrences"
    assert (ws / "dup.py").read_text() == "a = 2\na = 2\n"


def test_list_dir_sorted_with_markers(executor: ToolExecutor, ws: Path) -> None:
    (ws / "b.txt").write_text("")
    (ws / "a_dir").mkdir()
    (ws / "a_dir" / "inner.txt").write_text("")
    (ws / "c").write_text("")
    (ws / "link").symlink_to(ws / "c")
    assert call(executor, "list_dir", {}).output == "a_dir/\nb.txt\nc\nlink@"
    assert call(executor, "list_dir", {"path": "a_dir"}).output == "inner.txt"
    not_dir = call(executor, "list_dir", {"path": "c"})
    assert not_dir.is_error and "not a directory" in not_dir.output


def test_grep_reports_file_line_text_and_filters(executor: ToolExecutor, ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "a.py").write_text("import os\ndef main():\n    return os.getcwd()\n")
    (ws / "src" / "b.txt").write_text("os is mentioned here\n")
    (ws / "blob.bin").write_bytes(b"os\0os")
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("os\n")

    assert call(executor, "grep", {"pattern": r"\bos\b"}).output.splitlines() == [
        "src/a.py:1: import os",
        "src/a.py:3:     return os.getcwd()",
        "src/b.txt:1: os is mentioned here",
    ]
    assert call(executor, "grep", {"pattern": "os", "glob": "*.py"}).output.count("\n") == 1
    assert call(executor, "grep", {"pattern": "def", "path": "src/a.py"}).output == "src/a.py:2: def main():"
    assert "no matches" in call(executor, "grep", {"pattern": "zebra"}).output
    invalid = call(executor, "grep", {"pattern": "(unclosed"})
    assert invalid.is_error and "regular expression" in invalid.output


def test_grep_stops_at_its_match_cap(executor: ToolExecutor, ws: Path) -> None:
    (ws / "many.txt").write_text("hit\n" * 600)
    lines = call(executor, "grep", {"pattern": "hit"}).output.splitlines()
    assert len(lines) == 501
    assert lines[-1].startswith("[stopped after 500 matches")


def test_session_workspace_overrides_the_default(executor: ToolExecutor, ws: Path, tmp_path: Path) -> None:
    (ws / "alice").mkdir()
    call(executor, "write_file", {"path": "n.txt", "content": "A"}, workspace="alice")
    assert (ws / "alice" / "n.txt").read_text() == "A"
    (tmp_path / "bob").mkdir()
    call(executor, "write_file", {"path": "n.txt", "content": "B"}, workspace=tmp_path / "bob")
    assert (tmp_path / "bob" / "n.txt").read_text() == "B"
    escape = call(executor, "read_file", {"path": "../n.txt"}, workspace="alice")
    assert escape.is_error and "outside the workspace" in escape.output
    missing = call(executor, "list_dir", {}, workspace=tmp_path / "nobody")
    assert missing.is_error and "not an existing directory" in missing.output


# --- confinement --------------------------------------------------------------------------------


ESCAPES = [
    ("read_file", {"path": "../outside/secret.txt"}),
    ("read_file", {"path": "{outside}/secret.txt"}),
    ("read_file", {"path": "/etc/passwd"}),
    ("read_file", {"path": "link_dir/secret.txt"}),
    ("read_file", {"path": "link_file"}),
    ("write_file", {"path": "link_file", "content": "pwned"}),
    ("write_file", {"path": "link_dir/new.txt", "content": "pwned"}),
    ("write_file", {"path": "dangling", "content": "pwned"}),
    ("write_file", {"path": "../outside/new.txt", "content": "pwned"}),
    ("write_file", {"path": "newdir/../../outside/new.txt", "content": "pwned"}),
    ("edit_file", {"path": "link_file", "old_string": "secret", "new_string": "pwned"}),
    ("edit_file", {"path": "link_dir/secret.txt", "old_string": "secret", "new_string": "pwned"}),
    ("list_dir", {"path": ".."}),
    ("list_dir", {"path": "link_dir"}),
    ("grep", {"pattern": "secret", "path": "link_dir"}),
    ("grep", {"pattern": "secret", "path": "/"}),
]


@pytest.mark.parametrize(("tool", "arguments"), ESCAPES, ids=[f"{t}:{a['path']}" for t, a in ESCAPES])
def test_paths_resolving_outside_the_workspace_are_refused_untouched(
    executor: ToolExecutor, ws: Path, outside: Path, tool: str, arguments: dict[str, Any]
) -> None:
    (ws / "link_dir").symlink_to(outside, target_is_directory=True)
    (ws / "link_file").symlink_to(outside / "secret.txt")
    (ws / "dangling").symlink_to(outside / "created-through-link.txt")
    before = snapshot(outside)
    arguments = {k: v.format(outside=outside) for k, v in arguments.items()}

    result = call(executor, tool, arguments)

    assert result.is_error
    assert "outside the workspace" in result.output
    assert "secret\n" not in result.output
    assert snapshot(outside) == before
    assert not (ws / "newdir").exists()


def test_grep_does_not_follow_symlinks_out_of_the_workspace(
    executor: ToolExecutor, ws: Path, outside: Path
) -> None:
    (ws / "link_dir").symlink_to(outside, target_is_directory=True)
    (ws / "link_file").symlink_to(outside / "secret.txt")
    (ws / "inside.txt").write_text("no secret here\n")
    assert call(executor, "grep", {"pattern": "secret"}).output == "inside.txt:1: no secret here"


def test_symlinks_that_stay_inside_work(executor: ToolExecutor, ws: Path) -> None:
    (ws / "real").mkdir()
    (ws / "real" / "f.txt").write_text("inside\n")
    (ws / "alias").symlink_to(ws / "real", target_is_directory=True)
    assert call(executor, "read_file", {"path": "alias/f.txt"}).output == "inside\n"


# --- bash ---------------------------------------------------------------------------------------


def test_bash_runs_in_the_workspace_and_reports_the_exit_code(executor: ToolExecutor, ws: Path) -> None:
    result = call(executor, "bash", {"command": "pwd; echo to-stderr >&2; exit 3"})
    assert result == ToolResult(f"{ws.resolve()}\nto-stderr\n[exit code: 3]")
    assert call(executor, "bash", {"command": "true"}) == ToolResult("(no output)\n[exit code: 0]")


def test_bash_timeout_kills_the_process_group_and_says_so(executor: ToolExecutor, ws: Path) -> None:
    started = time.monotonic()
    seconds = unique_seconds()
    command = f"sleep {seconds} & echo waiting; wait"
    result = call(executor, "bash", {"command": command, "timeout_s": 0.5})
    elapsed = time.monotonic() - started

    assert result.is_error
    assert result.output.startswith("waiting\n")
    assert "timed out after 0.5 s" in result.output and "killed" in result.output
    assert elapsed < 4
    assert all_end(seconds), f"processes {running_with(seconds)} survived the timeout"


def test_bash_kills_background_leftovers_when_the_command_exits(executor: ToolExecutor, ws: Path) -> None:
    seconds = unique_seconds()
    result = call(executor, "bash", {"command": f"sleep {seconds} >/dev/null 2>&1 & echo started"})
    assert result == ToolResult("started\n[exit code: 0]")
    assert all_end(seconds), f"processes {running_with(seconds)} survived the command"


def test_bash_output_is_capped_with_head_tail_and_exit_code(ws: Path) -> None:
    with ToolExecutor(ws, output_cap=5000) as executor:
        command = "echo START; head -c 300000 /dev/zero | tr '\\0' a; echo; echo END"
        output = call(executor, "bash", {"command": command}).output
    assert len(output) <= 5000
    assert output.startswith("START\naaa") and output.endswith("END\n[exit code: 0]")
    marker = search(r"\n\[\.\.\. (\d+) characters cut \.\.\.\]\n", output)
    shown = len(output) - len(marker.group(0)) - len("[exit code: 0]")
    assert shown + int(marker.group(1)) == len("START\n") + 300000 + len("\nEND\n")


def test_cancelling_a_running_bash_propagates_and_kills_the_process(executor: ToolExecutor, ws: Path) -> None:
    seconds = unique_seconds()
    command = f"sleep {seconds} & wait"

    async def scenario() -> None:
        task = asyncio.create_task(executor.execute("bash", {"command": command}))
        # The shell and its sleep (and bwrap, when sandboxed) carry the token.
        await async_wait_until(lambda: len(running_with(seconds)) >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert all_end(seconds), f"processes {running_with(seconds)} survived cancellation"


def test_bash_environment_is_an_allow_list_plus_what_the_operator_adds(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SH_TEST_API_KEY", "sk-do-not-leak")
    monkeypatch.setenv("SH_TEST_VISIBLE", "not-named-so-not-passed")
    monkeypatch.setenv("LC_TIME", "C")
    with ToolExecutor(
        ws, bash_env={"ONLY": "this"}, session_bash_env=lambda sid: {"WHO": f"for-{sid}"}
    ) as ex:
        output = call(ex, "bash", {"command": "env"}, session_id="s7").output
    assert "ONLY=this\n" in output and "WHO=for-s7\n" in output and "LC_TIME=C\n" in output
    assert "sk-do-not-leak" not in output and "not-named-so-not-passed" not in output
    names = {line.split("=", 1)[0] for line in output.splitlines()[:-1]}
    # What bash itself sets (PWD, SHLVL, _) aside, only the allow-list and the additions.
    assert names - {"PWD", "OLDPWD", "SHLVL", "_"} <= {
        *("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "LC_TIME", "LC_ALL", "LC_CTYPE"),
        *("ONLY", "WHO"),
    }, names


def test_bash_rejects_out_of_range_timeouts(executor: ToolExecutor) -> None:
    for timeout in (0, -1, 10_000):
        result = call(executor, "bash", {"command": "true", "timeout_s": timeout})
        assert result.is_error and "timeout_s must be" in result.output
