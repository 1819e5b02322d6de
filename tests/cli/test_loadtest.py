"""``sessionhive loadtest``: in-process and as a real command, with real SQLite files."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionhive import AsyncHive, Hive, InvalidConfig
from sessionhive.cli import main
from sessionhive.loadtest import (
    DriveProgress,
    LoadtestOptions,
    LoadtestScript,
    parse_duration,
    run_loadtest,
    start_local_hive,
)
from sessionhive.persistence import SqlStore

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")


def loadtest_args(store: Path, out: Path, *extra: str) -> list[str]:
    return [
        "loadtest",
        "--sessions", "20",
        "--turns", "3",
        "--tools-per-turn", "2",
        "--confirm-rate", "0.3",
        "--llm-latency", "1ms",
        "--store", f"sqlite:///{store}",
        "--metrics-port", "0",
        "--json", str(out),
        "--quiet",
        *extra,
    ]  # fmt: skip


def check_figures(figures: dict[str, Any], sessions: int = 20, turns: int = 3, tools: int = 2) -> None:
    """The figures a user reads agree with each other and with what was asked."""
    assert figures["ok"] is True
    assert figures["sessions"] == sessions
    assert figures["turns_completed"] == figures["turns_expected"] == sessions * turns
    assert figures["turns_failed"] == 0 and figures["failures"] == []
    assert figures["tool_calls"] == sessions * turns * tools
    # 30% of 6 calls per session is 1 or 2 of them, depending on where its phase falls.
    assert sessions <= figures["confirmations"] <= 2 * sessions
    assert figures["control"]["confirm_driver"]["count"] == figures["confirmations"]
    # Each message is appended once: user, (assistant, tool) per tool, final answer.
    assert figures["rows_written"]["messages"] == sessions * turns * (2 * tools + 2)
    assert figures["persistence_batches"] >= 1 and figures["persistence_failures"] == 0
    verification = figures["verification"]
    assert verification["ok"] is True
    assert verification["checked"] == verification["matched"] == sessions
    assert verification["method"] == "fresh Hive on the same store"
    latency = figures["turn_latency"]
    assert latency["count"] == sessions * turns
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert figures["turns_per_second"] > 0
    assert figures["peak_rss_mb"] > 0
    assert figures["live_sessions"] == sessions  # the driven ones, not the prober's own session
    assert figures["store_bytes"] > 0
    assert figures["metrics_url"].startswith("http://127.0.0.1:")
    assert not figures["metrics_url"].startswith("http://127.0.0.1:0/")


def test_cli_in_process_drives_verifies_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, out = tmp_path / "lt.db", tmp_path / "figures.json"
    assert main(loadtest_args(store, out, "--actor-backend", "threads")) == 0
    printed = capsys.readouterr().out
    assert "threads actors" in printed
    assert "verification" in printed and "OK (20/20 histories" in printed
    assert "history() under load p50/p99" in printed
    figures = json.loads(out.read_text())
    check_figures(figures)
    assert figures["options"]["actor_backend"] == "threads"
    control = figures["control"]
    # The prober ran while the turns did; the run is short, so it may get few rounds.
    measured = [control[kind] for kind in ("history", "confirm", "pause_resume") if control[kind]["count"]]
    assert measured, "no control call was measured while the turns ran"
    for stats in measured:
        assert 0 < stats["p50_ms"] <= stats["p99_ms"]
    assert figures["probe_errors"] == []
    # What the load test wrote is a store a service can reopen: every driven session is there.
    with Hive.start(store=f"sqlite:///{store}", workspace=tmp_path) as hive:
        assert hive.session_count() == 20
        some = hive.list_sessions()[0]
        assert [m.role for m in hive.history(some)][:4] == ["user", "assistant", "tool", "assistant"]


def test_cli_as_a_subprocess(tmp_path: Path) -> None:
    store, out = tmp_path / "lt.db", tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "sessionhive.cli", *loadtest_args(store, out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "store: sqlite:///" in done.stdout
    assert "throughput" in done.stdout and "turns/s" in done.stdout
    assert "\r[" not in done.stderr  # --quiet, and not a terminal anyway
    figures = json.loads(out.read_text())
    check_figures(figures)
    # The Hive's default (asyncio) unless the environment picks another backend.
    assert figures["options"]["actor_backend"] == (os.environ.get("SESSIONHIVE_ACTOR_BACKEND") or "asyncio")


def test_default_store_is_a_temporary_sqlite_file_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figures.json"
    code = main(
        ["loadtest", "--sessions", "3", "--turns", "1", "--tools-per-turn", "1", "--json", str(out), "-q"]
    )
    assert code == 0
    assert "store: a fresh temporary SQLite file (deleted afterwards" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["store_is_temporary"] is True
    assert figures["store"].startswith("sqlite:///")
    assert not Path(figures["store"][len("sqlite:///") :]).exists()


def test_a_corrupted_history_fails_the_verification_and_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "lt.db"
    SqlStore(f"sqlite:///{store}").close()  # create the tables, then damage every 4th message as it lands
    with sqlite3.connect(store) as db:
        db.execute(
            "CREATE TRIGGER damage AFTER INSERT ON sessionhive_messages WHEN NEW.seq = 3 BEGIN "
            "UPDATE sessionhive_messages SET payload = json_set(payload, '$.text', 'tampered') "
            "WHERE session_id = NEW.session_id AND seq = 3; END"
        )
    out = tmp_path / "figures.json"
    assert main(loadtest_args(store, out)) == 1
    printed = capsys.readouterr().out
    assert "MISMATCH (0/20 match" in printed
    assert "message 3: stored" in printed and "tampered" in printed
    figures = json.loads(out.read_text())
    assert figures["ok"] is False
    assert figures["verification"]["matched"] == 0
    assert len(figures["verification"]["mismatches"]) == 10  # only the first ones are kept


def test_children_progress_and_pooled_actors(tmp_path: Path) -> None:
    updates: list[DriveProgress] = []
    options = LoadtestOptions(
        sessions=4,
        turns=2,
        tools_per_turn=1,
        children_per_session=2,
        concurrency=3,
        store=f"sqlite:///{tmp_path / 'lt.db'}",
        actor_backend="pooled",
    )
    report = run_loadtest(options, progress=updates.append)
    assert report.ok, (report.failures, report.verification.mismatches)
    assert report.sessions == 12
    assert report.turns_completed == 24
    assert updates[0].total == 24 and not updates[0].finished
    last = updates[-1]
    assert last.finished and last.done == 24 and last.failed == 0 and last.in_flight == 0
    assert last.turns_per_second > 0 and last.recent_p50_ms > 0
    assert all(u.in_flight <= 3 for u in updates)  # the concurrency limit holds
    with Hive.start(store=f"sqlite:///{tmp_path / 'lt.db'}", workspace=tmp_path) as hive:
        parents = [s for s in hive.list_sessions() if ".c" not in s]
        assert len(parents) == 4
        children = hive.get_child_sessions(parents[0])
        assert children == [f"{parents[0]}.c0", f"{parents[0]}.c1"]
        assert hive.is_child_session(children[0])


def test_without_streams_turns_run_with_generate(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    args = ["loadtest", "--sessions", "6", "--turns", "2", "--tools-per-turn", "3", "--no-stream"]
    assert main([*args, "--store", f"sqlite:///{tmp_path / 'lt.db'}", "--json", str(out), "-q"]) == 0
    figures = json.loads(out.read_text())
    assert figures["ok"] is True and figures["options"]["stream"] is False
    assert figures["tool_calls"] == 6 * 2 * 3
    assert figures["verification"]["matched"] == 6
    with pytest.raises(InvalidConfig, match="needs stream=True"):
        LoadtestOptions(stream=False, confirm_rate=0.1)


def test_memory_store_is_verified_on_the_same_hive(tmp_path: Path) -> None:
    report = run_loadtest(LoadtestOptions(sessions=5, turns=2, store="memory"))
    assert report.ok
    assert report.verification.method == "same Hive after flush (memory store)"
    assert report.store_bytes is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("0.05", 0.05),
        ("1s", 1.0),
        ("250us", 0.00025),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("30m", 1800.0),
        ("45s", 45.0),
        ("500ms", 0.5),
        (" 3 s ", 3.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["fast", "-1s", "1d", "", "ms", float("nan")])
def test_parse_duration_refuses_what_it_cannot_read(text: str | float) -> None:
    with pytest.raises(InvalidConfig):
        parse_duration(text)


def test_bad_command_line_values_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["loadtest", "--llm-latency", "soon"])
    assert exited.value.code == 2
    assert "cannot read duration 'soon'" in capsys.readouterr().err
    assert main(["loadtest", "--sessions", "0"]) == 2
    assert "sessions must be an integer >= 1" in capsys.readouterr().err
    assert main(["loadtest", "--confirm-rate", "1.5"]) == 2


def test_options_are_validated() -> None:
    with pytest.raises(InvalidConfig, match="tools_per_turn >= 1"):
        LoadtestOptions(confirm_rate=0.5, tools_per_turn=0)
    with pytest.raises(InvalidConfig, match="actor_backend"):
        LoadtestOptions(actor_backend="fibers")
    assert LoadtestOptions(llm_latency="20ms").llm_latency == pytest.approx(0.02)  # type: ignore[arg-type]


def test_the_script_confirms_the_requested_fraction_of_calls() -> None:
    script = LoadtestScript(tools_per_turn=4, confirm_rate=0.2)
    for session_id in ("a", "lt123456-000007", "z.c1"):
        asked = [script.needs_confirmation(session_id, t, k) for t in range(1, 26) for k in range(1, 5)]
        assert sum(asked) == 20  # exactly 20% of 100 calls, wherever the session's phase falls
    calls = [script.tool_call("s", 1, k) for k in range(1, 5)]
    assert [c.id for c in calls] == ["t1k1", "t1k2", "t1k3", "t1k4"]
    assert {c.name for c in calls} <= {"list_dir", "write_file"}
    assert all(
        c.name == "list_dir" for c in (LoadtestScript(3, 0.0).tool_call("s", t, 1) for t in range(1, 50))
    )


def test_json_is_strict_even_when_a_figure_was_not_measured(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    # No confirmation is asked: the approvals' latency has no sample, which is null, not NaN.
    args = ["loadtest", "--sessions", "3", "--turns", "1", "--store", "memory", "--json", str(out), "-q"]
    assert main(args) == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    figures = json.loads(out.read_text(), parse_constant=refuse)
    assert figures["control"]["confirm_driver"] == {
        "count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None,
    }  # fmt: skip
    assert figures["live_sessions"] == 3


class HiveWithoutBlockingTwin:
    """An AsyncHive seen only through its coroutines, as a remote client or a cluster offers it."""

    def __init__(self, hive: AsyncHive) -> None:
        self._hive = hive

    def __getattr__(self, name: str) -> Any:
        if name in ("sync", "metrics", "metrics_url"):
            raise AttributeError(name)
        return getattr(self._hive, name)


def test_the_driver_takes_any_hive_with_the_async_interface(tmp_path: Path) -> None:
    async def factory(options: LoadtestOptions, **kwargs: Any) -> HiveWithoutBlockingTwin:
        return HiveWithoutBlockingTwin(await start_local_hive(options, **kwargs))

    options = LoadtestOptions(sessions=4, turns=2, confirm_rate=0.5, store=f"sqlite:///{tmp_path / 'lt.db'}")
    report = run_loadtest(options, hive_factory=factory)
    assert report.ok, (report.failures, report.probe_errors, report.verification.mismatches)
    assert report.verification.matched == 4 and report.confirmations > 0
    assert report.live_sessions == 4
    # No registry to read: the persistence figures say "not measured", never a made-up 0.
    assert report.metrics_url is None and report.persistence_batches is None
    assert report.rows_written is None and report.metrics_targets == []
    assert dict(report.rows())["rows written"].startswith("not measured")
    assert report.probe_errors == []


def test_cluster_options_that_cannot_be_honoured_are_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = tmp_path / "targets.json"
    args = ["loadtest", "--sessions", "2", "--turns", "1", "-q"]
    assert main([*args, "--shards", "2", "--metrics-port", "9464", "--file-sd", str(targets)]) == 2
    error = capsys.readouterr().err
    assert "--metrics-port 9464 cannot be honoured with --shards" in error
    assert "--metrics-port 0" in error and "Traceback" not in error
    assert main([*args, "--file-sd", str(targets)]) == 2
    assert "--file-sd lists the shards of a cluster; it needs --shards N" in capsys.readouterr().err
    assert main([*args, "--advertise-host", "metrics.example"]) == 2
    assert "--advertise-host" in capsys.readouterr().err
    assert not targets.exists()


def test_advertising_a_host_that_cannot_reach_loopback_shards_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    targets = tmp_path / "targets.json"
    args = ["loadtest", "--sessions", "2", "--turns", "1", "-q", "--shards", "2", "--file-sd", str(targets)]
    assert main([*args, "--advertise-host", "metrics.example"]) == 2
    error = capsys.readouterr().err
    assert "listen on 127.0.0.1, which metrics.example cannot reach" in error and "Traceback" not in error
    assert not targets.exists()


def start_prometheus(
    tmp_path: Path, targets_file: Path, job: str
) -> tuple[subprocess.Popen[str], str] | None:
    """A real Prometheus reading ``targets_file`` as the file_sd of ``job`` (None without the binary)."""
    if PROMETHEUS is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web = f"127.0.0.1:{probe.getsockname()[1]}"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: {job}\n    file_sd_configs:\n      - files: ['{targets_file}']\n"
    )
    command = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address={web}",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True), web


def scraped_up_series(web: str, job: str) -> list[dict[str, str]]:
    """The ``up`` series Prometheus has for ``job`` now, by their labels, when every one is up."""
    try:
        answer = httpx.get(f"http://{web}/api/v1/query", params={"query": f'up{{job="{job}"}}'}).json()
    except httpx.HTTPError:
        return []
    results = answer.get("data", {}).get("result", [])
    return [r["metric"] for r in results] if all(r["value"][1] == "1" for r in results) else []


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one Ray at a time: with the cluster tests, in one xdist worker
def test_a_cluster_run_lists_its_shards_for_prometheus_and_reports_their_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    targets, out, job = tmp_path / "targets.json", tmp_path / "figures.json", "loadtest-shards"
    seen: dict[str, str] = {}  # target -> its /metrics body, read while the shards run
    found_targets: list[Any] = []
    up_series: list[dict[str, str]] = []
    stop = threading.Event()
    prometheus = start_prometheus(tmp_path, targets, job)

    def watch_while_the_shards_run() -> None:
        # Polling what other processes write (the cluster's file, Prometheus's API) until the run ends.
        while not found_targets and not stop.wait(0.05):
            try:
                entries = json.loads(targets.read_text())
            except (OSError, ValueError):
                continue
            if len(entries) == 2:
                found_targets.extend(entries)
                for entry in entries:
                    url = f"http://{entry['targets'][0]}/metrics"
                    with urllib.request.urlopen(url, timeout=10) as response:
                        seen[entry["targets"][0]] = response.read().decode()
        while prometheus is not None and not stop.wait(0.25):
            found = scraped_up_series(prometheus[1], job)
            if len(found) == 2:
                up_series.extend(found)
                return

    watcher = threading.Thread(target=watch_while_the_shards_run)
    watcher.start()
    try:
        code = main(
            [
                "loadtest",
                "--sessions", "10",
                "--turns", "4",
                "--tools-per-turn", "1",
                "--llm-latency", "1s",  # the shards live long enough for Prometheus to scrape them
                "--no-verify",
                "--shards", "2",
                "--metrics-port", "0",
                "--file-sd", str(targets),
                "--advertise-host", "localhost",
                "--json", str(out),
                "-q",
            ]
        )  # fmt: skip
    finally:
        stop.set()
        watcher.join()
        if prometheus is not None:
            prometheus[0].terminate()
            prometheus[0].wait(30)
    assert code == 0, capsys.readouterr()
    # The file sets only the shard label, at the advertised host.
    labels = sorted((entry["labels"] for entry in found_targets), key=str)
    assert labels == [{"shard": "shard-0"}, {"shard": "shard-1"}]
    assert all(entry["targets"][0].startswith("localhost:") for entry in found_targets)
    assert len(seen) == 2 and all("sessionhive_turns_total" in body for body in seen.values())
    if prometheus is not None:
        # A real Prometheus scraped both shards there, and the job is its scrape config's.
        assert sorted(series["shard"] for series in up_series) == ["shard-0", "shard-1"]
        assert all(series["job"] == job for series in up_series)
        assert all(series["instance"].startswith("localhost:") for series in up_series)
    assert not targets.exists()  # the shards are gone, and so is the file
    figures = json.loads(out.read_text())
    # Rows written are the shards' own counts, summed: each message once.
    assert figures["rows_written"]["messages"] == 10 * 4 * (2 * 1 + 2)
    assert figures["persistence_batches"] >= 1 and figures["persistence_failures"] == 0
    assert len(figures["metrics_targets"]) == 2
    assert all(url.startswith("http://127.0.0.1:") for url in figures["metrics_targets"])
