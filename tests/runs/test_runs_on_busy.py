"""``on_busy``: a second turn while the first waits for approval; every policy leaves a valid history."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionhive import (
    ConfirmationRequired,
    Hive,
    ScriptedLlm,
    SessionBusy,
    SessionConfig,
)
from tests.runs.runs_helpers import CountingScript, assert_valid_history


def _waiting_turn(hive: Hive) -> tuple[str, str]:
    """Start a turn that waits for approval of its write_file call: (its run id, the call's id)."""
    stream = hive.generate_streaming("s", "write first")
    asked = next(e for e in stream if isinstance(e, ConfirmationRequired))
    return stream.run_id, asked.tool_id


def test_reject_refuses_and_leaves_the_running_turn_alone(hive: Hive) -> None:
    hive.create_session("s")
    first, tool_id = _waiting_turn(hive)
    with pytest.raises(SessionBusy):
        hive.generate("s", "look second", on_busy="reject")
    with pytest.raises(SessionBusy):
        hive.start_run("s", "look second", on_busy="reject")
    assert [run.run_id for run in hive.list_runs("s")] == [first]
    hive.confirm_tool("s", tool_id, True)
    assert hive.wait_run(first, timeout=30).status == "completed"
    assert [m.text for m in hive.history("s") if m.role == "user"] == ["write first"]
    assert_valid_history(hive.history("s"))


def test_enqueue_waits_for_the_running_turn(hive: Hive) -> None:
    hive.create_session("s")
    first, tool_id = _waiting_turn(hive)
    second = hive.start_run("s", "look second")
    assert second.status == "queued"
    hive.confirm_tool("s", tool_id, True)
    assert hive.wait_run(second.run_id, timeout=30).status == "completed"
    assert hive.get_run(first).status == "completed"
    assert [m.text for m in hive.history("s") if m.role == "user"] == ["write first", "look second"]
    assert_valid_history(hive.history("s"))


def test_interrupt_cancels_the_running_turn_keeping_its_messages(hive: Hive) -> None:
    hive.create_session("s")
    first, _ = _waiting_turn(hive)
    result = hive.generate("s", "look second", on_busy="interrupt", timeout=30)
    assert result.text.startswith("done:")
    cancelled = hive.get_run(first)
    assert cancelled.status == "cancelled" and cancelled.error is not None and "interrupt" in cancelled.error
    history = hive.history("s")
    assert [m.text for m in history if m.role == "user"] == ["write first", "look second"]
    assert not any(m.in_progress for m in history)
    assert_valid_history(history)
    # The write_file call was never approved: its one result says so.
    [refused] = [m for m in history if m.role == "tool" and m.is_error]
    assert refused.tool_call_id is not None


def test_rollback_removes_the_running_turn_from_the_history_and_the_store(
    tmp_path: Path, workspace: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    script = CountingScript()
    with Hive.start(store, llm=ScriptedLlm(script), workspace=workspace) as hive:
        hive.create_session("s", SessionConfig(durability="durable"))
        hive.generate("s", "look zero")
        first, _ = _waiting_turn(hive)  # its prompt and tool call are journaled (stored) by now
        second = hive.start_run("s", "look second", on_busy="rollback")
        assert hive.wait_run(second.run_id, timeout=30).status == "completed"
        rolled = hive.get_run(first)
        assert rolled.status == "cancelled" and rolled.error is not None and "rolled back" in rolled.error
        history = hive.history("s")
        assert [m.text for m in history if m.role == "user"] == ["look zero", "look second"]
        assert "write first" not in str(history)
        assert_valid_history(history)
    with Hive.start(store, llm=ScriptedLlm(script), workspace=workspace) as hive:
        stored = hive.history("s")
        assert [m.text for m in stored if m.role == "user"] == ["look zero", "look second"]
        assert_valid_history(stored)
