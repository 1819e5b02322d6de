"""Approvals mean what they say: only True/False (or an awaited one) decide, and an answer fits one call only.

Issue 18, item 4. Every test runs a real Hive whose scripted model asks to
write a file; what the user notices is whether the file was written, what
``ConfirmationResolved`` says, and what ``confirm_tool`` raises.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive import (
    AgentEvent,
    ConfirmationNotFound,
    ConfirmationPolicy,
    ConfirmationRequired,
    ConfirmationResolved,
    Hive,
    InvalidConfig,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    event_to_dict,
)
from sessionhive.client import RemoteHive
from sessionhive.serve import ServerThread, serve_app
from tests.conftest import tool_loop_script

TOKEN = "approvals-test-token-0123456789"


@pytest.fixture
def hive(workspace: Path) -> Iterator[Hive]:
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as started:
        yield started


def _turn(hive: Hive, session_id: str, callback: Any) -> tuple[ConfirmationResolved, Message]:
    """Run a ``write`` turn answered by ``callback``: its ConfirmationResolved and the tool result."""
    stream = hive.generate_streaming(session_id, "write it", on_confirmation=callback)
    resolved = [event for event in stream if isinstance(event, ConfirmationResolved)]
    stream.result(timeout=30)
    assert len(resolved) == 1, resolved
    tool_result = next(m for m in reversed(hive.history(session_id)) if m.role == "tool")
    return resolved[0], tool_result


JUNK_ANSWERS: list[object] = ["no", "yes", None, 0, 1, [True], (1, "fine"), (True, 42), (True,)]


@pytest.mark.parametrize("answer", JUNK_ANSWERS, ids=[repr(a) for a in JUNK_ANSWERS])
def test_an_answer_that_is_not_a_bool_rejects_and_says_so(
    hive: Hive, workspace: Path, answer: object
) -> None:
    hive.create_session("s")
    resolved, tool_result = _turn(hive, "s", lambda _event: answer)
    assert not (workspace / "out.txt").exists()
    assert (resolved.approved, resolved.outcome) == (False, "rejected")
    assert resolved.reason is not None and "on_confirmation returned" in resolved.reason
    assert repr(answer)[:20] in resolved.reason
    assert tool_result.is_error and resolved.reason in tool_result.text  # the model learns why


async def _false(_event: ConfirmationRequired) -> bool:
    await asyncio.sleep(0)
    return False


async def _true(_event: ConfirmationRequired) -> bool:
    await asyncio.sleep(0)
    return True


async def _no_with_reason(_event: ConfirmationRequired) -> tuple[bool, str]:
    return (False, "not on Fridays")


CALLBACKS: dict[str, tuple[Any, bool]] = {
    "coroutine function -> False": (_false, False),
    "coroutine function -> True": (_true, True),
    "plain function returning a coroutine -> False": (lambda event: _false(event), False),
    "plain function returning a coroutine -> True": (lambda event: _true(event), True),
}


@pytest.mark.parametrize("name", list(CALLBACKS))
def test_an_awaitable_answer_is_awaited(hive: Hive, workspace: Path, name: str) -> None:
    callback, approves = CALLBACKS[name]
    hive.create_session("s")
    resolved, _ = _turn(hive, "s", callback)
    assert resolved.approved is approves
    assert resolved.outcome == ("approved" if approves else "rejected")
    assert (workspace / "out.txt").exists() is approves


def test_a_reason_given_with_a_rejection_reaches_the_event_and_the_model(hive: Hive, workspace: Path) -> None:
    hive.create_session("plain")
    resolved, tool_result = _turn(hive, "plain", lambda _event: (False, "not on Fridays"))
    assert (resolved.outcome, resolved.reason) == ("rejected", "not on Fridays")
    assert "not on Fridays" in tool_result.text
    hive.create_session("awaited")
    resolved, _ = _turn(hive, "awaited", _no_with_reason)
    assert (resolved.outcome, resolved.reason) == ("rejected", "not on Fridays")
    assert not (workspace / "out.txt").exists()


def test_an_awaitable_that_outlasts_the_timeout_is_cancelled_and_the_policy_rejects(
    hive: Hive, workspace: Path
) -> None:
    cancelled = threading.Event()

    async def never_answers(_event: ConfirmationRequired) -> bool:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    hive.create_session("s", SessionConfig(confirmation_policy=ConfirmationPolicy(timeout_s=0.5)))
    resolved, tool_result = _turn(hive, "s", never_answers)
    assert (resolved.approved, resolved.outcome) == (False, "timed_out")
    assert "no confirmation within 0.5s" in tool_result.text
    assert not (workspace / "out.txt").exists()
    assert cancelled.wait(10), "the callback's awaitable was left running after the timeout"


def test_a_late_or_repeated_answer_never_decides_another_call(hive: Hive, workspace: Path) -> None:
    hive.create_session("s")
    first = hive.generate_streaming("s", "write one")
    first_id = ""
    for event in first:
        if isinstance(event, ConfirmationRequired):
            first_id = event.tool_id
            assert hive.confirm_tool("s", first_id, False, "no")
            with pytest.raises(ConfirmationNotFound):  # a double click
                hive.confirm_tool("s", first_id, True)
    first.result(timeout=30)

    second = hive.generate_streaming("s", "write two")
    for event in second:
        if isinstance(event, ConfirmationRequired):
            assert event.tool_id != first_id
            with pytest.raises(ConfirmationNotFound):  # the first turn's approval, sent again late
                hive.confirm_tool("s", first_id, True)
            assert hive.pending_confirmations("s") == [event.tool_id]  # still waiting for its own answer
            hive.confirm_tool("s", event.tool_id, False, "checked")
    second.result(timeout=30)
    assert not (workspace / "out.txt").exists()
    results = [m.text for m in hive.history("s") if m.role == "tool"]
    assert results == [
        "error: the user rejected this write_file call: no",
        "error: the user rejected this write_file call: checked",
    ]


def _two_listings(messages: list[Message]) -> Reply:
    """Two unnamed calls per answer, then a text answer: ids left to the loop."""
    if messages[-1].role == "tool":
        return Reply("listed")
    return Reply("looking", [ToolCall("list_dir", {"path": "."}), ToolCall("list_dir", {"path": "."})])


def test_tool_call_ids_are_unique_across_turns_and_restarts(tmp_path: Path, workspace: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    for _ in range(2):  # a second process picks up the same history
        with Hive.start(store=store, llm=ScriptedLlm(_two_listings), workspace=workspace) as hive:
            hive.get_or_create_session("s")
            for turn in range(3):
                hive.generate("s", f"look {turn}")
            history = hive.history("s")
    ids = [call.id for m in history if m.role == "assistant" for call in m.tool_calls]
    assert len(ids) == 12 and len(set(ids)) == 12, ids
    assert all(i.startswith("call_") for i in ids)
    answered = [m.tool_call_id for m in history if m.role == "tool"]
    assert answered == ids  # each result still answers its own call


def test_a_provider_given_id_is_kept() -> None:
    def named(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply("listed")
        return Reply("looking", [ToolCall("list_dir", {"path": "."}, "toolu_01AbC")])

    with Hive.start(store="memory", llm=ScriptedLlm(named)) as other:
        other.create_session("s")
        other.generate("s", "look")
        calls = [call.id for m in other.history("s") for call in m.tool_calls]
    assert calls == ["toolu_01AbC"]


def test_decided_by_names_who_answered(hive: Hive) -> None:
    hive.create_session("s")
    events: list[AgentEvent] = []
    stream = hive.generate_streaming("s", "write it")
    for event in stream:
        events.append(event)
        if isinstance(event, ConfirmationRequired):
            with pytest.raises(InvalidConfig, match="approved must be True or False"):
                hive.confirm_tool("s", event.tool_id, "no")  # type: ignore[arg-type]
            hive.confirm_tool("s", event.tool_id, True, "looks fine", decided_by="alice")
    stream.result(timeout=30)
    resolved = next(e for e in events if isinstance(e, ConfirmationResolved))
    assert (resolved.approved, resolved.decided_by) == (True, "alice")
    assert event_to_dict(resolved)["decided_by"] == "alice"


def test_a_remote_callback_is_read_the_same_way(tmp_path: Path, workspace: Path) -> None:
    with (
        Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        RemoteHive(server.url, token=TOKEN) as remote,
    ):
        remote.create_session("junk")
        stream = remote.generate_streaming("junk", "write it", on_confirmation=lambda _event: "no")
        resolved = [e for e in stream if isinstance(e, ConfirmationResolved)]
        stream.result()
        assert [(e.approved, "on_confirmation returned 'no'" in (e.reason or "")) for e in resolved] == [
            (False, True)
        ]
        remote.create_session("coroutine")
        stream = remote.generate_streaming("coroutine", "write it", on_confirmation=lambda e: _false(e))
        resolved = [e for e in stream if isinstance(e, ConfirmationResolved)]
        stream.result()
        assert [(e.approved, e.outcome) for e in resolved] == [(False, "rejected")]
        assert not (workspace / "out.txt").exists()
        with pytest.raises(ConfirmationNotFound):
            remote.confirm_tool("coroutine", "call_0_1", True)
