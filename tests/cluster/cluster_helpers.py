"""Helpers of the cluster tests: a PostgreSQL schema per test, a turn load, and the store-side proofs.

The proofs read the store, not the cluster: every acknowledged turn is in its
session's history exactly once, histories are whole user/assistant pairs in
the order each session's client sent them, a turn its client was told failed
is not there (only an ``OutcomeUnknown`` one may be), and the write log shows
that the epochs of a session never overlap (no two owners wrote it at once).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from sessionhive import (
    CallTimeout,
    OutcomeUnknown,
    SessionConfig,
    SessionhiveError,
    StoreError,
    TurnCancelled,
    TurnFailed,
)
from sessionhive.persistence import SqlStore
from sessionhive.persistence.leases import LEASES, WRITE_LOG, LeaseTable

POSTGRES_URL = os.environ.get(
    "SESSIONHIVE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: What a write refused by the lease fence says (persistence/actor.py).
FENCED = "has another writer now"
#: Each turn returns only once committed: "acknowledged" then means durable.
SYNC = SessionConfig(durability="sync")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_unreachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(_libpq(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return str(exc).strip() or type(exc).__name__
    return None


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose connections live in a new PostgreSQL schema, dropped afterwards."""
    import psycopg

    schema = f"sessionhive_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def two_fenced_writers(
    ttl_a: float, ttl_b: float
) -> Iterator[tuple[SqlStore, LeaseTable, SqlStore, LeaseTable]]:
    """Two stores of one fresh schema, each fenced by its own owner's leases (``a@1``, ``b@1``).

    Skips when PostgreSQL is unreachable; proves the write log single-writer afterwards.
    """
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(f"!!! PostgreSQL is NOT REACHABLE, lease tests skipped: {reason}")
    with fresh_schema() as url:
        store_a, store_b = SqlStore(url), SqlStore(url)
        try:
            a = LeaseTable(store_a.engine, "a@1", ttl=ttl_a, audit=True)
            b = LeaseTable(store_b.engine, "b@1", ttl=ttl_b, audit=True)
            store_a.write_fence, store_b.write_fence = a.fence, b.fence
            yield store_a, a, store_b, b
        finally:
            store_a.close()
            store_b.close()
        verify_single_writer(url)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an observable condition of external processes until it holds (or fail saying what)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # a shard restarting may not answer yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.1)


class Load:
    """Worker threads running turns on their own sessions, one at a time each, with unique prompts.

    A prompt is ``"<session>#<n>"`` with ``n`` growing per session, so the
    store's history tells which attempt each turn was and in which order.
    A turn is acknowledged when ``generate`` returned its result; it failed
    when ``generate`` raised anything but ``OutcomeUnknown`` (then ``unknown``).
    ``answered`` keeps, per session, when each of its turns was acknowledged.
    """

    def __init__(self, hive: Any, sessions: list[str], *, workers: int, timeout: float = 30) -> None:
        self.hive = hive
        self.timeout = timeout
        self.acked: dict[str, list[str]] = defaultdict(list)
        self.failed: dict[str, list[str]] = defaultdict(list)
        self.unknown: dict[str, list[str]] = defaultdict(list)
        # Prompt -> what its client was told, for every turn that failed.
        self.why: dict[str, str] = {}
        self.answered: dict[str, list[float]] = defaultdict(list)
        self.interrupted = 0
        self.unexpected: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        self._changed = threading.Condition(self._lock)
        self._threads = [
            threading.Thread(target=self._run, args=(sessions[i::workers],), daemon=True)
            for i in range(workers)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, sessions: list[str]) -> None:
        counters = dict.fromkeys(sessions, 0)
        while not self._stop.is_set():
            for sid in sessions:
                if self._stop.is_set():
                    return
                counters[sid] += 1
                prompt = f"{sid}#{counters[sid]}"
                try:
                    result = self.hive.generate(sid, prompt, timeout=self.timeout)
                except OutcomeUnknown as exc:
                    with self._lock:
                        self.why[prompt] = repr(exc)
                        self.unknown[sid].append(prompt)
                        self.interrupted += 1
                    continue
                except (TurnCancelled, StoreError, CallTimeout) as exc:
                    with self._lock:
                        self.why[prompt] = repr(exc)
                        self.failed[sid].append(prompt)
                        self.interrupted += 1
                    continue
                except TurnFailed as exc:
                    with self._lock:
                        self.why[prompt] = repr(exc)
                        self.failed[sid].append(prompt)
                        # A shard that lost the lease mid-turn: its write was fenced, the turn failed.
                        if FENCED in str(exc):
                            self.interrupted += 1
                        else:
                            self.unexpected.append(exc)
                    continue
                except SessionhiveError as exc:
                    with self._lock:
                        self.failed[sid].append(prompt)
                        self.unexpected.append(exc)
                    continue
                with self._changed:
                    if result.text != "ok":
                        self.unexpected.append(AssertionError(f"{sid}: unexpected reply {result.text!r}"))
                    self.acked[sid].append(prompt)
                    self.answered[sid].append(time.monotonic())
                    self._count += 1
                    self._changed.notify_all()

    def acked_count(self) -> int:
        with self._lock:
            return self._count

    def wait_for_turns(self, total: int, timeout: float = 60) -> None:
        """Until ``total`` turns were acknowledged since the start (progress is the observable)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._count < total:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {self._count} of {total} turns acknowledged in {timeout} s")
                self._changed.wait(left)


def verify_histories(url: str, load: Load) -> None:
    """Nothing acknowledged lost, nothing duplicated or interleaved, nothing invented.

    A turn interrupted by a fault (never acknowledged) may have left its
    prompt without a reply, or with the note a restarted session adds, as a
    local Hive killed mid-turn would; an acknowledged turn is always whole.
    """
    store = SqlStore(url)
    try:
        for sid in set(load.acked) | set(load.failed) | set(load.unknown):
            snapshot = store.load(sid)
            assert snapshot is not None, sid
            messages = list(snapshot.messages)
            turns: list[tuple[str, bool]] = []  # (prompt, has its reply)
            for message in messages:
                if message.role == "user":
                    turns.append((message.text, False))
                elif message.role == "assistant" and message.text.startswith("[This turn was interrupted"):
                    # The note a restarted session leaves on a turn its process did not finish.
                    assert turns and not turns[-1][1], f"{sid}: an interruption note out of place: {messages}"
                else:
                    assert message.role == "assistant" and message.text == "ok", f"{sid}: {message}"
                    assert turns and not turns[-1][1], f"{sid}: a reply without its prompt: {messages}"
                    turns[-1] = (turns[-1][0], True)
            prompts = [prompt for prompt, _whole in turns]
            assert len(prompts) == len(set(prompts)), f"{sid}: a turn stored twice: {prompts}"
            # The acknowledged turns, in the order their client sent (and so acknowledged) them.
            acked = set(load.acked[sid])
            numbers = [int(p.rsplit("#", 1)[1]) for p in prompts if p in acked]
            assert numbers == sorted(numbers), (
                f"{sid}: acknowledged turns out of order: {prompts}; "
                f"writes (version, owner, epoch): {_writes_of(store, sid)}"
            )
            whole = {prompt for prompt, complete in turns if complete}
            missing = set(load.acked[sid]) - whole
            assert not missing, f"{sid}: acknowledged turns lost or torn: {sorted(missing)}"
            told_failed = set(prompts) & set(load.failed[sid])
            assert not told_failed, (
                f"{sid}: reported failed, yet stored: {[load.why[p] for p in told_failed]}"
            )
            invented = set(prompts) - set(load.acked[sid]) - set(load.unknown[sid])
            assert not invented, f"{sid}: turns nobody sent: {invented}"
    finally:
        store.close()


def _writes_of(store: SqlStore, session_id: str) -> list[tuple[int, str, int]]:
    """The audited writes of one session, oldest first (for a failure message)."""
    with store.engine.connect() as conn:
        return [
            (int(version), str(owner), int(epoch))
            for version, owner, epoch in conn.execute(
                select(WRITE_LOG.c.version, WRITE_LOG.c.owner, WRITE_LOG.c.epoch)
                .where(WRITE_LOG.c.session_id == session_id)
                .order_by(WRITE_LOG.c.seq)
            )
        ]


def verify_single_writer(url: str) -> None:
    """Per session, the versions written under each lease epoch come strictly after the previous epoch's."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    WRITE_LOG.c.session_id,
                    WRITE_LOG.c.epoch,
                    func.min(WRITE_LOG.c.version),
                    func.max(WRITE_LOG.c.version),
                    func.count(func.distinct(WRITE_LOG.c.owner)),
                )
                .group_by(WRITE_LOG.c.session_id, WRITE_LOG.c.epoch)
                .order_by(WRITE_LOG.c.session_id, WRITE_LOG.c.epoch)
            ).all()
    finally:
        engine.dispose()
    assert rows, "the write log is empty: audit_writes was off?"
    last: dict[str, tuple[int, int]] = {}
    for sid, epoch, low, high, owners in rows:
        assert owners == 1, f"{sid}: epoch {epoch} written by {owners} owners"
        if sid in last:
            previous_epoch, previous_high = last[sid]
            assert low > previous_high, (
                f"{sid}: epoch {epoch} wrote v{low}, epoch {previous_epoch} had reached v{previous_high}"
            )
        last[sid] = (epoch, high)


def lease_rows(url: str) -> dict[str, tuple[str, int]]:
    """``{session id: (owner, epoch)}`` from the lease table."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                sid: (owner, int(epoch))
                for sid, owner, epoch in conn.execute(
                    select(LEASES.c.session_id, LEASES.c.owner, LEASES.c.epoch)
                )
            }
    finally:
        engine.dispose()
