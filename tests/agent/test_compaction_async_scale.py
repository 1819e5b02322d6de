"""Compaction, the asyncio facade, and many sessions at once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from sessionhive import (
    AgentEvent,
    AsyncHive,
    ConfirmationPolicy,
    ContextCompacted,
    Hive,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    TurnEnd,
    TurnStream,
)
from sessionhive.agent import compaction
from tests.agent.test_turns import assert_valid_history
from tests.conftest import tool_loop_script

NO_CONFIRM = ConfirmationPolicy(enabled=False)


def fill(hive: Hive, session_id: str, turns: int) -> None:
    for n in range(turns):
        hive.generate(session_id, f"look {n}")


def test_compact_with_llm_summarises_the_middle(hive: Hive) -> None:
    hive.create_session("s")
    fill(hive, "s", 10)  # 40 messages: user, assistant+call, tool, assistant
    before = hive.history("s")
    with hive.subscribe("s") as events:
        hive.compact("s")
        compacted = events.get(timeout=5)
    after = hive.history("s")
    assert isinstance(compacted, ContextCompacted) and compacted.trigger == "manual"
    assert compacted.before_messages == 40 and compacted.after_messages == len(after)
    summary_at = next(i for i, m in enumerate(after) if m.text.startswith(compaction.SUMMARY_PREFIX))
    assert summary_at == 3  # the head keeps the first call together with its result
    assert after[:summary_at] == before[:summary_at]
    tail = after[summary_at + 1 :]
    assert tail == before[len(before) - len(tail) :]
    assert 20 <= len(tail) <= 21
    assert_valid_history(after)
    hive.generate("s", "look after")  # the compacted history is usable


def test_compact_below_thirty_messages_changes_nothing(hive: Hive) -> None:
    hive.create_session("s")
    fill(hive, "s", 3)
    before = hive.history("s")
    hive.compact("s")
    assert hive.history("s") == before


def test_compact_without_llm_keeps_the_head_and_the_last_twenty_whole(
    tmp_path: Path, workspace: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("s")
        fill(hive, "s", 10)
        before = hive.history("s")
    with Hive.start(store=store, workspace=workspace) as hive:  # no LLM at all now
        assert hive.get_llm_for_session("s") is None
        hive.compact("s")
        after = hive.history("s")
    # The same rules as with an LLM: the first call with its result, a note for the middle, the tail whole.
    assert after[:3] == before[:3]
    assert after[3].text.startswith(compaction.OMISSION_PREFIX)
    tail = after[4:]
    assert 20 <= len(tail) <= 21 and tail[0].role != "tool"
    assert tail == before[len(before) - len(tail) :]
    assert_valid_history(after)


def test_auto_compact_after_a_turn_past_the_threshold(workspace: Path) -> None:
    llm = ScriptedLlm([Reply("step", [ToolCall("list_dir", {})]), Reply("answer " * 50)])
    config = SessionConfig(auto_compact=True, auto_compact_threshold=0.5, max_context_length=400)
    with Hive.start(store="memory", llm=llm, workspace=workspace) as hive:
        hive.create_session("s", config)
        with hive.subscribe("s") as events:
            compactions = []
            for n in range(12):
                hive.generate("s", f"turn {n}")
            assert hive.maybe_auto_compact("s") in (True, False)
            while True:
                try:
                    event = events.get(timeout=0.5)
                except TimeoutError:
                    break
                if isinstance(event, ContextCompacted):
                    compactions.append(event)
        assert compactions and all(c.trigger == "auto" for c in compactions)
        assert len(hive.history("s")) < 48
        assert_valid_history(hive.history("s"))
        counter = hive.metrics.registry.get_sample_value("sessionhive_compactions_total", {"trigger": "auto"})
        assert counter == len(compactions)


def test_maybe_auto_compact_is_false_when_disabled(hive: Hive) -> None:
    hive.create_session("s")
    fill(hive, "s", 1)
    assert hive.maybe_auto_compact("s") is False


def test_compaction_never_splits_a_call_from_its_result() -> None:
    messages: list[Message] = [Message.user("start"), Message.assistant("", (ToolCall("a", {}, "h"),))]
    messages.append(Message.tool("h", "head result"))
    for n in range(14):
        messages.append(Message.assistant("", (ToolCall("a", {}, f"c{n}"),)))
        messages.append(Message.tool(f"c{n}", "r"))
    parts = compaction.split_for_summary(messages)
    assert parts is not None
    head, _middle, tail = parts
    assert [m.role for m in head] == ["user", "assistant", "tool"]
    assert tail[0].role == "assistant"
    assert_valid_history([*head, Message.user("summary"), *tail])


def test_async_hive_never_blocks_the_event_loop(workspace: Path) -> None:
    async def main() -> tuple[int, str, list[str]]:
        llm = ScriptedLlm([Reply("slow answer")], latency=2.0)
        async with AsyncHive.start(store="memory", llm=llm, workspace=workspace) as hive:
            await hive.create_session("s")
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            result = await hive.generate("s", "take your time")
            stream = await hive.generate_streaming("s", "again")
            kinds = [event.type async for event in stream]
            await stream.result()
            stop.set()
            await task
            history = await hive.history("s")
            assert len(history) == 4
            return ticks, result.text, kinds

    ticks, text, kinds = asyncio.run(main())
    assert text == "slow answer"
    assert kinds[0] == "TurnStart" and kinds[-1] == "TurnEnd"
    assert ticks > 150  # ~4 s of turns: a blocked loop would tick a handful of times


def test_async_confirmation_and_subscription(workspace: Path) -> None:
    async def main() -> list[str]:
        async with AsyncHive.start(
            store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace
        ) as hive:
            await hive.create_session("s")
            subscription = await hive.subscribe("s")
            stream = await hive.generate_streaming("s", "write async")
            kinds = []
            event: AgentEvent | None  # the stream yields events; the subscription may time out
            async for event in stream:
                kinds.append(event.type)
                if event.type == "ConfirmationRequired":
                    assert await hive.confirm_tool("s", event.tool_id, True)  # type: ignore[attr-defined]
            await stream.result()
            seen = []
            while True:
                event = await subscription.get(timeout=5)
                assert event is not None
                seen.append(event.type)
                if isinstance(event, TurnEnd):
                    break
            subscription.close()
            assert seen == kinds
            return kinds

    kinds = asyncio.run(main())
    assert "ConfirmationResolved" in kinds


def test_a_thousand_sessions_generate_concurrently_without_interleaving(workspace: Path) -> None:
    def script(messages: list[Message]) -> Reply:
        last = messages[-1]
        if last.role == "user":
            return Reply(f"calling for {last.text}", [ToolCall("list_dir", {"path": "."})])
        prompt = next(m.text for m in reversed(messages) if m.role == "user")
        return Reply(f"answer to {prompt}")

    sessions = [f"s{n:04d}" for n in range(1000)]
    turns = 3
    with Hive.start(store="memory", llm=ScriptedLlm(script), workspace=workspace) as hive:
        for session_id in sessions:
            hive.create_session(session_id, SessionConfig(confirmation_policy=NO_CONFIRM))
        errors: list[BaseException] = []

        def drive(chunk: list[str]) -> None:
            try:
                streams: list[TurnStream] = []
                for turn in range(turns):
                    streams.extend(
                        hive.generate_streaming(session_id, f"{session_id} turn {turn}")
                        for session_id in chunk
                    )
                for stream in streams:
                    stream.result(timeout=120)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(sessions[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[:3]
        for session_id in sessions:
            history = hive.history(session_id)
            expected = []
            for turn in range(turns):
                prompt = f"{session_id} turn {turn}"
                expected += [("user", prompt), ("assistant", f"calling for {prompt}"), ("tool", None)]
                expected += [("assistant", f"answer to {prompt}")]
            assert [(m.role, m.text if m.role != "tool" else None) for m in history] == expected
        completed = hive.metrics.registry.get_sample_value(
            "sessionhive_turns_total", {"outcome": "completed"}
        )
        assert completed == len(sessions) * turns


@pytest.mark.parametrize("count", [3])
def test_two_hives_in_one_process_do_not_collide(workspace: Path, count: int) -> None:
    with (
        Hive.start(store="memory", llm=ScriptedLlm([Reply("a")]), workspace=workspace) as one,
        Hive.start(store="memory", llm=ScriptedLlm([Reply("b")]), workspace=workspace) as two,
    ):
        for n in range(count):
            one.create_session(f"s{n}")
            one.generate(f"s{n}", "hi")
        two.create_session("s0")
        assert two.generate("s0", "hi").text == "b"
        get = one.metrics.registry.get_sample_value
        assert get("sessionhive_turns_total", {"outcome": "completed"}) == count
        assert two.metrics.registry.get_sample_value("sessionhive_turns_total", {"outcome": "completed"}) == 1
