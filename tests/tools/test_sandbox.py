"""The ``bash`` sandbox, run for real under bubblewrap: what a command can and cannot reach."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive.model.messages import ToolResult
from sessionhive.persistence import FileStore, MemoryStore, SqlStore
from sessionhive.tools import ToolExecutor
from sessionhive.tools._sandbox import probe_sandbox
from tests.persistence.conftest_persistence import make_snapshot

SANDBOX = probe_sandbox()
needs_sandbox = pytest.mark.skipif(
    not SANDBOX.available, reason=f"no working bubblewrap here: {SANDBOX.reason} (.ci/run installs it)"
)


def bash(executor: ToolExecutor, command: str, **kwargs: Any) -> ToolResult:
    return asyncio.run(executor.execute("bash", {"command": command}, **kwargs))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


@pytest.fixture
def executor(ws: Path) -> Iterator[ToolExecutor]:
    with ToolExecutor(ws, bash_timeout_s=20.0) as ex:
        yield ex


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    with server:
        yield server


@needs_sandbox
def test_bash_writes_only_inside_the_workspace(executor: ToolExecutor, ws: Path, tmp_path: Path) -> None:
    elsewhere = Path("/var/tmp") / f"sessionhive-sandbox-{uuid.uuid4().hex}"
    beside = tmp_path / "beside.txt"
    result = bash(
        executor,
        f"echo in > inside.txt; echo x > {elsewhere}; echo x > {beside}; touch /etc/sessionhive-x; "
        "cat inside.txt",
    )
    assert result.output.startswith("in\n") or "\nin\n" in result.output, result.output
    assert (ws / "inside.txt").read_text() == "in\n"
    assert "Read-only file system" in result.output
    assert not elsewhere.exists() and not beside.exists() and not Path("/etc/sessionhive-x").exists()


@needs_sandbox
def test_bash_can_build_and_run_things_in_the_workspace(executor: ToolExecutor, ws: Path) -> None:
    command = (
        "mkdir -p build/bin && printf '#!/bin/sh\\necho built \"$1\"\\n' > build/bin/hello && "
        "chmod +x build/bin/hello && ./build/bin/hello ok && "
        "printf 'print(6 * 7)\\n' > build/main.py && python3 build/main.py && "
        'tmp=$(mktemp) && echo scratch > "$tmp" && cat "$tmp"'
    )
    result = bash(executor, command)
    assert result == ToolResult("built ok\n42\nscratch\n[exit code: 0]"), result.output
    assert (ws / "build" / "bin" / "hello").stat().st_mode & 0o111


@needs_sandbox
def test_bash_has_no_network_unless_the_session_allows_it(
    executor: ToolExecutor, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    connect = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"

    refused = bash(executor, connect)
    assert "connected" not in refused.output and "[exit code: 0]" not in refused.output

    allowed = bash(executor, connect, allow_network=True)
    assert "connected" in allowed.output, allowed.output
    peer, _ = listener.accept()  # the connection really reached this process
    peer.close()


@needs_sandbox
def test_home_directories_and_hidden_paths_are_invisible(ws: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    sqlite3.connect(store_dir / "sessions.db").close()
    db_in_ws = ws / "hive.db"
    db_in_ws.write_text("rows")
    with ToolExecutor(ws) as executor:
        executor.hide_from_bash(store_dir, db_in_ws)
        home = os.path.expanduser("~")
        result = bash(
            executor,
            f"ls -A {home} 2>/dev/null | wc -l; ls {store_dir} 2>/dev/null | wc -l; "
            "cat hive.db; echo ok > note",
        )
    assert result.output.split()[:2] == ["0", "0"], result.output
    assert "rows" not in result.output and result.output.endswith("[exit code: 0]")
    assert (ws / "note").read_text() == "ok\n" and db_in_ws.read_text() == "rows"


@needs_sandbox
def test_a_stores_data_paths_hide_its_files_from_bash(ws: Path, tmp_path: Path) -> None:
    sql = SqlStore(f"sqlite:///{ws / 'hive.db'}")  # even inside the workspace
    files = FileStore(tmp_path / "sessions")
    sql.write_batch([make_snapshot("s1")], [])
    files.write_batch([make_snapshot("s2")], [])
    try:
        with ToolExecutor(ws) as executor:
            executor.hide_from_bash(*sql.data_paths(), *files.data_paths(), *MemoryStore().data_paths())
            result = bash(executor, f"cat hive.db hive.db-wal; ls {tmp_path / 'sessions'} | wc -l")
    finally:
        sql.close()
    assert "sessionhive_sessions" not in result.output and "You are terse" not in result.output
    assert result.output.splitlines()[-2] == "0", result.output
    assert sql.load("s1") == make_snapshot("s1")


@needs_sandbox
def test_cpu_time_and_file_size_are_limited(ws: Path) -> None:
    with ToolExecutor(ws, bash_cpu_s=1, bash_max_file_bytes=1 << 20, bash_timeout_s=30) as executor:
        spin = bash(executor, "while :; do :; done")
        big = bash(executor, "head -c 3000000 /dev/zero > big; echo status $?")
    assert "used up its 1 s of CPU time" in spin.output, spin.output
    assert "timed out" not in spin.output
    assert (ws / "big").stat().st_size <= 1 << 20
    assert "status 0" not in big.output, big.output


def test_without_a_sandbox_bash_refuses_unless_opted_out(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host without bubblewrap, for real: PATH holds only a directory with bash in it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to("/bin/bash")
    monkeypatch.setenv("PATH", str(bin_dir))
    probe_sandbox.cache_clear()
    try:
        with ToolExecutor(ws) as refusing:
            assert refusing.bash_sandbox is not None and not refusing.bash_sandbox.available
            refused = bash(refusing, f"echo x > {tmp_path / 'outside'}")
        with ToolExecutor(ws, unsandboxed_bash=True) as opted_out:
            assert opted_out.bash_sandbox is None
            ran = bash(opted_out, f"echo x > {tmp_path / 'outside'}; echo done")
    finally:
        probe_sandbox.cache_clear()
    assert refused.is_error and "bubblewrap is not installed" in refused.output
    assert "unsandboxed_bash=True" in refused.output
    assert ran == ToolResult("done\n[exit code: 0]")
    assert (tmp_path / "outside").read_text() == "x\n"
