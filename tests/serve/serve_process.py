"""A real ``sessionhive serve`` subprocess for tests, on a port the system picks (URL read from its log)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

SERVE = "import sys; from sessionhive.cli import main; sys.exit(main())"
#: The service token ``start_serve`` gives the process unless told another.
TOKEN = "drain-test-token-0123456789"


def spawn_serve(store: str, workspace: Path, *extra: str, token: str = TOKEN) -> subprocess.Popen[str]:
    """``sessionhive serve --port 0`` on ``store`` with ``token``; its log (stdout and stderr) is piped."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVE,
            "serve",
            "--store",
            store,
            "--port",
            "0",
            "--workspace",
            str(workspace),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SESSIONHIVE_TOKEN": token},
    )


def wait_listening(process: subprocess.Popen[str]) -> tuple[str, list[str]]:
    """The URL ``process`` listens on, and its log lines, which a thread goes on collecting."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
        if found:
            threading.Thread(target=_collect, args=(process.stdout, lines), daemon=True).start()
            return found.group(1), lines
    process.kill()
    raise AssertionError("serve did not start:\n" + "".join(lines))


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def start_serve(
    store: str, workspace: Path, *extra: str, token: str = TOKEN
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """:func:`spawn_serve`, once it listens: the process, its URL and its log lines so far (and to come)."""
    process = spawn_serve(store, workspace, *extra, token=token)
    url, lines = wait_listening(process)
    return process, url, lines
