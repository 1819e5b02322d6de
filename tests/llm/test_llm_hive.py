"""Full tool-using turns through the Hive, with the official SDKs talking to loopback servers."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sessionhive import (
    ConfirmationPolicy,
    Hive,
    LlmConfig,
    LlmError,
    SessionConfig,
    TextDelta,
    TurnCancelled,
)
from tests.agent.test_turns import assert_valid_history
from tests.cli.test_cli import sessionhive_command
from tests.llm.llm_servers import (
    AnthropicServer,
    FaultSpec,
    LoopbackLlmServer,
    OpenAiServer,
    ReplySpec,
    ToolCallSpec,
)

KEY = "sk-hive-test-0123456789-SECRET"
NO_CONFIRM = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))


@pytest.fixture(params=["openai", "anthropic"])
def server(request: pytest.FixtureRequest) -> Iterator[LoopbackLlmServer]:
    with OpenAiServer() if request.param == "openai" else AnthropicServer() as started:
        started.provider = request.param  # type: ignore[attr-defined]
        yield started


def config_for(server: LoopbackLlmServer, **overrides: object) -> LlmConfig:
    provider = server.provider  # type: ignore[attr-defined]
    model = "gpt-4o-mini" if provider == "openai" else "claude-test-1"
    settings: dict[str, object] = {"api_key": KEY, "base_url": server.url, "max_retries": 2}
    settings.update(overrides)
    return LlmConfig(provider, model, **settings)  # type: ignore[arg-type]


def tool_then_answer() -> tuple[ReplySpec, ReplySpec]:
    return (
        ReplySpec("Let me look.", [ToolCallSpec("list_dir", {"path": "."})]),
        ReplySpec("The folder holds notes.md."),
    )


@pytest.mark.parametrize("streamed", [False, True])
def test_a_tool_using_turn_through_the_sdk(
    server: LoopbackLlmServer, workspace: Path, tmp_path: Path, streamed: bool
) -> None:
    (workspace / "notes.md").write_text("x")
    server.script(*tool_then_answer())
    with Hive.start(
        store=f"sqlite:///{tmp_path / 'h.db'}", llm=config_for(server), workspace=workspace
    ) as hive:
        hive.create_session("s", NO_CONFIRM)
        if streamed:
            stream = hive.generate_streaming("s", "What is here?")
            deltas = [e.text for e in stream if isinstance(e, TextDelta)]
            result = stream.result()
            assert "".join(deltas) == "Let me look.The folder holds notes.md."
        else:
            result = hive.generate("s", "What is here?")
        assert result.text == "The folder holds notes.md."
        assert result.rounds == 2 and result.usage.total_tokens == 2 * (11 + 7)
        history = hive.history("s")
        assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
        assert "notes.md" in history[2].text
        assert_valid_history(history)
        second = str(server.bodies[1])
        assert "notes.md" in second  # the tool result went back to the model
        tokens = hive.metrics.registry.get_sample_value(
            "sessionhive_llm_tokens_total",
            {"provider": server.provider, "model": config_for(server).model, "kind": "prompt"},  # type: ignore[attr-defined]
        )
        assert tokens == 22


def test_429_and_500_are_retried_inside_a_turn(server: LoopbackLlmServer, workspace: Path) -> None:
    server.script(FaultSpec(429, retry_after="0"), FaultSpec(500), ReplySpec("fine"))
    with Hive.start(store="memory", llm=config_for(server), workspace=workspace) as hive:
        hive.create_session("s")
        assert hive.generate("s", "hi").text == "fine"
        retries = hive.metrics.registry.get_sample_value(
            "sessionhive_llm_retries_total",
            {"provider": server.provider},  # type: ignore[attr-defined]
        )
        assert retries == 2


def test_malformed_tool_arguments_reach_the_model_as_a_tool_error(
    server: LoopbackLlmServer, workspace: Path
) -> None:
    server.script(ReplySpec("", [ToolCallSpec("read_file", '{"path": ')]), ReplySpec("sorry"))
    with Hive.start(store="memory", llm=config_for(server), workspace=workspace) as hive:
        hive.create_session("s")
        assert hive.generate("s", "read it").text == "sorry"
        tool_message = hive.history("s")[2]
        assert tool_message.is_error and "JSON" in tool_message.text
        assert "not valid JSON" in str(server.bodies[1])


def test_a_rejected_key_fails_the_turn_clearly_and_the_session_stays_usable(
    server: LoopbackLlmServer, workspace: Path
) -> None:
    server.script(FaultSpec(401), ReplySpec("welcome back"))
    with Hive.start(store="memory", llm=config_for(server), workspace=workspace) as hive:
        hive.create_session("s")
        with pytest.raises(LlmError, match="401") as raised:
            hive.generate("s", "hi")
        assert KEY not in str(raised.value)
        assert [m.role for m in hive.history("s")] == ["user"]
        assert hive.generate("s", "again").text == "welcome back"


def test_cancelling_a_streaming_turn_closes_the_http_stream(
    server: LoopbackLlmServer, workspace: Path
) -> None:
    server.script(ReplySpec(" ".join(["slow"] * 50), chunk_delay=0.2))
    with Hive.start(store="memory", llm=config_for(server), workspace=workspace) as hive:
        hive.create_session("s")
        stream = hive.generate_streaming("s", "talk slowly")
        events = iter(stream)
        for event in events:
            if isinstance(event, TextDelta):
                break
        assert hive.cancel_operation("s") is True
        assert isinstance(list(events)[-1], TurnCancelled)
        assert server.disconnected.wait(5), "the HTTP stream was not closed"
        with pytest.raises(TurnCancelled):
            stream.result()
        assert hive.history("s")[0].text == "talk slowly"


def test_the_key_never_reaches_snapshots_logs_or_metrics(
    server: LoopbackLlmServer, workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(*tool_then_answer())
    db = tmp_path / "h.db"
    with Hive.start(store=f"sqlite:///{db}", workspace=workspace) as hive:
        hive.create_session("s", NO_CONFIRM)
        hive.configure("s", model_config=config_for(server))
        hive.generate("s", "look")
        hive.flush()
        exposition = generate_latest(hive.metrics.registry).decode()
        assert hive.get_llm_for_session("s") == config_for(server)
        assert hive.get_llm_for_session("s").api_key is None  # type: ignore[union-attr]
    for path in tmp_path.glob("h.db*"):
        assert KEY.encode() not in path.read_bytes()
    assert KEY not in exposition
    assert KEY not in caplog.text
    # After a restart the model config survives (without its key) and the env var supplies one.
    with Hive.start(store=f"sqlite:///{db}", workspace=workspace) as hive:
        restored = hive.get_llm_for_session("s")
        assert restored is not None and restored.base_url == server.url and restored.api_key is None


def test_cli_run_against_an_openai_compatible_server(workspace: Path) -> None:
    with OpenAiServer() as server:
        server.script(*tool_then_answer())
        done = subprocess.run(
            [
                *sessionhive_command(),
                "run",
                "--provider",
                "openai",
                "--base-url",
                server.url,
                "--model",
                "local-model",
                "--store",
                "memory",
                "What is here?",
            ],
            cwd=workspace,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": str(workspace)},
        )
        assert done.returncode == 0, done.stderr
        assert "The folder holds notes.md." in done.stdout
        assert "< tool list_dir [ok]" in done.stdout
        assert server.bodies[0]["model"] == "local-model"
