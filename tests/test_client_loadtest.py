"""`sessionhive loadtest --target URL` drives a running `sessionhive serve` over HTTP, same checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_serve_drain import SERVE, TOKEN, start_serve

LOADTEST = [sys.executable, "-c", SERVE, "loadtest", "--json", "-", "-q", "--concurrency", "4", "--target"]


@pytest.mark.slow
def test_loadtest_against_a_running_service_verifies_every_history(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'served.db'}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    process, url, output = start_serve(store, workspace, "--loadtest-script", "2:0.5")
    try:
        run = subprocess.run(
            [
                *LOADTEST,
                url,
                "--sessions",
                "6",
                "--turns",
                "2",
                "--tools-per-turn",
                "2",
                "--confirm-rate",
                ".5",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "SESSIONHIVE_TOKEN": TOKEN},
            timeout=240,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["turns_completed"] == 12 and report["turns_failed"] == 0
        assert report["confirmations"] == 12  # half of the 24 tool calls, approved over HTTP
        assert report["verification"]["ok"] is True
        assert report["verification"]["method"] == "fresh Hive on the same store"
        assert report["rows_written"]["messages"] > 0  # read from the service's /metrics

        # The wrong script on the service: the verification says so instead of passing.
        mismatched = subprocess.run(
            [*LOADTEST, url, "--sessions", "2", "--turns", "1", "--tools-per-turn", "3"],
            capture_output=True,
            text=True,
            env={**os.environ, "SESSIONHIVE_TOKEN": TOKEN},
            timeout=240,
        )
        assert mismatched.returncode == 1
        assert json.loads(mismatched.stdout)["verification"]["ok"] is False
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(output)
