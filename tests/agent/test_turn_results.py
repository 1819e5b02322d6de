"""What a turn hands back: its own messages, confirmations answered by a callback, and clear failures."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sessionhive import (
    AsyncHive,
    ConfirmationPolicy,
    ConfirmationRequired,
    Hive,
    LlmConfig,
    LlmNotConfigured,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionhiveError,
    ToolCall,
    ToolExecutor,
    TurnCancelled,
    TurnEnd,
    event_to_dict,
)
from sessionhive.agent.recovery import history_problems
from tests.conftest import tool_loop_script

#: The three files the confirming script asks to write, and how the callback answers each.
APPROVED, REJECTED, RAISING = "approved.txt", "rejected.txt", "raising.txt"


def three_writes(messages: list[Message]) -> Reply:
    """Asks to write three files in one answer, then sums up what the tools said."""
    if messages[-1].role == "tool":
        results = [m.text for m in messages if m.role == "tool"][-3:]
        return Reply("summary: " + " | ".join(results))
    return Reply(
        "writing three files",
        [ToolCall("write_file", {"path": name, "content": name}) for name in (APPROVED, REJECTED, RAISING)],
    )


def answer(event: ConfirmationRequired) -> bool | tuple[bool, str]:
    path = event.arguments["path"]
    if path == APPROVED:
        return True
    if path == REJECTED:
        return False, "not this one"
    raise RuntimeError("the reviewer's terminal went away")


async def answer_async(event: ConfirmationRequired) -> bool | tuple[bool, str]:
    await asyncio.sleep(0)  # a real suspension point, as asking a human over the network would be
    return answer(event)


def assert_confirmations_answered(workspace: Path, text: str, history: list[Message]) -> None:
    assert (workspace / APPROVED).read_text() == APPROVED
    assert not (workspace / REJECTED).exists()
    assert not (workspace / RAISING).exists()
    tool_results = {m.tool_call_id: m.text for m in history if m.role == "tool"}
    calls = {
        c.arguments["path"]: c.id for m in history for c in m.tool_calls if isinstance(c.arguments, dict)
    }
    assert "rejected" in tool_results[calls[REJECTED]] and "not this one" in tool_results[calls[REJECTED]]
    assert "the reviewer's terminal went away" in tool_results[calls[RAISING]]
    assert "rejected" in tool_results[calls[RAISING]]
    assert text.startswith("summary:")  # the turn went on after the failing callback
    assert history_problems(history) == []


def test_turn_end_and_the_result_carry_only_the_turns_own_messages(workspace: Path) -> None:
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("s")
        for turn in range(29):
            hive.generate("s", f"look {turn}")
        before = hive.history("s")
        assert len(before) == 29 * 4

        stream = hive.generate_streaming("s", "look 29")
        ends = [event for event in stream if isinstance(event, TurnEnd)]
        result = stream.result()
        after = hive.history("s")
        own = after[len(before) :]
        assert own[0].text == "look 29" and len(own) == 4
        assert len(ends) == 1
        assert ends[0].result.messages == own
        assert result.messages == own
        # The event a stream subscriber serializes stays the size of one turn.
        with_whole_history = TurnEnd("s", replace(result, messages=after))
        whole_size = len(json.dumps(event_to_dict(with_whole_history)))
        assert len(json.dumps(event_to_dict(ends[0]))) < whole_size / 10

        result = hive.generate("s", "look 30")
        assert result.messages == hive.history("s")[len(after) :]
        assert len(result.messages) == 4


def test_on_confirmation_answers_a_sync_turn(workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Hive.start(store="memory", llm=ScriptedLlm(three_writes), workspace=workspace) as hive:
        hive.create_session("s")
        result = hive.generate("s", "write", on_confirmation=answer, timeout=30)
        assert_confirmations_answered(workspace, result.text, hive.history("s"))
    assert not [r for r in caplog.records if "waits for confirmation" in r.getMessage()]


@pytest.mark.parametrize("callback", [answer, answer_async], ids=["plain", "coroutine"])
def test_on_confirmation_answers_an_async_turn(workspace: Path, callback: Any) -> None:
    async def main() -> None:
        async with AsyncHive.start(
            store="memory", llm=ScriptedLlm(three_writes), workspace=workspace
        ) as hive:
            await hive.create_session("s")
            result = await hive.generate("s", "write", on_confirmation=callback, timeout=30)
            assert_confirmations_answered(workspace, result.text, await hive.history("s"))

    asyncio.run(main())


def test_a_confirmation_nobody_can_answer_is_logged(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = ConfirmationPolicy(timeout_s=1.0)
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("lonely", SessionConfig(confirmation_policy=policy))
        with caplog.at_level(logging.WARNING):
            result = hive.generate("lonely", "write it")
    assert "rejected" in result.messages[-2].text  # resolved by the policy at its timeout
    warnings = [r.getMessage() for r in caplog.records if "waits for confirmation" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "lonely" in warnings[0] and "write_file" in warnings[0] and "1 s" in warnings[0]


def test_get_or_create_session_returns_the_id_and_keeps_the_first_config(
    tmp_path: Path, workspace: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    first = SessionConfig(confirmation_policy=ConfirmationPolicy(timeout_s=7.0))
    second = SessionConfig(confirmation_policy=ConfirmationPolicy(timeout_s=9.0))
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        assert hive.get_or_create_session("s", first) == "s"
        hive.generate("s", "look")
        assert hive.get_or_create_session("s", second) == "s"
        assert hive.get_confirmation_policy("s").timeout_s == 7.0
        assert len(hive.history("s")) == 4
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        # Only in the store now (not live): still found, still not overwritten.
        assert hive.live_session_count() == 0
        assert hive.get_or_create_session("s", second) == "s"
        assert hive.get_confirmation_policy("s").timeout_s == 7.0
        assert len(hive.history("s")) == 4
        assert hive.session_count() == 1


def test_a_restored_session_whose_model_cannot_be_built_fails_its_turns(
    tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    model = LlmConfig("openai", "gpt-4o-mini", api_key="sk-test-only-in-memory")
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("s")
        hive.configure("s", model_config=model)
        hive.create_session("default-model")
    assert b"sk-test-only-in-memory" not in (tmp_path / "hive.db").read_bytes()

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        for _ in range(2):
            with pytest.raises(LlmNotConfigured, match=r"gpt-4o-mini.*OPENAI_API_KEY") as failed:
                hive.generate("s", "look")
            assert failed.value.session_id == "s"
        with pytest.raises(LlmNotConfigured, match="gpt-4o-mini"):
            hive.generate_streaming("s", "look").result()
        configured = hive.get_llm_for_session("s")
        assert configured is not None and (configured.provider, configured.model) == ("openai", "gpt-4o-mini")
        assert hive.history("s") == []  # never answered by the Hive's scripted default
        # A session without a model of its own still uses the Hive's default.
        assert hive.generate("default-model", "look").text.startswith("done:")


def test_failed_streaming_turns_leave_no_unretrieved_future(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_model(messages: list[Message]) -> Reply:
        raise RuntimeError("the model is down")

    async def main() -> None:
        async with AsyncHive.start(
            store="memory", llm=ScriptedLlm(broken_model), workspace=workspace
        ) as hive:
            await hive.create_session("s")
            for n in range(10):
                stream = await hive.generate_streaming("s", f"turn {n}")
                events = [event async for event in stream]
                assert events, "a failed turn still streams its events"
                with pytest.raises(SessionhiveError, match="the model is down"):
                    await stream.result()
            for n in range(5):  # and the non-streaming path
                with pytest.raises(SessionhiveError, match="the model is down"):
                    await hive.generate("s", f"plain {n}")

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    never_retrieved = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert never_retrieved == []


@pytest.mark.parametrize("interruption", ["cancel_operation", "stop"])
def test_a_tool_running_when_its_turn_ends_is_not_said_to_have_not_run(
    tmp_path: Path, workspace: Path, interruption: str
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow_side_effect() -> str:
        started.set()
        (workspace / "effect.txt").write_text("it happened")
        release.wait(30)
        return "finished"

    def call_it(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply("done")
        return Reply("calling", [ToolCall("slow_side_effect", {})])

    executor = ToolExecutor(workspace)
    executor.register("slow_side_effect", slow_side_effect, description="has an effect, then waits")
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    try:
        hive = Hive.start(store=store, llm=ScriptedLlm(call_it), workspace=workspace, tools=executor)
        hive.create_session("s")
        stream = hive.generate_streaming("s", "go")
        assert started.wait(30)
        if interruption == "cancel_operation":
            hive.cancel_operation("s")
        hive.stop()
        with pytest.raises(TurnCancelled):
            stream.result(10)
    finally:
        release.set()
    assert (workspace / "effect.txt").exists()  # the tool ran
    with Hive.start(store=store, llm=ScriptedLlm(call_it), workspace=workspace) as hive:
        results = [m.text for m in hive.history("s") if m.role == "tool"]
    assert len(results) == 1
    assert "before this tool call ran" not in results[0], results[0]


def test_a_turn_ended_by_stop_says_the_hive_stopped(workspace: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def waits(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply("done")
        return Reply("calling", [ToolCall("blocks", {})])

    def blocks() -> str:
        started.set()
        release.wait(30)
        return "released"

    executor = ToolExecutor(workspace)
    executor.register("blocks", blocks, description="waits to be released")
    try:
        hive = Hive.start(store="memory", llm=ScriptedLlm(waits), workspace=workspace, tools=executor)
        hive.create_session("s")
        stream = hive.generate_streaming("s", "go")
        assert started.wait(30)
        hive.stop()
        with pytest.raises(TurnCancelled) as cancelled:
            stream.result(10)
    finally:
        release.set()
    assert "cancel_operation" not in str(cancelled.value)
    assert "stop" in str(cancelled.value)
