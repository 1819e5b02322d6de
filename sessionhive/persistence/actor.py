"""``PersistenceActor``: the one writer of a store. Coalesces, batches, retries, flushes.

Session actors ``tell`` it a :class:`Save` after every change. It keeps only
the newest pending snapshot of each session and writes the pending ones in a
single ``write_batch``:

- at once (group commit) when a save waits for its commit (the durable
  default): the write starts after the messages already in the mailbox, so
  every session whose save arrived during the previous commit shares the
  next one, and nobody waits for a timer;
- for ``durability="batched"`` saves, before ``flush_interval`` has passed
  since the *acknowledgement* of the oldest of them (:attr:`Save.issued`),
  less the time a commit is expected to take;
- when ``batch_size`` sessions are pending, or on a :class:`Flush` barrier.

:class:`Backlog` counts the saves told and not yet committed; when it
exceeds its limit (what the writer commits in half a ``flush_interval``,
measured, between :data:`MIN_BACKLOG` and :data:`MAX_BACKLOG` saves) the
sessions make their batched saves wait for the commit too: turns slow down
to the writer's pace instead of the backlog (and memory) growing.

Every request that needs an answer carries its own reply channel (a
:class:`concurrent.futures.Future` or a callback), completed from the actor's
thread; the actor never waits on another actor, so it runs on any backend.
The only time a handler blocks is a store call, including the bounded
tenacity backoff of a failing write (at most ``retry_attempts`` tries and
``retry_max_wait`` seconds of waiting); meanwhile the mailbox waits.

Nothing is dropped while the process lives: a batch that still fails after
its retries stays pending, every session in it is reported once through
``on_failure`` (until it is written again), ``sync`` acks and :class:`Flush`
futures get a :class:`~sessionhive.StoreError`, and the next tick or flush
tries again.

Usage (the Hive does this)::

    ref = backend.spawn(PersistenceActor, open_store("sqlite:///sessionhive.db"), metrics=metrics)
    ref.tell(Save(snapshot))
    done: Future[None] = Future()
    ref.tell(Flush(done))
    done.result(timeout=10)
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import pykka
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from sessionhive.metrics import tracing
from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.errors import StoreError
from sessionhive.model.validate import check_number, check_positive_int, check_positive_number
from sessionhive.persistence import messages as m
from sessionhive.persistence._protocol import SessionStore
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.persistence.stores import is_transient
from sessionhive.runtime import HiveActor, complete, fail

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_FLUSH_INTERVAL", "PersistenceActor"]

logger = logging.getLogger("sessionhive.persistence")

#: Most sessions per transaction. Chosen with ``bench/bench_persistence.py``
#: (2 shared cores; 2,000 new sessions of 10 messages told at once): on SQLite
#: 64 -> 4,000 snapshots/s, 256 -> 4,900/s, 1,024 -> 5,400/s, while the longest
#: transaction (the time the mailbox waits) grows 34 -> 70 -> 204 ms; on
#: PostgreSQL 256 -> 1,800/s with 170 ms, 1,024 -> 2,300/s with 470 ms. 256 is
#: the knee: ~90% of the throughput of 1,024 for a third of the wait.
DEFAULT_BATCH_SIZE = 256
#: Longest wait of a pending snapshot before its write starts. Measured at
#: 2,000 snapshots/s over 200 sessions (same benchmark): 0.01 s gives a commit
#: lag p50/p99 of 10/20 ms for 73 transactions/s and 39% CPU, 0.05 s 38/69 ms
#: for 17 transactions/s and 29% CPU, 0.2 s 122/243 ms for 5/s and 22% CPU
#: (SQLite; PostgreSQL alike, 73/143 ms at 0.05 s). 0.05 s keeps the window
#: of unwritten state well under a turn's duration at a quarter of the
#: transactions of 0.01 s.
DEFAULT_FLUSH_INTERVAL = 0.05
# Time for a Tick to reach this actor's thread once its timer fires.
_HANDOFF = 0.005
# Fewest saves in a commit that tell the commit rate (below, fixed costs dominate).
_RATE_SAMPLE = 16


@dataclass(frozen=True, slots=True)
class _WriteSoon:
    """Sent to itself by a durable save: write after the messages already queued (group commit)."""


# --------------------------------------------------------------------------- state


class _Ticker:
    """One thread that calls ``tell`` when the earliest deadline armed comes; the writer's flush timer.

    A ``threading.Timer`` per arming started a thread each time: 10% of the
    writer's thread under the durable load of ``bench/bench_runtime.py``
    (py-spy), where nearly every commit re-arms it. This thread lives as
    long as the actor and sleeps on a condition between deadlines.
    """

    __slots__ = ("_closed", "_due", "_tell", "_thread", "_wake")

    def __init__(self, tell: Callable[[], None]) -> None:
        self._tell = tell
        # Guards only the deadline this thread sleeps until: no session state.
        self._wake = threading.Condition(threading.Lock())
        self._due: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, delay: float) -> None:
        """Call ``tell`` in ``delay`` seconds, unless an earlier call is armed already."""
        due = time.monotonic() + delay
        with self._wake:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sessionhive-persistence-tick", daemon=True
                )
                self._thread.start()
            if self._due is None or due < self._due:
                self._due = due
                self._wake.notify()

    def cancel(self) -> None:
        with self._wake:
            self._due = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._due = None
            self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                if self._due is None:
                    self._wake.wait()
                    continue
                remaining = self._due - time.monotonic()
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
                self._due = None
                self._wake.release()
                try:
                    self._tell()
                finally:
                    self._wake.acquire()


class _Pending:
    """What is waiting to be written for one session: a delete, a snapshot, or both (delete first)."""

    __slots__ = ("acks", "delete", "issued", "saves", "snapshot")

    def __init__(self, issued: float) -> None:
        self.delete = False
        self.snapshot: SessionSnapshot | None = None
        self.acks: list[concurrent.futures.Future[None]] = []
        self.issued = issued  # monotonic time of the oldest change not written
        self.saves = 0  # saves of the Backlog this entry settles


def _store_error(text: str, cause: BaseException, kind: type[StoreError] = StoreError) -> StoreError:
    error = kind(text)
    error.__cause__ = cause
    return error


class PersistenceActor(HiveActor):
    """Owns the pending snapshots and deletes of one store and is its only writer.

    Arguments:

    - ``store``: the :class:`SessionStore` to write (closed when the actor stops).
    - ``batch_size``: most sessions per transaction; reaching it writes at once.
    - ``flush_interval``: seconds the first pending item waits before a write.
    - ``metrics``: the Hive's :class:`HiveMetrics` (a private one if ``None``).
    - ``on_failure(session_id, error_text)``: called, in the actor's thread,
      for each pending session (deleted ones included) when a write fails
      after its retries; once per session until it is written again. It
      must not block.
    - ``retry_attempts`` / ``retry_max_wait``: a write that fails with a
      transient error (``store.is_transient``, else :func:`is_transient`) is
      tried up to ``retry_attempts`` times, with exponential backoff from
      20 ms and full jitter; no retry starts whose wait would take the
      write past ``retry_max_wait`` seconds, so the mailbox waits at most
      ``retry_max_wait`` plus the last attempt (an attempt itself may take
      SQLite's ``busy_timeout``). After a failed write, timer ticks and full
      batches wait ``retry_max_wait`` before trying again, so that loads and
      health checks still get through while the store is down; a
      :class:`~.messages.Flush` always tries at once.
    - ``cache_ids``: keep the set of stored ids in memory (read once at start)
      so that a :class:`~.messages.Load` or :class:`~.messages.Exists` of an
      unknown id needs no query. Turn it off when another process writes the same store.

    Messages (:mod:`sessionhive.persistence.messages`): ``Save``, ``Delete``,
    ``Flush``, ``Load``, ``Exists``, ``ListIds``, ``ListIndex``, ``Health``,
    ``Tick``.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        metrics: HiveMetrics | None = None,
        on_failure: Callable[[str, str], None] | None = None,
        retry_attempts: int = 5,
        retry_max_wait: float = 2.0,
        cache_ids: bool = True,
        backlog: m.Backlog | None = None,
    ) -> None:
        super().__init__()
        self._backlog = backlog if backlog is not None else m.Backlog()
        check_positive_int("batch_size", batch_size)
        check_positive_number("flush_interval", flush_interval, unit="seconds")
        check_positive_int("retry_attempts", retry_attempts)
        check_number("retry_max_wait", retry_max_wait, minimum=0.0, unit="seconds")
        self._store = store
        self._batch_size = batch_size
        self._flush_interval = float(flush_interval)
        self._metrics = metrics if metrics is not None else HiveMetrics()
        self._on_failure = on_failure
        self._retry_max_wait = float(retry_max_wait)
        self._cache_ids = cache_ids
        predicate = getattr(store, "is_transient", None)
        self._transient: Callable[[BaseException], bool] = predicate if callable(predicate) else is_transient
        self._retrying = Retrying(
            stop=stop_after_attempt(retry_attempts) | stop_before_delay(self._retry_max_wait),
            wait=wait_random_exponential(multiplier=0.02, max=max(self._retry_max_wait, 0.001)),
            retry=retry_if_exception(self._transient),
            before_sleep=self._count_retry,
            reraise=True,
        )
        # Insertion-ordered: a chunk of an oversized backlog writes the oldest sessions first.
        self._pending: dict[str, _Pending] = {}
        self._pending_snapshots = 0
        self._pending_deletes = 0
        self._known: set[str] | None = None
        self._ticker = _Ticker(self._tell_tick)
        self._tick_armed = False
        self._write_soon_queued = False
        self._failing: str | None = None  # error text of the last failed write, until one succeeds
        self._cooldown_until = 0.0
        self._notified: set[str] = set()
        # Measured on every commit: the longest recent commit (decaying), which
        # the batched deadline keeps in hand, and the saves committed per second.
        self._commit_estimate = 0.0
        self._commit_rate = 0.0

    # ----------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        self._load_known_ids()

    def on_stop(self) -> None:
        self._ticker.close()
        self._tick_armed = False
        if self._pending and not self._write_all(notify=False):
            logger.error(
                "persistence stopped with %d sessions not written to %s: %s",
                len(self._pending),
                self._store.name,
                self._failing,
            )
        try:
            self._store.close()
        except Exception:  # closing is best effort at shutdown
            logger.warning("closing store %s failed", self._store.name, exc_info=True)

    def on_receive(self, message: Any) -> Any:
        kind = type(message).__name__
        self._metrics.child(self._metrics.messages_handled, "persistence", kind).inc()
        return self._handle(message, kind)

    def _handle(self, message: Any, kind: str) -> Any:
        try:
            return super().on_receive(message)
        except Exception:
            # The pending data lives only in this actor: a bug in one handler
            # must not stop it and lose everything not yet written.
            logger.exception("persistence actor failed to handle %s", kind)
            return None

    # ----------------------------------------------------------------- writes

    def on_Batch(self, message: m.Batch) -> None:
        backlog = self._backlog
        backlog.in_hand = len(message.messages)
        handled: dict[str, int] = {}
        for each in message.messages:
            backlog.in_hand -= 1
            kind = type(each).__name__
            handled[kind] = handled.get(kind, 0) + 1
            self._handle(each, kind)
        # Counted once per kind and batch: a batch carries hundreds of saves at load.
        for kind, count in handled.items():
            self._metrics.child(self._metrics.messages_handled, "persistence", kind).inc(count)

    def on_Save(self, message: m.Save) -> None:
        snapshot = message.snapshot
        entry = self._entry(snapshot.session_id, message.issued)
        entry.saves += message.saves
        if entry.snapshot is None:
            entry.snapshot = snapshot
            self._pending_snapshots += 1
        else:
            self._metrics.persistence_coalesced.inc()
            if snapshot.version >= entry.snapshot.version:
                entry.snapshot = snapshot
        if message.ack is not None:
            entry.acks.append(message.ack)
        if self._known is not None:
            self._known.add(snapshot.session_id)
        self._pending_changed()
        if len(self._pending) >= self._batch_size and not self._cooling_down():
            self._write_all()
        elif (message.ack is not None or self._deadline_due()) and not self._write_soon_queued:
            # Writing at once would give every durable save its own transaction;
            # a message to self lets the saves already queued join this one. A
            # batched save that finds the deadline reached does the same: a
            # busy mailbox would hold the timer's Tick back.
            self._write_soon_queued = True
            self.actor_ref.tell(_WriteSoon())
        self._arm_timer()

    def on_Delete(self, message: m.Delete) -> None:
        entry = self._entry(message.session_id, 0.0)
        if entry.snapshot is not None:
            entry.snapshot = None
            self._pending_snapshots -= 1
        if not entry.delete:
            entry.delete = True
            self._pending_deletes += 1
        if message.ack is not None:
            entry.acks.append(message.ack)
        if self._known is not None:
            self._known.discard(message.session_id)
        self._pending_changed()
        self._arm_timer()

    def on_Flush(self, message: m.Flush) -> None:
        if self._write_all():
            complete(message.done, None)
        else:
            fail(
                message.done,
                StoreError(
                    f"flush to store {self._store.name} failed; {len(self._pending)} sessions stay pending "
                    f"and are retried: {self._failing}"
                ),
            )
        self._arm_timer()

    def on_Tick(self, _message: m.Tick) -> None:
        self._tick_armed = False
        if self._pending and not self._cooling_down():
            self._write_all()
        self._arm_timer()

    def on__WriteSoon(self, _message: _WriteSoon) -> None:
        self._write_soon_queued = False
        if self._pending and not self._cooling_down():
            self._write_all()
        self._arm_timer()

    # ----------------------------------------------------------------- reads

    def on_Load(self, message: m.Load) -> None:
        snapshot: SessionSnapshot | None = None
        error: BaseException | None = None
        entry = self._pending.get(message.session_id)
        if entry is not None:
            snapshot = entry.snapshot  # None while only its delete is pending
        elif self._is_known(message.session_id) is not False:
            try:
                snapshot = self._store.load(message.session_id)
            except Exception as exc:  # noqa: BLE001 - delivered to the caller
                error = (
                    exc
                    if isinstance(exc, StoreError)
                    else _store_error(
                        f"loading session {message.session_id!r} from {self._store.name} failed: {exc}", exc
                    )
                )
        self._call(message.on_loaded, snapshot, error)

    def on_Exists(self, message: m.Exists) -> None:
        entry = self._pending.get(message.session_id)
        if entry is not None:
            answer = entry.snapshot is not None
        else:
            known = self._is_known(message.session_id)
            if known is None:
                try:
                    known = self._store.load(message.session_id) is not None
                except Exception:
                    logger.warning("cannot tell whether session %r exists", message.session_id, exc_info=True)
                    known = False
            answer = known
        self._call(message.on_answer, answer)

    def on_ListIndex(self, message: m.ListIndex) -> None:
        try:
            list_index = getattr(self._store, "list_index", None)
            if list_index is not None:
                index = dict(list_index())
            else:
                index = {}
                for session_id in self._store.list_ids():
                    snapshot = self._store.load(session_id)
                    if snapshot is not None:
                        index[session_id] = snapshot.parent_id
        except Exception as exc:  # noqa: BLE001 - delivered to the caller
            error = (
                exc
                if isinstance(exc, StoreError)
                else _store_error(f"listing {self._store.name}: {exc}", exc)
            )
            fail(message.done, error)
            return
        complete(message.done, sorted(self._with_pending(index).items()))

    def on_ListIds(self, message: m.ListIds) -> None:
        if self._cache_ids and self._known is None:
            self._load_known_ids()
        if self._known is not None:
            complete(message.done, sorted(self._known))
            return
        try:
            ids = self._with_pending(dict.fromkeys(self._store.list_ids()))
        except Exception as exc:  # noqa: BLE001 - delivered to the caller
            fail(
                message.done,
                exc
                if isinstance(exc, StoreError)
                else _store_error(f"listing sessions of {self._store.name} failed: {exc}", exc),
            )
            return
        complete(message.done, sorted(ids))

    def on_Health(self, message: m.Health) -> None:
        try:
            self._store.health_check()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            status = f"error: {exc}"
        else:
            status = (
                "ok"
                if self._failing is None
                else (f"error: {len(self._pending)} sessions pending; last write failed: {self._failing}")
            )
        complete(message.done, [(self._store.name, status)])

    # ----------------------------------------------------------------- internals

    def _entry(self, session_id: str, issued: float) -> _Pending:
        entry = self._pending.get(session_id)
        if entry is None:
            entry = self._pending[session_id] = _Pending(issued or time.monotonic())
        return entry

    def _pending_changed(self) -> None:
        self._metrics.persistence_pending.set(self._pending_snapshots + self._pending_deletes)

    def _load_known_ids(self) -> None:
        if not self._cache_ids:
            return
        try:
            stored = dict.fromkeys(self._store.list_ids())
        except Exception:  # retried at the next ListIds; until then loads query the store
            logger.warning("cannot list the sessions of %s", self._store.name, exc_info=True)
            return
        self._known = set(self._with_pending(stored))

    def _with_pending(self, stored: dict[str, str | None]) -> dict[str, str | None]:
        """``stored`` (session id -> parent id) as it will be once every pending write lands."""
        for session_id, entry in self._pending.items():
            if entry.snapshot is not None:
                stored[session_id] = entry.snapshot.parent_id
            else:
                stored.pop(session_id, None)
        return stored

    def _is_known(self, session_id: str) -> bool | None:
        """Whether the store holds ``session_id`` by the id cache, ``None`` if there is no cache."""
        return None if self._known is None else session_id in self._known

    def _cooling_down(self) -> bool:
        return self._failing is not None and time.monotonic() < self._cooldown_until

    def _write_deadline(self) -> float:
        """When the pending writes must start (monotonic time); call with something pending.

        The deadline counts from the acknowledgement of the oldest pending
        change, not from its arrival here, and keeps the expected commit time
        (plus a hand-off to this thread) in hand.
        """
        oldest = next(iter(self._pending.values())).issued
        # Half the interval is kept in hand too: a commit may take several times the
        # last ones (a WAL checkpoint, a starved thread; measured by tests/test_sustained_load.py).
        return oldest + self._flush_interval / 2 - self._commit_estimate - _HANDOFF

    def _deadline_due(self) -> bool:
        return bool(self._pending) and time.monotonic() >= self._write_deadline()

    def _arm_timer(self) -> None:
        # A queued write (group commit) comes first: arming the ticker would only wake its thread.
        if self._tick_armed or self._write_soon_queued or not self._pending:
            return
        delay = min(self._flush_interval, max(0.0, self._write_deadline() - time.monotonic()))
        if self._failing is not None:
            delay = max(delay, self._cooldown_until - time.monotonic())
        self._tick_armed = True
        self._ticker.arm(delay)

    def _tell_tick(self) -> None:
        # Runs in the ticker's thread: it only tells, the actor's state stays the actor's.
        try:
            self.actor_ref.tell(m.Tick())
        except pykka.ActorDeadError:
            pass

    def _cancel_timer(self) -> None:
        if self._tick_armed:
            self._tick_armed = False
            self._ticker.cancel()

    def _count_retry(self, _state: Any) -> None:
        self._metrics.persistence_retries.inc()

    def _write_all(self, *, notify: bool = True) -> bool:
        """Write every pending session, ``batch_size`` per transaction; False if a write failed."""
        while self._pending:
            chunk = list(islice(self._pending, self._batch_size))
            if not self._write_chunk(chunk, notify=notify):
                return False
        # Nothing left for the timer: a durable Hive's writes are group commits, and an idle
        # one should not wake its writer for nothing (a Tick already told is harmless).
        self._cancel_timer()
        return True

    def _write_chunk(self, session_ids: Sequence[str], *, notify: bool) -> bool:
        snapshots: list[SessionSnapshot] = []
        deletes: list[str] = []
        for session_id in session_ids:
            entry = self._pending[session_id]
            if entry.delete:
                deletes.append(session_id)
            if entry.snapshot is not None:
                snapshots.append(entry.snapshot)
        started = time.perf_counter()
        try:
            with tracing.commit_span(self._store.name, session_ids, len(snapshots) + len(deletes)):
                self._retrying(self._store.write_batch, snapshots, deletes)
        except Exception as exc:  # noqa: BLE001 - kept pending, reported to sessions and waiters
            self._metrics.persistence_flush_duration.observe(time.perf_counter() - started)
            self._metrics.persistence_failures.inc()
            self._write_failed(exc, notify=notify)
            return False
        took = time.perf_counter() - started
        self._metrics.persistence_flush_duration.observe(took)
        self._metrics.persistence_batch_size.observe(len(session_ids))
        self._measure_commit(session_ids, took)
        self._count_written_rows()
        # A fenced store (a cluster shard, see persistence/leases.py) leaves out the
        # sessions whose ownership lease this writer lost: retrying cannot help, so
        # they are dropped, and whoever waits for their durability learns it failed.
        fenced = getattr(self._store, "last_fenced", None) or frozenset()
        self._settle_written(session_ids, fenced)
        if fenced:
            logger.warning("%d sessions not written to %s: their lease moved", len(fenced), self._store.name)
        self._pending_changed()
        if self._failing is not None:
            logger.info("writes to %s succeed again", self._store.name)
            self._failing = None
        return True

    def _measure_commit(self, session_ids: Sequence[str], took: float) -> None:
        """Record what one commit carried and took; adapt the backlog limit to the commit rate."""
        pending = self._pending
        saves = sum(pending[sid].saves for sid in session_ids)
        self._metrics.store_commit_batch_size.observe(
            sum(max(pending[sid].saves, 1) + pending[sid].delete for sid in session_ids)
        )
        self._commit_estimate = max(took, self._commit_estimate * 0.9)
        if saves >= _RATE_SAMPLE and took > 0:
            # Small commits are all fixed cost: they would understate the rate.
            rate = saves / took
            self._commit_rate = rate if self._commit_rate == 0 else 0.8 * self._commit_rate + 0.2 * rate
            wanted = int(self._commit_rate * self._flush_interval / 2)
            self._backlog.limit = min(m.MAX_BACKLOG, max(m.MIN_BACKLOG, wanted))

    def _count_written_rows(self) -> None:
        # last_write_rows is not part of the SessionStore protocol: a store
        # without it (a test double, a third-party store) counts no rows.
        rows = getattr(self._store, "last_write_rows", None)
        if isinstance(rows, Mapping):
            for table, count in rows.items():
                if count:
                    self._metrics.persistence_rows.labels(table).inc(count)

    def _settle_written(self, session_ids: Sequence[str], fenced: Container[str]) -> None:
        """Drop the written sessions from the pending set and answer their waiters; the fenced ones fail."""
        settled = 0
        for session_id in session_ids:
            entry = self._pending.pop(session_id)
            settled += entry.saves
            self._pending_snapshots -= entry.snapshot is not None
            self._pending_deletes -= entry.delete
            self._notified.discard(session_id)
            for ack in entry.acks:
                if session_id in fenced:
                    fail(ack, StoreError(f"session {session_id!r} has another writer now; not written"))
                else:
                    complete(ack, None)
        if settled:
            self._backlog.committed(settled)

    def _write_failed(self, exc: BaseException, *, notify: bool) -> None:
        text = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
        if self._failing is None:
            logger.error(
                "writing to %s failed; %d sessions stay pending: %s",
                self._store.name,
                len(self._pending),
                text,
            )
        self._failing = text
        self._cooldown_until = time.monotonic() + max(self._retry_max_wait, self._flush_interval)
        for session_id, entry in self._pending.items():
            for ack in entry.acks:
                fail(
                    ack,
                    _store_error(
                        f"session {session_id!r} was not written to {self._store.name} (it stays pending "
                        f"and is retried): {text}",
                        exc,
                        m.WriteStillPending,
                    ),
                )
            entry.acks.clear()
            if notify and self._on_failure is not None and session_id not in self._notified:
                self._notified.add(session_id)
                self._call(self._on_failure, session_id, text)

    @staticmethod
    def _call(callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # a caller's callback must not take the actor down
            logger.exception("persistence callback %r failed", callback)
