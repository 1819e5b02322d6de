"""The ``sessionhive`` command in a real terminal (a pseudo-terminal): questions, tables, live progress."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

from tests.cli.test_cli import clean_env, run, sessionhive_command


def run_in_terminal(
    args: list[str], cwd: Path, *, tty: str, typed: bytes = b"", timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the command with ``tty`` ("stdin", "stdout" or "stderr") on a pseudo-terminal.

    Returns the finished process (the other streams captured) and what the terminal showed.
    """
    master, slave = pty.openpty()
    streams: dict[str, object] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
    }
    streams[tty] = slave
    env = clean_env(cwd) | {"TERM": "xterm-256color", "COLUMNS": "120"}
    process = subprocess.Popen(sessionhive_command() + args, cwd=cwd, env=env, text=True, **streams)  # type: ignore[call-overload]
    os.close(slave)
    if typed:
        os.write(master, typed)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every holder of the terminal's other end has closed it
            break
        if not chunk:
            break
        shown += chunk
    out, err = process.communicate(timeout=timeout)
    os.close(master)
    done = subprocess.CompletedProcess(process.args, process.returncode, out or "", err or "")
    return done, shown.decode("utf-8", "replace")


def test_a_rejection_at_the_terminal_prints_cleanly(tmp_path: Path) -> None:
    done, _ = run_in_terminal(["run", "hello"], tmp_path, tty="stdin", typed=b"n\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "allow write_file? [y/N]" in out
    assert "confirmation rejected (declined at the terminal)" in out
    assert "< tool write_file failed: the user rejected this write_file call: declined at the terminal" in out
    assert "[error]: error:" not in out and "error: error" not in out
    assert not (tmp_path / "sessionhive-demo.txt").exists()


def test_sessions_list_is_a_table_on_a_terminal_and_plain_otherwise(tmp_path: Path) -> None:
    assert run(["run", "hi", "--session", "alpha"], tmp_path).returncode == 0
    done, shown = run_in_terminal(["sessions", "list", "-l"], tmp_path, tty="stdout")
    assert done.returncode == 0, done.stderr
    assert "ID" in shown and "MESSAGES" in shown and "alpha" in shown
    assert any(frame in shown for frame in "┃│┏━"), shown  # drawn by rich
    assert "1 session(s) in sqlite:///sessionhive.db" in shown
    plain = run(["sessions", "list", "-l"], tmp_path).stdout
    assert not any(frame in plain for frame in "┃│┏━") and "\x1b[" not in plain


def test_loadtest_shows_live_progress_on_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    args = ["loadtest", "--sessions", "4", "--turns", "3", "--tools-per-turn", "1", "--json", str(out)]
    done, shown = run_in_terminal(args, tmp_path, tty="stderr")
    assert done.returncode == 0, done.stdout
    # The progress display (stderr, the terminal): turns, turns/s, failures, latency.
    assert "12/12" in shown and "turns/s" in shown and "failed 0" in shown and "p50" in shown
    # The report on stdout (not a terminal): plain lines, no escape codes.
    assert "verification" in done.stdout and "\x1b[" not in done.stdout
    assert json.loads(out.read_text())["turns_completed"] == 12
    quiet, shown_quietly = run_in_terminal([*args, "--quiet"], tmp_path, tty="stderr")
    assert quiet.returncode == 0 and "turns/s" not in shown_quietly


def test_the_loadtest_report_is_a_table_on_a_terminal(tmp_path: Path) -> None:
    args = ["loadtest", "--sessions", "2", "--turns", "1", "--tools-per-turn", "1"]
    done, shown = run_in_terminal(args, tmp_path, tty="stdout")
    assert done.returncode == 0, done.stderr
    assert any(frame in shown for frame in "┃│┏━"), shown
    assert "throughput" in shown and "turns/s" in shown and "OK (2/2 histories" in shown
