"""Runs and the event sequence in every store: round trips, steps, pruning, deletion, schema 2 -> 3.

The SQL store keeps runs in ``sessionhive_runs`` and writes only the runs that
changed since it last wrote the session: the statements it sends are counted
on its engine.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from sessionhive.model.messages import Usage
from sessionhive.model.runs import Run, make_run_id
from sessionhive.persistence import SCHEMA_VERSION, SessionSnapshot, SqlStore
from sessionhive.persistence.schema import META, RUNS, SESSIONS
from tests.persistence.conftest_persistence import StoreFactory, make_snapshot

pytest_plugins = ("tests.persistence.conftest_persistence",)


def make_run(session_id: str, n: int, **changes: Any) -> Run:
    """Run ``n`` of a session, created ``n`` seconds after the others' epoch (oldest first by ``n``)."""
    run = Run(
        run_id=make_run_id(session_id),
        session_id=session_id,
        prompt=f"task {n}: summarise file_{n}.txt ✓",
        status="queued",
        idempotency_key=f"key-{n}",
        created_at=1_700_000_000.0 + n,
        webhook_url="https://hooks.example/done",
    )
    return replace(run, **changes)


def finished(run: Run, n: int) -> Run:
    return run.with_status(
        "completed",
        started_at=run.created_at + 0.5,
        ended_at=run.created_at + 1.5,
        text=f"summary {n}",
        usage=Usage(prompt_tokens=10 * n, completion_tokens=n),
        stop_reason="end_turn",
        last_event_id=100 + n,
    )


def with_runs(snap: SessionSnapshot, runs: tuple[Run, ...], event_seq: int) -> SessionSnapshot:
    return replace(snap, runs=runs, event_seq=event_seq)


def count_runs_statements(store: SqlStore) -> list[str]:
    """Every statement the store sends that names the runs table (a live list)."""
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(
        _conn: Any, _cursor: Any, statement: str, _parameters: Any, _ctx: Any, _executemany: bool
    ) -> None:
        if RUNS.name in statement.lower():
            seen.append(statement)

    return seen


def stored_runs(store: SqlStore, session_id: str | None = None) -> list[tuple[str, str, str | None]]:
    """``(run_id, status, idempotency_key)`` of the rows of the runs table, oldest first."""
    query = select(RUNS.c.run_id, RUNS.c.status, RUNS.c.idempotency_key).order_by(RUNS.c.created_at)
    if session_id is not None:
        query = query.where(RUNS.c.session_id == session_id)
    with store.engine.connect() as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(query)]


# --------------------------------------------------------------------------- every store


def test_runs_and_the_event_sequence_round_trip_through_a_reopened_store(stores: StoreFactory) -> None:
    runs = (
        finished(make_run("s", 1), 1),
        make_run("s", 2, status="running", last_event_id=140),
        make_run("s", 3),
    )
    snapshot = with_runs(make_snapshot("s", version=3, messages=5), runs, event_seq=140)
    stores.open().write_batch([snapshot], [])

    loaded = stores.open().load("s")

    assert loaded == snapshot
    assert loaded is not None and loaded.runs[0].text == "summary 1" and loaded.runs[1].status == "running"
    assert [run.idempotency_key for run in loaded.runs] == ["key-1", "key-2", "key-3"]


def test_each_step_stores_the_runs_new_status_and_the_events_emitted(stores: StoreFactory) -> None:
    store = stores.open()
    queued = make_run("s", 1)
    store.write_batch([with_runs(make_snapshot("s", version=1, messages=2), (queued,), 0)], [])
    running = queued.with_status("running", started_at=queued.created_at + 0.1, last_event_id=3)
    store.write_batch([with_runs(make_snapshot("s", version=2, messages=4), (running,), 3)], [])
    waiting = running.with_status("waiting", last_event_id=5)
    store.write_batch([with_runs(make_snapshot("s", version=3, messages=5), (waiting,), 5)], [])

    loaded = stores.open().load("s")
    assert loaded is not None
    assert loaded.runs == (waiting,) and loaded.event_seq == 5 and len(loaded.messages) == 5

    done = finished(waiting, 1)
    second = make_run("s", 2)
    store.write_batch([with_runs(make_snapshot("s", version=4, messages=7), (done, second), 9)], [])
    loaded = stores.open().load("s")
    assert loaded is not None and loaded.runs == (done, second) and loaded.event_seq == 9


def test_runs_the_session_no_longer_keeps_are_pruned(stores: StoreFactory) -> None:
    store = stores.open()
    runs = tuple(finished(make_run("s", n), n) for n in range(1, 5))
    store.write_batch([with_runs(make_snapshot("s", version=1), runs, 104)], [])
    newest = make_run("s", 5)
    store.write_batch([with_runs(make_snapshot("s", version=2), (*runs[2:], newest), 104)], [])

    loaded = stores.open().load("s")
    assert loaded is not None and loaded.runs == (*runs[2:], newest)
    if stores.is_sql:
        assert [row[0] for row in stored_runs(store)] == [run.run_id for run in (*runs[2:], newest)]


def test_deleting_a_session_deletes_its_runs(stores: StoreFactory) -> None:
    store = stores.open()
    kept = with_runs(make_snapshot("other"), (make_run("other", 1),), 2)
    store.write_batch([with_runs(make_snapshot("s"), (make_run("s", 1), make_run("s", 2)), 4), kept], [])

    store.write_batch([], ["s"])

    assert store.load("s") is None
    if stores.is_sql:
        assert [row[0] for row in stored_runs(store)] == [kept.runs[0].run_id]
    store.write_batch([make_snapshot("s", version=1)], [])  # the same id again, a new session
    reborn = stores.open().load("s")
    assert reborn is not None and reborn.runs == () and reborn.event_seq == 0
    assert stores.open().load("other") == kept


# --------------------------------------------------------------------------- SQL stores


def test_a_step_whose_runs_did_not_change_sends_no_runs_statement(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    runs = (finished(make_run("s", 1), 1), make_run("s", 2, status="running", last_event_id=7))
    store.write_batch([with_runs(make_snapshot("s", version=1, messages=2), runs, 7)], [])
    statements = count_runs_statements(store)

    # The same tuple (a step), then an equal one built anew: nothing of the runs is written.
    store.write_batch([with_runs(make_snapshot("s", version=2, messages=3), runs, 8)], [])
    store.write_batch([with_runs(make_snapshot("s", version=3, messages=4), tuple(list(runs)), 9)], [])
    assert statements == []

    # One run changed: one statement, which upserts that run only.
    progressed = (runs[0], runs[1].with_status("running", last_event_id=12))
    store.write_batch([with_runs(make_snapshot("s", version=4, messages=5), progressed, 12)], [])
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("INSERT INTO SESSIONHIVE_RUNS")
    assert store.last_write_rows == {"sessions": 1, "messages": 1, "runs": 1}

    loaded = sql_stores.open().load("s")
    assert loaded is not None and loaded.runs == progressed and loaded.event_seq == 12


def test_runs_written_by_another_store_are_rewritten_not_patched(sql_stores: StoreFactory) -> None:
    """Two Hives on one database: a store whose last write is not the stored row writes every run."""
    first, second = sql_stores.open(), sql_stores.open()
    one, two, three = make_run("s", 1), make_run("s", 2), make_run("s", 3)
    first.write_batch([with_runs(make_snapshot("s", version=1), (one, two), 2)], [])
    second.write_batch([with_runs(make_snapshot("s", version=2), (finished(two, 2), three), 102)], [])

    # Against what ``first`` wrote itself, only ``three`` is new and ``one`` is pruned; the
    # stored rows are ``second``'s, so all of them are replaced.
    latest = (finished(two, 2), three, make_run("s", 4))
    first.write_batch([with_runs(make_snapshot("s", version=3), latest, 103)], [])

    loaded = sql_stores.open().load("s")
    assert loaded is not None and loaded.runs == latest and loaded.event_seq == 103
    assert [row[0] for row in stored_runs(first)] == [run.run_id for run in latest]


def test_the_runs_table_answers_by_session_status_and_idempotency_key(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch(
        [
            with_runs(make_snapshot("a"), (finished(make_run("a", 1), 1), make_run("a", 2)), 101),
            with_runs(make_snapshot("b"), (make_run("b", 1, idempotency_key=None),), 0),
        ],
        [],
    )

    assert [row[1:] for row in stored_runs(store, "a")] == [("completed", "key-1"), ("queued", "key-2")]
    assert [row[1:] for row in stored_runs(store, "b")] == [("queued", None)]


def test_a_schema_2_database_is_migrated_and_keeps_its_sessions(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch([make_snapshot("old", messages=4)], [])
    with store.engine.begin() as conn:  # what sessionhive 2 left: no runs table, no event_seq, version 2
        conn.execute(text(f"DROP TABLE {RUNS.name}"))
        conn.execute(text(f"ALTER TABLE {SESSIONS.name} DROP COLUMN event_seq"))
        conn.execute(META.update().values(value="2"))
    store.close()

    migrated = sql_stores.open()
    loaded = migrated.load("old")
    assert loaded == make_snapshot("old", messages=4)
    assert loaded is not None and loaded.runs == () and loaded.event_seq == 0
    runs = (make_run("old", 1, status="running", last_event_id=2),)
    migrated.write_batch([with_runs(make_snapshot("old", version=2, messages=5), runs, 2)], [])
    reloaded = sql_stores.open().load("old")
    assert reloaded is not None and reloaded.runs == runs and reloaded.event_seq == 2
    with migrated.engine.connect() as conn:
        assert conn.execute(select(META.c.value)).scalar_one() == str(SCHEMA_VERSION) == "4"
        assert conn.execute(select(func.count()).select_from(RUNS)).scalar_one() == 1


def test_without_upsert_changed_runs_are_deleted_then_inserted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database without ``INSERT ... ON CONFLICT`` (SQLite before 3.24 here) gets the same rows."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 23, 0))
    store = SqlStore(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        queued = make_run("s", 1)
        store.write_batch([with_runs(make_snapshot("s", version=1), (queued,), 0)], [])
        statements = count_runs_statements(store)
        done, second = finished(queued, 1), make_run("s", 2)
        store.write_batch([with_runs(make_snapshot("s", version=2), (done, second), 101)], [])

        assert [statement.split()[0] for statement in statements] == ["DELETE", "INSERT"]
        assert "ON CONFLICT" not in statements[1]

        loaded = store.load("s")
        assert loaded is not None and loaded.runs == (done, second)
        assert stored_runs(store) == [(done.run_id, "completed", "key-1"), (second.run_id, "queued", "key-2")]
    finally:
        store.close()
