"""MCP tool servers: real servers (the ``mcp`` package's MCPServer) over stdio and streamable HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from sessionhive import (
    ConfirmationPolicy,
    Hive,
    ImagePart,
    McpServer,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    TextPart,
    ToolCall,
)
from sessionhive.model.errors import InvalidConfig

SERVER = Path(__file__).parent / "mcp_fixtures" / "server.py"
# The sandboxed server reads its interpreter's libraries and its own source, nothing else of the host.
READABLE = (sys.prefix, sys.base_prefix, str(SERVER.parent))


def one_call(name: str, arguments: dict[str, object]) -> Callable[[list[Message]], Reply]:
    """A model that calls ``name`` once, then answers with the tool's result."""

    def script(messages: list[Message]) -> Reply:
        last = messages[-1]
        if last.role == "tool":
            return Reply(text=f"result: {last.text}")
        return Reply("calling", [ToolCall(name, arguments)])

    return script


def stdio_server(**overrides: object) -> McpServer:
    return McpServer("fx", command=[sys.executable, str(SERVER), "stdio"], readable=READABLE, **overrides)  # type: ignore[arg-type]


def test_a_stdio_server_serves_a_turns_tool_call(workspace: Path, actor_backend: str) -> None:
    llm = ScriptedLlm(one_call("fx__add", {"a": 2, "b": 40}))
    servers = [stdio_server()]
    with Hive.start(
        store="memory", llm=llm, workspace=workspace, mcp_servers=servers, actor_backend=actor_backend
    ) as hive:
        hive.create_session("s")
        result = hive.generate("s", "add please")
        assert result.text == "result: 42"
        assert "fx__add" in [d.name for d in hive.list_tools()]


def test_many_sessions_share_one_connection(workspace: Path) -> None:
    llm = ScriptedLlm(one_call("fx__add", {"a": 1, "b": 1}))
    with Hive.start(store="memory", llm=llm, workspace=workspace, mcp_servers=[stdio_server()]) as hive:
        for n in range(1000):
            hive.create_session(f"s{n}")
        for n in range(0, 1000, 100):
            assert hive.generate(f"s{n}", "go").text == "result: 2"
    # The server logs one line per process it ran: one connection for all the sessions.
    assert len((workspace / "connections.log").read_text().split()) == 1


def test_a_stdio_server_cannot_write_outside_the_workspace(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    llm = ScriptedLlm(one_call("fx__write", {"path": str(outside), "text": "escape"}))
    policy = ConfirmationPolicy(enabled=False)
    with Hive.start(store="memory", llm=llm, workspace=workspace, mcp_servers=[stdio_server()]) as hive:
        hive.create_session("s", SessionConfig(confirmation_policy=policy))
        result = hive.generate("s", "escape")
    # The server saw only a private /tmp: the host file was never written.
    assert result.text.startswith("result:")
    assert not outside.exists()


def test_confirmation_rules_apply_to_mcp_tools(workspace: Path) -> None:
    llm = ScriptedLlm(one_call("fx__write", {"path": "note.txt", "text": "hi"}))
    # Per server: "fx__*" names every tool of server fx; nobody answers, so the call is rejected.
    policy = ConfirmationPolicy(require_confirmation=("fx__*",), timeout_s=0.2, on_timeout="reject")
    with Hive.start(store="memory", llm=llm, workspace=workspace, mcp_servers=[stdio_server()]) as hive:
        hive.create_session("s", SessionConfig(confirmation_policy=policy))
        hive.generate("s", "write")
        assert not (workspace / "note.txt").exists()
        hive.create_session("t", SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False)))
        hive.generate("t", "write")
        assert (workspace / "note.txt").read_text() == "hi"


def test_killing_the_server_mid_call_gives_effects_unknown_and_the_next_call_reconnects(
    workspace: Path,
) -> None:
    calls = iter([("fx__crash", {}), ("fx__add", {"a": 3, "b": 4})])

    def script(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply(text=f"result: {messages[-1].text}")
        name, arguments = next(calls)
        return Reply("calling", [ToolCall(name, arguments)])

    policy = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
    with Hive.start(
        store="memory", llm=ScriptedLlm(script), workspace=workspace, mcp_servers=[stdio_server()]
    ) as hive:
        hive.create_session("s", policy)
        answer = hive.generate("s", "crash").text
        assert "effects are unknown" in answer
        assert hive.generate("s", "add").text == "result: 7"
        registry = hive.metrics.registry
        assert registry.get_sample_value("sessionhive_mcp_restarts_total", {"server": "fx"}) == 1
        assert (
            registry.get_sample_value("sessionhive_mcp_errors_total", {"server": "fx", "tool": "crash"}) == 1
        )
        assert registry.get_sample_value("sessionhive_mcp_calls_total", {"server": "fx", "tool": "add"}) == 1
    assert len((workspace / "connections.log").read_text().split()) == 2


def test_a_read_only_tool_is_retried_on_a_fresh_connection_when_its_server_dies(workspace: Path) -> None:
    llm = ScriptedLlm(one_call("fx__flaky_read", {}))
    with Hive.start(store="memory", llm=llm, workspace=workspace, mcp_servers=[stdio_server()]) as hive:
        hive.create_session("s")
        assert hive.generate("s", "read").text == "result: read ok"
    assert len((workspace / "connections.log").read_text().split()) == 2


def test_the_tool_list_is_refreshed_when_the_server_says_it_changed(workspace: Path) -> None:
    calls = iter([("fx__grow", {}), ("fx__shout", {"text": "hi"})])

    def script(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply(text=f"result: {messages[-1].text}")
        name, arguments = next(calls)
        return Reply("calling", [ToolCall(name, arguments)])

    with Hive.start(
        store="memory", llm=ScriptedLlm(script), workspace=workspace, mcp_servers=[stdio_server()]
    ) as hive:
        hive.create_session("s", SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False)))
        assert "fx__shout" not in [d.name for d in hive.list_tools()]
        assert hive.generate("s", "grow").text == "result: shout added"
        assert hive.generate("s", "shout").text == "result: HI"
        assert "fx__shout" in [d.name for d in hive.list_tools()]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(SERVER), "http", str(port)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)  # the server process starting, not an actor
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        process.wait()


def test_a_streamable_http_server_serves_a_turns_tool_call(workspace: Path, http_server: str) -> None:
    llm = ScriptedLlm(one_call("web__add", {"a": 5, "b": 6}))
    server = McpServer("web", url=http_server)
    with Hive.start(
        store="memory", llm=llm, workspace=workspace, mcp_servers=[server], allow_base_urls=[http_server]
    ) as hive:
        hive.create_session("s")
        assert hive.generate("s", "add").text == "result: 11"


def test_an_http_server_the_operator_did_not_allow_is_refused(workspace: Path) -> None:
    with pytest.raises(InvalidConfig, match="allow_base_urls"):
        Hive.start(
            store="memory", workspace=workspace, mcp_servers=[McpServer("web", url="http://127.0.0.1:9/mcp")]
        )


def test_a_session_sees_only_the_mcp_servers_it_names(workspace: Path) -> None:
    llm = ScriptedLlm(one_call("fx__add", {"a": 1, "b": 2}))
    with Hive.start(store="memory", llm=llm, workspace=workspace, mcp_servers=[stdio_server()]) as hive:
        hive.create_session("without", SessionConfig(mcp_servers=[]))
        hive.create_session("with", SessionConfig(mcp_servers=["fx"]))
        assert "denies fx__add" in hive.generate("without", "add").text
        assert hive.generate("with", "add").text == "result: 3"


def test_an_image_a_tool_returns_becomes_an_image_part_of_its_result(workspace: Path) -> None:
    sys.path.insert(0, str(SERVER.parent))
    try:
        from server import PICTURE  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SERVER.parent))
    seen: list[Message] = []

    def script(messages: list[Message]) -> Reply:
        seen.append(messages[-1])
        return one_call("fx__picture", {})(messages)

    with Hive.start(
        store="memory", llm=ScriptedLlm(script), workspace=workspace, mcp_servers=[stdio_server()]
    ) as hive:
        hive.create_session("s")
        hive.generate("s", "show me")
        tool_message = hive.history("s")[2]
    assert tool_message.role == "tool" and seen[-1] == tool_message  # the model saw the parts
    assert tool_message.parts == (TextPart("a test picture"), ImagePart(PICTURE, "image/png"))
    assert tool_message.text == "a test picture\n[image result (image/png)]"
