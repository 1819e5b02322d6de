"""``OpenAiClient``: OpenAI Chat Completions, and every server that speaks it, through the ``openai`` SDK.

Install with ``pip install sessionhive[openai]``. Any OpenAI-compatible
endpoint works through ``LlmConfig.base_url`` (vLLM, Ollama, llama.cpp
server, DeepSeek, ...).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sessionhive.llm._sdk_base import (
    CallProgress,
    MalformedResponseError,
    SdkClientBase,
    TransientError,
    decode_arguments,
    sdk_missing,
)
from sessionhive.llm.base import OPENAI_STOP_REASONS, LlmRequest, LlmResponse, normalize_stop_reason
from sessionhive.model.content import ContentPart, FilePart, ImagePart, TextPart
from sessionhive.model.errors import LlmError
from sessionhive.model.messages import Message, ToolCall, ToolDefinition, Usage
from sessionhive.model.output import OutputSpec

try:
    import openai
    from openai.types.chat import ChatCompletion
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise sdk_missing("openai") from exc

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk
    from openai.types.chat.chat_completion_chunk import Choice, ChoiceDeltaToolCall

__all__ = ["OpenAiClient", "is_reasoning_model"]

OPENAI_ENDPOINT = "https://api.openai.com/v1"

# Local and self-hosted OpenAI-compatible servers usually ignore the key, but
# the SDK insists on one.
PLACEHOLDER_KEY = "sk-no-key"


_REASONING_MODEL = re.compile(r"^(o\d+|gpt-5)([-.:_]|$)")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` names an OpenAI reasoning model (``o1``, ``o3-mini``, ``o4-mini``, ``gpt-5*``...).

    A provider prefix such as ``openai/`` is ignored. Reasoning models take
    ``reasoning_effort`` and ``max_completion_tokens`` and reject ``temperature``.
    """
    return _REASONING_MODEL.match(model.rsplit("/", 1)[-1].lower()) is not None


def reasoning_effort(budget: int | None) -> str:
    """The ``reasoning_effort`` closest to a thinking budget in tokens (``None``: the default, medium)."""
    if budget is None:
        return "medium"
    if budget <= 2048:
        return "low"
    if budget <= 16384:
        return "medium"
    return "high"


def _arguments_json(arguments: dict[str, Any] | str) -> str:
    # Malformed arguments go back verbatim: the model should see what it sent.
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.text}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.text or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments_json(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    if message.parts:
        return {"role": message.role, "content": [_part(part) for part in message.parts]}
    return {"role": message.role, "content": message.text}


def _part(part: ContentPart) -> dict[str, Any]:
    """A content part as a chat completions content item (image_url, file, or text)."""
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.data_url()}}
    if isinstance(part, FilePart) and part.data is not None:
        if part.media_type == "text/plain":  # chat completions reads PDFs as files; plain text is text
            return {"type": "text", "text": part.data.decode("utf-8", errors="replace")}
        data_url = f"data:{part.media_type};base64,{base64.b64encode(part.data).decode('ascii')}"
        return {"type": "file", "file": {"filename": part.name or "document.pdf", "file_data": data_url}}
    if isinstance(part, FilePart):  # a workspace path the turn did not read: nothing to send
        return {"type": "text", "text": f"[file {part.path} not read]"}
    return {"type": "text", "text": part.text}


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The chat messages of a history; images a tool returned follow its results as a user message.

    A chat completions tool message holds text only, and the tool messages
    answering one assistant message must follow it without a break: so the
    images of a run of tool results are sent after the run, in one user
    message naming the calls they came from.
    """
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for message in messages:
        if message.role != "tool" and pending:
            out.append({"role": "user", "content": pending})
            pending = []
        out.append(_message(message))
        if message.role == "tool" and any(not isinstance(part, TextPart) for part in message.parts):
            pending.append({"type": "text", "text": f"Content returned by tool call {message.tool_call_id}:"})
            pending.extend(_part(part) for part in message.parts if not isinstance(part, TextPart))
    if pending:
        out.append({"role": "user", "content": pending})
    return out


def _response_format(output: OutputSpec) -> dict[str, Any]:
    """OpenAI's native structured output; strict only for a schema its strict mode accepts."""
    return {
        "type": "json_schema",
        "json_schema": {"name": output.name, "schema": dict(output.schema), "strict": output.strict},
    }


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""

    def add(self, part: ChoiceDeltaToolCall) -> None:
        # ids and names arrive whole, in the call's first delta; arguments in pieces.
        if part.id and not self.id:
            self.id = part.id
        if part.function is not None:
            if part.function.name and not self.name:
                self.name = part.function.name
            if part.function.arguments:
                self.arguments += part.function.arguments


class _StreamAssembler:
    """Builds one streamed answer from its chunks: text and usage as they come, tool calls from pieces.

    Text deltas go to ``progress`` as they arrive. Only the first choice
    counts: the request never asks for more.
    """

    def __init__(self, progress: CallProgress) -> None:
        self._progress = progress
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._usage = Usage()
        self.finish_reason: str | None = None
        """The first choice's finish_reason: a stream that ends while it is ``None`` was cut off."""

    def feed(self, chunk: ChatCompletionChunk) -> None:
        try:
            if chunk.usage is not None:
                self._usage = _usage(chunk.usage)
            for choice in chunk.choices or ():
                if choice.index == 0:
                    self._choice(choice)
        except (AttributeError, TypeError) as exc:
            # The SDK does not validate what it streams: a server that is not
            # quite OpenAI-compatible shows here, as missing or mistyped fields.
            raise MalformedResponseError(f"unreadable stream chunk: {exc}") from None

    def _choice(self, choice: Choice) -> None:
        delta = choice.delta
        if delta is not None:
            if delta.content:
                self._text.append(delta.content)
                self._progress.emit(delta.content)
            for part in delta.tool_calls or ():
                self._calls.setdefault(part.index, _PartialCall()).add(part)
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason

    def response(self) -> LlmResponse:
        tool_calls = tuple(
            ToolCall(call.name, decode_arguments(call.arguments), call.id)
            for _, call in sorted(self._calls.items())
            if call.name
        )
        return LlmResponse(
            "".join(self._text),
            tool_calls,
            self._usage,
            normalize_stop_reason(self.finish_reason, OPENAI_STOP_REASONS),
        )


class OpenAiClient(SdkClientBase[openai.AsyncOpenAI]):
    """An :class:`~sessionhive.llm.LlmClient` for the OpenAI Chat Completions API.

    Built from an :class:`~sessionhive.llm.LlmConfig` with
    ``provider="openai"``. The key is ``config.api_key``, else the
    ``OPENAI_API_KEY`` environment variable; without either, construction
    raises :class:`~sessionhive.LlmError` — except when ``base_url`` points
    anywhere but ``api.openai.com``: local servers need no key, so the
    placeholder ``"sk-no-key"`` is sent (a server that does want one answers
    401, reported as a rejected key). In a Hive, the environment's key goes
    only to the endpoints it belongs to (``keys``, see
    :mod:`sessionhive.llm.keys`).

    The ``openai.AsyncOpenAI`` client is created on first use, on the running
    event loop, with the SDK's own retries off: ``metrics`` (a
    :class:`~sessionhive.metrics.HiveMetrics`) and ``retry`` (a
    :class:`~sessionhive.llm._sdk_base.RetryPolicy`) govern retries, and
    :meth:`aclose` releases its connections.

    Mapping: ``request.system`` becomes the first ``system`` message; tool
    results are ``tool`` messages with their ``tool_call_id``; assistant tool
    calls carry JSON-string arguments. ``request.thinking`` is honoured only
    for reasoning models (see :func:`is_reasoning_model`), as
    ``reasoning_effort`` derived from ``request.budget`` (at most 2048 tokens:
    low, at most 16384: medium, more: high); other models have no thinking
    switch in this API, and the flag is ignored for them. Reasoning models get
    ``max_completion_tokens`` and no ``temperature``; others get
    ``max_tokens`` (which every compatible server knows).

    Example::

        client = OpenAiClient(LlmConfig("openai", "gpt-4o-mini"))
        response = await client.complete(LlmRequest("s1", None, (Message.user("hi"),)))
    """

    provider_name = "openai"
    key_env_var = "OPENAI_API_KEY"
    base_url_env_var = "OPENAI_BASE_URL"
    default_endpoint = OPENAI_ENDPOINT
    provider_host = "api.openai.com"
    placeholder_key = PLACEHOLDER_KEY

    def _sdk_classes(self) -> tuple[type[openai.AsyncOpenAI], type[openai.DefaultAsyncHttpxClient]]:
        return openai.AsyncOpenAI, openai.DefaultAsyncHttpxClient

    # -- request ---------------------------------------------------------------------

    def _params(self, request: LlmRequest) -> dict[str, Any]:
        config = self._config
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(_messages(request.messages))
        params: dict[str, Any] = {"model": config.model, "messages": messages}
        if request.tools:
            params["tools"] = [_tool(t) for t in request.tools]
        if request.output is not None:
            params["response_format"] = _response_format(request.output)
        if is_reasoning_model(config.model):
            params["max_completion_tokens"] = config.max_tokens
            if request.thinking:
                params["reasoning_effort"] = reasoning_effort(request.budget)
        else:
            params["max_tokens"] = config.max_tokens
            if config.temperature is not None:
                params["temperature"] = config.temperature
        return params

    # -- one attempt -----------------------------------------------------------------

    async def _attempt(
        self, sdk: openai.AsyncOpenAI, request: LlmRequest, progress: CallProgress
    ) -> LlmResponse:
        params = self._params(request)
        if progress.on_text is None:
            completion = await sdk.chat.completions.create(**params)
            return self._parse_completion(completion)
        stream = await sdk.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **params
        )
        assembler = _StreamAssembler(progress)
        # `async with` closes the HTTP response however the loop ends, cancellation included.
        async with stream:
            async for chunk in stream:
                assembler.feed(chunk)
        if assembler.finish_reason is None:
            raise TransientError(f"the stream from {self.endpoint} ended before the model finished")
        return assembler.response()

    def _parse_completion(self, completion: object) -> LlmResponse:
        if not isinstance(completion, ChatCompletion):
            raise MalformedResponseError(f"expected a chat completion, got {type(completion).__name__}")
        try:
            if not completion.choices:
                raise MalformedResponseError("the completion has no choices")
            choice = completion.choices[0]
            message = choice.message
            text = message.content or ""
            tool_calls = []
            for call in message.tool_calls or ():
                function = getattr(call, "function", None)
                if function is None:  # a custom (non-function) tool call: not one of ours
                    continue
                tool_calls.append(
                    ToolCall(function.name, decode_arguments(function.arguments), call.id or "")
                )
            usage = _usage(completion.usage) if completion.usage is not None else Usage()
            finish = choice.finish_reason or "stop"
        except (AttributeError, TypeError, IndexError) as exc:
            raise MalformedResponseError(f"unreadable completion: {exc}") from None
        return LlmResponse(text, tuple(tool_calls), usage, normalize_stop_reason(finish, OPENAI_STOP_REASONS))

    # -- errors ----------------------------------------------------------------------

    def _classify(self, exc: Exception) -> TransientError | LlmError | None:
        unanswered = self._transport_failure(
            exc, timeout_error=openai.APITimeoutError, connection_error=openai.APIConnectionError
        )
        if unanswered is not None:
            return unanswered
        if isinstance(exc, openai.APIStatusError):
            base_url = (self._config.base_url or "").rstrip("/")
            if exc.status_code == 404 and base_url and "/v1" not in base_url:
                # OpenAI-compatible servers (vLLM, Ollama, llama.cpp) serve the API under /v1.
                return LlmError(
                    f"{self.endpoint} answered 404 (not found): OpenAI-compatible servers serve the API "
                    f"under /v1, so try the base URL {base_url}/v1"
                )
            return self._status_error(exc.status_code, exc.response.headers, exc.body)
        if isinstance(exc, openai.APIError):
            # An error object inside a 200 stream: the server failed midway.
            return self._status_error(500, None, exc.body)
        if isinstance(exc, json.JSONDecodeError):  # raised by the SDK: the body is not JSON at all
            return LlmError(
                f"{self.endpoint} sent a response that is not valid JSON ({exc}): check LlmConfig.base_url "
                "points at an OpenAI-compatible API (usually ending in /v1)"
            )
        return None


def _usage(usage: Any) -> Usage:
    """The SDK's usage as ours; ``prompt_tokens_details.cached_tokens`` is the prompt cache's share."""
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached_tokens=cached)
