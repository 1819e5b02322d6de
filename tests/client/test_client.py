"""RemoteHive / AsyncRemoteHive against a real service on 127.0.0.1: same code as embedded, same answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhive import (
    AsyncHive,
    ConfirmationNotFound,
    ConfirmationPolicy,
    ConfirmationRequired,
    ConfirmationResolved,
    Hive,
    InvalidConfig,
    InvalidSessionId,
    LlmConfig,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionExists,
    SessionNotFound,
    SessionPaused,
    ToolCall,
    TurnCancelled,
    TurnEnd,
    TurnStart,
)
from sessionhive.client import AsyncRemoteHive, RemoteHive, ServiceUnavailable, Unauthorized
from sessionhive.serve import ServerThread, serve_app

TOKEN = "client-test-token-0123456789"


def script(messages: list[Message]) -> Reply:
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text[:30]}")
    if last.text.startswith("write"):
        return Reply("writing", [ToolCall("write_file", {"path": "note.txt", "content": last.text})])
    return Reply(f"echo {last.text}")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Hive]:
    workspace = tmp_path / "embedded"
    workspace.mkdir()
    with Hive.start(
        store=f"sqlite:///{tmp_path / 'e.db'}", llm=ScriptedLlm(script), workspace=workspace
    ) as hive:
        yield hive


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Hive, ServerThread]]:
    workspace = tmp_path / "served"
    workspace.mkdir()
    with (
        Hive.start(
            store=f"sqlite:///{tmp_path / 's.db'}", llm=ScriptedLlm(script), workspace=workspace
        ) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
    ):
        yield hive, server


@pytest.fixture
def remote(served: tuple[Hive, ServerThread]) -> Iterator[RemoteHive]:
    with RemoteHive(served[1].url, token=TOKEN) as hive:
        yield hive


def tour(hive: Any) -> dict[str, Any]:
    """A user's program, written once against the Hive API."""
    out: dict[str, Any] = {}
    hive.create_session("team/lead", SessionConfig(system_prompt="Be brief.", max_tool_rounds=5))
    hive.create_child_session("team/lead", "team/lead/helper")
    out["children"] = hive.get_child_sessions("team/lead")
    out["is_child"] = hive.is_child_session("team/lead/helper")
    out["count"] = hive.session_count()
    out["ids"] = sorted(hive.list_sessions())
    out["result"] = hive.generate("team/lead", "hello there")
    out["got"] = (hive.get_or_create_session("team/lead"), hive.get_or_create_session("team/new"))
    out["reset"] = hive.reset_session("team/new")
    asked: list[str] = []

    def decide(event: ConfirmationRequired) -> tuple[bool, str]:
        asked.append(event.tool_name)
        return False, "decided by a callback"

    out["decided"] = hive.generate("team/new", "write by callback", on_confirmation=decide)
    out["asked"] = asked
    stream = hive.generate_streaming("team/lead", "write a note")
    events = []
    for event in stream:
        events.append(type(event).__name__)
        if isinstance(event, ConfirmationRequired):
            assert hive.pending_confirmations("team/lead") == [event.tool_id]
            assert hive.confirm_tool("team/lead", event.tool_id, True, "ok") is True
    out["events"] = [e for e in events if e != "TextDelta"]
    out["streamed"] = stream.result()
    out["history"] = hive.history("team/lead")
    out["usage"] = hive.usage("team/lead")
    out["context"] = hive.context_usage("team/lead")
    out["policy"] = hive.set_confirmation_policy("team/lead", ConfirmationPolicy(require_confirmation="all"))
    out["policy_read"] = hive.get_confirmation_policy("team/lead")
    hive.configure("team/lead", model_config=LlmConfig("scripted", "other"))
    out["llm"] = hive.get_llm_for_session("team/lead")
    out["paused"] = (hive.pause_session("team/lead"), hive.pause_session("team/lead"))
    with pytest.raises(SessionPaused) as paused:
        hive.generate("team/lead", "hi")
    out["paused_id"] = paused.value.session_id
    out["resumed"] = hive.resume_session("team/lead")
    out["cancelled"] = hive.cancel_operation("team/lead")
    hive.compact("team/lead")
    out["auto"] = hive.maybe_auto_compact("team/lead")
    hive.clear("team/lead")
    out["cleared"] = hive.history("team/lead")
    with pytest.raises(SessionNotFound) as missing:
        hive.usage("ghost")
    out["missing"] = (missing.value.session_id, str(missing.value))
    with pytest.raises(SessionExists):
        hive.create_session("team/lead")
    with pytest.raises(InvalidSessionId):
        hive.create_session("")
    with pytest.raises(ConfirmationNotFound) as unknown:
        hive.confirm_tool("team/lead", "call_404", True)
    out["unknown_tool"] = unknown.value.tool_id
    with pytest.raises(InvalidConfig):
        hive.confirm_tool("team/lead", "", True)
    hive.restore_session_by_id("team/lead")
    hive.destroy_session("team/lead")
    out["after_destroy"] = sorted(hive.list_sessions())
    out["tools"] = sorted(t.name for t in hive.list_tools())
    hive.flush()
    out["health"] = [status for _name, status in hive.store_health()]
    return out


def test_the_same_program_gives_the_same_answers_embedded_and_remote(
    embedded: Hive, remote: RemoteHive
) -> None:
    here, there = tour(embedded), tour(remote)
    assert there == here
    assert there["events"][0] == "TurnStart" and "ConfirmationResolved" in there["events"]
    assert there["streamed"].text.startswith("done: ") and there["after_destroy"] == ["team/new"]
    assert there["got"] == ("team/lead", "team/new") and there["reset"] is False
    assert there["asked"] == ["write_file"]
    tool_message = there["decided"].messages[-2]
    assert tool_message.role == "tool" and "decided by a callback" in tool_message.text


def test_remote_stream_events_are_the_embedded_classes(remote: RemoteHive) -> None:
    remote.create_session("ivy")
    stream = remote.generate_streaming("ivy", "write it down")
    seen: list[object] = []
    for event in stream:
        seen.append(event)
        if isinstance(event, ConfirmationRequired):
            assert event.tool_name == "write_file" and event.arguments["path"] == "note.txt"
            remote.confirm_tool("ivy", event.tool_id, False, "not today")
    assert isinstance(seen[0], TurnStart) and isinstance(seen[-1], TurnEnd)
    resolved = next(e for e in seen if isinstance(e, ConfirmationResolved))
    assert (resolved.outcome, resolved.reason) == ("rejected", "not today")
    assert seen[-1].result == stream.result()


def test_remote_cancel_ends_the_stream_with_turn_cancelled(remote: RemoteHive) -> None:
    remote.create_session("jack")
    stream = remote.generate_streaming("jack", "write forever")
    for event in stream:
        if isinstance(event, ConfirmationRequired):
            assert stream.cancel() is True
    with pytest.raises(TurnCancelled) as cancelled:
        stream.result()
    assert cancelled.value.session_id == "jack"
    assert remote.history("jack")[0].role == "user"


def open_streams(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return float(
        next(line for line in text.splitlines() if line.startswith("sessionhive_serve_open_streams "))[31:]
    )


def test_remote_subscription_sees_a_turn_and_close_ends_it_on_the_service(
    served: tuple[Hive, ServerThread], remote: RemoteHive
) -> None:
    remote.create_session("kate")
    with remote.subscribe("kate") as subscription:
        assert open_streams(served[1].url) == 1
        remote.generate("kate", "hello")
        kinds: list[str] = []
        while not kinds or kinds[-1] != "TurnEnd":
            event = subscription.get(timeout=10)
            assert event is not None
            kinds.append(event.type)
    assert kinds[0] == "TurnStart"
    assert subscription.get(timeout=5) is None
    deadline = time.monotonic() + 10
    while open_streams(served[1].url) and time.monotonic() < deadline:
        time.sleep(0.05)  # the service notices the closed connection on its own loop
    assert open_streams(served[1].url) == 0


def test_remote_refusals(served: tuple[Hive, ServerThread]) -> None:
    with RemoteHive(served[1].url, token="wrong-token-0123456789") as stranger, pytest.raises(Unauthorized):
        stranger.session_count()
    with (
        RemoteHive("http://127.0.0.1:9", token=TOKEN, call_timeout=2) as nowhere,
        pytest.raises(ServiceUnavailable),
    ):
        nowhere.session_count()


def test_async_remote_hive_matches_async_hive(served: tuple[Hive, ServerThread], embedded: Hive) -> None:
    async def program(hive: Any) -> list[Any]:
        await hive.create_session("lou")
        stream = await hive.generate_streaming("lou", "write async")
        kinds: list[str] = []
        async for event in stream:
            kinds.append(event.type)
            if isinstance(event, ConfirmationRequired):
                await hive.confirm_tool("lou", event.tool_id, True)
        result = await stream.result()

        async def approve(event: ConfirmationRequired) -> bool:
            return event.tool_name == "write_file"

        called_back = await hive.generate("lou", "write via coroutine", on_confirmation=approve)
        subscription = await hive.subscribe("lou")
        await hive.generate("lou", "again")
        first = await subscription.get(timeout=10)
        subscription.close()
        with pytest.raises(SessionNotFound):
            await hive.history("nobody")
        history = await hive.history("lou")
        usage = await hive.usage("lou")
        await hive.destroy_session("lou")
        seen = [k for k in kinds if k != "TextDelta"]
        return [seen, result, called_back, first.type if first else None, history, usage]

    async def both() -> tuple[list[Any], list[Any]]:
        async with AsyncRemoteHive(served[1].url, token=TOKEN) as remote:
            there = await program(remote)
        here = await program(AsyncHive(embedded))
        return here, there

    here, there = asyncio.run(both())
    assert there == here and there[3] == "TurnStart"
    assert there[2].text.startswith("done: overwrote note.txt")  # approved by the coroutine


# A client-only install has httpx but neither starlette nor uvicorn: the client must still read the
# service's route and error tables (sessionhive.serve.routes, .problems) and talk to a real service.
_CLIENT_ONLY = """
import sys

class NoServerDependencies:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoServerDependencies())
from sessionhive import SessionExists
from sessionhive.client import RemoteHive

with RemoteHive(sys.argv[1], token=sys.argv[2]) as hive:
    print(hive.create_session("client/only"))
    try:
        hive.create_session("client/only")
    except SessionExists as exc:
        print("SessionExists", exc.session_id)
    print(hive.generate("client/only", "hi").text)
    print(sorted(name for name in sys.modules if name.split(".")[0] in ("starlette", "uvicorn")))
"""


def test_the_client_works_without_the_server_dependencies(
    served: tuple[Hive, ServerThread], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", _CLIENT_ONLY, served[1].url, TOKEN],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["client/only", "SessionExists client/only", "echo hi", "[]"]
