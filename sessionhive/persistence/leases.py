"""Ownership leases of sessions in a shared SQL store, and the write fence that enforces them.

When several Hives (the shards of a cluster) share one database, each live
session must have exactly one writer. A :class:`LeaseTable` keeps one row per
session in ``sessionhive_leases``: the owner (a shard incarnation), an epoch
that grows by one at every change of owner, and an expiry. A shard wins the
lease before it activates a session (:meth:`LeaseTable.acquire`), renews all
of its leases in one statement (:meth:`LeaseTable.renew`) and releases them
when it hands sessions over (:meth:`LeaseTable.release`).

Installed as the :class:`~sessionhive.persistence.SqlStore`'s ``write_fence``,
:meth:`LeaseTable.fence` runs inside every write transaction, locks the lease
rows of the batch and refuses the snapshots and deletes of every session whose
lease this owner no longer holds at the epoch it won: a shard that was paused
or partitioned past its lease can never overwrite what the new owner wrote.
Clocks only decide when an expired lease may be taken over; the fence itself
compares owners and epochs under the row lock, so it holds whatever the clocks say.

With ``audit=True`` every write the fence lets through is recorded in
``sessionhive_write_log`` (session, version, owner, epoch): tests read it to
prove that no two owners ever wrote one session at the same time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Double,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    text,
    update,
)

from sessionhive.model.errors import StoreError
from sessionhive.model.ids import MAX_ID_LENGTH

__all__ = ["LEASES", "WRITE_LOG", "Lease", "LeaseHeld", "LeaseTable"]

_metadata = MetaData()

LEASES = Table(
    "sessionhive_leases",
    _metadata,
    Column("session_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    # Unix time by the owner's clock; 0 once released.
    Column("expires_at", Double, nullable=False),
    # Unix time at which this owner won it (the epoch began).
    Column("won_at", Double, nullable=True),
)

WRITE_LOG = Table(
    "sessionhive_write_log",
    _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(MAX_ID_LENGTH), nullable=False, index=True),
    Column("version", BigInteger, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("written_at", Double, nullable=False),
)

_IN_CHUNK = 500
# Arbitrary constant key of the PostgreSQL advisory lock held while creating the lease tables.
_PG_LEASES_LOCK = 0x5E55_1EA5E5


class LeaseHeld(StoreError):
    """Another owner holds the session's lease and it has not expired."""

    def __init__(self, session_id: str, owner: str, expires_in: float) -> None:
        super().__init__(session_id, owner, expires_in)
        self.session_id = session_id
        self.owner = owner
        self.expires_in = expires_in

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} is owned by {self.owner} for {self.expires_in:.1f} s more; "
            "it moves once that owner releases it or its lease expires"
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """The answer of :meth:`LeaseTable.acquire`.

    ``taken_over`` is True when another owner held the session since this
    owner last did: whatever this owner still has of it in memory is stale.
    ``changed_hands`` is True when the lease was won from another owner (an
    expired or released lease of someone else, this owner's earlier
    incarnations included); ``previous_won_at`` is then when that owner
    had won it (Unix time): work sent to the session before then may have
    been overtaken, on that owner, by work sent later.
    """

    session_id: str
    epoch: int
    taken_over: bool
    changed_hands: bool = False
    previous_won_at: float = 0.0


# A locked lease row: owner, epoch, expires_at, won_at.
_Row = tuple[str, int, float, float | None]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class LeaseTable:
    """The leases of one owner (a shard incarnation) in the database behind ``engine``.

    ``owner`` must be unique per process incarnation (a restarted shard is a
    new owner), ``ttl`` is the lease duration in seconds. Thread-safe: the
    fence runs in the persistence actor's thread, the other methods in the
    shard's.
    """

    def __init__(self, engine: Engine, owner: str, *, ttl: float = 10.0, audit: bool = False) -> None:
        if not owner or len(owner) > 128:
            raise ValueError("a lease owner is a non-empty name of at most 128 characters")
        self.engine = engine
        self.owner = owner
        self.ttl = float(ttl)
        self.audit = audit
        # Not session state: the lease bookkeeping below is read by the write
        # fence on the persistence actor's thread and updated by the shard's
        # acquire/renew/release on its own; the fence must see a consistent
        # epoch for every session it checks.
        self._lock = threading.Lock()
        # Session id -> the epoch this owner won it at (kept after a loss or a
        # release: a write of this owner at that epoch must stay refused).
        self._epochs: dict[str, int] = {}
        # Session id -> local monotonic deadline until which the lease is surely ours.
        self._valid_until: dict[str, float] = {}
        # Sessions won back (``taken_over``) whose stale in-memory copy may still try to write:
        # refused by the fence until the owner says its copy is fresh (:meth:`mark_fresh`).
        self._stale: set[str] = set()
        self.fenced_total = 0
        with self._begin() as conn:
            if engine.dialect.name == "postgresql":
                # Shards starting at once on a fresh database would all CREATE TABLE.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LEASES_LOCK})
            _metadata.create_all(conn, checkfirst=True)

    # ------------------------------------------------------------------ plumbing

    def _begin(self) -> Any:
        # The SQL store begins SQLite write transactions with BEGIN IMMEDIATE
        # when this option is set, so that the lease check and the change are atomic.
        conn = self.engine.connect()
        conn.execution_options(sessionhive_write=True)
        return _Txn(conn)

    def _lock_rows(self, conn: Connection, ids: Sequence[str]) -> dict[str, _Row]:
        rows: dict[str, _Row] = {}
        for chunk in _chunks(sorted(ids)):
            query = (
                select(
                    LEASES.c.session_id, LEASES.c.owner, LEASES.c.epoch, LEASES.c.expires_at, LEASES.c.won_at
                )
                .where(LEASES.c.session_id.in_(chunk))
                .order_by(LEASES.c.session_id)  # one lock order for every owner: no deadlock
                .with_for_update()
            )
            for sid, owner, epoch, expires, won in conn.execute(query):
                rows[sid] = (owner, int(epoch), float(expires), None if won is None else float(won))
        return rows

    def _lock_owned(self, conn: Connection, condition: ColumnElement[bool]) -> list[str]:
        """Lock this owner's lease rows matching ``condition``, in the one order every writer locks
        rows in (:meth:`_lock_rows`), so that no two transactions wait for each other; their ids."""
        query = (
            select(LEASES.c.session_id)
            .where(LEASES.c.owner == self.owner, condition)
            .order_by(LEASES.c.session_id)
            .with_for_update()
        )
        return list(conn.execute(query).scalars())

    def _claim(self, conn: Connection, session_id: str, row: _Row | None, now: float) -> int:
        """Make this owner the holder of ``session_id`` (the row is locked or absent); its new epoch."""
        if row is None:
            epoch = 1
            conn.execute(
                insert(LEASES).values(
                    session_id=session_id,
                    owner=self.owner,
                    epoch=epoch,
                    expires_at=now + self.ttl,
                    won_at=now,
                )
            )
        else:
            epoch = row[1] if row[0] == self.owner else row[1] + 1
            won_at = row[3] if row[0] == self.owner else now
            conn.execute(
                update(LEASES)
                .where(LEASES.c.session_id == session_id)
                .values(owner=self.owner, epoch=epoch, expires_at=now + self.ttl, won_at=won_at)
            )
        return epoch

    # ------------------------------------------------------------------ the owner's side

    def acquire(self, session_id: str, *, supersedes: str | None = None) -> Lease:
        """Win (or renew) the lease of ``session_id``; raises :class:`LeaseHeld` if another owner has it.

        ``supersedes``: a prefix of owner names this owner replaces (the
        earlier incarnations of one shard, which its restart proves dead): a
        lease they hold is taken over at once, not at its expiry. The new
        epoch fences whatever such an owner might still try to write.
        """
        started = time.monotonic()
        with self._begin() as conn:
            now = time.time()
            row = self._lock_rows(conn, [session_id]).get(session_id)
            with self._lock:
                mine = self._epochs.get(session_id)
            replaced = supersedes is not None and row is not None and row[0].startswith(supersedes)
            if row is not None and row[0] != self.owner and row[2] > now and not replaced:
                raise LeaseHeld(session_id, row[0], row[2] - now)
            epoch = self._claim(conn, session_id, row, now)
        with self._lock:
            if mine is not None and mine != epoch:
                # Won back after another owner wrote it: the copy this owner still has in
                # memory is stale, and must not be written under the new epoch.
                self._stale.add(session_id)
            self._epochs[session_id] = epoch
            self._valid_until[session_id] = started + self.ttl
        return Lease(
            session_id,
            epoch,
            taken_over=mine is not None and mine != epoch,
            changed_hands=row is not None and row[0] != self.owner,
            previous_won_at=(row[3] or 0.0) if row is not None and row[0] != self.owner else 0.0,
        )

    def mark_fresh(self, session_id: str) -> None:
        """The owner dropped its stale copy of a session it won back: its writes are let through again."""
        with self._lock:
            self._stale.discard(session_id)

    def still_holds(self, session_id: str) -> bool:
        """Whether the lease row still names this owner at the epoch it won (one read, nothing claimed).

        True also for a lease that expired or was released while nobody took
        it: everything this owner wrote under it stands.
        """
        with self._lock:
            mine = self._epochs.get(session_id)
        if mine is None:
            return False
        with self.engine.connect() as conn:
            row = conn.execute(
                select(LEASES.c.owner, LEASES.c.epoch).where(LEASES.c.session_id == session_id)
            ).one_or_none()
        return row is not None and row[0] == self.owner and int(row[1]) == mine

    def is_valid(self, session_id: str, margin: float = 0.0) -> bool:
        """Whether this owner surely still holds the lease, by its own clock (no query)."""
        with self._lock:
            return self._valid_until.get(session_id, 0.0) > time.monotonic() + margin

    def renew(self) -> list[str]:
        """Extend every lease this owner holds, in one statement; returns the ids it lost."""
        with self._lock:
            held = [sid for sid in self._valid_until]
        if not held:
            return []
        started = time.monotonic()
        with self._begin() as conn:
            now = time.time()
            # Locked first, in the writers' order: an UPDATE by owner locks rows in the table's
            # order, and a write of this owner holding some of them (the fence) deadlocked it.
            kept = set(self._lock_owned(conn, LEASES.c.expires_at > 0))
            for chunk in _chunks(sorted(kept)):
                conn.execute(
                    update(LEASES).where(LEASES.c.session_id.in_(chunk)).values(expires_at=now + self.ttl)
                )
        lost: list[str] = []
        with self._lock:
            for sid in held:
                if sid in kept:
                    if sid in self._valid_until:
                        self._valid_until[sid] = started + self.ttl
                elif self._valid_until.pop(sid, None) is not None:
                    # Released meanwhile (a hand-over) is let go, not lost: only a lease another
                    # owner took is reported, and its held calls go back unrun.
                    lost.append(sid)
        return lost

    def release(self, session_ids: Iterable[str]) -> None:
        """Give up these leases now (after their last write committed): the next owner need not wait."""
        ids = sorted(set(session_ids))
        if not ids:
            return
        with self._lock:
            for sid in ids:
                self._valid_until.pop(sid, None)
        with self._begin() as conn:
            for chunk in _chunks(ids):
                mine = self._lock_owned(conn, LEASES.c.session_id.in_(chunk))
                conn.execute(update(LEASES).where(LEASES.c.session_id.in_(mine)).values(expires_at=0.0))

    def held(self) -> list[str]:
        """The sessions whose lease this owner holds (by its last renewal)."""
        with self._lock:
            return sorted(self._valid_until)

    # ------------------------------------------------------------------ the fence

    def fence(self, conn: Connection, versions: dict[str, int], deletes: Sequence[str]) -> set[str]:
        """Inside a write transaction: the ids of the batch this owner may not write.

        ``versions`` maps each snapshot's session id to its version. A session
        this owner won is written only while the lease row still names this
        owner at that epoch. A session it never won (created here, or reached
        through its parent) is claimed on the spot when no other owner ever
        held it (a delete: when no other owner holds it now).
        """
        ids = sorted(set(versions) | set(deletes))
        if not ids:
            return set()
        started = time.monotonic()
        now = time.time()
        rows = self._lock_rows(conn, ids)
        refused: set[str] = set()
        claimed: dict[str, int] = {}
        with self._lock:
            epochs = {sid: self._epochs.get(sid) for sid in ids}
            stale = self._stale & set(ids)
        written: list[dict[str, Any]] = []
        for sid in ids:
            row = rows.get(sid)
            mine = epochs[sid]
            if mine is not None:
                ok = row is not None and row[0] == self.owner and row[1] == mine and sid not in stale
                epoch = mine
            elif row is None or row[0] == self.owner or (row[2] <= now and sid not in versions):
                epoch = claimed[sid] = self._claim(conn, sid, row, now)
                ok = True
            else:
                # Another owner had it, and this one never won it: whatever copy this owner
                # holds was read without the lease, and that owner may have written since.
                # Only a delete (nothing of the copy is written) claims an expired lease.
                ok, epoch = False, 0
            if not ok:
                refused.add(sid)
            elif self.audit and sid in versions:
                written.append(
                    {
                        "session_id": sid,
                        "version": versions[sid],
                        "owner": self.owner,
                        "epoch": epoch,
                        "written_at": now,
                    }
                )
        if written:
            conn.execute(insert(WRITE_LOG), written)
        if claimed or refused:
            with self._lock:
                for sid, epoch in claimed.items():
                    self._epochs[sid] = epoch
                    # From before the claim: by this clock the lease never looks longer than it is.
                    self._valid_until.setdefault(sid, started + self.ttl)
                self.fenced_total += len(refused)
        return refused


class _Txn:
    """``with`` a connection and its transaction, committed on success."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._txn: Any = None

    def __enter__(self) -> Connection:
        self._txn = self._conn.begin()
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._txn.commit()
            else:
                self._txn.rollback()
        finally:
            self._conn.close()
