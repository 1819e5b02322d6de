"""Runs over real HTTP: the routes, their problems, SSE ids and resuming a dropped stream with Last-Event-ID.

The service runs under uvicorn on 127.0.0.1 (``ServerThread``); the clients
are the official ones (``httpx``, ``RemoteHive``). A prompt starting with
"write" asks for a tool call that waits for approval, so a run stays live
while a test reads, drops and resumes its stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhive import (
    AgentEvent,
    ConfirmationRequired,
    Hive,
    IdempotencyConflict,
    InvalidConfig,
    RunNotFound,
    ScriptedLlm,
    SessionBusy,
    TurnEnd,
    Webhook,
)
from sessionhive.client import AsyncRemoteHive, RemoteHive
from sessionhive.client._codec import event_from_dict
from sessionhive.serve import (
    ServeOptions,
    ServerThread,
    TokenTable,
    _router,
    new_token,
    run_service,
    serve_app,
)
from sessionhive.serve._app import SHUTDOWN_REASON
from tests.conftest import tool_loop_script
from tests.runs.runs_helpers import CountingScript

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Hive, str]]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("s")
        app = serve_app(hive, require_token=False, allow_webhook_urls=["http://127.0.0.1:9/hooks/"])
        server = ServerThread(app)
        try:
            yield hive, server.url
        finally:
            server.stop()


def _frames(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """``{"id", "event", "data"}`` per server-sent event (keep-alive comments skipped)."""
    frame: dict[str, Any] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = json.loads(value) if name == "data" else value


def test_a_run_starts_with_202_and_is_read_waited_listed_and_followed(served: tuple[Hive, str]) -> None:
    _hive, url = served
    answer = httpx.post(f"{url}/v1/sessions/s/runs", json={"prompt": "look around"}, timeout=30)
    assert answer.status_code == 202
    started = answer.json()
    assert started["run_id"].startswith("run_") and started["session_id"] == "s"
    with RemoteHive(url) as remote:
        finished = remote.wait_run(started["run_id"], timeout=30)
        assert finished.status == "completed" and finished.text and finished.text.startswith("done")
        assert remote.get_run(started["run_id"]) == finished
        assert [run.run_id for run in remote.list_runs("s")] == [started["run_id"]]
        events = list(remote.run_events(started["run_id"]))
    assert isinstance(events[-1], TurnEnd)
    ids = [event.event_id for event in events]
    assert ids == sorted(set(ids)) and ids[0] > 0  # every event has its own, growing id
    assert {event.run_id for event in events} == {started["run_id"]}


def test_a_dropped_run_stream_resumed_with_last_event_id_gets_every_event_once_in_order(
    served: tuple[Hive, str],
) -> None:
    hive, url = served
    run = httpx.post(f"{url}/v1/sessions/s/runs", json={"prompt": "write it"}, timeout=30).json()
    path = f"{url}/v1/runs/{run['run_id']}/events"
    got: list[dict[str, Any]] = []
    # First connection: read up to the tool call waiting for approval, then hang up.
    with httpx.stream("GET", path, timeout=30) as response:
        for frame in _frames(response.iter_lines()):
            got.append(frame)
            if frame["event"] == "ConfirmationRequired":
                break
    # Approved while nobody listens: what it sets off must come with the resumed stream.
    hive.confirm_tool("s", got[-1]["data"]["tool_id"], True)
    with httpx.stream("GET", path, headers={"Last-Event-ID": got[-1]["id"]}, timeout=30) as response:
        got += _frames(response.iter_lines())
    assert len(got) > 3
    assert got[-1]["event"] == "TurnEnd"
    # What the run emitted, replayed from its first event: the same frames, each once, in order.
    with RemoteHive(url) as remote:
        everything = list(remote.run_events(run["run_id"]))
    assert [int(frame["id"]) for frame in got] == [event.event_id for event in everything]
    assert [frame["event"] for frame in got] == [event.type for event in everything]
    assert all(frame["id"] == str(frame["data"]["event_id"]) for frame in got)


class CutOnce(httpx.HTTPTransport):
    """Cuts the first stream whose path ends with ``suffix`` after ``frames`` frames (a proxy timing out)."""

    def __init__(self, suffix: str, frames: int) -> None:
        super().__init__()
        self.suffix, self.frames, self.done = suffix, frames, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith(self.suffix) or self.done:
            return response
        self.done = True
        assert isinstance(response.stream, httpx.SyncByteStream)
        source: httpx.SyncByteStream = response.stream
        frames = self.frames

        class Cut(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                buffer = b""
                for chunk in source:
                    buffer += chunk
                    if buffer.count(b"\n\n") >= frames:
                        yield b"\n\n".join(buffer.split(b"\n\n")[:frames]) + b"\n\n"
                        raise httpx.ReadError("connection reset")
                yield buffer

            def close(self) -> None:
                response.close()

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut())


def test_remote_run_events_resumes_by_itself_after_the_connection_drops(served: tuple[Hive, str]) -> None:
    hive, url = served
    cut = CutOnce("/events", 1)
    with RemoteHive(url, transport=cut) as remote:
        run = remote.start_run("s", "write again", idempotency_key="k1")
        events: list[AgentEvent] = []
        for event in remote.run_events(run.run_id):
            events.append(event)
            if isinstance(event, ConfirmationRequired):
                hive.confirm_tool("s", event.tool_id, True)
        with RemoteHive(url) as plain:
            everything = list(plain.run_events(run.run_id))
    assert cut.done
    assert [e.event_id for e in events] == [e.event_id for e in everything]
    assert isinstance(events[-1], TurnEnd)


def test_a_remote_turn_stream_cut_mid_turn_goes_on_from_its_run_and_returns_the_result(
    served: tuple[Hive, str],
) -> None:
    _hive, url = served
    cut = CutOnce("/turns", 2)  # the `run` frame and TurnStart, then the connection drops
    with RemoteHive(url, transport=cut) as remote:
        stream = remote.generate_streaming("s", "write through a cut", on_confirmation=lambda _e: True)
        events = list(stream)
        result = stream.result()
        with RemoteHive(url) as plain:
            everything = list(plain.run_events(stream.run_id))
    assert cut.done
    assert [e.event_id for e in events] == [e.event_id for e in everything]  # each once, in order
    assert result.text.startswith("done") and isinstance(events[-1], TurnEnd)


def test_a_turn_stream_names_its_run_first_and_every_event_frame_carries_its_id(
    served: tuple[Hive, str],
) -> None:
    _hive, url = served
    with httpx.stream(
        "POST", f"{url}/v1/sessions/s/turns", json={"prompt": "look"}, headers=SSE, timeout=30
    ) as response:
        frames = list(_frames(response.iter_lines()))
    assert frames[0]["event"] == "run" and frames[0]["data"]["run_id"].startswith("run_")
    assert frames[-1]["event"] == "result"
    events = frames[1:-1]
    assert events and all(int(f["id"]) == f["data"]["event_id"] for f in events)
    assert {f["data"]["run_id"] for f in events} == {frames[0]["data"]["run_id"]}
    with RemoteHive(url) as remote:
        stream = remote.generate_streaming("s", "look again")
        assert stream.run_id.startswith("run_")
        stream.result()
        assert remote.get_run(stream.run_id).status == "completed"


def test_the_session_event_stream_replays_after_last_event_id(served: tuple[Hive, str]) -> None:
    hive, url = served
    hive.generate("s", "look first")
    history = list(hive.run_events(hive.list_runs("s")[-1].run_id))
    after = history[1].event_id
    with httpx.stream(
        "GET", f"{url}/v1/sessions/s/events", headers={"Last-Event-ID": str(after)}, timeout=30
    ) as response:
        replayed: list[AgentEvent] = []
        for frame in _frames(response.iter_lines()):
            if frame["event"] != "subscribed":
                replayed.append(event_from_dict(frame["data"]))
            if frame["event"] == "TurnEnd":
                break
    assert [e.event_id for e in replayed] == [e.event_id for e in history[2:]]


def test_idempotency_busy_and_unknown_runs_are_problems(served: tuple[Hive, str]) -> None:
    _hive, url = served
    runs = f"{url}/v1/sessions/s/runs"
    first = httpx.post(runs, json={"prompt": "write a"}, headers={"Idempotency-Key": "once"}, timeout=30)
    again = httpx.post(runs, json={"prompt": "write a"}, headers={"Idempotency-Key": "once"}, timeout=30)
    assert first.status_code == again.status_code == 202
    assert first.json()["run_id"] == again.json()["run_id"]
    other = httpx.post(runs, json={"prompt": "write b"}, headers={"Idempotency-Key": "once"}, timeout=30)
    assert other.status_code == 422 and other.json()["error"] == "IdempotencyConflict"
    busy = httpx.post(runs, json={"prompt": "look", "on_busy": "reject"}, timeout=30)
    assert busy.status_code == 409 and busy.json()["error"] == "SessionBusy"
    missing = httpx.get(f"{url}/v1/runs/run_czI_0123456789abcdef", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"] == "RunNotFound"
    assert httpx.get(f"{url}/v1/runs/not-a-run", timeout=30).status_code == 404
    hook = httpx.post(runs, json={"prompt": "x", "webhook": {"url": "http://elsewhere.example/"}}, timeout=30)
    assert hook.status_code == 403 and hook.json()["error"] == "WebhookNotAllowed"
    assert "webhooks are not allowed" in hook.json()["detail"]
    with RemoteHive(url) as remote:  # the same problems, as the very exceptions
        with pytest.raises(IdempotencyConflict):
            remote.start_run("s", "write c", idempotency_key="once")
        with pytest.raises(SessionBusy):
            remote.start_run("s", "look", on_busy="reject")
        with pytest.raises(RunNotFound):
            remote.get_run("run_czI_0123456789abcdef")
        hooked = remote.start_run("s", "look", webhook=Webhook("http://127.0.0.1:9/hooks/done"))
        assert hooked.webhook_url == "http://127.0.0.1:9/hooks/done"
        assert remote.cancel_run(first.json()["run_id"]) is True
        assert remote.wait_run(first.json()["run_id"], timeout=30).status == "cancelled"


def test_a_tenant_cannot_read_or_cancel_another_tenants_run(tmp_path: Path) -> None:
    entries = {name: new_token(name, name, ["read", "write", "confirm"]) for name in ("alice", "bob")}
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text("\n".join(table for _token, table in entries.values()))
    alice, bob = ({"Authorization": f"Bearer {entries[n][0]}"} for n in ("alice", "bob"))
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=tmp_path) as hive:
        server = ServerThread(serve_app(hive, tokens=TokenTable.load(tokens_file)))
        try:
            assert (
                httpx.post(f"{server.url}/v1/sessions", json={"id": "a1"}, headers=alice).status_code == 201
            )
            run = httpx.post(f"{server.url}/v1/sessions/a1/runs", json={"prompt": "look"}, headers=alice)
            run_path = f"{server.url}/v1/runs/{run.json()['run_id']}"
            assert httpx.get(run_path, headers=alice).status_code == 200
            for method, path in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
                refused = httpx.request(method, run_path + path, headers=bob)
                assert refused.status_code == 404 and refused.json()["error"] == "RunNotFound"
            assert httpx.get(f"{server.url}/v1/sessions/a1/runs", headers=bob).status_code == 404
        finally:
            server.stop()


def test_a_quiet_run_stream_keeps_alive_and_ends_with_a_terminal_event_at_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_router, "SSE_KEEPALIVE_S", 0.2)
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=tmp_path) as hive:
        hive.create_session("s")
        server = ServerThread(serve_app(hive, require_token=False))
        stopped = False
        try:
            run = httpx.post(f"{server.url}/v1/sessions/s/runs", json={"prompt": "write it"}).json()
            lines: list[str] = []
            with httpx.stream("GET", f"{server.url}/v1/runs/{run['run_id']}/events", timeout=30) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    # Waiting for a human, the stream says only that it is alive; then the service stops.
                    if line == ": keep-alive" and not stopped:
                        stopped = True
                        threading.Thread(target=server.stop, daemon=True).start()
            frames = list(_frames(iter(lines)))
        finally:
            if not stopped:
                server.stop()
    assert ": keep-alive" in lines
    assert frames[-1]["event"] == "TurnCancelled"
    assert frames[-1]["data"]["reason"] == SHUTDOWN_REASON
    assert [f["event"] for f in frames[:2]] == ["TurnStart", "ConfirmationRequired"]


def test_remote_subscribe_after_replays_the_session_events_after_that_id(served: tuple[Hive, str]) -> None:
    hive, url = served
    hive.generate("s", "look once")
    events = list(hive.run_events(hive.list_runs("s")[-1].run_id))
    with RemoteHive(url) as remote, remote.subscribe("s", after=events[0].event_id) as subscription:
        replayed = [subscription.get(timeout=30) for _ in events[1:]]
    assert [e.event_id for e in replayed if e is not None] == [e.event_id for e in events[1:]]


def test_async_remote_hive_runs_and_after_as_a_query_parameter(served: tuple[Hive, str]) -> None:
    _hive, url = served

    async def scenario() -> list[AgentEvent]:
        async with AsyncRemoteHive(url) as remote:
            run = await remote.start_run("s", "look async", idempotency_key="a1")
            assert (await remote.start_run("s", "look async", idempotency_key="a1")).run_id == run.run_id
            assert (await remote.wait_run(run.run_id, timeout=30)).status == "completed"
            events = [event async for event in remote.run_events(run.run_id)]
            assert [r.run_id for r in await remote.list_runs("s")] == [run.run_id]
            assert await remote.cancel_run(run.run_id) is False
            return events

    events = asyncio.run(scenario())
    assert isinstance(events[-1], TurnEnd)
    run_id = events[0].run_id
    with httpx.stream(
        "GET", f"{url}/v1/runs/{run_id}/events?after={events[0].event_id}", timeout=30
    ) as response:
        after = [int(frame["id"]) for frame in _frames(response.iter_lines())]
    assert after == [event.event_id for event in events[1:]]
    bad = httpx.get(f"{url}/v1/runs/{run_id}/events", headers={"Last-Event-ID": "soon"}, timeout=30)
    assert bad.status_code == 400


def test_a_retried_turn_with_its_key_is_answered_without_a_second_model_call(tmp_path: Path) -> None:
    script = CountingScript()
    with Hive.start(store="memory", llm=ScriptedLlm(script), workspace=tmp_path) as hive:
        hive.create_session("s")
        with ServerThread(serve_app(hive, require_token=False)) as server, RemoteHive(server.url) as remote:
            first = remote.generate("s", "look here", idempotency_key="t1")
            again = remote.generate("s", "look here", idempotency_key="t1")
            streamed = remote.generate_streaming("s", "look here", idempotency_key="t1")
            assert list(streamed)[-1].type == "TurnEnd" and streamed.result().text == first.text
            with pytest.raises(IdempotencyConflict):
                remote.generate("s", "look elsewhere", idempotency_key="t1")
    assert again.text == first.text
    assert len(script.calls) == 2  # the tool round and the answer, once


def test_a_malformed_allow_webhook_url_is_refused_before_the_port_is_taken() -> None:
    options = ServeOptions(store="memory", llm=None, allow_webhook_urls=["ftp://hooks.example"], say=print)
    with pytest.raises(InvalidConfig, match="--allow-webhook-url"):
        run_service(options)
