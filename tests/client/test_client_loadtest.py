"""`sessionhive loadtest --target URL` drives a running `sessionhive serve` over HTTP and tells its truth.

It asks the service what it runs first (GET /v1/info) and refuses a script
it would not verify; it reports the service's own figures next to its own;
it verifies over HTTP and says so; and when the service goes away mid-run,
the partial report (--json too) says what was verified and what was not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, pg_available
from tests.serve.serve_process import SERVE, TOKEN, start_serve

LOADTEST = [sys.executable, "-c", SERVE, "loadtest", "-q", "--concurrency", "4", "--target"]
ENV = {**os.environ, "SESSIONHIVE_TOKEN": TOKEN}


def _loadtest(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOADTEST, url, *args], capture_output=True, text=True, env=ENV, timeout=240)


def _served_turns(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sessionhive_turns_total"
    )


@pytest.mark.slow
def test_loadtest_against_a_running_service_verifies_every_history_and_reports_the_service(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'served.db'}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    process, url, output = start_serve(
        store, workspace, "--loadtest-script", "2:0.5", "--llm-latency", "0.05"
    )
    try:
        info = httpx.get(f"{url}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert info["loadtest_script"] == {"tools_per_turn": 2, "confirm_rate": 0.5}
        assert info["store"] == {"kind": "sqlite"} and info["llm_latency_s"] == 0.05
        assert str(tmp_path) not in json.dumps(info)  # a kind, never where the store is

        run = _loadtest(
            url,
            *("--json", "-", "--sessions", "6", "--turns", "2", "--tools-per-turn", "2"),
            *("--confirm-rate", ".5"),
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["turns_completed"] == 12 and report["turns_failed"] == 0
        assert report["confirmations"] == 12  # half of the 24 tool calls, approved over HTTP
        assert report["verification"]["ok"] is True
        assert report["verification"]["method"] == f"each history re-read over HTTP from {url}"
        assert report["service"] == info
        # The service's own figures, from its /metrics before and after the run.
        figures = report["hive_figures"]
        assert figures["after"]["turns"] - figures["before"]["turns"] == 12
        assert figures["after"]["llm_calls"] - figures["before"]["llm_calls"] == 12 * 3
        assert figures["model_latency_ms"] >= 50  # the service's model waits 50 ms, whatever the client
        assert figures["before"]["resident_memory_mb"] > 0 and figures["after"]["resident_memory_mb"] > 0
        assert report["rows_written"]["messages"] > 0
        assert report["interrupted"] is None and report["turns_not_run"] == 0
        # The human lines say whose figures are whose, and how the histories were verified.
        assert "re-reading it over HTTP" in run.stderr and "fresh Hive" not in run.stderr + run.stdout
        assert (
            "service model latency" in run.stderr and "turn latency p50/p95/p99 (this client)" in run.stderr
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(output)


@pytest.mark.slow
def test_loadtest_refuses_a_service_whose_script_it_would_not_verify(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    scripted, url, output = start_serve("memory", workspace, "--loadtest-script", "2:0.5")
    demo, demo_url, demo_output = start_serve("memory", workspace)  # the demo model, no load-test script
    try:
        mismatched = _loadtest(url, "--json", "-", "--sessions", "2", "--turns", "1", "--tools-per-turn", "3")
        assert mismatched.returncode == 2, mismatched.stdout + mismatched.stderr
        assert mismatched.stdout == ""  # refused before anything ran: no figures
        assert "runs --loadtest-script 2:0.5, but this run would verify 3:0" in mismatched.stderr
        assert "pass --tools-per-turn 2 --confirm-rate 0.5" in mismatched.stderr
        assert "Traceback" not in mismatched.stderr
        created = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert created["sessions"] == 0

        no_script = _loadtest(demo_url, "--sessions", "2", "--turns", "1")
        assert no_script.returncode == 2, no_script.stdout + no_script.stderr
        assert "runs model scripted/demo-echo, not the load test's script" in no_script.stderr
        assert "sessionhive serve --loadtest-script 2:0" in no_script.stderr
    finally:
        for process, lines in ((scripted, output), (demo, demo_output)):
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, "".join(lines)


@pytest.mark.slow
def test_a_service_stopped_mid_run_leaves_a_partial_report_of_what_was_verified(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # Slow turns, a short drain: SIGTERM lands while many turns are still to come.
    process, url, output = start_serve(
        f"sqlite:///{tmp_path / 's.db'}",
        workspace,
        *("--loadtest-script", "1:0", "--llm-latency", "0.1", "--drain-timeout", "5"),
    )
    figures = tmp_path / "figures.json"
    loadtest = subprocess.Popen(
        [
            *LOADTEST,
            url,
            "--json",
            str(figures),
            "--sessions",
            "4",
            "--turns",
            "200",
            "--tools-per-turn",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while _served_turns(url) < 8:  # the load test is under way
            assert time.monotonic() < deadline and loadtest.poll() is None, "".join(output)
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = loadtest.communicate(timeout=120)
        assert process.wait(60) == 0, "".join(output)
    finally:
        for child in (loadtest, process):
            if child.poll() is None:
                child.kill()

    assert loadtest.returncode == 1, stdout + stderr
    assert "Traceback" not in stderr
    report = json.loads(figures.read_text(encoding="utf-8"))
    assert report["ok"] is False
    assert report["interrupted"].startswith("the service went away during the run: ServiceUnavailable")
    # What was verified: the turns the service answered. What was not: the rest, and every history.
    assert report["turns_completed"] >= 8
    assert report["turns_not_run"] > 0
    assert report["turns_completed"] + report["turns_failed"] + report["turns_not_run"] == 800
    assert report["verification"]["checked"] == 0 and report["verification"]["ok"] is False
    assert report["verification"]["method"].startswith("not done: the hive went away")
    assert report["hive_figures"]["before"]["turns"] is not None and report["hive_figures"]["after"] is None
    assert report["partial_run"][:2] == [
        f"{report['turns_completed']} turns ended with the hive's result (seen by this client)",
        "4 stored histories were not read back",
    ]
    assert "INTERRUPTED" in stdout and "NOT DONE" in stdout
    assert f"partial run: {report['turns_completed']} turns ended with the hive's result" in stdout
    assert "partial run: 4 stored histories were not read back" in stdout
    assert f"figures written to {figures}" in stdout


def test_info_names_the_store_kind_never_its_url_or_password(tmp_path: Path) -> None:
    reason = pg_available()
    if reason is not None:
        pytest.skip(reason)
    # With trust authentication the password is not checked, but it is in the URL the service was given.
    url_with_password = make_url(PG_URL).set(password="s3cret-pw").render_as_string(hide_password=False)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    process, url, output = start_serve(url_with_password, workspace, "--loadtest-script", "1:0")
    try:
        answer = httpx.get(f"{url}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, "".join(output)
    assert answer.status_code == 200
    assert answer.json()["store"] == {"kind": "postgresql"}
    assert answer.json()["model"] == {"provider": "scripted", "model": "loadtest"}
    assert "s3cret-pw" not in answer.text and "127.0.0.1:5432" not in answer.text
