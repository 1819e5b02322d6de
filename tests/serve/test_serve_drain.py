"""SIGTERM drains a `sessionhive serve` subprocess under load: nothing accepted is lost, exit code 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sessionhive import ConfirmationRequired, Hive, Message, Reply, ScriptedLlm, TurnCancelled
from sessionhive.client import RemoteHive, ServiceUnavailable, Unauthorized
from sessionhive.serve import ServerThread, serve_app
from tests.serve.serve_process import SERVE, TOKEN, start_serve


@dataclass
class Load:
    """What the load threads saw while the service ran and then drained."""

    url: str
    workers: int
    stuck: int
    completed: dict[str, list[str]] = field(default_factory=dict)
    last_messages: dict[str, list[Message]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    stuck_outcomes: dict[str, BaseException | None] = field(default_factory=dict)
    enough: threading.Event = field(default_factory=threading.Event)
    stuck_waiting: threading.Barrier = field(init=False)

    def __post_init__(self) -> None:
        self.completed = {f"w{n}": [] for n in range(self.workers)}
        self.stuck_waiting = threading.Barrier(self.stuck + 1)

    def work(self, session_id: str) -> None:
        """Turns back to back, each confirmation approved, until the service refuses (503)."""
        with RemoteHive(self.url, token=TOKEN) as hive:
            while True:
                prompt = f"{session_id} turn {len(self.completed[session_id])}"
                try:
                    result = hive.generate(session_id, prompt, on_confirmation=lambda _event: True)
                except ServiceUnavailable as exc:
                    self.refused.append(exc.error)
                    return
                self.completed[session_id].append(prompt)
                self.last_messages[session_id] = result.messages
                if sum(map(len, self.completed.values())) >= 3 * self.workers:
                    self.enough.set()

    def wait_for_a_human(self, session_id: str) -> None:
        """A turn whose confirmation nobody answers: the drain must cancel it."""
        with RemoteHive(self.url, token=TOKEN) as hive:
            stream = hive.generate_streaming(session_id, "nobody will answer")
            try:
                for event in stream:
                    if isinstance(event, ConfirmationRequired):
                        self.stuck_waiting.wait(30)
                stream.result()
                self.stuck_outcomes[session_id] = None
            except BaseException as exc:
                self.stuck_outcomes[session_id] = exc

    def threads(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.work, args=(f"w{n}",)) for n in range(self.workers)]
        threads += [
            threading.Thread(target=self.wait_for_a_human, args=(f"stuck{n}",)) for n in range(self.stuck)
        ]
        return threads


@pytest.mark.slow
def test_sigterm_drains_under_load_and_loses_nothing(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'drain.db'}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    process, url, output = start_serve(store, workspace, "--drain-timeout", "3", "--llm-latency", "0.05")
    load = Load(url, workers=8, stuck=2)
    try:
        with RemoteHive(url, token=TOKEN) as client:
            for session_id in [*load.completed, *(f"stuck{n}" for n in range(load.stuck))]:
                client.create_session(session_id)
        threads = load.threads()
        for thread in threads:
            thread.start()
        load.stuck_waiting.wait(30)
        assert load.enough.wait(60), "the load did not get going"

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(output)
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()
    finally:
        if process.poll() is None:
            process.kill()

    text = "".join(output)
    assert "SIGTERM received, draining" in text and "cancelling the turns of 2 session(s)" in text
    # New turns were refused with 503 while the service drained; nothing else failed.
    assert load.refused and set(load.refused) <= {"Draining", "Unreachable"}
    assert "Draining" in load.refused
    # The turns left waiting for a human past --drain-timeout were cancelled, not lost in the air.
    assert all(isinstance(load.stuck_outcomes[f"stuck{n}"], TurnCancelled) for n in range(load.stuck))
    assert {str(getattr(outcome, "reason", "")) for outcome in load.stuck_outcomes.values()} == {
        "cancelled by shutdown"
    }

    with Hive.start(store=store, workspace=workspace) as reopened:
        for session_id, prompts in load.completed.items():
            history = reopened.history(session_id)
            assert [m.text for m in history if m.role == "user"] == prompts
            # The last turn's messages (whole history or the turn's own) end the stored history.
            assert history[-len(load.last_messages[session_id]) :] == load.last_messages[session_id]
            assert history[-1].role == "assistant" and history[-1].text.startswith("Echo: ")
        for n in range(load.stuck):
            history = reopened.history(f"stuck{n}")
            assert history[0].text == "nobody will answer"


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SESSIONHIVE_TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-c", SERVE, "serve", "--store", "memory", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "refusing to listen on 0.0.0.0 without a bearer token" in refused.stderr + refused.stdout


def test_serve_reads_its_token_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789abcdef\n")
    process, url, output = start_serve("memory", tmp_path, "--token-file", str(token_file))
    try:
        with RemoteHive(url, token="file-token-0123456789abcdef") as hive:
            assert hive.session_count() == 0
        with RemoteHive(url, token=TOKEN) as stranger, pytest.raises(Unauthorized):
            stranger.session_count()  # the environment's token is not the file's
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopped; every session flushed" in "".join(output)


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, "-c", SERVE, "serve", "--store", "memory", "--port", str(port)],
            capture_output=True,
            text=True,
            env={**os.environ, "SESSIONHIVE_TOKEN": TOKEN},
            timeout=60,
        )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in refused.stderr


class SseReader:
    """Reads one server-sent event stream in a thread: each event's name and data, in order."""

    def __init__(self, method: str, url: str, body: dict[str, str] | None = None) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []
        self.opened = threading.Event()  # the first event arrived (after a turn's `run` frame)
        self.ended = threading.Event()  # the server closed the stream
        self._request = (method, url, body)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        method, url, body = self._request
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        name = "message"
        try:
            with httpx.stream(method, url, json=body, headers=headers, timeout=120) as response:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[len("event: ") :]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[len("data: ") :])))
                        if name != "run":
                            self.opened.set()
        except httpx.HTTPError as exc:
            self.events.append(("transport-error", {"detail": str(exc)}))
        finally:
            self.opened.set()
            self.ended.set()

    def names(self) -> list[str]:
        return [name for name, _data in self.events]


def wait_for_output(lines: list[str], text: str, timeout: float = 60) -> None:
    """Until the service subprocess has printed ``text`` (its output is all a test can watch)."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline, f"never printed {text!r}:\n" + "".join(lines)
        time.sleep(0.05)


def _serve_with_a_running_turn(
    tmp_path: Path, drain_timeout: str
) -> tuple[subprocess.Popen[str], str, list[str]]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # The scripted model waits far longer than any test: the turn is running when the signal comes.
    process, url, output = start_serve(
        f"sqlite:///{tmp_path / 's.db'}", workspace, "--llm-latency", "600", "--drain-timeout", drain_timeout
    )
    with RemoteHive(url, token=TOKEN) as client:
        client.create_session("s1")
    return process, url, output


def test_turns_the_drain_cancels_say_they_were_cancelled_by_shutdown(tmp_path: Path) -> None:
    process, url, output = _serve_with_a_running_turn(tmp_path, "0.2")
    try:
        turn = SseReader("POST", f"{url}/v1/sessions/s1/turns", {"prompt": "a long one"})
        assert turn.opened.wait(30) and turn.names()[:2] == ["run", "TurnStart"], turn.events
        process.send_signal(signal.SIGTERM)
        assert turn.ended.wait(60)
        assert process.wait(60) == 0, "".join(output)
    finally:
        if process.poll() is None:
            process.kill()
    name, data = turn.events[-1]
    assert name == "error" and data["error"] == "TurnCancelled", turn.events
    assert data["reason"] == "cancelled by shutdown"
    assert "cancel_operation()" not in json.dumps(turn.events) + "".join(output)
    with Hive.start(store=f"sqlite:///{tmp_path / 's.db'}", workspace=tmp_path / "ws") as reopened:
        assert [m.text for m in reopened.history("s1") if m.role == "user"] == ["a long one"]


def test_a_second_signal_ends_every_stream_with_its_last_event_and_no_traceback(tmp_path: Path) -> None:
    # The drain would wait a minute for the turn: the second signal must not.
    process, url, output = _serve_with_a_running_turn(tmp_path, "60")
    try:
        events = SseReader("GET", f"{url}/v1/sessions/s1/events")
        assert events.opened.wait(30) and events.names() == ["subscribed"]
        turn = SseReader("POST", f"{url}/v1/sessions/s1/turns", {"prompt": "a long one"})
        assert turn.opened.wait(30) and turn.names()[:2] == ["run", "TurnStart"], turn.events
        process.send_signal(signal.SIGTERM)
        wait_for_output(output, "draining: 1 turn(s) running")
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, "".join(output)
        assert turn.ended.wait(10) and events.ended.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(output)
    assert "second signal" in text and "stopped; every session flushed" in text
    assert "Traceback" not in text and "CancelledError" not in text, text
    # Each stream got its terminal event: the turn its TurnCancelled error, the event stream `end`.
    assert turn.events[-1][0] == "error" and turn.events[-1][1]["reason"] == "cancelled by shutdown"
    assert events.names()[-2:] == ["TurnCancelled", "end"], events.events
    assert events.events[-1][1] == {"session_id": "s1", "draining": True}


def test_stopping_a_server_thread_ends_a_running_turn_stream_with_its_last_event(tmp_path: Path) -> None:
    # The model would answer in ten minutes: stop() must not wait for it, nor drop the stream silently.
    with Hive.start(store="memory", llm=ScriptedLlm([Reply(text="late")], 600), workspace=tmp_path) as hive:
        hive.create_session("s1")
        server = ServerThread(serve_app(hive, token=TOKEN))
        turn = SseReader("POST", f"{server.url}/v1/sessions/s1/turns", {"prompt": "a long one"})
        assert turn.opened.wait(30) and turn.names()[:2] == ["run", "TurnStart"], turn.events
        server.stop()
        assert turn.ended.wait(10)
    assert turn.events[-1][0] == "error" and turn.events[-1][1]["reason"] == "cancelled by shutdown"
