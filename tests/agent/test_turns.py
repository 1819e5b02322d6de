"""Agent turns: tools, confirmations, cancellation, queueing, pause, failures."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import pytest

from sessionhive import (
    AgentEvent,
    ConfirmationNotFound,
    ConfirmationPolicy,
    ConfirmationRequired,
    ConfirmationResolved,
    Hive,
    Message,
    PermissionPolicy,
    PermissionRule,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionPaused,
    SessionResumed,
    TextDelta,
    ToolCall,
    ToolEnd,
    ToolStart,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnFailed,
    TurnStart,
)


def assert_valid_history(messages: list[Message]) -> None:
    """Every tool call is answered right after its assistant message; no orphan results."""
    open_calls: list[str] = []
    for message in messages:
        if message.role == "tool":
            assert message.tool_call_id in open_calls, f"orphan tool result {message}"
            open_calls.remove(message.tool_call_id)
        else:
            assert not open_calls, f"tool calls {open_calls} left without a result"
            open_calls = [call.id for call in message.tool_calls]
    assert not open_calls, f"tool calls {open_calls} left without a result"


EventT = TypeVar("EventT", bound=AgentEvent)


def wait_for(stream_iter: Iterable[AgentEvent], kind: type[EventT]) -> EventT:
    for event in stream_iter:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"stream ended before a {kind.__name__}")


def test_generate_runs_the_tool_loop(hive: Hive, workspace: Path) -> None:
    (workspace / "notes.md").write_text("hi")
    hive.create_session("s")
    result = hive.generate("s", "look around")
    assert result.rounds == 2
    assert [call.name for call in result.tool_calls] == ["list_dir"]
    assert result.text.startswith("done:")
    history = hive.history("s")
    assert result.messages == history
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert "notes.md" in history[2].text
    usage = hive.context_usage("s")
    assert usage.percent == usage.used_tokens / usage.max_tokens
    assert usage == type(usage)(usage.used_tokens, usage.max_tokens, usage.percent)
    assert result.usage.total_tokens > 0
    assert hive.context_usage("s").used_tokens > 0
    assert_valid_history(history)


def test_streaming_events_in_order_and_result(hive: Hive) -> None:
    hive.create_session("s", SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False)))
    stream = hive.generate_streaming("s", "write me")
    kinds = [type(event) for event in stream]
    assert kinds[0] is TurnStart and kinds[-1] is TurnEnd
    assert TextDelta in kinds
    assert kinds.index(ToolStart) < kinds.index(ToolEnd)
    assert ConfirmationRequired not in kinds
    assert stream.result().text.startswith("done:")


def test_confirmation_approve_reject_and_unknown_id(hive: Hive, workspace: Path) -> None:
    hive.create_session("s")
    stream = hive.generate_streaming("s", "write approved")
    events = iter(stream)
    asked = wait_for(events, ConfirmationRequired)
    assert asked.tool_name == "write_file" and asked.arguments["path"] == "out.txt"
    assert hive.pending_confirmations("s") == [asked.tool_id]
    with pytest.raises(ConfirmationNotFound, match="nope"):
        hive.confirm_tool("s", "nope", True)
    assert hive.confirm_tool("s", asked.tool_id, True) is True
    resolved = wait_for(events, ConfirmationResolved)
    assert resolved.outcome == "approved"
    stream.result()
    assert (workspace / "out.txt").read_text() == "write approved"

    stream = hive.generate_streaming("s", "write rejected")
    events = iter(stream)
    asked = wait_for(events, ConfirmationRequired)
    hive.confirm_tool("s", asked.tool_id, False, "not today")
    result = stream.result()
    tool_message = hive.history("s")[-2]
    assert tool_message.is_error and "not today" in tool_message.text
    assert (workspace / "out.txt").read_text() == "write approved"  # untouched
    assert result.text.startswith("done:")
    with pytest.raises(ConfirmationNotFound):
        hive.confirm_tool("s", asked.tool_id, True)  # already answered


@pytest.mark.parametrize(("on_timeout", "written"), [("reject", False), ("approve", True)])
def test_confirmation_timeout_applies_the_policy(
    hive: Hive, workspace: Path, on_timeout: str, written: bool
) -> None:
    policy = ConfirmationPolicy(timeout_s=0.2, on_timeout=on_timeout)  # type: ignore[arg-type]
    hive.create_session("s", SessionConfig(confirmation_policy=policy))
    stream = hive.generate_streaming("s", "write later")
    outcomes = [e.outcome for e in stream if isinstance(e, ConfirmationResolved)]
    assert outcomes == ["timed_out"]
    stream.result()
    assert (workspace / "out.txt").exists() is written
    assert hive.pending_confirmations("s") == []


def test_control_calls_answer_while_a_turn_waits(hive: Hive) -> None:
    hive.create_session("s")
    stream = hive.generate_streaming("s", "write slowly")
    asked = wait_for(iter(stream), ConfirmationRequired)
    started = time.perf_counter()
    for _ in range(20):
        hive.history("s")
        hive.context_usage("s")
        hive.get_confirmation_policy("s")
    per_call = (time.perf_counter() - started) / 60
    assert per_call < 0.5  # a generous bound: a blocked mailbox would hit the 30 s confirmation timeout
    hive.confirm_tool("s", asked.tool_id, True)
    stream.result()


def test_cancel_stops_the_turn_and_keeps_a_valid_history(hive: Hive, workspace: Path) -> None:
    hive.create_session("s")
    assert hive.cancel_operation("s") is False  # nothing to cancel
    stream = hive.generate_streaming("s", "write never")
    events = iter(stream)
    wait_for(events, ConfirmationRequired)
    queued = hive.generate_streaming("s", "queued behind")
    assert hive.cancel_operation("s") is True
    rest = list(events)
    assert isinstance(rest[-1], TurnCancelled)
    assert any(isinstance(e, ConfirmationResolved) and e.outcome == "cancelled" for e in rest)
    with pytest.raises(TurnCancelled):
        stream.result()
    with pytest.raises(TurnCancelled):
        queued.result()
    history = hive.history("s")
    assert history[0] == Message.user("write never")
    assert_valid_history(history)
    assert not (workspace / "out.txt").exists()
    assert hive.generate("s", "look again").text.startswith("done:")  # still usable
    assert_valid_history(hive.history("s"))


def test_second_generate_waits_and_histories_never_interleave(hive: Hive) -> None:
    hive.create_session("s")
    first = hive.generate_streaming("s", "write first")
    asked = wait_for(iter(first), ConfirmationRequired)
    second = hive.generate_streaming("s", "look second")
    # Neither turn has finished: only the running one shows, marked in progress (issue 21).
    waiting = hive.history("s")
    assert [m.text for m in waiting if m.role == "user"] == ["write first"]
    assert all(m.in_progress for m in waiting)
    hive.confirm_tool("s", asked.tool_id, True)
    first.result()
    second.result()
    history = hive.history("s")
    assert [m.text for m in history if m.role == "user"] == ["write first", "look second"]
    assert len(history) == 8
    assert_valid_history(history)


def test_pause_refuses_and_resume_restores(hive: Hive) -> None:
    hive.create_session("s")
    with hive.subscribe("s") as events:
        assert hive.pause_session("s") is True
        assert hive.pause_session("s") is False
        with pytest.raises(SessionPaused, match="resume"):
            hive.generate("s", "look")
        with pytest.raises(SessionPaused):
            hive.generate_streaming("s", "look")
        assert hive.resume_session("s") is True
        assert hive.resume_session("s") is False
        assert isinstance(events.get(timeout=5), SessionPaused)
        assert isinstance(events.get(timeout=5), SessionResumed)
    hive.generate("s", "look")


def test_malformed_tool_arguments_become_a_tool_error_the_llm_sees(workspace: Path) -> None:
    seen: list[list[Message]] = []

    def script(messages: list[Message]) -> Reply:
        seen.append(messages)
        if messages[-1].role == "user":
            return Reply("oops", [ToolCall("read_file", '{"path": "x.txt"')])
        return Reply("recovered")

    with Hive.start(store="memory", llm=ScriptedLlm(script), workspace=workspace) as hive:
        hive.create_session("s")
        result = hive.generate("s", "go")
        assert result.text == "recovered"
        tool_message = seen[-1][-1]
        assert tool_message.role == "tool" and tool_message.is_error
        assert "JSON" in tool_message.text


def test_a_raising_user_tool_becomes_a_tool_error(workspace: Path) -> None:
    from sessionhive import ToolExecutor

    tools = ToolExecutor(workspace)

    def explode(reason: str) -> str:
        raise RuntimeError(f"kaboom: {reason}")

    schema = {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}
    tools.register("explode", explode, schema)
    llm = ScriptedLlm([Reply("try", [ToolCall("explode", {"reason": "test"})]), Reply("ok")])
    with Hive.start(store="memory", llm=llm, workspace=workspace, tools=tools) as hive:
        hive.create_session("s")
        hive.generate("s", "go")
        tool_message = hive.history("s")[2]
        assert tool_message.is_error and "kaboom: test" in tool_message.text


def test_max_tool_rounds_ends_with_turn_error_and_valid_history(workspace: Path) -> None:
    llm = ScriptedLlm([Reply("again", [ToolCall("list_dir", {})])])
    with Hive.start(store="memory", llm=llm, workspace=workspace) as hive:
        hive.create_session("s", SessionConfig(max_tool_rounds=3))
        stream = hive.generate_streaming("s", "loop forever")
        last = list(stream)[-1]
        assert isinstance(last, TurnError) and last.kind == "max_rounds"
        with pytest.raises(TurnFailed, match="max_tool_rounds=3"):
            stream.result()
        history = hive.history("s")
        assert len(history) == 1 + 3 * 2
        assert_valid_history(history)


def test_permission_policy_deny_wins_and_allow_skips_confirmation(hive: Hive, workspace: Path) -> None:
    rules = PermissionPolicy(
        (
            PermissionRule("allow", "write_file"),
            PermissionRule("deny", "write_file", "*secret*", argument="content"),
        )
    )
    hive.create_session("s", SessionConfig(permission_policy=rules))
    hive.generate("s", "write plain")  # allowed: no confirmation asked
    assert (workspace / "out.txt").read_text() == "write plain"
    hive.generate("s", "write secret stuff")
    assert hive.history("s")[-2].is_error
    assert (workspace / "out.txt").read_text() == "write plain"


def test_slow_subscriber_loses_events_but_never_stalls_the_session(workspace: Path) -> None:
    from sessionhive import EventsDropped

    llm = ScriptedLlm([Reply(" ".join(["word"] * 300))])
    with Hive.start(store="memory", llm=llm, workspace=workspace, subscriber_queue_size=10) as hive:
        hive.create_session("s")
        subscription = hive.subscribe("s")
        for _ in range(3):  # the subscriber reads nothing meanwhile: the turns still finish
            hive.generate_streaming("s", "talk").result(timeout=30)
        received = [subscription.get(timeout=5) for _ in range(11)]
        subscription.close()
        assert isinstance(received[0], TurnStart)
        assert all(isinstance(e, TextDelta) for e in received[1:10])
        lost = received[10]
        assert isinstance(lost, EventsDropped)
        assert lost.count == 3 * 302 - 10  # 3 turns of start + 300 deltas + end, 10 delivered
        dropped = hive.metrics.registry.get_sample_value("sessionhive_subscriber_events_dropped_total")
        assert dropped == lost.count


def test_events_are_json_serializable(hive: Hive) -> None:
    from sessionhive import event_to_dict

    hive.create_session("s", SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False)))
    for event in hive.generate_streaming("s", "write json"):
        encoded = json.dumps(event_to_dict(event))
        assert json.loads(encoded)["session_id"] == "s"


def test_a_call_timeout_leaves_the_work_running(hive: Hive) -> None:
    import asyncio

    from sessionhive import AsyncHive, CallTimeout

    hive.create_session("s")
    events = hive.subscribe("s")
    with pytest.raises(CallTimeout, match="may still finish"):
        hive.generate("s", "write slowly", timeout=0.2)  # waits for a confirmation nobody gives
    [tool_id] = hive.pending_confirmations("s")

    async def confirm_from_asyncio() -> None:
        async_hive = AsyncHive(hive)
        with pytest.raises(CallTimeout):
            await async_hive.generate("s", "look meanwhile", timeout=0.1)  # queued behind the first
        assert await async_hive.confirm_tool("s", tool_id, True)

    asyncio.run(confirm_from_asyncio())
    finished = 0
    while finished < 2:  # both turns run to their end although nobody awaits them
        finished += isinstance(events.get(timeout=30), TurnEnd)
    events.close()
    history = hive.history("s")
    assert [m.text for m in history if m.role == "user"] == ["write slowly", "look meanwhile"]
