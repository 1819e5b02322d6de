"""``AnthropicClient``: the Anthropic Messages API through the ``anthropic`` SDK.

Install with ``pip install sessionhive[anthropic]``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sessionhive.llm._sdk_base import (
    CallProgress,
    MalformedResponseError,
    SdkClientBase,
    TransientError,
    decode_arguments,
    redact,
    sdk_missing,
    server_message,
)
from sessionhive.llm.base import ANTHROPIC_STOP_REASONS, LlmRequest, LlmResponse, normalize_stop_reason
from sessionhive.model.content import ContentPart, FilePart, ImagePart
from sessionhive.model.errors import LlmError
from sessionhive.model.messages import Message, ToolCall, ToolDefinition, Usage

# What the SDK gets as a key for a local endpoint that wants none (never sent to api.anthropic.com).
LOCAL_PLACEHOLDER_KEY = "sk-ant-no-key"

try:
    import anthropic
    from anthropic.types import Message as AnthropicMessage
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise sdk_missing("anthropic") from exc

if TYPE_CHECKING:
    from anthropic.types import (
        RawContentBlockDeltaEvent,
        RawContentBlockStartEvent,
        RawMessageDeltaEvent,
        RawMessageStartEvent,
        RawMessageStreamEvent,
    )


__all__ = ["DEFAULT_THINKING_BUDGET", "AnthropicClient"]

logger = logging.getLogger("sessionhive.llm")

ANTHROPIC_ENDPOINT = "https://api.anthropic.com"

DEFAULT_THINKING_BUDGET = 1024
"""Thinking tokens when a request asks for thinking without a budget; also the API's minimum."""

# Error types an Anthropic stream may report midway (in an `error` event of a
# 200 response) that a new attempt may not meet again.
_TRANSIENT_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})

# Thinking blocks kept for replay, keyed by the first tool_use id of their
# message. A tool loop runs for seconds to minutes; this bounds the memory of
# a busy client without losing the loops still running.
_THINKING_CACHE_SIZE = 4096


def _arguments_object(arguments: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    # Malformed arguments the model sent earlier: tool_use.input must be an
    # object, so they travel inside one, verbatim.
    return {"_malformed_arguments": arguments}


def _content(message: Message) -> list[dict[str, Any]]:
    """A message's content blocks: its parts, or its text (none for an empty text)."""
    if message.parts:
        return [_block(part) for part in message.parts]
    return [{"type": "text", "text": message.text}] if message.text else []


def _block(part: ContentPart) -> dict[str, Any]:
    """A content part as a Messages API block: text, image (base64 or url), or document."""
    if isinstance(part, ImagePart):
        if part.data is None:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        encoded = base64.b64encode(part.data).decode("ascii")
        return {"type": "image", "source": {"type": "base64", "media_type": part.media_type, "data": encoded}}
    if isinstance(part, FilePart) and part.data is not None:
        if part.media_type == "text/plain":
            text = part.data.decode("utf-8", errors="replace")
            source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": text}
        else:
            encoded = base64.b64encode(part.data).decode("ascii")
            source = {"type": "base64", "media_type": part.media_type, "data": encoded}
        block: dict[str, Any] = {"type": "document", "source": source}
        if part.name:
            block["title"] = part.name
        return block
    if isinstance(part, FilePart):  # a workspace path the turn did not read: nothing to send
        return {"type": "text", "text": f"[file {part.path} not read]"}
    return {"type": "text", "text": part.text}


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


@dataclass
class _Block:
    """A content block being assembled from stream events."""

    type: str
    text: str = ""
    tool_id: str = ""
    name: str = ""
    initial_input: object = None
    partial_json: list[str] = field(default_factory=list)
    signature: str = ""
    data: str = ""

    def arguments(self) -> dict[str, Any] | str:
        """A tool_use block's input: its streamed JSON when there was any, else the start's input."""
        if self.partial_json:
            return decode_arguments("".join(self.partial_json))
        return self.initial_input if isinstance(self.initial_input, dict) else {}


class _StreamAssembler:
    """Builds one streamed answer from its events: one method per event type, one for the result.

    Text deltas go to ``progress`` as they arrive; everything else waits in
    the blocks until :meth:`response`.
    """

    def __init__(self, progress: CallProgress) -> None:
        self._progress = progress
        self._blocks: dict[int, _Block] = {}
        self._prompt_tokens = 0
        self._cached_tokens = 0
        self._completion_tokens = 0
        self._stop_reason: str | None = None
        self.finished = False
        """Whether ``message_stop`` came: a stream that ends without it was cut off."""

    def feed(self, event: RawMessageStreamEvent) -> None:
        try:
            if event.type == "message_start":
                self._message_start(event)
            elif event.type == "content_block_start":
                self._block_start(event)
            elif event.type == "content_block_delta":
                self._block_delta(event)
            elif event.type == "message_delta":
                self._message_delta(event)
            elif event.type == "message_stop":
                self.finished = True
        except (AttributeError, TypeError) as exc:
            # The SDK does not validate what it streams: a server that is not
            # quite the Anthropic API shows here, as missing or mistyped fields.
            raise MalformedResponseError(f"unreadable stream event: {exc}") from None

    def _message_start(self, event: RawMessageStartEvent) -> None:
        usage = event.message.usage
        self._prompt_tokens = (
            (usage.input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        self._completion_tokens = usage.output_tokens or 0
        self._cached_tokens = usage.cache_read_input_tokens or 0

    def _block_start(self, event: RawContentBlockStartEvent) -> None:
        start = event.content_block
        block = _Block(start.type)
        if start.type == "text":
            block.text = start.text or ""
            self._progress.emit(block.text)
        elif start.type == "tool_use":
            block.tool_id, block.name, block.initial_input = start.id, start.name, start.input
        elif start.type == "thinking":
            block.text, block.signature = start.thinking or "", start.signature or ""
        elif start.type == "redacted_thinking":
            block.data = start.data
        self._blocks[event.index] = block

    def _block_delta(self, event: RawContentBlockDeltaEvent) -> None:
        target = self._blocks.get(event.index)
        delta = event.delta
        if target is None:
            raise MalformedResponseError(f"a delta for block {event.index}, which never started")
        if delta.type == "text_delta":
            target.text += delta.text
            self._progress.emit(delta.text)
        elif delta.type == "input_json_delta":
            target.partial_json.append(delta.partial_json)
        elif delta.type == "thinking_delta":
            target.text += delta.thinking
        elif delta.type == "signature_delta":
            target.signature = delta.signature

    def _message_delta(self, event: RawMessageDeltaEvent) -> None:
        self._stop_reason = event.delta.stop_reason or self._stop_reason
        # Cumulative counts: the last message_delta has the totals.
        self._completion_tokens = event.usage.output_tokens or self._completion_tokens
        # getattr: the MessageDeltaUsage of older SDKs (setup.cfg allows anthropic>=0.40) has only
        # output_tokens.
        if getattr(event.usage, "input_tokens", None):
            self._prompt_tokens = (
                (event.usage.input_tokens or 0)
                + (getattr(event.usage, "cache_creation_input_tokens", None) or 0)
                + (getattr(event.usage, "cache_read_input_tokens", None) or 0)
            )

    def response(self) -> tuple[LlmResponse, list[dict[str, Any]]]:
        """The answer, and the thinking blocks to replay with its tool calls, in block order."""
        text: list[str] = []
        tool_calls: list[ToolCall] = []
        thinking: list[dict[str, Any]] = []
        for _, block in sorted(self._blocks.items()):
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                tool_calls.append(ToolCall(block.name, block.arguments(), block.tool_id))
            elif block.type == "thinking":
                thinking.append({"type": "thinking", "thinking": block.text, "signature": block.signature})
            elif block.type == "redacted_thinking":
                thinking.append({"type": "redacted_thinking", "data": block.data})
        response = LlmResponse(
            "".join(text),
            tuple(tool_calls),
            Usage(self._prompt_tokens, self._completion_tokens, cached_tokens=self._cached_tokens),
            normalize_stop_reason(self._stop_reason, ANTHROPIC_STOP_REASONS),
        )
        return response, thinking


_ANSWER_TOOL_DESCRIPTION = "Give your final answer: call this tool with it as the input."


def _answer_of_output_tool(request: LlmRequest, response: LlmResponse) -> LlmResponse:
    """A structured-output turn's answer: the call of its answer tool becomes the text (never a tool run)."""
    output = request.output
    call = next((c for c in response.tool_calls if output is not None and c.name == output.name), None)
    if call is None:
        return response
    text = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
    return replace(response, text=text, tool_calls=(), stop_reason="stop")


class AnthropicClient(SdkClientBase[anthropic.AsyncAnthropic]):
    """An :class:`~sessionhive.llm.LlmClient` for the Anthropic Messages API.

    Built from an :class:`~sessionhive.llm.LlmConfig` with
    ``provider="anthropic"``. The key is ``config.api_key``, else the
    ``ANTHROPIC_API_KEY`` environment variable (in a Hive, only for the
    endpoints it belongs to: see :mod:`sessionhive.llm.keys`); without either,
    construction raises :class:`~sessionhive.LlmError`. The ``anthropic.AsyncAnthropic``
    client is created on first use, on the running event loop, with the SDK's
    own retries off: ``metrics`` and ``retry`` govern retries (529
    "overloaded" included), and :meth:`aclose` releases its connections.

    Mapping: ``request.system`` (and any ``system`` message of the history,
    appended in order) is the top-level ``system``; assistant tool calls are
    ``tool_use`` blocks, and tool results ``tool_result`` blocks (with
    ``is_error``) in a user message, consecutive results merged into one.
    Messages without content are left out, as the API rejects empty text.

    Thinking: ``request.thinking`` sends ``thinking={"type": "enabled",
    "budget_tokens": budget}`` with ``budget = max(request.budget or 1024,
    1024)``; when ``LlmConfig.max_tokens`` does not exceed the budget, the
    request asks for ``budget + max_tokens`` tokens so the answer keeps its
    room. ``temperature`` is not sent with thinking (the API refuses it).
    Within a tool loop the API wants the model's signed thinking blocks sent
    back with its tool calls; sessions do not store them, so the client keeps
    them in memory (keyed by tool-call id, bounded) and replays them. When it
    does not have them (the session was restored from the store meanwhile),
    that one request goes without thinking instead of failing.

    Example::

        client = AnthropicClient(LlmConfig("anthropic", "claude-sonnet-4-5"))
        response = await client.stream(request, print)
    """

    provider_name = "anthropic"
    key_env_var = "ANTHROPIC_API_KEY"
    base_url_env_var = "ANTHROPIC_BASE_URL"
    default_endpoint = ANTHROPIC_ENDPOINT
    provider_host = "api.anthropic.com"
    placeholder_key = LOCAL_PLACEHOLDER_KEY

    @functools.cached_property
    def _thinking_blocks(self) -> OrderedDict[str, tuple[dict[str, Any], ...]]:
        # Written and read only by coroutines on the client's event loop.
        return OrderedDict()

    def _sdk_classes(self) -> tuple[type[anthropic.AsyncAnthropic], type[anthropic.DefaultAsyncHttpxClient]]:
        return anthropic.AsyncAnthropic, anthropic.DefaultAsyncHttpxClient

    # -- request ---------------------------------------------------------------------

    def _assistant_blocks(self, message: Message) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if message.tool_calls:
            blocks.extend(self._thinking_blocks.get(message.tool_calls[0].id, ()))
        if message.text:
            blocks.append({"type": "text", "text": message.text})
        blocks.extend(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments_object(call.arguments)}
            for call in message.tool_calls
        )
        return blocks

    def _conversation(self, request: LlmRequest) -> tuple[str | None, list[dict[str, Any]]]:
        system = [request.system] if request.system else []
        turns: list[dict[str, Any]] = []

        def add(role: str, blocks: list[dict[str, Any]]) -> None:
            if not blocks:
                return
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].extend(blocks)
            else:
                turns.append({"role": role, "content": blocks})

        for message in request.messages:
            if message.role == "system":
                if message.text:
                    system.append(message.text)
            elif message.role == "user":
                add("user", _content(message))
            elif message.role == "tool":
                result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
                if message.parts:  # a tool_result holds text and image blocks
                    result["content"] = _content(message)
                elif message.text:
                    result["content"] = message.text
                if message.is_error:
                    result["is_error"] = True
                add("user", [result])
            else:
                add("assistant", self._assistant_blocks(message))
        return ("\n\n".join(system) or None), turns

    @staticmethod
    def _thinking_replayable(turns: list[dict[str, Any]]) -> bool:
        """Whether thinking may be on: outside a tool loop, or inside one whose thinking blocks we have."""
        if not turns or turns[-1]["role"] != "user":
            return True
        if not any(block["type"] == "tool_result" for block in turns[-1]["content"]):
            return True
        if len(turns) < 2 or turns[-2]["role"] != "assistant":
            return True
        first = turns[-2]["content"][0]["type"]
        return first in ("thinking", "redacted_thinking")

    def _params(self, request: LlmRequest) -> dict[str, Any]:
        config = self._config
        system, turns = self._conversation(request)
        params: dict[str, Any] = {"model": config.model, "messages": turns, "max_tokens": config.max_tokens}
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [_tool(t) for t in request.tools]
        thinking = request.thinking
        if request.output is not None:
            # Anthropic's structured output is a tool the model must call: its input is the answer.
            # With other tools it must call one of them or this one ("any"); the API refuses a forced
            # tool choice with thinking on, so thinking is off for such a turn.
            answer_tool = ToolDefinition(
                request.output.name, _ANSWER_TOOL_DESCRIPTION, dict(request.output.schema)
            )
            params["tools"] = [*params.get("tools", ()), _tool(answer_tool)]
            params["tool_choice"] = (
                {"type": "any"} if request.tools else {"type": "tool", "name": request.output.name}
            )
            thinking = False
        if thinking and not self._thinking_replayable(turns):
            logger.debug(
                "anthropic: sending a tool-loop continuation without thinking: its thinking blocks "
                "are not in memory (restored session)"
            )
            thinking = False
        if thinking:
            budget = max(request.budget or DEFAULT_THINKING_BUDGET, DEFAULT_THINKING_BUDGET)
            params["thinking"] = {"type": "enabled", "budget_tokens": budget}
            if config.max_tokens <= budget:
                params["max_tokens"] = budget + config.max_tokens
        elif config.temperature is not None:
            # Through extra_body: the parameter left the typed signature in anthropic 2.x.
            params["extra_body"] = {"temperature": config.temperature}
        return params

    def _remember_thinking(self, blocks: list[dict[str, Any]], tool_calls: tuple[ToolCall, ...]) -> None:
        if not blocks or not tool_calls:
            return
        self._thinking_blocks[tool_calls[0].id] = tuple(blocks)
        while len(self._thinking_blocks) > _THINKING_CACHE_SIZE:
            self._thinking_blocks.popitem(last=False)

    def forget_thinking(self) -> None:
        """Drop the thinking blocks kept for tool-loop replay."""
        self._thinking_blocks.clear()

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(
        self, sdk: anthropic.AsyncAnthropic, request: LlmRequest, progress: CallProgress
    ) -> LlmResponse:
        return _answer_of_output_tool(request, await self._answer(sdk, request, progress))

    async def _answer(
        self, sdk: anthropic.AsyncAnthropic, request: LlmRequest, progress: CallProgress
    ) -> LlmResponse:
        params = self._params(request)
        if progress.on_text is None:
            message = await sdk.messages.create(**params)
            return self._parse_message(message)
        stream = await sdk.messages.create(stream=True, **params)
        assembler = _StreamAssembler(progress)
        # `async with` closes the HTTP response however the loop ends, cancellation included.
        async with stream:
            async for event in stream:
                assembler.feed(event)
        if not assembler.finished:
            raise TransientError(f"the stream from {self.endpoint} ended before the model finished")
        response, thinking = assembler.response()
        self._remember_thinking(thinking, response.tool_calls)
        return response

    def _parse_message(self, message: object) -> LlmResponse:
        if not isinstance(message, AnthropicMessage):
            raise MalformedResponseError(f"expected a message, got {type(message).__name__}")
        text: list[str] = []
        tool_calls: list[ToolCall] = []
        thinking: list[dict[str, Any]] = []
        try:
            for block in message.content:
                if block.type == "text":
                    text.append(block.text)
                elif block.type == "tool_use":
                    raw: object = block.input
                    arguments: dict[str, Any] | str
                    if isinstance(raw, dict):
                        arguments = raw
                    elif isinstance(raw, str):
                        arguments = decode_arguments(raw)
                    else:
                        arguments = json.dumps(raw)
                    tool_calls.append(ToolCall(block.name, arguments, block.id))
                elif block.type == "thinking":
                    thinking.append(
                        {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
                    )
                elif block.type == "redacted_thinking":
                    thinking.append({"type": "redacted_thinking", "data": block.data})
            usage = message.usage
            prompt = (
                (usage.input_tokens or 0)
                + (usage.cache_creation_input_tokens or 0)
                + (usage.cache_read_input_tokens or 0)
            )
            completion = usage.output_tokens or 0
            cached = usage.cache_read_input_tokens or 0
            stop_reason = normalize_stop_reason(message.stop_reason, ANTHROPIC_STOP_REASONS)
        except (AttributeError, TypeError) as exc:
            raise MalformedResponseError(f"unreadable message: {exc}") from None
        calls = tuple(tool_calls)
        self._remember_thinking(thinking, calls)
        return LlmResponse("".join(text), calls, Usage(prompt, completion, cached_tokens=cached), stop_reason)

    # -- errors ----------------------------------------------------------------------

    def _classify(self, exc: Exception) -> TransientError | LlmError | None:
        unanswered = self._transport_failure(
            exc, timeout_error=anthropic.APITimeoutError, connection_error=anthropic.APIConnectionError
        )
        if unanswered is not None:
            return unanswered
        if isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 300:  # redirects included
            base_url = (self._config.base_url or "").rstrip("/")
            if exc.status_code == 404 and base_url.endswith("/v1"):
                # The SDK appends /v1/messages itself: the usual slip with a copied OpenAI-style URL.
                return LlmError(
                    f"{self.endpoint} answered 404 (not found) for /v1/messages: the Anthropic API adds "
                    f"/v1 itself, so try the base URL without the trailing /v1: {base_url[:-3]}"
                )
            return self._status_error(exc.status_code, exc.response.headers, exc.body)
        if isinstance(exc, anthropic.APIError):
            # An `error` event inside a 200 stream: the server failed midway.
            body = exc.body
            inner = body.get("error") if isinstance(body, dict) else None
            error_type = inner.get("type") if isinstance(inner, dict) else None
            detail = redact(server_message(body) or str(error_type or "unknown error"), self._secret)
            if error_type in _TRANSIENT_ERROR_TYPES:
                return TransientError(f"{self.endpoint} failed midway through the answer: {detail}")
            return LlmError(
                f"{self.endpoint} failed midway through the answer for model {self._config.model!r}: {detail}"
            )
        if isinstance(exc, json.JSONDecodeError):  # raised by the SDK: the body is not JSON at all
            return LlmError(
                f"{self.endpoint} sent a response that is not valid JSON ({exc}): check LlmConfig.base_url "
                "points at an Anthropic Messages API (without /v1: the SDK adds it)"
            )
        return None
