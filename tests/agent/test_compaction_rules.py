"""Compaction follows one set of rules with or without an LLM (run at the agent level, no actors)."""

from __future__ import annotations

import asyncio

import pytest

from sessionhive.agent import compaction
from sessionhive.agent.loop import CompactionOutcome, run_compaction
from sessionhive.llm.scripted import Reply, ScriptedLlm
from sessionhive.model.messages import Message, ToolCall
from tests.agent.test_turns import assert_valid_history


def history(turns: int) -> tuple[Message, ...]:
    """``turns`` turns of user, assistant calling a tool, its result, an answer (4 messages each)."""
    messages: list[Message] = []
    for n in range(turns):
        messages.append(Message.user(f"look {n}"))
        messages.append(Message.assistant("looking", (ToolCall("list_dir", {"path": "."}, f"c{n}"),)))
        messages.append(Message.tool(f"c{n}", f"listing {n}"))
        messages.append(Message.assistant(f"done {n}"))
    return tuple(messages)


def compact(messages: tuple[Message, ...], with_llm: bool) -> CompactionOutcome:
    llm = ScriptedLlm([Reply("unused")]) if with_llm else None
    return asyncio.run(run_compaction("s", messages, None, llm, 1_000_000))


@pytest.mark.parametrize("with_llm", [True, False])
@pytest.mark.parametrize("count", [24, 30])
def test_thirty_messages_or_fewer_are_never_compacted(count: int, with_llm: bool) -> None:
    messages = history(8)[:count]
    assert compact(messages, with_llm).messages == messages


def test_with_and_without_an_llm_keep_the_same_head_and_tail() -> None:
    before = history(10)  # 40 messages
    summarised = compact(before, with_llm=True).messages
    noted = compact(before, with_llm=False).messages

    assert len(summarised) == len(noted) < len(before)
    # The first two messages are kept, and the tool call among them keeps its result.
    assert noted[:3] == summarised[:3] == before[:3]
    assert summarised[3].text.startswith(compaction.SUMMARY_PREFIX)
    assert noted[3].role == "user" and noted[3].text.startswith(compaction.OMISSION_PREFIX)
    assert noted[4:] == summarised[4:] == before[len(before) - len(noted[4:]) :]
    assert noted[4].role != "tool" and len(noted[4:]) >= compaction.KEEP_TAIL
    assert_valid_history(list(noted))
    assert_valid_history(list(summarised))


def test_without_an_llm_pruning_old_tool_output_is_enough_when_it_meets_the_target() -> None:
    messages = list(history(10))
    messages[2] = Message.tool("c0", "x" * 50_000)  # a huge, old tool output
    outcome = asyncio.run(run_compaction("s", tuple(messages), None, None, 2_000))
    assert len(outcome.messages) == len(messages)
    assert "removed by compaction" in outcome.messages[2].text
    assert outcome.messages[3:] == tuple(messages[3:])
