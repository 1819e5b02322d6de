"""PersistenceActor: coalescing, batching, barriers, acks, loads, deletes and failures, on real stores.

Nothing here sleeps to wait for the actor: a :class:`Flush` future, a reply
future or a callback future tells when it has done its work.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pykka
import pytest

from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.errors import InvalidConfig, StoreError
from sessionhive.persistence import (
    Delete,
    Exists,
    Flush,
    Health,
    ListIds,
    Load,
    PersistenceActor,
    Save,
    SessionSnapshot,
    SessionStore,
)
from sessionhive.persistence.messages import MIN_BACKLOG, Backlog, Batch
from sessionhive.runtime import ThreadBackend
from tests.persistence.conftest_persistence import FaultyStore, StoreFactory, conversation, make_snapshot

pytest_plugins = ("tests.persistence.conftest_persistence",)

WAIT = 10.0  # seconds a test waits for an answer before it fails
NEVER = 3600.0  # a flush interval that never fires during a test


def value(metrics: HiveMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Harness:
    """Spawns PersistenceActors on a ThreadBackend and stops them after the test."""

    def __init__(self) -> None:
        self.backend = ThreadBackend()
        self.refs: list[pykka.ActorRef[Any]] = []
        self.metrics = HiveMetrics()
        self.failures: list[tuple[str, str]] = []

    def spawn(self, store: SessionStore, **options: Any) -> pykka.ActorRef[Any]:
        options.setdefault("flush_interval", NEVER)
        options.setdefault("metrics", self.metrics)
        options.setdefault("on_failure", lambda sid, text: self.failures.append((sid, text)))
        ref = self.backend.spawn(PersistenceActor, store, **options)
        self.refs.append(ref)
        return ref

    def stop(self, ref: pykka.ActorRef[Any]) -> None:
        ref.stop(block=True, timeout=WAIT)

    def stop_all(self) -> None:
        for ref in self.refs:
            if ref.is_alive():
                ref.stop(block=True, timeout=WAIT)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.stop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[StoreFactory]:
    if request.param == "sqlite":
        location = f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        location = request.getfixturevalue("postgres_url")
    factory = StoreFactory(request.param, location)
    yield factory
    factory.close_all()


def flush(ref: pykka.ActorRef[Any]) -> None:
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    ref.tell(Flush(done))
    done.result(timeout=WAIT)


def ask(ref: pykka.ActorRef[Any], make: Callable[[concurrent.futures.Future[Any]], Any]) -> Any:
    """Tell ``make(future)`` and wait for the future: also a barrier behind every earlier message."""
    answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
    ref.tell(make(answer))
    return answer.result(timeout=WAIT)


def hold_until(gate: threading.Event) -> Callable[[bool], None]:
    """A callback that keeps the actor busy until ``gate`` is set, so that later messages queue up."""

    def hold(_answer: bool) -> None:
        gate.wait(WAIT)

    return hold


def load(ref: pykka.ActorRef[Any], session_id: str) -> SessionSnapshot | None:
    answer: concurrent.futures.Future[SessionSnapshot | None] = concurrent.futures.Future()

    def on_loaded(snapshot: SessionSnapshot | None, error: BaseException | None) -> None:
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(snapshot)

    ref.tell(Load(session_id, on_loaded))
    return answer.result(timeout=WAIT)


def exists(ref: pykka.ActorRef[Any], session_id: str) -> bool:
    answer: concurrent.futures.Future[bool] = concurrent.futures.Future()
    ref.tell(Exists(session_id, answer.set_result))
    return answer.result(timeout=WAIT)


# --------------------------------------------------------------------------- coalescing and batching


def test_a_hundred_saves_of_one_session_write_one_row(harness: Harness, sql: StoreFactory) -> None:
    store = FaultyStore(sql.open())
    ref = harness.spawn(store)
    history = conversation(100)

    for version in range(1, 101):
        ref.tell(Save(make_snapshot("s", version=version, messages=history[:version])))
    flush(ref)

    assert store.write_calls == [(["s"], [])]
    assert value(harness.metrics, "sessionhive_persistence_coalesced_snapshots_total") == 99
    assert value(harness.metrics, "sessionhive_persistence_rows_written_total", table="sessions") == 1
    assert value(harness.metrics, "sessionhive_persistence_rows_written_total", table="messages") == 100
    assert value(harness.metrics, "sessionhive_persistence_pending_snapshots") == 0
    loaded = sql.open().load("s")
    assert loaded is not None and loaded.version == 100 and loaded.messages == history


def test_a_full_batch_is_written_without_waiting_for_the_interval(
    harness: Harness, sql: StoreFactory
) -> None:
    store = FaultyStore(sql.open())
    ref = harness.spawn(store, batch_size=10)

    for i in range(10):
        ref.tell(Save(make_snapshot(f"s{i}")))
    ask(ref, Health)  # processed after the ten saves

    assert len(store.write_calls) == 1 and len(store.write_calls[0][0]) == 10
    assert len(sql.open().list_ids()) == 10

    for i in range(10, 19):
        ref.tell(Save(make_snapshot(f"s{i}")))
    ask(ref, Health)
    assert len(store.write_calls) == 1  # nine pending: below the batch size, before the interval
    assert value(harness.metrics, "sessionhive_persistence_pending_snapshots") == 9


def test_a_backlog_is_written_batch_size_sessions_per_transaction(harness: Harness) -> None:
    store = FaultyStore(_memory())
    ref = harness.spawn(store, batch_size=4, retry_attempts=1)
    store.failures_left = None  # hold everything back until the flush
    for i in range(10):
        ref.tell(Save(make_snapshot(f"s{i:02}")))
    ask(ref, Health)
    store.heal()

    flush(ref)

    assert [len(ids) for ids, _ in store.write_calls] == [4, 4, 2]
    assert [i for ids, _ in store.write_calls for i in ids] == [f"s{i:02}" for i in range(10)]


def test_the_flush_interval_writes_what_is_pending(harness: Harness, sql: StoreFactory) -> None:
    written = threading.Event()

    class Signalling(FaultyStore):
        def write_batch(self, snapshots: Any, deletes: Any) -> None:
            super().write_batch(snapshots, deletes)
            written.set()

    ref = harness.spawn(Signalling(sql.open()), flush_interval=0.01)
    ref.tell(Save(make_snapshot("s", version=3)))

    assert written.wait(WAIT), "the timer never wrote the pending snapshot"
    loaded = sql.open().load("s")
    assert loaded is not None and loaded.version == 3


# --------------------------------------------------------------------------- barriers and acks


def test_flush_is_a_durability_barrier(harness: Harness, sql: StoreFactory) -> None:
    ref = harness.spawn(sql.open())
    for i in range(5):
        ref.tell(Save(make_snapshot(f"s{i}", version=2, messages=4)))

    flush(ref)

    other = sql.open()  # another connection sees every snapshot committed
    assert other.list_ids() == [f"s{i}" for i in range(5)]
    assert all(other.load(f"s{i}") == make_snapshot(f"s{i}", version=2, messages=4) for i in range(5))


def test_a_sync_save_is_acknowledged_once_committed_and_shares_its_transaction(
    harness: Harness, sql: StoreFactory
) -> None:
    store = FaultyStore(sql.open())
    ref = harness.spawn(store)
    gate = threading.Event()
    ref.tell(Exists("block", hold_until(gate)))  # queue the next saves behind this one
    for i in range(5):
        ref.tell(Save(make_snapshot(f"batched{i}")))
    ack: concurrent.futures.Future[None] = concurrent.futures.Future()
    ref.tell(Save(make_snapshot("sync", version=4), ack))
    gate.set()

    ack.result(timeout=WAIT)

    loaded = sql.open().load("sync")
    assert loaded is not None and loaded.version == 4
    assert len(store.write_calls) == 1 and len(store.write_calls[0][0]) == 6  # one group commit


def test_an_ack_is_satisfied_by_a_newer_version_of_the_session(harness: Harness) -> None:
    store = FaultyStore(_memory())
    ref = harness.spawn(store)
    gate = threading.Event()
    ref.tell(Exists("block", hold_until(gate)))
    ack: concurrent.futures.Future[None] = concurrent.futures.Future()
    ref.tell(Save(make_snapshot("s", version=1), ack))
    ref.tell(Save(make_snapshot("s", version=2)))
    gate.set()

    ack.result(timeout=WAIT)
    loaded = store.inner.load("s")
    assert loaded is not None and loaded.version == 2


# --------------------------------------------------------------------------- reads


def test_load_answers_the_pending_state_before_the_stored_one(harness: Harness, sql: StoreFactory) -> None:
    store = FaultyStore(sql.open())
    ref = harness.spawn(store)
    ref.tell(Save(make_snapshot("s", version=1, messages=2)))
    flush(ref)
    ref.tell(Save(make_snapshot("s", version=2, messages=5)))

    pending = load(ref, "s")
    assert pending == make_snapshot("s", version=2, messages=5)
    assert sql.open().load("s") == make_snapshot("s", version=1, messages=2)
    assert store.loads == 0


def test_load_reads_the_store_and_answers_unknown_ids_without_a_query(
    harness: Harness, sql: StoreFactory
) -> None:
    sql.open().write_batch([make_snapshot("stored", version=7, messages=12)], [])
    store = FaultyStore(sql.open())
    ref = harness.spawn(store)

    assert load(ref, "stored") == make_snapshot("stored", version=7, messages=12)
    assert store.loads == 1
    assert load(ref, "unknown") is None
    assert exists(ref, "unknown") is False
    assert store.loads == 1  # answered from the ids read at start
    assert exists(ref, "stored") is True


def test_load_reports_a_store_error_to_the_caller(harness: Harness) -> None:
    class Unreadable(FaultyStore):
        def load(self, session_id: str) -> SessionSnapshot | None:
            raise StoreError(f"store cannot read {session_id!r}")

    inner = _memory()
    inner.write_batch([make_snapshot("s")], [])
    ref = harness.spawn(Unreadable(inner))

    with pytest.raises(StoreError, match="cannot read 's'"):
        load(ref, "s")
    assert exists(ref, "s") is True  # the actor is still alive and answering


def test_list_ids_joins_stored_and_pending_minus_deleted(harness: Harness, sql: StoreFactory) -> None:
    sql.open().write_batch([make_snapshot("a"), make_snapshot("b")], [])
    ref = harness.spawn(sql.open())
    ref.tell(Save(make_snapshot("c")))
    ref.tell(Delete("a"))

    assert ask(ref, ListIds) == ["b", "c"]


def test_health_reports_the_store_by_name(harness: Harness, sql: StoreFactory) -> None:
    store = sql.open()
    ref = harness.spawn(store)
    assert ask(ref, Health) == [(store.name, "ok")]


# --------------------------------------------------------------------------- deletes


def test_a_deleted_session_never_comes_back(harness: Harness, sql: StoreFactory) -> None:
    ref = harness.spawn(sql.open())
    ref.tell(Save(make_snapshot("s", version=1)))
    flush(ref)
    for version in (2, 3, 4):
        ref.tell(Save(make_snapshot("s", version=version)))
    ack: concurrent.futures.Future[None] = concurrent.futures.Future()
    ref.tell(Delete("s", ack))

    assert load(ref, "s") is None
    assert exists(ref, "s") is False
    assert value(harness.metrics, "sessionhive_persistence_pending_snapshots") == 1  # the delete alone
    flush(ref)
    ack.result(timeout=0)
    harness.stop(ref)  # and its final flush has nothing of "s" left to write

    assert sql.open().load("s") is None
    restarted = harness.spawn(sql.open())
    assert load(restarted, "s") is None
    assert ask(restarted, ListIds) == []


def test_a_session_recreated_after_its_delete_is_written_after_it(
    harness: Harness, sql: StoreFactory
) -> None:
    store = FaultyStore(sql.open())
    ref = harness.spawn(store)
    ref.tell(Save(make_snapshot("s", version=9, messages=30, prefix="old")))
    flush(ref)
    ref.tell(Delete("s"))
    recreated = make_snapshot("s", version=1, messages=2, prefix="new")
    ref.tell(Save(recreated))

    assert load(ref, "s") == recreated
    flush(ref)

    assert store.write_calls[-1] == (["s"], ["s"])  # one transaction: delete first, then the new session
    assert sql.open().load("s") == recreated


# --------------------------------------------------------------------------- failures


def test_transient_failures_are_retried_and_nothing_is_lost(harness: Harness, sql: StoreFactory) -> None:
    store = FaultyStore(sql.open(), failures=3)
    ref = harness.spawn(store, retry_attempts=5, retry_max_wait=1.0)
    for i in range(20):
        ref.tell(Save(make_snapshot(f"s{i}", version=1, messages=i)))

    flush(ref)

    assert store.attempts == 4
    assert value(harness.metrics, "sessionhive_persistence_retries_total") == 3
    assert value(harness.metrics, "sessionhive_persistence_failures_total") == 0
    assert harness.failures == []
    reopened = sql.open()
    assert all(reopened.load(f"s{i}") == make_snapshot(f"s{i}", version=1, messages=i) for i in range(20))


def test_a_store_that_keeps_failing_keeps_the_data_and_reports_it(
    harness: Harness, sql: StoreFactory
) -> None:
    store = FaultyStore(sql.open(), failures=None)
    ref = harness.spawn(store, retry_attempts=3, retry_max_wait=0.05)
    ref.tell(Save(make_snapshot("a", version=1)))
    ref.tell(Delete("gone"))
    ack: concurrent.futures.Future[None] = concurrent.futures.Future()
    ref.tell(Save(make_snapshot("b", version=2), ack))

    with pytest.raises(StoreError, match="database is locked"):
        flush(ref)
    with pytest.raises(StoreError, match="stays pending"):
        ack.result(timeout=WAIT)
    with pytest.raises(StoreError):
        flush(ref)  # still failing: reported again to the flusher, not again to the sessions

    assert sorted(sid for sid, _ in harness.failures) == ["a", "b", "gone"]
    assert all("database is locked" in text for _, text in harness.failures)
    assert value(harness.metrics, "sessionhive_persistence_retries_total") >= 2
    assert value(harness.metrics, "sessionhive_persistence_failures_total") >= 2
    assert value(harness.metrics, "sessionhive_persistence_pending_snapshots") == 3
    assert load(ref, "a") == make_snapshot("a", version=1)  # still pending, still the newest state
    [(name, status)] = ask(ref, Health)
    assert status.startswith("error: 3 sessions pending; last write failed")

    store.heal()
    flush(ref)

    reopened = sql.open()
    assert reopened.load("a") == make_snapshot("a", version=1)
    assert reopened.load("b") == make_snapshot("b", version=2)
    assert ask(ref, Health) == [(name, "ok")]
    assert value(harness.metrics, "sessionhive_persistence_pending_snapshots") == 0


def test_a_permanent_error_is_not_retried(harness: Harness) -> None:
    store = FaultyStore(_memory(), failures=1, error=lambda: ValueError("column 'x' does not exist"))
    ref = harness.spawn(store, retry_attempts=5, retry_max_wait=1.0)
    ref.tell(Save(make_snapshot("s")))

    with pytest.raises(StoreError, match="column 'x' does not exist"):
        flush(ref)

    assert store.attempts == 1
    assert value(harness.metrics, "sessionhive_persistence_retries_total") == 0
    flush(ref)  # the next flush writes it
    assert store.inner.load("s") == make_snapshot("s")


def test_a_failing_callback_does_not_stop_the_actor(harness: Harness) -> None:
    def explode(_snapshot: Any, _error: Any) -> None:
        raise RuntimeError("callback bug")

    ref = harness.spawn(_memory())
    ref.tell(Load("x", explode))
    ref.tell(Save(make_snapshot("s")))
    flush(ref)
    assert exists(ref, "s") is True


# --------------------------------------------------------------------------- lifecycle


def test_stopping_writes_what_is_pending(harness: Harness, sql: StoreFactory) -> None:
    ref = harness.spawn(sql.open())
    ref.tell(Save(make_snapshot("s", version=5, messages=3)))

    harness.stop(ref)

    assert sql.open().load("s") == make_snapshot("s", version=5, messages=3)


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"flush_interval": 0},
        {"retry_attempts": 0},
        {"retry_max_wait": -1},
    ],
)
def test_invalid_settings_are_refused_at_spawn(harness: Harness, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig):
        harness.spawn(_memory(), **options)


def _memory() -> Any:
    from sessionhive.persistence import MemoryStore

    return MemoryStore()


# --------------------------------------------------------------------------- group commit, deadline, backlog


class _WatchedStore:
    """A real store that tells each ``write_batch`` it received."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.wrote = threading.Event()

    def write_batch(self, snapshots: Any, deletes: Any) -> None:
        self.inner.write_batch(snapshots, deletes)
        self.wrote.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_durable_saves_told_together_share_one_commit(harness: Harness, sql: StoreFactory) -> None:
    """Group commit: 50 sessions waiting for their commits get one transaction, with no timer wait."""
    ref = harness.spawn(sql.open())  # flush_interval: an hour
    acks: list[concurrent.futures.Future[None]] = [concurrent.futures.Future() for _ in range(50)]
    ref.tell(Batch(tuple(Save(make_snapshot(f"s{n}"), ack, saves=1) for n, ack in enumerate(acks))))

    for ack in acks:
        ack.result(timeout=WAIT)

    name = "sessionhive_store_commit_batch_size"
    assert value(harness.metrics, name + "_count") == 1
    assert value(harness.metrics, name + "_sum") == 50
    reader = sql.open()
    assert all(reader.load(f"s{n}") is not None for n in range(50))


def test_a_batched_save_is_written_by_its_deadline_counted_from_its_acknowledgement(
    harness: Harness, sql: StoreFactory
) -> None:
    """A save acknowledged a whole interval ago (it waited on the way here) is written at once."""
    interval = 30.0
    fresh = _WatchedStore(sql.open())
    ref = harness.spawn(fresh, flush_interval=interval)
    ref.tell(Save(make_snapshot("fresh"), issued=time.monotonic()))
    assert not fresh.wrote.wait(0.3)  # its deadline is 30 s away

    late = _WatchedStore(sql.open())
    ref = harness.spawn(late, flush_interval=interval)
    ref.tell(Save(make_snapshot("late"), issued=time.monotonic() - interval))
    assert late.wrote.wait(WAIT)
    assert sql.open().load("late") is not None


def test_the_backlog_counts_saves_until_they_commit(harness: Harness, sql: StoreFactory) -> None:
    backlog = Backlog(limit=MIN_BACKLOG)
    ref = harness.spawn(sql.open(), backlog=backlog)
    backlog.told(MIN_BACKLOG + 1)  # as the sessions' link does for each save it sends
    assert backlog.congested
    ref.tell(Save(make_snapshot("s"), saves=MIN_BACKLOG + 1))
    flush(ref)
    assert backlog.unwritten == 0
    assert not backlog.congested


def test_step_writes_keep_the_stored_session_whole(sql: StoreFactory) -> None:
    """A step updates a few columns; a changed header, or a row another writer changed, is written in full."""
    store = sql.open()
    first = make_snapshot("s", version=1, messages=2)
    store.write_batch([first], [])
    step = replace(first, version=2, messages=conversation(4), updated_at=first.updated_at + 1)
    store.write_batch([step], [])
    assert store.load("s") == step

    other = sql.open()  # another writer moves the row on, with a new config
    moved = replace(step, version=3, config=replace(step.config, system_prompt="Another."))
    other.write_batch([moved], [])
    # Same header as this store last wrote, but over a row it did not write: a full write.
    resumed = replace(step, version=4, messages=conversation(6))
    store.write_batch([resumed], [])
    assert store.load("s") == resumed
    renamed = replace(resumed, version=5, state="paused")
    store.write_batch([renamed], [])
    assert store.load("s") == renamed
