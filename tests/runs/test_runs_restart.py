"""Runs across a ``kill -9``: an acknowledged run and its key survive, event ids keep growing.

A child process runs a Hive on a real SQLite file, starts runs on a durable
session, prints what was acknowledged and is killed with SIGKILL while its
turn waits for approval; the test then opens the same file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sessionhive import (
    ConfirmationRequired,
    EventsDropped,
    Hive,
    ScriptedLlm,
    SessionConfig,
    TurnError,
    TurnInterrupted,
)
from tests.runs.runs_helpers import CountingScript, assert_valid_history

CHILD = textwrap.dedent(
    """
    import json, sys, threading
    from sessionhive import ConfirmationRequired, EventsDropped, Hive, ScriptedLlm, SessionConfig
    from tests.conftest import tool_loop_script
    store, workspace, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
    hive = Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace)
    hive.create_session("s", SessionConfig(durability="durable", resume_interrupted=resume))
    hive.generate("s", "look zero")
    waiting = hive.start_run("s", "write it", idempotency_key="waiting")
    seen = []
    for event in hive.run_events(waiting.run_id):
        seen.append(event.event_id)
        if isinstance(event, ConfirmationRequired):
            break
    queued = hive.start_run("s", "look later", idempotency_key="queued")
    acked = {"waiting": waiting.run_id, "queued": queued.run_id, "max_event_id": max(seen)}
    print(json.dumps(acked), flush=True)
    threading.Event().wait()
    """
)


def run_child_and_kill_it(store: str, workspace: Path, mode: str, code: str = CHILD) -> dict[str, Any]:
    """Run ``code`` (a Hive on ``store``) until it prints what it acknowledged, then SIGKILL it."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", code, store, str(workspace), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        line = child.stdout.readline()
        if not line:
            child.wait()
            pytest.fail(f"the child did not start: {child.stderr.read().decode()}")
        acknowledged: dict[str, Any] = json.loads(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
    return acknowledged


def test_acknowledged_runs_and_keys_survive_kill_9(tmp_path: Path, workspace: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    acknowledged = run_child_and_kill_it(store, workspace, "close")
    script = CountingScript()
    with Hive.start(store, llm=ScriptedLlm(script), workspace=workspace) as hive:
        waiting, queued = hive.get_run(acknowledged["waiting"]), hive.get_run(acknowledged["queued"])
        assert waiting.status == "interrupted" and waiting.idempotency_key == "waiting"
        assert (
            queued.status == "interrupted"
            and queued.error is not None
            and "before it started" in queued.error
        )
        # The retries after the crash: the same runs, no model call.
        assert hive.start_run("s", "write it", idempotency_key="waiting").run_id == waiting.run_id
        assert hive.start_run("s", "look later", idempotency_key="queued").run_id == queued.run_id
        assert script.calls == []
        # Event ids never repeat one the dead process gave out; its events are gone, and a replay says so.
        with hive.subscribe("s", after=0) as events:
            dropped, interrupted = events.get(timeout=5), events.get(timeout=5)
        assert isinstance(dropped, EventsDropped) and dropped.count >= acknowledged["max_event_id"]
        assert isinstance(interrupted, TurnInterrupted) and interrupted.run_id == waiting.run_id
        assert interrupted.event_id > acknowledged["max_event_id"]
        fresh = list(hive.generate_streaming("s", "look again"))
        assert min(e.event_id for e in fresh) > interrupted.event_id
        for run in (waiting, queued):
            replayed = list(hive.run_events(run.run_id))
            ids = [e.event_id for e in replayed if not isinstance(e, EventsDropped)]
            assert ids == sorted(set(ids)) and ids[-1] == run.last_event_id
            assert isinstance(replayed[-1], TurnError) and replayed[-1].kind == "interrupted"
        assert_valid_history(hive.history("s"))


def test_a_resumed_turn_keeps_its_run_id(tmp_path: Path, workspace: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    acknowledged = run_child_and_kill_it(store, workspace, "resume")
    with Hive.start(store, llm=ScriptedLlm(CountingScript()), workspace=workspace) as hive:
        hive.restore_session_by_id("s")
        run_id = acknowledged["waiting"]
        events = hive.run_events(run_id, after=acknowledged["max_event_id"])
        asked = next(e for e in events if isinstance(e, ConfirmationRequired))
        assert asked.event_id > acknowledged["max_event_id"] and asked.run_id == run_id
        assert hive.get_run(run_id).status == "waiting"
        hive.confirm_tool("s", asked.tool_id, True)
        assert hive.wait_run(run_id, timeout=30).status == "completed"
        assert hive.get_run(acknowledged["queued"]).status == "interrupted"
        assert_valid_history(hive.history("s"))


def test_a_durable_start_run_answers_after_its_record_committed(tmp_path: Path, workspace: Path) -> None:
    """What start_run acknowledged is in the file itself: a second Hive on it (no flush, no stop) finds it."""
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with Hive.start(store, llm=ScriptedLlm(CountingScript()), workspace=workspace) as hive:
        hive.create_session("s", SessionConfig(durability="durable"))
        stream = hive.generate_streaming("s", "write it")
        next(e for e in stream if isinstance(e, ConfirmationRequired))
        run = hive.start_run("s", "look later", idempotency_key="k")
        with Hive.start(store, workspace=workspace, shared_store=True) as reader:
            assert [r.run_id for r in reader.list_runs("s")] == [stream.run_id, run.run_id]
