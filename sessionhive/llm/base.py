"""The LLM seam: what the agent loop asks of a model, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from sessionhive.model.messages import Message, ToolCall, ToolDefinition, Usage

__all__ = ["LlmClient", "LlmRequest", "LlmResponse", "TextCallback"]

TextCallback = Callable[[str], None]


@dataclass(frozen=True)
class LlmRequest:
    """One call to a model: the conversation so far and the tools it may call.

    ``purpose`` is ``"turn"`` for agent turns and ``"compaction"`` when the
    session asks for a summary of its history.
    """

    session_id: str
    system: str | None
    messages: tuple[Message, ...]
    tools: tuple[ToolDefinition, ...] = ()
    thinking: bool = False
    budget: int | None = None
    purpose: Literal["turn", "compaction"] = "turn"


@dataclass(frozen=True)
class LlmResponse:
    """A model's answer: its text, the tool calls it asks for, and the tokens spent."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    stop_reason: str = "end_turn"


@runtime_checkable
class LlmClient(Protocol):
    """A model client. Both calls are coroutines run on the Hive's turn loop.

    ``complete`` returns the whole answer; ``stream`` calls ``on_text`` with
    each text delta as it arrives and returns the same :class:`LlmResponse`.
    Transient failures are retried inside the client; what is left raises
    :class:`~sessionhive.LlmError` with a message that says what to fix.
    Cancelling the coroutine must stop any HTTP stream promptly.
    """

    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, request: LlmRequest) -> LlmResponse: ...

    async def stream(self, request: LlmRequest, on_text: TextCallback) -> LlmResponse: ...
