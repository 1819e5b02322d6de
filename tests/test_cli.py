"""The ``sessionhive`` command as a user runs it: a real process, stdin not a terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def sessionhive_command() -> list[str]:
    script = Path(sys.executable).with_name("sessionhive")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sessionhive.cli"]


def run(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sessionhive_command() + args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},  # no API keys: the scripted demo model
    )


def test_run_hello_with_nothing_configured(tmp_path: Path) -> None:
    done = run(["run", "hello"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "> hello" in out
    assert "needs confirmation" in out and "auto-approved" in out
    assert "< tool write_file [ok]" in out
    assert "Echo: hello" in out
    assert "turn done" in out
    assert (tmp_path / "sessionhive-demo.txt").read_text() == "hello\n"
    assert (tmp_path / "sessionhive.db").exists()


def test_run_continues_a_stored_session_and_prints_json(tmp_path: Path) -> None:
    first = run(["run", "one", "--session", "demo"], tmp_path)
    assert first.returncode == 0, first.stderr
    second = run(["run", "two", "--session", "demo", "--json"], tmp_path)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert events[0]["type"] == "TurnStart" and events[-1]["type"] == "TurnEnd"
    messages = events[-1]["result"]["messages"]
    assert [m["text"] for m in messages if m["role"] == "user"] == ["one", "two"]


def test_bad_store_is_a_clear_error(tmp_path: Path) -> None:
    done = run(["run", "hello", "--store", "ftp://nowhere"], tmp_path)
    assert done.returncode != 0
    assert "ftp" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"]])
def test_help(tmp_path: Path, argv: list[str]) -> None:
    done = run(argv, tmp_path)
    assert done.returncode == 0 and "sessionhive" in done.stdout


def test_sessions_list_show_export_delete(tmp_path: Path) -> None:
    for session_id in ("alpha", "beta"):
        assert run(["run", f"hi {session_id}", "--session", session_id], tmp_path).returncode == 0
    listing = run(["sessions", "list"], tmp_path)
    assert listing.stdout.split() == ["alpha", "beta"]
    long = run(["sessions", "list", "--long", "--json"], tmp_path)
    rows = json.loads(long.stdout)
    assert [(r["id"], r["messages"]) for r in rows] == [("alpha", 4), ("beta", 4)]
    show = run(["sessions", "show", "alpha"], tmp_path)
    assert "[user] hi alpha" in show.stdout and "write_file" in show.stdout
    export = run(["sessions", "export", "beta", "-o", "beta.json"], tmp_path)
    assert export.returncode == 0
    snapshot = json.loads((tmp_path / "beta.json").read_text())
    assert snapshot["session_id"] == "beta" and len(snapshot["messages"]) == 4
    missing = run(["sessions", "delete", "gamma"], tmp_path)
    assert missing.returncode != 0 and "gamma" in missing.stderr
    assert run(["sessions", "delete", "alpha"], tmp_path).returncode == 0
    assert run(["sessions", "list"], tmp_path).stdout.split() == ["beta"]
