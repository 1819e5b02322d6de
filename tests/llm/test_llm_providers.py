"""The OpenAI and Anthropic clients, through the official SDKs, against loopback HTTP servers.

Every test speaks real HTTP to a server in this process (tests/llm/llm_servers.py)
that answers like the provider's API, so what is checked is what a user of
the real service would meet: the request on the wire, streaming, retries,
error messages, cancellation, and that the API key stays secret.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TypeVar

import pytest
from prometheus_client import generate_latest

from sessionhive.llm import LlmConfig, LlmRequest, LlmResponse, create_client
from sessionhive.llm._sdk_base import RetryPolicy, redact, retry_after_seconds
from sessionhive.llm.anthropic import AnthropicClient
from sessionhive.llm.openai import OpenAiClient, is_reasoning_model
from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.errors import InvalidConfig, LlmError
from sessionhive.model.messages import Message, ToolCall, ToolDefinition, Usage
from tests.llm import llm_servers
from tests.llm.llm_servers import (
    AnthropicServer,
    FaultSpec,
    LoopbackLlmServer,
    MalformedSpec,
    OpenAiServer,
    ReplySpec,
    ToolCallSpec,
)

# The loopback server fixtures, used by name in the tests below.
openai_server = llm_servers.openai_server
anthropic_server = llm_servers.anthropic_server

T = TypeVar("T")

KEY = "sk-test-7f3a9c2e1b5d-SECRET"
# Waits short enough for a fast suite; Retry-After still decides when sent.
FAST = RetryPolicy(initial_wait_s=0.001, max_wait_s=0.01, max_retry_after_s=5.0)

Client = OpenAiClient | AnthropicClient


@dataclass
class Provider:
    """One provider under test: its loopback server and a way to build a client for it."""

    name: str
    server: LoopbackLlmServer
    key_env_var: str
    model: str

    def client(
        self, *, metrics: HiveMetrics | None = None, retry: RetryPolicy = FAST, **config: Any
    ) -> Client:
        settings: dict[str, Any] = {"api_key": KEY, "base_url": self.server.url, "max_retries": 2}
        settings.update(config)
        llm = LlmConfig(self.name, settings.pop("model", self.model), **settings)
        cls = OpenAiClient if self.name == "openai" else AnthropicClient
        return cls(llm, metrics=metrics, retry=retry)


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    if request.param == "openai":
        with OpenAiServer() as server:
            yield Provider("openai", server, "OPENAI_API_KEY", "gpt-4o-mini")
    else:
        with AnthropicServer() as server:
            yield Provider("anthropic", server, "ANTHROPIC_API_KEY", "claude-test-1")


def run(client: Client, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call()`` on a fresh event loop, closing the client's connections afterwards."""

    async def main() -> T:
        try:
            return await call()
        finally:
            await client.aclose()

    return asyncio.run(main())


def ask(text: str = "hi", **kwargs: Any) -> LlmRequest:
    return LlmRequest("s1", kwargs.pop("system", "You are terse."), (Message.user(text),), **kwargs)


def collect_stream(client: Client, request: LlmRequest) -> tuple[LlmResponse, list[str]]:
    deltas: list[str] = []
    response = run(client, lambda: client.stream(request, deltas.append))
    return response, deltas


def counter(metrics: HiveMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def exception_texts(exc: BaseException) -> str:
    """Everything an exception would print: its message and those of its cause and context chain."""
    texts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(f"{type(current).__name__}: {current} {current.args!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


WEATHER = ToolDefinition(
    "get_weather",
    "Current weather of a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
READ = ToolDefinition(
    "read_file", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}}}
)

# A tool loop in the middle of a turn: two calls answered, one of them with an error.
TOOL_HISTORY = (
    Message.user("Weather in Paris and Rome? Then read notes.txt"),
    Message.assistant(
        "Checking both.",
        (
            ToolCall("get_weather", {"city": "Paris"}, "call_a"),
            ToolCall("get_weather", {"city": "Rome"}, "call_b"),
        ),
    ),
    Message.tool("call_a", "sunny, 21C"),
    Message.tool("call_b", "error: service down", is_error=True),
    Message.assistant("", (ToolCall("read_file", {"path": "notes.txt"}, "call_c"),)),
    Message.tool("call_c", "buy milk"),
)


# -- answers ------------------------------------------------------------------------------


def test_complete_returns_text_usage_and_records_metrics(provider: Provider) -> None:
    metrics = HiveMetrics()
    provider.server.script(ReplySpec("Hello there.", prompt_tokens=12, completion_tokens=3))
    client = provider.client(metrics=metrics)

    response = run(client, lambda: client.complete(ask("Say hello")))

    assert response == LlmResponse("Hello there.", (), Usage(12, 3), "stop")
    (sent,) = provider.server.bodies
    assert sent["model"] == provider.model
    assert not sent.get("stream")
    labels = {"provider": provider.name, "model": provider.model}
    assert counter(metrics, "sessionhive_llm_tokens_total", **labels, kind="prompt") == 12
    assert counter(metrics, "sessionhive_llm_tokens_total", **labels, kind="completion") == 3
    assert counter(metrics, "sessionhive_llm_request_duration_seconds_count", **labels, outcome="ok") == 1


def test_stream_delivers_each_delta_and_the_whole_answer(provider: Provider) -> None:
    provider.server.script(ReplySpec("one two three", prompt_tokens=5, completion_tokens=4))
    client = provider.client()

    response, deltas = collect_stream(client, ask())

    assert deltas == ["one ", "two ", "three"]
    assert response == LlmResponse("one two three", (), Usage(5, 4), "stop")
    (sent,) = provider.server.bodies
    assert sent["stream"] is True
    if provider.name == "openai":
        assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_tool_calls_come_back_with_ids_and_decoded_arguments(provider: Provider, streamed: bool) -> None:
    provider.server.script(
        ReplySpec(
            "Let me look.",
            [
                ToolCallSpec("get_weather", {"city": "Oslo"}, "id1"),
                ToolCallSpec("read_file", {"path": "a b.txt"}, "id2"),
            ],
        )
    )
    client = provider.client()
    request = ask("Weather?", tools=(WEATHER, READ))

    response = (
        collect_stream(client, request)[0] if streamed else run(client, lambda: client.complete(request))
    )

    assert response.text == "Let me look."
    assert response.tool_calls == (
        ToolCall("get_weather", {"city": "Oslo"}, "id1"),
        ToolCall("read_file", {"path": "a b.txt"}, "id2"),
    )
    assert response.stop_reason == "tool_calls"


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_malformed_tool_arguments_are_kept_as_the_raw_string(provider: Provider, streamed: bool) -> None:
    raw = '{"path": "a.txt", "content": '
    provider.server.script(ReplySpec(tool_calls=[ToolCallSpec("write_file", raw, "w1")]))
    client = provider.client()

    response = collect_stream(client, ask())[0] if streamed else run(client, lambda: client.complete(ask()))

    (call,) = response.tool_calls
    assert call == ToolCall("write_file", raw, "w1")
    with pytest.raises(ValueError, match="not valid JSON"):
        call.decoded_arguments()


def test_openai_request_maps_system_history_tools_and_results(openai_server: OpenAiServer) -> None:
    openai_server.script(ReplySpec("Paris is sunny."))
    client = Provider("openai", openai_server, "OPENAI_API_KEY", "gpt-4o-mini").client(temperature=0.2)
    request = LlmRequest("s1", "Be brief.", TOOL_HISTORY, (WEATHER, READ))

    run(client, lambda: client.complete(request))

    (sent,) = openai_server.bodies
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome? Then read notes.txt"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny, 21C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "error: service down"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_c",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "notes.txt"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_c", "content": "buy milk"},
    ]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in (WEATHER, READ)
    ]
    assert sent["max_tokens"] == 4096
    assert sent["temperature"] == 0.2
    assert "reasoning_effort" not in sent


def test_anthropic_request_maps_system_history_tools_and_merges_results(
    anthropic_server: AnthropicServer,
) -> None:
    anthropic_server.script(ReplySpec("Paris is sunny."))
    client = Provider("anthropic", anthropic_server, "ANTHROPIC_API_KEY", "claude-test-1").client(
        temperature=0.2
    )
    request = LlmRequest("s1", "Be brief.", TOOL_HISTORY, (WEATHER, READ))

    run(client, lambda: client.complete(request))

    (sent,) = anthropic_server.bodies
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Weather in Paris and Rome? Then read notes.txt"}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "sunny, 21C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": "error: service down",
                    "is_error": True,
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_c", "name": "read_file", "input": {"path": "notes.txt"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_c", "content": "buy milk"}],
        },
    ]
    assert sent["tools"] == [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in (WEATHER, READ)
    ]
    assert sent["temperature"] == 0.2
    assert "thinking" not in sent


def test_malformed_arguments_in_history_are_sent_back_verbatim(provider: Provider) -> None:
    raw = '{"path": '
    history = (
        Message.user("write it"),
        Message.assistant("", (ToolCall("write_file", raw, "w1"),)),
        Message.tool("w1", "error: tool arguments are not valid JSON", is_error=True),
    )
    provider.server.script(ReplySpec("Sorry."))
    client = provider.client()

    run(client, lambda: client.complete(LlmRequest("s1", None, history)))

    (sent,) = provider.server.bodies
    if provider.name == "openai":
        assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == raw
    else:
        assert sent["messages"][1]["content"][0]["input"] == {"_malformed_arguments": raw}


def test_user_text_after_tool_results_joins_their_message_for_anthropic(
    anthropic_server: AnthropicServer,
) -> None:
    # A cancelled turn leaves tool results; the next prompt follows them.
    history = (
        Message.user("go"),
        Message.assistant("", (ToolCall("read_file", {"path": "x"}, "c1"),)),
        Message.tool("c1", "error: the turn was cancelled before this tool call ran", is_error=True),
        Message.user("never mind"),
        Message.assistant(""),  # an empty answer: the API rejects empty text, so it is left out
        Message("system", "Earlier conversation summarised."),
    )
    anthropic_server.script(ReplySpec("ok"))
    client = Provider("anthropic", anthropic_server, "ANTHROPIC_API_KEY", "claude-test-1").client()

    run(client, lambda: client.complete(LlmRequest("s1", "Base prompt.", history)))

    (sent,) = anthropic_server.bodies
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent["messages"][2]["content"]] == ["tool_result", "text"]
    assert sent["system"] == "Base prompt.\n\nEarlier conversation summarised."


# -- thinking -------------------------------------------------------------------------------


def test_anthropic_thinking_sets_budget_and_room_for_the_answer(anthropic_server: AnthropicServer) -> None:
    anthropic_server.script(ReplySpec("a"), ReplySpec("b"))
    provider = Provider("anthropic", anthropic_server, "ANTHROPIC_API_KEY", "claude-test-1")
    small = provider.client(max_tokens=512, temperature=0.5)
    large = provider.client(max_tokens=8000)

    run(small, lambda: small.complete(ask(thinking=True)))
    run(large, lambda: large.complete(ask(thinking=True, budget=4000)))

    first, second = anthropic_server.bodies
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert first["max_tokens"] == 1024 + 512
    assert "temperature" not in first
    assert second["thinking"] == {"type": "enabled", "budget_tokens": 4000}
    assert second["max_tokens"] == 8000


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_anthropic_thinking_blocks_are_replayed_within_a_tool_loop(
    anthropic_server: AnthropicServer, streamed: bool
) -> None:
    anthropic_server.script(
        ReplySpec("", [ToolCallSpec("read_file", {"path": "x"}, "t1")], thinking="I should read x."),
        ReplySpec("done"),
        ReplySpec("done"),
    )
    provider = Provider("anthropic", anthropic_server, "ANTHROPIC_API_KEY", "claude-test-1")
    client = provider.client()
    first = ask("read x", thinking=True, tools=(READ,))

    async def loop() -> None:
        response = await (client.stream(first, lambda _: None) if streamed else client.complete(first))
        history = (
            *first.messages,
            Message.assistant(response.text, response.tool_calls),
            Message.tool("t1", "42"),
        )
        await client.complete(LlmRequest("s1", None, history, (READ,), thinking=True))

    run(client, loop)
    # A client that never saw the thinking (a restored session) continues the loop without it.
    fresh = provider.client()
    history = (
        *first.messages,
        Message.assistant("", (ToolCall("read_file", {"path": "x"}, "t1"),)),
        Message.tool("t1", "42"),
    )
    run(fresh, lambda: fresh.complete(LlmRequest("s1", None, history, (READ,), thinking=True)))

    _, replayed, degraded = anthropic_server.bodies
    assert replayed["thinking"]["type"] == "enabled"
    assert replayed["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "I should read x.",
        "signature": "sig-16",
    }
    assert "thinking" not in degraded
    assert degraded["messages"][1]["content"][0]["type"] == "tool_use"


def test_openai_reasoning_models_get_reasoning_effort_and_others_ignore_thinking(
    openai_server: OpenAiServer,
) -> None:
    openai_server.script(ReplySpec("a"), ReplySpec("b"), ReplySpec("c"))
    provider = Provider("openai", openai_server, "OPENAI_API_KEY", "gpt-4o-mini")
    reasoning = provider.client(model="o3-mini", temperature=0.3, max_tokens=2000)
    plain = provider.client(model="gpt-4o-mini")

    async def calls() -> None:
        try:
            await reasoning.complete(ask(thinking=True, budget=1000))
            await reasoning.complete(ask(thinking=False))
            await plain.complete(ask(thinking=True, budget=50_000))
        finally:
            await plain.aclose()

    run(reasoning, calls)

    effort_low, no_effort, plain_sent = openai_server.bodies
    assert effort_low["reasoning_effort"] == "low"
    assert effort_low["max_completion_tokens"] == 2000
    assert "max_tokens" not in effort_low and "temperature" not in effort_low
    assert "reasoning_effort" not in no_effort
    assert "reasoning_effort" not in plain_sent and plain_sent["max_tokens"] == 4096


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("o1", True),
        ("o3-mini", True),
        ("o4-mini-2025-04-16", True),
        ("gpt-5", True),
        ("gpt-5.1-mini", True),
        ("openai/o3", True),
        ("gpt-4o-mini", False),
        ("gpt-4.1", False),
        ("llama3.1:8b", False),
        ("omni-model", False),
    ],
)
def test_is_reasoning_model(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


# -- retries --------------------------------------------------------------------------------


def test_429_with_retry_after_waits_that_long_and_retries(provider: Provider) -> None:
    metrics = HiveMetrics()
    provider.server.script(FaultSpec(429, retry_after="0.3"), ReplySpec("ok"))
    client = provider.client(metrics=metrics)

    started = time.monotonic()
    response = run(client, lambda: client.complete(ask()))

    assert response.text == "ok"
    assert time.monotonic() - started >= 0.3
    assert len(provider.server.requests) == 2
    assert counter(metrics, "sessionhive_llm_retries_total", provider=provider.name) == 1


def test_a_long_retry_after_is_capped(provider: Provider) -> None:
    provider.server.script(FaultSpec(429, retry_after="3600"), ReplySpec("ok"))
    client = provider.client(retry=RetryPolicy(initial_wait_s=0.001, max_wait_s=0.01, max_retry_after_s=0.05))

    started = time.monotonic()
    response = run(client, lambda: client.complete(ask()))

    assert response.text == "ok"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_server_errors_are_retried(provider: Provider, streamed: bool) -> None:
    metrics = HiveMetrics()
    faults = [FaultSpec(500), FaultSpec(503)]
    if provider.name == "anthropic":
        faults.append(FaultSpec(529))  # overloaded
    provider.server.script(*faults, ReplySpec("recovered"))
    client = provider.client(metrics=metrics, max_retries=3)

    response = collect_stream(client, ask())[0] if streamed else run(client, lambda: client.complete(ask()))

    assert response.text == "recovered"
    assert len(provider.server.requests) == len(faults) + 1
    assert counter(metrics, "sessionhive_llm_retries_total", provider=provider.name) == len(faults)


def test_giving_up_after_max_retries_raises_llm_error(provider: Provider) -> None:
    metrics = HiveMetrics()
    provider.server.script(FaultSpec(500), FaultSpec(500), ReplySpec("too late"))
    client = provider.client(metrics=metrics, max_retries=1)

    with pytest.raises(LlmError, match="after 2 attempts") as caught:
        run(client, lambda: client.complete(ask()))

    assert "server error (500)" in str(caught.value)
    assert len(provider.server.requests) == 2
    labels = {"provider": provider.name, "model": provider.model, "outcome": "error"}
    assert counter(metrics, "sessionhive_llm_request_duration_seconds_count", **labels) == 1


def test_connection_refused_is_retried_then_reported_with_the_url(provider: Provider) -> None:
    url = provider.server.url
    provider.server.stop()  # nothing listens on the port any more
    client = provider.client(max_retries=1)

    with pytest.raises(LlmError, match="could not reach") as caught:
        run(client, lambda: client.complete(ask()))

    assert url.split("//")[1].split("/")[0] in str(caught.value)
    assert "after 2 attempts" in str(caught.value)


def test_x_should_retry_false_is_obeyed(provider: Provider) -> None:
    provider.server.script(FaultSpec(503, headers={"x-should-retry": "false"}), ReplySpec("never"))
    client = provider.client()

    with pytest.raises(LlmError, match="asked not to retry"):
        run(client, lambda: client.complete(ask()))

    assert len(provider.server.requests) == 1


# -- errors that retrying does not fix ----------------------------------------------------


def test_401_names_the_key_setting_without_revealing_the_key(provider: Provider) -> None:
    provider.server.script(FaultSpec(401), ReplySpec("never"))
    client = provider.client()

    with pytest.raises(LlmError) as caught:
        run(client, lambda: client.complete(ask()))

    message = str(caught.value)
    assert "rejected (401)" in message
    assert f"LlmConfig.api_key or {provider.key_env_var}" in message
    assert KEY in provider.server.default_message(401, provider.server.requests[0])  # the server did echo it
    assert KEY not in exception_texts(caught.value)
    assert "7f3a9c2e1b5d" not in exception_texts(caught.value)
    assert len(provider.server.requests) == 1


def test_404_names_the_model(provider: Provider) -> None:
    provider.server.script(FaultSpec(404))
    client = provider.client(model="no-such-model")

    with pytest.raises(LlmError, match=r"model 'no-such-model' not found \(404\).*LlmConfig\.model"):
        run(client, lambda: client.complete(ask()))

    assert len(provider.server.requests) == 1


def test_400_is_reported_with_the_server_message_and_not_retried(provider: Provider) -> None:
    provider.server.script(FaultSpec(400, message="max_tokens is too large: 999999"))
    client = provider.client()

    with pytest.raises(LlmError, match=r"rejected the request as invalid \(400\).*max_tokens is too large"):
        run(client, lambda: client.complete(ask()))

    assert len(provider.server.requests) == 1


@pytest.mark.parametrize("kind", ["json", "sse", "html"])
def test_a_malformed_response_raises_llm_error_naming_the_base_url(provider: Provider, kind: str) -> None:
    provider.server.script(MalformedSpec(kind))  # type: ignore[arg-type]
    client = provider.client()
    call = (
        (lambda: client.stream(ask(), lambda _: None)) if kind == "sse" else (lambda: client.complete(ask()))
    )

    with pytest.raises(LlmError, match="base_url"):
        run(client, call)

    assert len(provider.server.requests) == 1


def test_a_missing_key_names_the_env_var_and_the_config_field(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(provider.key_env_var, raising=False)
    config = LlmConfig(provider.name, provider.model)

    with pytest.raises(
        LlmError, match=rf"set the {provider.key_env_var} environment variable.*LlmConfig\(api_key"
    ):
        create_client(config)


def test_the_key_comes_from_the_environment_when_the_config_has_none(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(provider.key_env_var, "sk-from-env-123")
    provider.server.script(ReplySpec("ok"))
    client = create_client(LlmConfig(provider.name, provider.model, base_url=provider.server.url))
    assert isinstance(client, OpenAiClient | AnthropicClient)

    run(client, lambda: client.complete(ask()))

    assert provider.server.received_key(provider.server.requests[0]) == "sk-from-env-123"


def test_a_local_openai_server_needs_no_key(
    openai_server: OpenAiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai_server.script(ReplySpec("local"))
    client = OpenAiClient(LlmConfig("openai", "llama3.1:8b", base_url=openai_server.url))

    assert run(client, lambda: client.complete(ask())).text == "local"
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-no-key"


def test_a_config_for_another_provider_is_refused() -> None:
    with pytest.raises(InvalidConfig, match="create_client"):
        OpenAiClient(LlmConfig("anthropic", "claude-test-1", api_key=KEY))


# -- streaming failures and cancellation ----------------------------------------------------


def test_a_stream_broken_after_text_is_not_retried(provider: Provider) -> None:
    metrics = HiveMetrics()
    provider.server.script(ReplySpec("one two three four", cut_after=2), ReplySpec("never sent"))
    client = provider.client(metrics=metrics)
    deltas: list[str] = []

    with pytest.raises(LlmError, match="no text is delivered twice"):
        run(client, lambda: client.stream(ask(), deltas.append))

    assert deltas == ["one ", "two "]
    assert len(provider.server.requests) == 1
    assert counter(metrics, "sessionhive_llm_retries_total", provider=provider.name) == 0


def test_a_stream_broken_before_any_text_is_retried(provider: Provider) -> None:
    provider.server.script(ReplySpec("lost words", cut_after=0), ReplySpec("second try"))
    client = provider.client()

    response, deltas = collect_stream(client, ask())

    assert deltas == ["second ", "try"]
    assert response.text == "second try"
    assert len(provider.server.requests) == 2


def test_an_error_event_before_any_text_is_retried(provider: Provider) -> None:
    error_type = "overloaded_error" if provider.name == "anthropic" else "server_error"
    provider.server.script(ReplySpec(stream_error=error_type), ReplySpec("fine now"))
    client = provider.client()

    response, deltas = collect_stream(client, ask())

    assert deltas == ["fine ", "now"]
    assert response.text == "fine now"
    assert len(provider.server.requests) == 2


def test_an_error_event_after_text_is_not_retried(provider: Provider) -> None:
    error_type = "overloaded_error" if provider.name == "anthropic" else "server_error"
    provider.server.script(ReplySpec("half an", stream_error=error_type), ReplySpec("never sent"))
    client = provider.client()
    deltas: list[str] = []

    with pytest.raises(LlmError, match="no text is delivered twice"):
        run(client, lambda: client.stream(ask(), deltas.append))

    assert deltas == ["half ", "an"]
    assert len(provider.server.requests) == 1


def test_an_exception_from_on_text_propagates_unchanged_and_is_not_retried(provider: Provider) -> None:
    provider.server.script(ReplySpec("a b c"), ReplySpec("a b c"))
    client = provider.client()

    def on_text(_: str) -> None:
        raise KeyError("subscriber gone")

    with pytest.raises(KeyError, match="subscriber gone"):
        run(client, lambda: client.stream(ask(), on_text))

    assert len(provider.server.requests) == 1


def test_cancelling_a_stream_closes_the_connection_promptly(provider: Provider) -> None:
    metrics = HiveMetrics()
    provider.server.script(ReplySpec("first second third fourth", chunk_delay=10.0))
    client = provider.client(metrics=metrics)

    async def cancel_after_first_delta() -> float:
        first = asyncio.Event()
        task = asyncio.create_task(client.stream(ask(), lambda _: first.set()))
        await asyncio.wait_for(first.wait(), timeout=5)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    took = run(client, cancel_after_first_delta)

    assert took < 1.0
    assert provider.server.disconnected.wait(timeout=5), "the server never saw the connection close"
    labels = {"provider": provider.name, "model": provider.model, "outcome": "cancelled"}
    assert counter(metrics, "sessionhive_llm_request_duration_seconds_count", **labels) == 1


def test_a_client_can_be_used_from_one_event_loop_after_another(provider: Provider) -> None:
    provider.server.script(ReplySpec("first"), ReplySpec("second"))
    client = provider.client()

    assert run(client, lambda: client.complete(ask())).text == "first"
    assert run(client, lambda: client.complete(ask())).text == "second"


# -- the key stays secret ------------------------------------------------------------------


def test_the_api_key_never_leaks(provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    metrics = HiveMetrics()
    provider.server.script(
        ReplySpec("plain"),
        FaultSpec(429, retry_after="0"),
        ReplySpec("streamed text", [ToolCallSpec("read_file", {"path": "x"})]),
        FaultSpec(401),
    )
    client = provider.client(metrics=metrics)

    async def calls() -> None:
        await client.complete(ask())
        await client.stream(ask(tools=(READ,)), lambda _: None)
        with pytest.raises(LlmError) as caught:
            await client.complete(ask())
        assert KEY not in exception_texts(caught.value)

    run(client, calls)

    assert KEY not in repr(client)
    assert KEY not in repr(vars(client))
    assert KEY not in repr(client.config) and client.config.api_key is None
    assert KEY.encode() not in generate_latest(metrics.registry)
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.getMessage()
        assert KEY not in repr(record.args)
    for request in provider.server.requests:
        assert KEY.encode() not in request.raw_body
        assert provider.server.received_key(request) == KEY
        carrying = [name for name, value in request.headers.items() if KEY in value]
        assert carrying in (["authorization"], ["x-api-key"])


# -- helpers ---------------------------------------------------------------------------------


def test_retry_after_accepts_seconds_http_dates_and_milliseconds() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    in_ten = format_datetime(now + timedelta(seconds=10), usegmt=True)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after": in_ten}, now=now) == 10.0
    assert (
        retry_after_seconds(
            {"retry-after": format_datetime(now - timedelta(seconds=5), usegmt=True)}, now=now
        )
        == 0.0
    )
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert retry_after_seconds({}) is None


def test_redact_hides_the_key_and_key_shaped_tokens() -> None:
    assert redact(f"bad key {KEY}!", KEY) == "bad key ***!"
    assert (
        redact("Incorrect API key provided: sk-proj-abc*****wxyz.", None)
        == "Incorrect API key provided: ***."
    )
    assert redact("model not found", KEY) == "model not found"


def test_retry_policy_rejects_negative_waits() -> None:
    with pytest.raises(InvalidConfig, match="initial_wait_s"):
        RetryPolicy(initial_wait_s=-1)
