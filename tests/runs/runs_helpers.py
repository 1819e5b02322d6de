"""What the runs tests share: a model that counts its calls, and the history check."""

from __future__ import annotations

from sessionhive import Message, Reply
from tests.conftest import tool_loop_script


class CountingScript:
    """:func:`tool_loop_script`, counting the model calls (list appends: atomic, no lock needed)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, messages: list[Message]) -> Reply:
        self.calls.append(messages[-1].text)
        return tool_loop_script(messages)


def assert_valid_history(messages: list[Message]) -> None:
    """Every tool call has exactly one result, right after its assistant message."""
    open_calls: list[str] = []
    for message in messages:
        if message.role == "tool":
            assert message.tool_call_id in open_calls, f"orphan tool result {message}"
            open_calls.remove(message.tool_call_id)
        else:
            assert not open_calls, f"tool calls {open_calls} left without a result"
            open_calls = [call.id for call in message.tool_calls]
    assert not open_calls, f"tool calls {open_calls} left without a result"
