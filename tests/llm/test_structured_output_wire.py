"""Structured output on the wire: OpenAI's response_format json_schema and Anthropic's forced answer tool.

The official SDKs talk to loopback servers that record each request body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from sessionhive import AgentResult, ConfirmationPolicy, Hive, LlmConfig, Message, SessionConfig, TextDelta
from sessionhive.agent.recovery import history_problems
from sessionhive.llm.anthropic import AnthropicClient
from sessionhive.llm.base import LlmRequest
from sessionhive.model.messages import ToolDefinition
from sessionhive.model.output import output_spec
from tests.llm.llm_servers import AnthropicServer, OpenAiServer, ReplySpec, ToolCallSpec
from tests.llm.test_llm_providers import FAST, run

KEY = "sk-structured-test-0123456789"
NO_CONFIRM = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int


#: A schema OpenAI's strict mode accepts: closed, every property required.
STRICT_POINT = {
    "type": "object",
    "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
    "required": ["x", "y"],
    "additionalProperties": False,
}


def openai_turn(
    workspace: Path, answer: str, streamed: bool = False, **generate: Any
) -> tuple[AgentResult, dict[str, Any]]:
    """One turn through the OpenAI SDK against a loopback server: its result, and the body it sent."""
    with OpenAiServer() as server:
        server.script(ReplySpec(answer))
        llm = LlmConfig("openai", "gpt-4o-mini", api_key=KEY, base_url=server.url)
        with Hive.start(store="memory", llm=llm, workspace=workspace) as hive:
            hive.create_session("s", NO_CONFIRM)
            if streamed:
                stream = hive.generate_streaming("s", "weather?", **generate)
                assert "".join(e.text for e in stream if isinstance(e, TextDelta))
                result = stream.result()
            else:
                result = hive.generate("s", "weather?", **generate)
        body: dict[str, Any] = server.bodies[0]
    return result, body


@pytest.mark.parametrize("streamed", [False, True])
def test_openai_gets_response_format_json_schema(workspace: Path, streamed: bool) -> None:
    answer = '{"city": "Oslo", "celsius": -3}'
    result, body = openai_turn(workspace, answer, streamed, output_schema=Forecast)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Forecast", "schema": Forecast.model_json_schema(), "strict": False},
    }
    assert result.output == Forecast(city="Oslo", celsius=-3)


def test_openai_strict_mode_for_a_closed_schema(workspace: Path) -> None:
    result, body = openai_turn(workspace, '{"x": 1, "y": 2}', output_schema=STRICT_POINT)
    assert result.output == {"x": 1, "y": 2}
    assert body["response_format"]["json_schema"] == {
        "name": "output",
        "schema": STRICT_POINT,
        "strict": True,
    }


def test_openai_turns_without_a_schema_send_no_response_format(workspace: Path) -> None:
    result, body = openai_turn(workspace, "hello")
    assert "response_format" not in body and result.output is None


@pytest.mark.parametrize("streamed", [False, True])
def test_anthropic_forces_the_answer_tool_when_it_is_the_only_tool(streamed: bool) -> None:
    with AnthropicServer() as server:
        server.script(ReplySpec("", [ToolCallSpec("Forecast", {"city": "Oslo", "celsius": -3}, "toolu_1")]))
        client = AnthropicClient(
            LlmConfig("anthropic", "claude-test-1", api_key=KEY, base_url=server.url), retry=FAST
        )
        request = LlmRequest(
            "s1", None, (Message.user("weather?"),), thinking=True, output=output_spec(Forecast)
        )
        if streamed:
            response = run(client, lambda: client.stream(request, lambda _delta: None))
        else:
            response = run(client, lambda: client.complete(request))
        body = server.bodies[0]
    assert body["tool_choice"] == {"type": "tool", "name": "Forecast"}
    assert [t["name"] for t in body["tools"]] == ["Forecast"]
    assert body["tools"][0]["input_schema"] == Forecast.model_json_schema()
    assert "thinking" not in body  # the API refuses a forced tool with thinking
    # The forced call's input is the answer: no tool call is left to run.
    assert response.tool_calls == () and response.stop_reason == "stop"
    assert Forecast.model_validate_json(response.text) == Forecast(city="Oslo", celsius=-3)


def test_anthropic_offers_the_answer_tool_beside_the_session_tools(workspace: Path) -> None:
    with AnthropicServer() as server:
        server.script(
            ReplySpec("Let me look.", [ToolCallSpec("list_dir", {"path": "."}, "toolu_1")]),
            ReplySpec("", [ToolCallSpec("Forecast", {"city": "Oslo", "celsius": 4}, "toolu_2")]),
        )
        llm = LlmConfig("anthropic", "claude-test-1", api_key=KEY, base_url=server.url)
        with Hive.start(store="memory", llm=llm, workspace=workspace) as hive:
            hive.create_session("s", NO_CONFIRM)
            result = hive.generate("s", "weather?", output_schema=Forecast)
            history = hive.history("s")
        first, second = server.bodies
    # With tools of its own the model must call one of them or the answer tool: "any".
    assert first["tool_choice"] == {"type": "any"}
    assert "Forecast" in [t["name"] for t in first["tools"]] and "list_dir" in [
        t["name"] for t in first["tools"]
    ]
    assert second["tool_choice"] == {"type": "any"}
    assert result.output == Forecast(city="Oslo", celsius=4)
    assert [c.name for c in result.tool_calls] == ["list_dir"]  # the answer tool never ran as a tool
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert not history[-1].tool_calls and not history_problems(history)


def test_anthropic_answer_tool_named_like_a_session_tool_is_still_an_answer() -> None:
    definitions = (ToolDefinition("read_file", "reads", {"type": "object"}),)
    with AnthropicServer() as server:
        server.script(ReplySpec("", [ToolCallSpec("output", {"x": 1, "y": 2}, "toolu_1")]))
        client = AnthropicClient(
            LlmConfig("anthropic", "claude-test-1", api_key=KEY, base_url=server.url), retry=FAST
        )
        request = LlmRequest(
            "s1", None, (Message.user("a point"),), definitions, output=output_spec(STRICT_POINT)
        )
        response = run(client, lambda: client.complete(request))
    assert response.tool_calls == () and response.text == '{"x": 1, "y": 2}'
