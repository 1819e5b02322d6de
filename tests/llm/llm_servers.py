"""Loopback HTTP servers that speak the OpenAI Chat Completions and Anthropic Messages APIs.

Each server listens on ``127.0.0.1`` on a free port, in a background thread,
and answers from a script: a queue of :class:`ReplySpec` (a normal answer,
plain or streamed as server-sent events), :class:`FaultSpec` (an HTTP error
with the provider's JSON error body) and :class:`MalformedSpec` (a body that
is not what the API promises). Every request is recorded, headers and body,
so a test can assert what the client sent.

The official SDKs talk to these servers over real HTTP: pass ``server.url``
as ``LlmConfig.base_url``. Use them as context managers or through the
``openai_server`` and ``anthropic_server`` fixtures::

    def test_hello(openai_server):
        openai_server.script(ReplySpec("hello"))
        ...
"""

from __future__ import annotations

import contextlib
import json
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal

import pytest

__all__ = [
    "AnthropicServer",
    "FaultSpec",
    "LoopbackLlmServer",
    "MalformedSpec",
    "OpenAiServer",
    "RecordedRequest",
    "ReplySpec",
    "ScriptItem",
    "ToolCallSpec",
    "anthropic_server",
    "openai_server",
]


@dataclass(frozen=True)
class ToolCallSpec:
    """A tool call the scripted model makes: ``arguments`` a dict, or a raw (maybe malformed) JSON string."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = ""

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class ReplySpec:
    """A normal answer.

    Streamed, ``text`` goes out in ``chunks`` (default: word by word, spaces
    kept), ``first_delay`` seconds after the response headers and
    ``chunk_delay`` seconds between events; ``cut_after`` drops the
    connection, mid-body, after that many text chunks; ``stream_error`` (an
    error type such as ``"overloaded_error"``) ends the stream, after the
    text, with the provider's in-stream error event. ``thinking`` adds a
    signed thinking block first (Anthropic only). ``truncated`` ends the
    answer as cut off by the output limit (OpenAI ``finish_reason: length``,
    Anthropic ``stop_reason: max_tokens``).
    """

    text: str = ""
    tool_calls: Sequence[ToolCallSpec] = ()
    thinking: str = ""
    prompt_tokens: int = 11
    completion_tokens: int = 7
    chunks: Sequence[str] | None = None
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    cut_after: int | None = None
    stream_error: str | None = None
    truncated: bool = False

    def openai_finish(self) -> str:
        return "length" if self.truncated else "tool_calls" if self.tool_calls else "stop"

    def anthropic_stop(self) -> str:
        return "max_tokens" if self.truncated else "tool_use" if self.tool_calls else "end_turn"

    def text_chunks(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)] if self.text else []


@dataclass(frozen=True)
class FaultSpec:
    """An HTTP error answer with the provider's JSON error body.

    ``message`` defaults to what the provider would say; for 401 it echoes
    the key the server received, as some providers do (partly masked), so
    tests can check the client never repeats it.
    """

    status: int
    message: str | None = None
    retry_after: str | None = None
    error_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MalformedSpec:
    """A 200 answer the API never sends: ``json`` (truncated JSON), ``sse`` (a broken event), ``html``."""

    kind: Literal["json", "sse", "html"] = "json"


ScriptItem = ReplySpec | FaultSpec | MalformedSpec


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes

    @property
    def body(self) -> Any:
        return json.loads(self.raw_body) if self.raw_body else None

    @property
    def streamed(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))


class _DisconnectedError(Exception):
    """The client closed the connection."""


class _StoppingError(Exception):
    """The server is shutting down: abandon the answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end on their own after the test.
    timeout = 10
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
        owner.requests.append(request)
        try:
            owner.handle(self, request)
        except (_DisconnectedError, BrokenPipeError, ConnectionResetError):
            owner.disconnected.set()
            self.close_connection = True
        except _StoppingError:
            self.close_connection = True

    def do_GET(self) -> None:
        self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    # -- writing helpers ---------------------------------------------------------------

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def send_bytes(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end_events(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def cut(self) -> None:
        """Drop the connection in the middle of the body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, noticing at once if the client hangs up meanwhile."""
        deadline = time.monotonic() + seconds
        owner = self.server.owner
        while not owner.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except (ConnectionResetError, OSError):
                    peek = b""
                if not peek:
                    raise _DisconnectedError()
        raise _StoppingError()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: LoopbackLlmServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up on idle keep-alive connections is normal here.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class LoopbackLlmServer:
    """Base of the scripted servers: lifecycle, script queue and request log."""

    route: ClassVar[str]

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.disconnected = threading.Event()
        self.stopping = threading.Event()
        self._script: queue.SimpleQueue[ScriptItem] = queue.SimpleQueue()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LoopbackLlmServer:
        self._httpd = _HttpServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"{type(self).__name__}-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackLlmServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The ``LlmConfig.base_url`` that reaches this server."""
        raise NotImplementedError

    # -- script --------------------------------------------------------------------------

    def script(self, *items: ScriptItem) -> None:
        """Queue answers, consumed one per request in order."""
        for item in items:
            self._script.put(item)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests received so far."""
        return [r.body for r in self.requests]

    def handle(self, handler: _Handler, request: RecordedRequest) -> None:
        if request.path.split("?")[0] != self.route:
            handler.send_json(404, self.error_body(404, f"no route {request.path}", None))
            return
        try:
            item = self._script.get_nowait()
        except queue.Empty:
            handler.send_json(500, self.error_body(500, "the test script has no reply left", None))
            return
        body = request.body
        model = body.get("model", "") if isinstance(body, dict) else ""
        if isinstance(item, FaultSpec):
            message = item.message if item.message is not None else self.default_message(item.status, request)
            headers = dict(item.headers)
            if item.retry_after is not None:
                headers["Retry-After"] = item.retry_after
            handler.send_json(item.status, self.error_body(item.status, message, item.error_type), headers)
        elif isinstance(item, MalformedSpec):
            if item.kind == "json":
                handler.send_bytes(200, b'{"id": "broken", "choices": [', "application/json")
            elif item.kind == "html":
                handler.send_bytes(200, b"<html><body>Welcome to nginx!</body></html>", "text/html")
            else:
                handler.start_events()
                handler.send_chunk(self.broken_event())
                handler.end_events()
        elif request.streamed:
            handler.start_events()
            if item.first_delay:
                handler.pause(item.first_delay)
            self.stream_reply(handler, item, model, body)
        else:
            if item.first_delay:
                handler.pause(item.first_delay)
            handler.send_json(200, self.reply_body(item, model))

    def default_message(self, status: int, request: RecordedRequest) -> str:
        if status == 401:
            return f"Incorrect API key provided: {self.received_key(request)}."
        if status == 404:
            model = request.body.get("model") if isinstance(request.body, dict) else None
            return f"The model `{model}` does not exist or you do not have access to it."
        if status == 429:
            return "Rate limit reached for requests"
        return f"The server had an error while processing your request ({status})."

    def received_key(self, request: RecordedRequest) -> str:
        raise NotImplementedError

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        raise NotImplementedError

    def reply_body(self, item: ReplySpec, model: str) -> Any:
        raise NotImplementedError

    def stream_reply(self, handler: _Handler, item: ReplySpec, model: str, body: Any) -> None:
        raise NotImplementedError

    def broken_event(self) -> bytes:
        raise NotImplementedError


def _argument_pieces(raw: str) -> list[str]:
    """Split tool arguments the way providers stream them: a few fragments."""
    if len(raw) < 4:
        return [raw] if raw else []
    third = len(raw) // 3
    return [raw[:third], raw[third : 2 * third], raw[2 * third :]]


class OpenAiServer(LoopbackLlmServer):
    """``POST /v1/chat/completions``; ``url`` is ``http://127.0.0.1:PORT/v1``."""

    route = "/v1/chat/completions"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def received_key(self, request: RecordedRequest) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer ")

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        default_type, code = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            403: ("invalid_request_error", "unsupported_country_region_territory"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }.get(status, ("server_error", None))
        return {
            "error": {"message": message, "type": error_type or default_type, "param": None, "code": code}
        }

    @staticmethod
    def _tool_calls(item: ReplySpec) -> list[dict[str, Any]]:
        return [
            {
                "id": call.id or f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for i, call in enumerate(item.tool_calls)
        ]

    def reply_body(self, item: ReplySpec, model: str) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": item.text or None, "refusal": None}
        if item.tool_calls:
            message["tool_calls"] = self._tool_calls(item)
        return {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": item.openai_finish(),
                }
            ],
            "usage": {
                "prompt_tokens": item.prompt_tokens,
                "completion_tokens": item.completion_tokens,
                "total_tokens": item.prompt_tokens + item.completion_tokens,
            },
        }

    def stream_reply(self, handler: _Handler, item: ReplySpec, model: str, body: Any) -> None:
        def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None) -> None:
            payload: dict[str, Any] = {
                "id": "chatcmpl-loopback",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage is not None:
                payload["usage"] = usage
            handler.send_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

        chunk({"role": "assistant", "content": ""})
        for n, piece in enumerate(item.text_chunks()):
            if item.cut_after is not None and n >= item.cut_after:
                handler.cut()
                return
            if n and item.chunk_delay:
                handler.pause(item.chunk_delay)
            chunk({"content": piece})
        if item.cut_after is not None:
            handler.cut()
            return
        if item.stream_error is not None:
            error = {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": item.stream_error,
                }
            }
            handler.send_chunk(b"data: " + json.dumps(error).encode() + b"\n\n")
            handler.end_events()
            return
        for i, call in enumerate(self._tool_calls(item)):
            first = {"index": i, "id": call["id"], "type": "function"}
            chunk(
                {"tool_calls": [{**first, "function": {"name": call["function"]["name"], "arguments": ""}}]}
            )
            for piece in _argument_pieces(call["function"]["arguments"]):
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        chunk({}, item.openai_finish())
        options = body.get("stream_options") if isinstance(body, dict) else None
        if isinstance(options, dict) and options.get("include_usage"):
            chunk(
                None,
                usage={
                    "prompt_tokens": item.prompt_tokens,
                    "completion_tokens": item.completion_tokens,
                    "total_tokens": item.prompt_tokens + item.completion_tokens,
                },
            )
        handler.send_chunk(b"data: [DONE]\n\n")
        handler.end_events()

    def broken_event(self) -> bytes:
        return b'data: {"id": "chatcmpl-loopback", "choices": [{"delta": \n\n'


class AnthropicServer(LoopbackLlmServer):
    """``POST /v1/messages``; ``url`` is ``http://127.0.0.1:PORT`` (the SDK adds ``/v1``)."""

    route = "/v1/messages"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received_key(self, request: RecordedRequest) -> str:
        # anthropic 2.x sends the key as a bearer token; older SDKs as x-api-key.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        return request.headers.get("x-api-key", bearer)

    def error_body(self, status: int, message: str, error_type: str | None) -> Any:
        default_type = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": error_type or default_type, "message": message},
            "request_id": "req_loopback",
        }

    @staticmethod
    def _tool_id(i: int, call: ToolCallSpec) -> str:
        return call.id or f"toolu_{i}"

    @staticmethod
    def _signature(item: ReplySpec) -> str:
        return f"sig-{len(item.thinking)}"

    def reply_body(self, item: ReplySpec, model: str) -> Any:
        content: list[dict[str, Any]] = []
        if item.thinking:
            content.append(
                {"type": "thinking", "thinking": item.thinking, "signature": self._signature(item)}
            )
        if item.text:
            content.append({"type": "text", "text": item.text})
        for i, call in enumerate(item.tool_calls):
            # A raw string stays a string: the API never does this, the test wants to see it survive.
            content.append(
                {"type": "tool_use", "id": self._tool_id(i, call), "name": call.name, "input": call.arguments}
            )
        return {
            "id": "msg_loopback",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": item.anthropic_stop(),
            "stop_sequence": None,
            "usage": {"input_tokens": item.prompt_tokens, "output_tokens": item.completion_tokens},
        }

    def stream_reply(self, handler: _Handler, item: ReplySpec, model: str, body: Any) -> None:
        def event(name: str, payload: dict[str, Any]) -> None:
            handler.send_chunk(f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n".encode())

        event(
            "message_start",
            {
                "message": {
                    "id": "msg_loopback",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": item.prompt_tokens, "output_tokens": 1},
                }
            },
        )
        event("ping", {})
        index = 0
        if item.thinking:
            event(
                "content_block_start",
                {"index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            )
            event(
                "content_block_delta",
                {"index": index, "delta": {"type": "thinking_delta", "thinking": item.thinking}},
            )
            event(
                "content_block_delta",
                {"index": index, "delta": {"type": "signature_delta", "signature": self._signature(item)}},
            )
            event("content_block_stop", {"index": index})
            index += 1
        pieces = item.text_chunks()
        if pieces or item.cut_after is not None:
            event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            for n, piece in enumerate(pieces):
                if item.cut_after is not None and n >= item.cut_after:
                    handler.cut()
                    return
                if n and item.chunk_delay:
                    handler.pause(item.chunk_delay)
                event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
            if item.cut_after is not None:
                handler.cut()
                return
            event("content_block_stop", {"index": index})
            index += 1
        if item.stream_error is not None:
            event("error", {"error": {"type": item.stream_error, "message": "Overloaded"}})
            handler.end_events()
            return
        for i, call in enumerate(item.tool_calls):
            start = {"type": "tool_use", "id": self._tool_id(i, call), "name": call.name, "input": {}}
            event("content_block_start", {"index": index, "content_block": start})
            for piece in _argument_pieces(call.arguments_json()):
                event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
            event("content_block_stop", {"index": index})
            index += 1
        event(
            "message_delta",
            {
                "delta": {
                    "stop_reason": item.anthropic_stop(),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": item.completion_tokens},
            },
        )
        event("message_stop", {})
        handler.end_events()

    def broken_event(self) -> bytes:
        return b'event: message_start\ndata: {"type": "message_start", "message": {\n\n'


@pytest.fixture
def openai_server() -> Iterator[OpenAiServer]:
    """A running :class:`OpenAiServer`, stopped after the test."""
    server = OpenAiServer()
    with server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    """A running :class:`AnthropicServer`, stopped after the test."""
    server = AnthropicServer()
    with server:
        yield server
