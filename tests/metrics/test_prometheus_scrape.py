"""A real Prometheus server (Debian's package) scrapes `sessionhive serve`; its query API counts the turns."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sessionhive import Hive, Message, Reply, ScriptedLlm
from sessionhive.client import RemoteHive
from sessionhive.serve import ServerThread, serve_app

PROMETHEUS = shutil.which("prometheus")
TOKEN = "scrape-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def echo(messages: list[Message]) -> Reply:
    return Reply(f"echo {messages[-1].text}")


@pytest.mark.slow
@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="LOUD SKIP: the prometheus server is missing (Debian package 'prometheus'; .ci/run installs it)",
)
def test_prometheus_scrapes_serve_and_counts_the_turns(tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    turns = 7
    with (
        Hive.start(store="memory", llm=ScriptedLlm(echo), workspace=tmp_path) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        RemoteHive(server.url, token=TOKEN) as remote,
    ):
        remote.create_session("scraped")
        for n in range(turns):
            remote.generate("scraped", f"turn {n}")
        target = server.url.removeprefix("http://")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: sessionhive\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        web = f"127.0.0.1:{free_port()}"
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            value = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and value != turns:
                time.sleep(0.5)  # polling an external process's observable state, with a deadline
                try:
                    answer = httpx.get(
                        f"http://{web}/api/v1/query",
                        params={
                            "query": 'sum(sessionhive_turns_total{job="sessionhive",outcome="completed"})'
                        },
                    ).json()
                except httpx.HTTPError:
                    continue
                results = answer.get("data", {}).get("result", [])
                if results:
                    value = int(float(results[0]["value"][1]))
            assert value == turns, f"Prometheus returned {value}"
            up = httpx.get(f"http://{web}/api/v1/query", params={"query": 'up{job="sessionhive"}'}).json()
            assert up["data"]["result"][0]["value"][1] == "1"
        finally:
            prometheus.terminate()
            try:
                prometheus.wait(30)
            except subprocess.TimeoutExpired:
                prometheus.kill()
