"""``ScriptedLlm``: a deterministic model for tests, demos and load tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionhive.llm.base import LlmRequest, LlmResponse, TextCallback
from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import Message, ToolCall, Usage
from sessionhive.model.tokens import count_tokens
from sessionhive.model.validate import check_number

__all__ = ["DEMO_FILE", "Reply", "ScriptedLlm", "count_tokens"]

DEMO_FILE = "sessionhive-demo.txt"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: text, the tool calls to make, and why the model stopped.

    ``stop_reason`` defaults to ``"tool_calls"`` when there are calls and
    ``"stop"`` otherwise; ``"length"`` scripts an answer cut off by the
    output limit (see :class:`~sessionhive.llm.base.LlmResponse`).
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = field(default_factory=tuple)
    stop_reason: str | None = None


ReplyScript = (
    Sequence[Reply] | Callable[[list[Message]], Reply] | Callable[[list[Message], LlmRequest], Reply]
)


def _message_tokens(messages: Sequence[Message]) -> int:
    total = 0
    for message in messages:
        total += count_tokens(message.text) + 1
        for call in message.tool_calls:
            total += 1 + count_tokens(str(call.arguments))
    return total


def _positional_count(func: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the one-argument form
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in kinds)


class ScriptedLlm:
    """Plays ``replies`` in order, per session, wrapping around at the end.

    ``replies`` is a list of :class:`Reply` or a callable that receives the
    message list (history plus the new prompt) and returns a :class:`Reply`;
    a callable of two parameters also receives the :class:`LlmRequest` (its
    ``output`` is the schema a structured-output turn asks for).
    ``latency`` seconds pass before each answer (awaited, so thousands of
    scripted turns wait concurrently). Token usage is one token per word.
    Compaction requests are answered with a deterministic summary that does
    not consume the script.
    """

    def __init__(self, replies: ReplyScript, latency: float = 0.0, *, model: str = "scripted") -> None:
        if not callable(replies):
            replies = tuple(replies)
            if not replies:
                raise InvalidConfig("ScriptedLlm needs at least one Reply (or a callable)")
            for reply in replies:
                if not isinstance(reply, Reply):
                    raise InvalidConfig(f"ScriptedLlm replies must be Reply objects, got {reply!r}")
        check_number("ScriptedLlm latency", latency, minimum=0.0, unit="seconds")
        self._replies = replies
        self._wants_request = callable(replies) and _positional_count(replies) >= 2
        self.latency = float(latency)
        self._model = model
        # Each session's position in the script. A session's LLM calls are
        # serialized by its actor, so each key has one writer at a time.
        self._cursors: dict[str, int] = {}

    @property
    def replies(self) -> ReplyScript:
        """What it plays: the replies, or the callable that makes them (a service tells its script)."""
        return self._replies

    @property
    def provider(self) -> str:
        return "scripted"

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"ScriptedLlm(model={self._model!r}, latency={self.latency})"

    def forget(self, session_id: str) -> None:
        """Restart ``session_id`` at the first reply."""
        self._cursors.pop(session_id, None)

    def _next_reply(self, request: LlmRequest) -> Reply:
        if callable(self._replies):
            script: Any = self._replies
            reply = (
                script(list(request.messages), request)
                if self._wants_request
                else script(list(request.messages))
            )
            if not isinstance(reply, Reply):
                raise TypeError(f"the ScriptedLlm callable must return a Reply, got {reply!r}")
            return reply
        index = self._cursors.get(request.session_id, 0)
        self._cursors[request.session_id] = index + 1
        return self._replies[index % len(self._replies)]

    def _respond(self, request: LlmRequest) -> LlmResponse:
        if request.purpose == "compaction":
            text = f"Summary of {len(request.messages)} earlier messages."
            tool_calls: tuple[ToolCall, ...] = ()
            stop_reason = None
        else:
            reply = self._next_reply(request)
            text, tool_calls, stop_reason = reply.text, tuple(reply.tool_calls), reply.stop_reason
        usage = Usage(
            prompt_tokens=_message_tokens(request.messages) + count_tokens(request.system or ""),
            completion_tokens=count_tokens(text)
            + sum(1 + count_tokens(str(c.arguments)) for c in tool_calls),
        )
        if stop_reason is None:
            stop_reason = "tool_calls" if tool_calls else "stop"
        return LlmResponse(text, tool_calls, usage, stop_reason)

    async def complete(self, request: LlmRequest) -> LlmResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._respond(request)

    async def stream(self, request: LlmRequest, on_text: TextCallback) -> LlmResponse:
        response = await self.complete(request)
        words = response.text.split(" ")
        for i, word in enumerate(words):
            on_text(word if i == len(words) - 1 else word + " ")
        return response

    @classmethod
    def demo(cls, latency: float = 0.0) -> ScriptedLlm:
        """The no-key demo model: writes the prompt to a file, then echoes it."""

        def script(messages: list[Message]) -> Reply:
            prompt = next((m.text for m in reversed(messages) if m.role == "user"), "")
            if messages and messages[-1].role == "tool":
                outcome = messages[-1].text
                return Reply(text=f"Echo: {prompt}\n(write_file said: {outcome})")
            arguments: dict[str, Any] = {"path": DEMO_FILE, "content": prompt + "\n"}
            return Reply(
                text=f"I will save your words to {DEMO_FILE}.",
                tool_calls=[ToolCall("write_file", arguments)],
            )

        return cls(script, latency, model="demo-echo")
