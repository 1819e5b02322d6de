"""Recovery of interrupted turns: closing what a stopped process left in the turn journal.

Pure functions over the stored history and its
:class:`~sessionhive.model.messages.RunningTurn` record; the session actor
applies their result when it activates a session whose snapshot still
records a running turn. :func:`~sessionhive.agent.loop.resume_turn`
continues such a turn instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from sessionhive.agent.loop import INTERRUPTED_WHILE_RUNNING
from sessionhive.model.messages import Message, RunningTurn, ToolCall

__all__ = [
    "INTERRUPTED_ANSWER",
    "INTERRUPTED_BEFORE_RUNNING",
    "INTERRUPTED_WHILE_RUNNING",
    "close_interrupted",
    "history_problems",
    "journaled_turn",
    "unfinished_calls",
]

#: The result of a call that had not started (waiting for confirmation, or queued behind another).
INTERRUPTED_BEFORE_RUNNING = (
    "error: the process stopped before this tool call ran; it did not run. Call it again if still needed."
)
#: The answer that closes an interrupted turn, so the history ends as a finished turn does.
INTERRUPTED_ANSWER = (
    "[This turn was interrupted: the process stopped before it finished. "
    "Completed steps and tool results above are kept.]"
)


def journaled_turn(
    messages: Sequence[Message], running: RunningTurn
) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
    """``(history before the turn, the turn's journaled messages)`` of a stored history."""
    first = min(max(running.first_message, 0), len(messages))
    return tuple(messages[:first]), tuple(messages[first:])


def unfinished_calls(turn_messages: Sequence[Message]) -> tuple[ToolCall, ...]:
    """The tool calls of the turn's last model answer that have no result yet, in call order."""
    answered = {m.tool_call_id for m in turn_messages if m.role == "tool"}
    last = next((m for m in reversed(turn_messages) if m.role == "assistant"), None)
    return tuple(c for c in (last.tool_calls if last else ()) if c.id not in answered)


def close_interrupted(messages: Sequence[Message], running: RunningTurn) -> tuple[Message, ...]:
    """The messages to append to ``messages`` so an interrupted turn ends validly for any provider.

    Every tool call of the turn's last answer left without a result gets
    exactly one: :data:`INTERRUPTED_WHILE_RUNNING` for ``running.running_call``
    (its effects are unknown), :data:`INTERRUPTED_BEFORE_RUNNING` for the
    others (they never started). Unless the turn already ended with a final
    answer, :data:`INTERRUPTED_ANSWER` follows as the assistant's, so the
    history ends as a finished turn does. Returns ``()`` when there is
    nothing to close (the turn had finished, or none of it was stored).
    """
    _, turn = journaled_turn(messages, running)
    if not turn:
        return ()
    closing = [
        Message.tool(
            call.id,
            INTERRUPTED_WHILE_RUNNING if call.id == running.running_call else INTERRUPTED_BEFORE_RUNNING,
            is_error=True,
        )
        for call in unfinished_calls(turn)
    ]
    last = turn[-1]
    if closing or not (last.role == "assistant" and not last.tool_calls):
        closing.append(Message.assistant(INTERRUPTED_ANSWER))
    return tuple(closing)


def history_problems(messages: Sequence[Message]) -> list[str]:
    """What would make a provider refuse ``messages`` as a history; ``[]`` when it is valid.

    Checked: every tool call has exactly one result, the results of an
    answer's calls follow it directly (before any other message), and no
    result answers a call that was never made or was already answered.
    """
    problems: list[str] = []
    open_calls: list[str] = []
    answered: set[str] = set()
    for index, message in enumerate(messages):
        if message.role == "tool":
            call_id = message.tool_call_id
            if call_id in open_calls:
                open_calls.remove(call_id)
                answered.add(call_id or "")
            elif call_id in answered:
                problems.append(f"message {index}: a second result for tool call {call_id!r}")
            else:
                problems.append(f"message {index}: a result for tool call {call_id!r}, which is not open")
            continue
        if open_calls:
            problems.append(f"message {index}: tool calls {open_calls} have no result before it")
            open_calls = []
        open_calls = [call.id for call in message.tool_calls]
    if open_calls:
        problems.append(f"the history ends with tool calls {open_calls} without a result")
    return problems
