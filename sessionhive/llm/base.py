"""The LLM seam: what the agent loop asks of a model, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from sessionhive.model.messages import Message, ToolCall, ToolDefinition, Usage
from sessionhive.model.output import OutputSpec

__all__ = [
    "ANTHROPIC_STOP_REASONS",
    "OPENAI_STOP_REASONS",
    "LlmClient",
    "LlmRequest",
    "LlmResponse",
    "TextCallback",
    "normalize_stop_reason",
]

TextCallback = Callable[[str], None]

#: OpenAI Chat Completions ``finish_reason`` -> :attr:`LlmResponse.stop_reason`.
OPENAI_STOP_REASONS = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "refusal",
}
#: Anthropic Messages ``stop_reason`` -> :attr:`LlmResponse.stop_reason`.
ANTHROPIC_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
}


def normalize_stop_reason(raw: str | None, table: dict[str, str], default: str = "stop") -> str:
    """``raw`` in sessionhive's vocabulary (see :class:`LlmResponse`); an unknown reason passes as it is."""
    if not raw:
        return default
    return table.get(raw, raw)


@dataclass(frozen=True)
class LlmRequest:
    """One call to a model: the conversation so far and the tools it may call.

    ``purpose`` is ``"turn"`` for agent turns and ``"compaction"`` when the
    session asks for a summary of its history. ``output`` is the schema the
    answer must match (``generate(..., output_schema=...)``): a client asks
    for it in its provider's native structured-output mode and returns the
    JSON as the answer's text.
    """

    session_id: str
    system: str | None
    messages: tuple[Message, ...]
    tools: tuple[ToolDefinition, ...] = ()
    thinking: bool = False
    budget: int | None = None
    purpose: Literal["turn", "compaction"] = "turn"
    output: OutputSpec | None = None


@dataclass(frozen=True)
class LlmResponse:
    """A model's answer: its text, the tool calls it asks for, the tokens spent, and why it stopped.

    ``stop_reason`` is the same word for every provider: ``"stop"`` (the
    model finished), ``"tool_calls"`` (it waits for tool results),
    ``"length"`` (cut off by the output-token limit: the text may be
    incomplete), ``"refusal"`` (a content filter or refusal); any other
    reason a provider gives is passed through unchanged. ``model`` names the
    model that answered when it is not the one asked (a fallback, see
    :mod:`sessionhive.llm.fallback`); ``None`` means the client's own model.
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    stop_reason: str = "stop"
    model: str | None = None


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
