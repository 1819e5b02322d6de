"""Streams over real HTTP: a quiet turn stream says it is alive before an idle-timeout proxy would cut it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sessionhive import Hive, Reply, ScriptedLlm
from sessionhive.serve import ServerThread, _router, serve_app


def test_a_quiet_turn_stream_sends_a_keep_alive_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model answers in ten minutes: the stream has nothing to say but that it is alive.
    monkeypatch.setattr(_router, "SSE_KEEPALIVE_S", 0.2)
    with Hive.start(store="memory", llm=ScriptedLlm([Reply(text="late")], 600), workspace=tmp_path) as hive:
        hive.create_session("s1")
        server = ServerThread(serve_app(hive, require_token=False))
        try:
            lines: list[str] = []
            headers = {"Accept": "text/event-stream"}
            with httpx.stream(
                "POST",
                f"{server.url}/v1/sessions/s1/turns",
                json={"prompt": "slow"},
                headers=headers,
                timeout=30,
            ) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    if line == ": keep-alive":
                        break
            assert "event: TurnStart" in lines and lines[-1] == ": keep-alive", lines
        finally:
            server.stop()
