"""One Idempotency-Key, one model call: 20 concurrent POSTs, and a `kill -9` of the service between retries.

The service is the real ``sessionhive serve`` command on a SQLite file; its
model is llmock, a mock provider in a process of its own whose journal counts
every model request that reached it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from sessionhive.client import RemoteHive
from tests.llm.llmock_server import Llmock, llmock_process
from tests.serve.serve_process import TOKEN, start_serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLERS = 20


def _serve(store: str, workspace: Path, mock: Llmock) -> tuple[subprocess.Popen[str], str]:
    # A loopback endpoint needs no API key: none is configured, none can leak.
    model = ("--provider", "openai", "--model", "mock-model", "--base-url", mock.openai_url)
    process, url, _lines = start_serve(store, workspace, *model)
    return process, url


def _post_run(url: str, key: str, prompt: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/v1/sessions/s/runs",
        json={"prompt": prompt},
        headers={**AUTH, "Idempotency-Key": key},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _all_at_once(url: str, key: str, prompt: str) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(lambda _i: _post_run(url, key, prompt), range(CALLERS)))


def test_twenty_concurrent_posts_with_one_key_make_one_run_and_one_model_call(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with llmock_process(tmp_path, ["--tool-mode", "off"]) as mock:
        process, url = _serve(f"sqlite:///{tmp_path / 'runs.db'}", workspace, mock)
        try:
            created = httpx.post(f"{url}/v1/sessions", json={"id": "s"}, headers=AUTH, timeout=30)
            assert created.status_code == 201
            answers = _all_at_once(url, "order-42", "say hello once")
            assert len({answer["run_id"] for answer in answers}) == 1
            with RemoteHive(url, token=TOKEN) as remote:
                finished = remote.wait_run(answers[0]["run_id"], timeout=60)
            assert finished.status == "completed"
            assert len(mock.requests()) == 1
        finally:
            process.terminate()
            process.wait(60)


def test_a_key_acknowledged_before_a_kill_9_still_names_the_one_run_after_the_restart(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    with llmock_process(tmp_path, ["--tool-mode", "off", "--latency-ms", "1500"]) as mock:
        process, url = _serve(store, workspace, mock)
        try:
            config = {"durability": "durable"}
            created = httpx.post(f"{url}/v1/sessions", json={"id": "s", "config": config}, headers=AUTH)
            assert created.status_code == 201
            first = _post_run(url, "order-43", "say hello after a crash")
            deadline = time.monotonic() + 60
            while not mock.requests() and time.monotonic() < deadline:
                time.sleep(0.05)  # polling the other process's journal, not an actor
            assert len(mock.requests()) == 1  # the model is answering: the run got that far
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(60)
        process, url = _serve(store, workspace, mock)
        try:
            answers = _all_at_once(url, "order-43", "say hello after a crash")
            assert {answer["run_id"] for answer in answers} == {first["run_id"]}
            with RemoteHive(url, token=TOKEN) as remote:
                ended = remote.wait_run(first["run_id"], timeout=60)
            # Killed while the model answered (it takes 1.5 s): the run reads `interrupted` (or, on a
            # machine so loaded that the answer landed before the kill, `completed`), never run again.
            assert ended.status in ("interrupted", "completed"), ended
            # No retry, however many, asked the model again.
            assert len(mock.requests()) == 1, mock.requests()
        finally:
            process.terminate()
            process.wait(60)
