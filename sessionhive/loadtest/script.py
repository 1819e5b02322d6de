"""The load test's scripted agent: a pure function of the history, so every stored history is predictable."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping

from sessionhive import Message, Reply, ToolCall

__all__ = ["LoadtestScript", "prompt_for"]

_PROMPT = re.compile(r"^(?P<sid>.+) turn (?P<turn>\d+)$")


def prompt_for(session_id: str, turn: int) -> str:
    """The prompt of turn ``turn`` of ``session_id``: it names both, so the script needs no state."""
    return f"{session_id} turn {turn}"


class LoadtestScript:
    """The scripted agent of the load test: ``tools_per_turn`` tool calls per turn, one per LLM round.

    It is a pure function of the message list (the prompt names the session
    and the turn), so the expected history of every session can be rebuilt
    afterwards by :meth:`expected_history`. Tool call ``k`` (1-based) of
    turn ``t`` has id ``t{t}k{k}``; it is a ``write_file`` that needs
    confirmation for a ``confirm_rate`` fraction of the calls (spread
    evenly over each session's calls, from a per-session phase), and a
    ``list_dir`` otherwise.
    """

    def __init__(self, tools_per_turn: int, confirm_rate: float) -> None:
        self.tools_per_turn = tools_per_turn
        self.confirm_rate = confirm_rate

    def needs_confirmation(self, session_id: str, turn: int, k: int) -> bool:
        if self.confirm_rate <= 0:
            return False
        n = (turn - 1) * self.tools_per_turn + (k - 1)
        phase = (zlib.crc32(session_id.encode("utf-8")) % 1000) / 1000
        return math.floor((n + 1) * self.confirm_rate + phase) > math.floor(n * self.confirm_rate + phase)

    def tool_call(self, session_id: str, turn: int, k: int) -> ToolCall:
        call_id = f"t{turn}k{k}"
        if self.needs_confirmation(session_id, turn, k):
            return ToolCall(
                "write_file", {"path": f"t{turn}-{k}.txt", "content": f"{session_id} {turn} {k}\n"}, call_id
            )
        return ToolCall("list_dir", {"path": "."}, call_id)

    def __call__(self, messages: list[Message]) -> Reply:
        # From the end: the scan must not grow with the history, or long runs would measure the script.
        start = next(i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user")
        match = _PROMPT.match(messages[start].text)
        if match is None:  # not a load-test prompt: answer without tools
            return Reply(text="ok")
        session_id, turn = match.group("sid"), int(match.group("turn"))
        done = sum(1 for m in messages[start + 1 :] if m.role == "tool")
        if done >= self.tools_per_turn:
            return Reply(text=f"done {turn}")
        k = done + 1
        return Reply(text=f"step {k}", tool_calls=[self.tool_call(session_id, turn, k)])

    def expected_history(
        self, session_id: str, turns: int, tool_outputs: Mapping[str, tuple[str, bool]]
    ) -> list[Message]:
        """The messages ``turns`` turns of ``session_id`` leave, with tool outputs as observed."""
        messages: list[Message] = []
        for turn in range(1, turns + 1):
            messages.append(Message.user(prompt_for(session_id, turn)))
            for k in range(1, self.tools_per_turn + 1):
                call = self.tool_call(session_id, turn, k)
                messages.append(Message.assistant(f"step {k}", (call,)))
                output, is_error = tool_outputs.get(call.id, ("<no ToolEnd event was seen>", False))
                messages.append(Message.tool(call.id, output, is_error=is_error))
            messages.append(Message.assistant(f"done {turn}"))
        return messages
