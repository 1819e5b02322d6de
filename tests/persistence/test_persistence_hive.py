"""Sessions survive restarts, crashes and store outages; idle ones passivate and come back.

Every test runs on real stores: SQLite files, a fresh schema of the local
PostgreSQL, and JSON files.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sessionhive import (
    ConfirmationPolicy,
    Hive,
    LlmConfig,
    OutcomeUnknown,
    PersistenceFailed,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionNotFound,
    StoreError,
)
from sessionhive.persistence import SessionSnapshot, SqlStore, open_store
from tests.agent.test_turns import assert_valid_history
from tests.conftest import tool_loop_script

pytest_plugins = ("tests.persistence.conftest_persistence",)

NO_CONFIRM = ConfirmationPolicy(enabled=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hive.db'}"
    if request.param == "file":
        return f"file:{tmp_path / 'sessions'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def start(store: Any, workspace: Path, **options: Any) -> Hive:
    return Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace, **options)


@pytest.mark.parametrize("backend", ["pooled", "threads"])
def test_restart_on_either_backend(tmp_path: Path, workspace: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path / 'hive.db'}"
    with start(url, workspace, actor_backend=backend, max_live_sessions=5) as hive:
        for n in range(20):
            hive.create_session(f"s{n}")
            hive.generate(f"s{n}", f"look {n}")
        expected = {f"s{n}": hive.history(f"s{n}") for n in range(20)}
    with start(url, workspace, actor_backend=backend) as hive:
        assert {s: hive.history(s) for s in expected} == expected


def everything(hive: Hive, session_id: str) -> tuple[Any, ...]:
    return (
        hive.history(session_id),
        hive.get_confirmation_policy(session_id),
        hive.usage(session_id),
        hive.context_usage(session_id),
        hive.is_child_session(session_id),
        hive.get_llm_for_session(session_id),
    )


def test_restart_restores_every_session_exactly(store_url: str, workspace: Path) -> None:
    sessions, turns = 12, 3
    policy = ConfirmationPolicy(require_confirmation=("bash",), timeout_s=9.0, on_timeout="approve")
    before: dict[str, tuple[Any, ...]] = {}
    with start(store_url, workspace) as hive:
        for n in range(sessions):
            hive.create_session(f"s{n}", SessionConfig(confirmation_policy=policy, system_prompt=f"p{n}"))
        hive.create_child_session("s0", "s0/kid")
        hive.configure(
            "s1", thinking=True, budget=99, model_config=LlmConfig("scripted", "demo", api_key="k")
        )
        hive.pause_session("s2")
        streams = [
            hive.generate_streaming(f"s{n}", f"look {t}")
            for t in range(turns)
            for n in range(sessions)
            if n != 2
        ]
        for stream in streams:
            stream.result(timeout=60)
        for session_id in hive.list_sessions():
            before[session_id] = everything(hive, session_id)
    with start(store_url, workspace) as hive:
        assert hive.live_session_count() == 0  # nothing loaded until asked
        assert hive.list_sessions() == sorted(before)
        assert hive.get_child_sessions("s0") == ["s0/kid"]
        for session_id, state in before.items():
            assert everything(hive, session_id) == state, session_id
        from sessionhive import SessionPaused

        with pytest.raises(SessionPaused):
            hive.generate("s2", "look")
        assert len(hive.history("s3")) == 4 * turns
        assert hive.load_all_sessions() == 0  # all were activated by the calls above


def test_load_all_sessions_and_restore_by_id(store_url: str, workspace: Path) -> None:
    with start(store_url, workspace) as hive:
        for n in range(5):
            hive.create_session(f"s{n}")
    with start(store_url, workspace) as hive:
        hive.restore_session_by_id("s0")
        assert hive.live_session_count() == 1
        assert hive.load_all_sessions() == 4
        assert hive.live_session_count() == 5
        with pytest.raises(SessionNotFound):
            hive.restore_session_by_id("nope")


def test_destroyed_sessions_never_come_back(store_url: str, workspace: Path) -> None:
    with start(store_url, workspace) as hive:
        hive.create_session("parent")
        hive.create_child_session("parent", "child")
        hive.generate("child", "look")  # pending snapshots of both...
        hive.destroy_session("parent")  # ...then the delete, in the same batch window
        hive.create_session("other")
    with start(store_url, workspace) as hive:
        assert hive.list_sessions() == ["other"]
        with pytest.raises(SessionNotFound):
            hive.history("child")


def test_destroy_cascades_to_children_that_are_only_in_the_store(store_url: str, workspace: Path) -> None:
    with start(store_url, workspace) as hive:
        hive.create_session("p")
        hive.create_child_session("p", "c1")
        hive.create_child_session("c1", "c2")
    with start(store_url, workspace) as hive:
        assert hive.live_session_count() == 0
        hive.destroy_session("p")
        assert hive.list_sessions() == []
    with start(store_url, workspace) as hive:
        assert hive.list_sessions() == []


def test_durable_default_commits_before_returning(tmp_path: Path, workspace: Path) -> None:
    db = tmp_path / "hive.db"

    def stored_messages(session_id: str) -> int | None:
        reader = SqlStore(f"sqlite:///{db}")
        try:
            snapshot = reader.load(session_id)
            return None if snapshot is None else len(snapshot.messages)
        finally:
            reader.close()

    with start(f"sqlite:///{db}", workspace, flush_interval=60.0, batch_size=10_000) as hive:
        hive.create_session("batched", SessionConfig(durability="batched", confirmation_policy=NO_CONFIRM))
        hive.generate("batched", "look")
        assert stored_messages("batched") is None  # waits for its batch (60 s interval)
        hive.create_session("sync", SessionConfig(confirmation_policy=NO_CONFIRM))  # durable by default
        assert stored_messages("sync") == 0  # committed before create_session returned...
        assert stored_messages("batched") == 4  # ...in one transaction with what was pending
        hive.generate("sync", "look")
        assert stored_messages("sync") == 4
        hive.generate("batched", "look again")
        assert stored_messages("batched") == 4
        hive.flush()
        assert stored_messages("batched") == 8


def test_memory_storage_sessions_stay_out_of_the_store(tmp_path: Path, workspace: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hive.db'}"
    with start(url, workspace) as hive:
        hive.create_session("kept")
        hive.create_session("volatile", SessionConfig(storage="memory"))
        hive.generate("volatile", "look")
    with start(url, workspace) as hive:
        assert hive.list_sessions() == ["kept"]


def test_idle_sessions_passivate_and_answer_as_if_they_never_left(store_url: str, workspace: Path) -> None:
    with start(store_url, workspace, max_live_sessions=3) as hive:
        for n in range(10):
            hive.create_session(f"s{n}")
            hive.generate(f"s{n}", f"look {n}")
        hive.flush()
        live = hive.live_session_count()
        assert live <= 4  # the newest ones; the rest rest in the store
        for n in range(10):
            history = hive.history(f"s{n}")
            assert [m.text for m in history if m.role == "user"] == [f"look {n}"]
            assert_valid_history(history)
        passivated = hive.metrics.registry.get_sample_value(
            "sessionhive_session_lifecycle_total", {"event": "passivated"}
        )
        activated = hive.metrics.registry.get_sample_value(
            "sessionhive_session_lifecycle_total", {"event": "activated"}
        )
        assert passivated and passivated >= 6 and activated and activated >= 6


def test_idle_timeout_passivates_on_the_tick(tmp_path: Path, workspace: Path) -> None:
    with start(f"sqlite:///{tmp_path / 'h.db'}", workspace, idle_timeout=0.2) as hive:
        hive.create_session("s")
        hive.generate("s", "look")
        with hive.subscribe("s") as events:
            assert hive.live_session_count() == 1
            del events  # a subscriber keeps its session live
        deadline = threading.Event()
        for _ in range(100):  # the supervisor ticks once a second
            if hive.live_session_count() == 0:
                break
            deadline.wait(0.1)
        assert hive.live_session_count() == 0
        assert len(hive.history("s")) == 4


class FlakyStore:
    """A real store whose writes fail while ``failing`` is set (an injected outage)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failing = threading.Event()
        self.failed_writes = 0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        if self.failing.is_set():
            self.failed_writes += 1
            from sqlalchemy.exc import OperationalError

            raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        self.inner.write_batch(snapshots, deletes)
        self.last_write_rows = getattr(self.inner, "last_write_rows", {})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.slow
def test_store_outage_loses_nothing(store_url: str, workspace: Path) -> None:
    flaky = FlakyStore(open_store(store_url))
    with start(flaky, workspace) as hive:
        for n in range(8):  # batched: the durable default would refuse turns while the store is down
            hive.create_session(f"s{n}", SessionConfig(durability="batched"))
        hive.flush()
        subscription = hive.subscribe("s0")
        flaky.failing.set()
        for turn in range(3):  # turns go on while the store is down
            for n in range(8):
                hive.generate(f"s{n}", f"look {turn}")
        with pytest.raises(StoreError):
            hive.flush(timeout=30)
        failure = None
        while failure is None:
            event = subscription.get(timeout=30)
            if isinstance(event, PersistenceFailed):
                failure = event
        assert "server closed" in failure.error
        assert hive.history("s0")[-1].role == "assistant"  # sessions keep answering
        assert flaky.failed_writes >= 1
        flaky.failing.clear()
        hive.flush(timeout=30)
        subscription.close()
        failures = hive.metrics.registry.get_sample_value("sessionhive_persistence_failures_total")
        assert failures and failures >= 1
    with start(store_url, workspace) as hive:
        for n in range(8):
            assert len(hive.history(f"s{n}")) == 12


def test_a_durable_turn_whose_commit_is_retried_is_an_outcome_unknown_and_is_stored_later(
    tmp_path: Path, workspace: Path
) -> None:
    """Not a StoreError: the turn stays in the session and pending, and is stored once the store answers."""
    url = f"sqlite:///{tmp_path / 'hive.db'}"
    flaky = FlakyStore(open_store(url))
    with Hive.start(store=flaky, llm=ScriptedLlm([Reply("ok")]), workspace=workspace) as hive:
        hive.create_session("s")  # durable: the default
        flaky.failing.set()
        with pytest.raises(OutcomeUnknown, match="is retried"):
            hive.generate("s", "asked while the store is down")
        flaky.failing.clear()
        hive.flush(timeout=30)
    with start(url, workspace) as hive:
        assert [m.text for m in hive.history("s")] == ["asked while the store is down", "ok"]


CRASH_DRIVER = textwrap.dedent(
    """
    import json, sys
    from sessionhive import Hive, ScriptedLlm, SessionConfig, ConfirmationPolicy
    from tests.conftest import tool_loop_script
    store, workspace, acked_path = sys.argv[1], sys.argv[2], sys.argv[3]
    hive = Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace)
    sync = SessionConfig(durability="sync", confirmation_policy=ConfirmationPolicy(enabled=False))
    acked = open(acked_path, "a", buffering=1)
    for n in range(6):
        hive.create_session(f"b{n}", SessionConfig(durability="batched"))
        hive.create_session(f"y{n}", sync)
    turn = 0
    while True:
        for n in range(6):
            hive.generate(f"y{n}", f"look {turn}")
            acked.write(json.dumps(["y%d" % n, turn]) + "\\n")
            hive.generate(f"b{n}", f"look {turn}")
        hive.flush()
        for n in range(6):
            acked.write(json.dumps(["b%d" % n, turn]) + "\\n")
        if turn == 0:
            print("running", flush=True)
        turn += 1
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [0.05, 0.3, 0.8])
def test_sigkill_loses_nothing_that_was_acknowledged(
    tmp_path: Path, workspace: Path, kill_after: float
) -> None:
    """The kill lands at a random moment of a busy run (not a wait for anything)."""
    import json

    store = f"sqlite:///{tmp_path / 'hive.db'}"
    acked_path = tmp_path / "acked.jsonl"
    acked_path.touch()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    driver = subprocess.Popen(
        [sys.executable, "-c", CRASH_DRIVER, store, str(workspace), str(acked_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert driver.stdout is not None and driver.stderr is not None
    if driver.stdout.readline() != b"running\n":
        driver.wait()
        pytest.fail(f"the driver did not start: {driver.stderr.read().decode()}")
    try:
        driver.wait(timeout=kill_after + random.random() * 0.3)
        pytest.fail(f"the driver exited early: {driver.stderr.read().decode()}")
    except subprocess.TimeoutExpired:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    acknowledged: dict[str, int] = {}
    for line in acked_path.read_text().splitlines():
        session_id, turn = json.loads(line)
        acknowledged[session_id] = max(turn, acknowledged.get(session_id, -1))
    assert acknowledged, "the driver acknowledged nothing before the kill"
    with start(store, workspace) as hive:
        for session_id in hive.list_sessions():
            history = hive.history(session_id)
            assert_valid_history(history)
            prompts = [m.text for m in history if m.role == "user"]
            assert prompts == [f"look {t}" for t in range(len(prompts))], session_id
            assert len(prompts) >= acknowledged.get(session_id, -1) + 1, session_id


def test_store_health_reports_each_store(store_url: str, workspace: Path) -> None:
    with start(store_url, workspace) as hive:
        [(name, status)] = hive.store_health()
        assert status == "ok" and name


def test_a_broken_store_url_is_a_clear_error(workspace: Path) -> None:
    from sessionhive import InvalidConfig

    with pytest.raises((InvalidConfig, StoreError), match="sqlite"):
        Hive.start(store="nosuch://x", workspace=workspace)
