"""Every subcommand whose reader goes away (``| head -1``) stops quietly: no traceback, nothing on stderr."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_cli import clean_env, run, sessionhive_command

COMMANDS = [
    ["--help"],
    ["--version"],
    ["run", "hello"],
    ["run", "hello", "--json"],
    ["sessions", "list"],
    ["sessions", "list", "-l"],
    ["sessions", "list", "-l", "--json"],
    ["sessions", "show", "seed"],
    ["sessions", "export"],
    ["sessions", "export", "seed"],
    ["sessions", "delete", "doomed"],
    ["loadtest", "--sessions", "2", "--turns", "1", "--tools-per-turn", "1"],
    ["loadtest", "--sessions", "2", "--turns", "1", "--json", "-"],
    ["serve", "--help"],
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose store holds two sessions: 'seed' and 'doomed'."""
    folder = tmp_path_factory.mktemp("pipes")
    for session_id in ("seed", "doomed"):
        done = run(["run", "hi", "--session", session_id], folder)
        assert done.returncode == 0, done.stderr
    return folder


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_closed_stdout_ends_quietly(workdir: Path, argv: list[str]) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first line: every write fails with EPIPE
    try:
        done = subprocess.run(
            sessionhive_command() + argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=clean_env(workdir),
        )
    finally:
        os.close(writer)
    assert "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipe" not in done.stderr and "Exception ignored" not in done.stderr
    if "-" not in argv:  # with --json -, the human summary goes to stderr by design
        assert done.stderr == "", done.stderr
    assert done.returncode in (0, 1, 141), done.returncode  # 141 = 128 + SIGPIPE, as the shell reports
