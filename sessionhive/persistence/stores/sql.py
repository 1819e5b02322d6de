"""The SQL store: sessions in SQLite, PostgreSQL or any SQLAlchemy database, messages appended row by row."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from sessionhive.model.errors import InvalidConfig, StoreError
from sessionhive.model.runs import Run
from sessionhive.persistence.blobs import blob_refs, loaded_message, stored_payload
from sessionhive.persistence.schema import BLOBS, MESSAGES, RUNS, SESSIONS, ensure_schema
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.persistence.stores._checkpoint import WalCheckpointer
from sessionhive.persistence.stores.base import ACCEPTED_STORES, BaseStore, chunks, wrap_error

__all__ = ["SqlStore"]

# Arbitrary constant key of the PostgreSQL advisory lock held while creating the tables.
_PG_SCHEMA_LOCK = 0x5E55_1011_4E


def _store_name(url: URL) -> str:
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database
        if not database or database == ":memory:" or url.query.get("mode") == "memory":
            return "sqlite::memory:"
        return f"sqlite:{os.path.abspath(database)}"
    # Host and database only: a URL's password (or user) never reaches a log line or a health report.
    return f"{backend}:{url.host or 'localhost'}/{url.database or ''}"


def _session_row(snap: SessionSnapshot) -> dict[str, Any]:
    # The session's runs (in its header) go to their own table: left out here rather than encoded.
    header = replace(snap, runs=()).header_dict()
    return {
        "parent_id": snap.parent_id,
        "state": snap.state,
        "config": header["config"],
        "confirmation_policy": header["confirmation_policy"],
        "llm_config": header["llm_config"],  # LlmConfig.to_dict(): never the API key
        "thinking": snap.thinking,
        "budget": snap.budget,
        "usage": header["usage"],
        "context_usage": header["context_usage"],
        "version": snap.version,
        "history_epoch": snap.history_epoch,
        "message_count": len(snap.messages),
        "created_at": snap.created_at,
        "updated_at": snap.updated_at,
        "running_turn": header["running_turn"],
        "event_seq": snap.event_seq,
    }


def _header_key(snap: SessionSnapshot) -> tuple[Any, ...]:
    """The session-row fields a turn's steps leave alone (compared by identity first, then value)."""
    return (
        snap.parent_id,
        snap.state,
        snap.config,
        snap.confirmation_policy,
        snap.llm_config,
        snap.thinking,
        snap.budget,
        snap.history_epoch,
        snap.created_at,
    )


_encode = json.JSONEncoder(separators=(",", ":")).encode


def _step_row(snap: SessionSnapshot) -> tuple[Any, ...]:
    """The session-row columns a step of a turn changes (the rest is stored), then the guard's id and version.

    In the order of :attr:`_DriverSql.step`, JSON already encoded: the driver
    gets the row as it is, with none of SQLAlchemy's per-row processing.
    """
    context = snap.context_usage
    running = snap.running_turn
    return (
        _encode(snap.usage.to_dict()),
        _encode({"used_tokens": context.used_tokens, "max_tokens": context.max_tokens}),
        snap.version,
        len(snap.messages),
        snap.updated_at,
        None if running is None else _encode(running.to_dict()),
        snap.event_seq,
        snap.session_id,
        snap.version,
    )


def _run_row(run: Run) -> tuple[Any, ...]:
    """A row of the runs table in the order of :attr:`_DriverSql`'s ``run`` statement, the record encoded."""
    return (
        run.run_id,
        run.session_id,
        run.idempotency_key,
        run.status,
        _encode(run.to_dict()),
        run.created_at,
    )


class _DriverSql:
    """The statements a turn runs on every commit, as the driver's own SQL, run with ``exec_driver_sql``.

    Compiled SQLAlchemy statements processed every row's parameters in
    Python (the JSON columns' encoders among them): a quarter of the
    writer's thread under the durable load of ``bench/bench_runtime.py``
    (py-spy). These take rows that are tuples of driver values: JSON columns
    arrive encoded (``json`` text, which SQLAlchemy's JSON type reads back).

    On SQLite the rows of a batch go in multi-row statements (``INSERT ...
    VALUES (...), (...)``, ``UPDATE ... FROM (VALUES ...)``): ``executemany``
    runs one step per row, and each step hands the GIL away and waits to get
    it back from the busy event-loop thread (up to the 5 ms switch interval),
    which made a commit of a few hundred rows take tens of milliseconds.
    """

    __slots__ = ("_multirow", "_named", "_paramstyle", "_texts", "select_suffix", "upsert")

    def __init__(
        self, paramstyle: str, *, lock_rows: bool, cast_json: bool, multirow: bool, upsert: bool
    ) -> None:
        self._paramstyle = paramstyle
        self._named = paramstyle == "named"
        self._multirow = multirow
        #: Whether the ``run`` statement replaces a stored run of the same id (``ON CONFLICT``, SQLite
        #: and PostgreSQL); without it the caller deletes the rows it rewrites first.
        self.upsert = upsert
        self._texts: dict[tuple[str, int], str] = {}
        marks = [self._mark(i) for i in range(9)]
        json_marks = [f"CAST({mark} AS JSON)" if cast_json else mark for mark in marks]
        self._texts["message", 0] = (
            f"INSERT INTO {MESSAGES.name} (session_id, seq, role, payload) "
            f"VALUES ({marks[0]}, {marks[1]}, {marks[2]}, {json_marks[3]})"
        )
        self._texts["step", 0] = (
            f"UPDATE {SESSIONS.name} SET usage = {json_marks[0]}, context_usage = {json_marks[1]}, "
            f"version = {marks[2]}, message_count = {marks[3]}, updated_at = {marks[4]}, "
            f"running_turn = {json_marks[5]}, event_seq = {marks[6]} "
            f"WHERE id = {marks[7]} AND version < {marks[8]}"
        )
        self._texts["run", 0] = (
            f"INSERT INTO {RUNS.name} ({_RUN_COLUMNS}) VALUES ({marks[0]}, {marks[1]}, {marks[2]}, "
            f"{marks[3]}, {json_marks[4]}, {marks[5]})" + (_RUN_UPSERT if upsert else "")
        )
        # One lock order for every writer (no deadlock between Hives); SQLite locks the file instead.
        self.select_suffix = ") ORDER BY id" + (" FOR UPDATE" if lock_rows else "")

    def _mark(self, index: int) -> str:
        style = self._paramstyle
        if style == "qmark":
            return "?"
        if style == "numeric":
            return f":{index + 1}"
        if style == "named":
            return f":p{index}"
        return "%s"  # format, pyformat

    def select(self, count: int) -> str:
        """The stored rows among ``count`` ids: ``(id, version, history_epoch, message_count)``."""
        marks = ", ".join(self._mark(i) for i in range(count))
        return (
            f"SELECT id, version, history_epoch, message_count FROM {SESSIONS.name} WHERE id IN ({marks}"
            + self.select_suffix
        )

    def rows(self, rows: Sequence[tuple[Any, ...]]) -> Any:
        """``rows`` as the driver takes them: tuples, or dicts for a named parameter style."""
        if self._named:
            return [{f"p{i}": value for i, value in enumerate(row)} for row in rows]
        return rows

    def run(self, conn: Connection, kind: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert messages (``kind="message"``), update step rows (``"step"``) or upsert runs (``"run"``)."""
        if not self._multirow:
            conn.exec_driver_sql(self._texts[kind, 0], self.rows(rows))
            return
        per_statement = _MULTIROW_PARAMETERS // len(rows[0])
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            flat = tuple(value for row in chunk for value in row)
            conn.exec_driver_sql(self._multirow_text(kind, len(chunk), len(chunk[0])), flat)

    def _multirow_text(self, kind: str, count: int, width: int) -> str:
        text = self._texts.get((kind, count))
        if text is None:
            values = ", ".join(["(" + ", ".join(["?"] * width) + ")"] * count)
            if kind == "message":
                text = f"INSERT INTO {MESSAGES.name} (session_id, seq, role, payload) VALUES {values}"
            elif kind == "run":
                text = f"INSERT INTO {RUNS.name} ({_RUN_COLUMNS}) VALUES {values}" + (
                    _RUN_UPSERT if self.upsert else ""
                )
            else:
                table = SESSIONS.name
                text = (
                    f"UPDATE {table} SET usage = v.column1, context_usage = v.column2, version = v.column3, "
                    f"message_count = v.column4, updated_at = v.column5, running_turn = v.column6, "
                    f"event_seq = v.column7 FROM (VALUES {values}) AS v "
                    f"WHERE {table}.id = v.column8 AND {table}.version < v.column9"
                )
            if count <= _CACHED_TEXTS:
                self._texts[kind, count] = text
        return text


_RUN_COLUMNS = "run_id, session_id, idempotency_key, status, record, created_at"
# A run is rewritten whenever its record changes (a new status, its last event): the
# stored row of that id is replaced in place.
_RUN_UPSERT = (
    " ON CONFLICT (run_id) DO UPDATE SET idempotency_key = excluded.idempotency_key, "
    "status = excluded.status, record = excluded.record, created_at = excluded.created_at"
)

# One executemany UPDATE of every column for the existing sessions of a batch whose
# header changed (a step's few columns go through _DriverSql.step). The version
# guard repeats the check made under the row lock, so that even a database
# without SELECT ... FOR UPDATE never lets an older snapshot win.
_UPDATE_SESSION = update(SESSIONS).where(
    SESSIONS.c.id == bindparam("b_id"), SESSIONS.c.version < bindparam("b_version")
)
# Most parameters in one multi-row statement (SQLite allows 32,766 since 3.32).
_MULTIROW_PARAMETERS = 2000
# Statement texts kept per row count (the rest are built when needed).
_CACHED_TEXTS = 512
# Most sessions whose header fields and runs this store remembers; past it the memory is dropped
# (the next write of each session is a full one).
_HEADER_MEMORY = 100_000


# What this store last committed of a session: its version, its header key and its runs.
_Committed = tuple[int, tuple[Any, ...], tuple[Run, ...]]


class _WritePlan:
    """The statements' rows for one batch, sorted by kind, and the headers it commits."""

    __slots__ = (
        "blobs",
        "clear_messages",
        "clear_runs",
        "headers",
        "new_messages",
        "new_sessions",
        "pruned_runs",
        "stepped_sessions",
        "updated_sessions",
        "upserted_runs",
    )

    def __init__(self) -> None:
        self.new_sessions: list[dict[str, Any]] = []
        self.updated_sessions: list[dict[str, Any]] = []
        self.stepped_sessions: list[tuple[Any, ...]] = []
        self.new_messages: list[tuple[str, int, str, str]] = []
        self.clear_messages: list[str] = []
        #: Sessions whose stored runs are all rewritten (new, or last written by another store).
        self.clear_runs: list[str] = []
        self.upserted_runs: list[tuple[Any, ...]] = []
        #: Ids of runs the sessions no longer keep.
        self.pruned_runs: list[str] = []
        self.headers: dict[str, _Committed] = {}
        #: The large content parts of the new messages, by sha256.
        self.blobs: dict[str, bytes] = {}

    def add(self, snap: SessionSnapshot, held: tuple[int, int, int] | None, known: _Committed | None) -> None:
        """Plan ``snap`` over its stored row ``held``; ``known`` is what this store last committed of it."""
        sid = snap.session_id
        key = _header_key(snap)
        if held is None:
            row = _session_row(snap)
            row["id"] = sid
            self.new_sessions.append(row)
            self.clear_messages.append(sid)  # stray rows of a half-deleted session must not collide
            self._rewrite_runs(snap)
            start = 0
        else:
            version, epoch, count = held
            if version >= snap.version:
                return  # the store already holds this state or a newer one
            if epoch == snap.history_epoch and count <= len(snap.messages):
                start = count  # append-only: the stored messages are a prefix of these
            else:
                start = 0
                self.clear_messages.append(sid)  # cleared or compacted: rewrite the history
            if known is not None and known[0] == version:
                # The stored runs are the ones this store committed last: write only what changed.
                self._changed_runs(snap.runs, known[2])
            else:
                self._rewrite_runs(snap)
            if known is not None and known[0] == version and known[1] == key:
                # The stored row is the one this store committed last, and only a step's columns changed.
                self.stepped_sessions.append(_step_row(snap))
            else:
                row = _session_row(snap)
                row["b_id"] = sid
                row["b_version"] = snap.version
                self.updated_sessions.append(row)
        self.headers[sid] = (snap.version, key, snap.runs)
        # Each message is encoded once, here: a later step appends only the messages after it.
        self.new_messages.extend(
            (sid, seq, message.role, _encode(stored_payload(message, self.blobs)))
            for seq, message in enumerate(snap.messages[start:], start)
        )

    def _rewrite_runs(self, snap: SessionSnapshot) -> None:
        self.clear_runs.append(snap.session_id)
        self.upserted_runs.extend(_run_row(run) for run in snap.runs)

    def _changed_runs(self, runs: tuple[Run, ...], committed: tuple[Run, ...]) -> None:
        """Plan the runs of ``runs`` that differ from ``committed`` and prune those it no longer has.

        A step of a turn hands over the same tuple when no run changed (nothing
        to do), or the same runs in the same order with one replaced (a
        pairwise pass); a run added or pruned shifts them (a lookup by id).
        """
        if runs is committed:
            return
        if len(runs) == len(committed):
            changed: list[Run] = []
            for run, old in zip(runs, committed, strict=True):
                if run is not old:  # one identity test per run kept unchanged
                    if run.run_id != old.run_id:
                        break
                    if run != old:
                        changed.append(run)
            else:
                self.upserted_runs.extend(_run_row(run) for run in changed)
                return
        before = {run.run_id: run for run in committed}
        for run in runs:
            previous = before.pop(run.run_id, None)
            if previous is None or (run is not previous and run != previous):
                self.upserted_runs.append(_run_row(run))
        self.pruned_runs.extend(before)


def _use_wal(cursor: Any, busy_timeout: float) -> None:
    """Put an SQLite database in WAL mode, waiting up to ``busy_timeout`` s for the lock it takes.

    Switching the journal mode takes an exclusive lock for which SQLite does not
    call the busy handler: two stores opening one fresh file at once (two Hives
    starting) got "database is locked" at once. A file already in WAL mode
    needs no switch (every open after the first).
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)  # another connection holds the lock for its own switch: back off
            delay = min(delay * 2, 0.05)


class SqlStore(BaseStore):
    """Sessions in a SQL database through SQLAlchemy 2.x: SQLite embedded, PostgreSQL for production.

    ``url`` is any SQLAlchemy URL. ``postgresql://`` is taken to mean psycopg
    3 (``postgresql+psycopg://``). Opening the store creates the tables that
    are missing (see :mod:`sessionhive.persistence.schema`) and refuses, with
    :class:`~sessionhive.StoreError`, a database written by a newer
    sessionhive.

    SQLite runs in WAL mode with ``synchronous=NORMAL`` (a commit survives a
    crash of the process; a power loss may undo the last commits) and
    waits up to ``busy_timeout`` seconds for a lock held by another
    connection. Every write transaction starts with ``BEGIN IMMEDIATE``, so
    that the version check and the write are one atomic step even when two
    processes share the file; reads see one consistent snapshot of the file.

    PostgreSQL locks the batch's session rows (``SELECT ... FOR UPDATE``, in
    id order) before comparing versions, so two Hives sharing a database
    never let an older snapshot overwrite a newer one; two of them inserting
    the same new session at once make one of them fail with a transient
    error, and its retry then sees the other's row.

    Writes are append-only for messages: a snapshot in the same
    ``history_epoch`` as the stored one inserts only the messages beyond the
    stored ``message_count``; a new epoch (clear, compact) rewrites them.
    Every write is bulk: one ``SELECT ... WHERE id IN (...)`` for the batch,
    one ``executemany`` insert of all new messages, one of new sessions, one
    update of existing ones, in one transaction.

    A session's runs are rows of ``sessionhive_runs``. Over a session row this
    store committed itself, a write upserts only the runs that differ from
    those it wrote then (compared by identity, then by value) and deletes the
    ones the snapshot no longer keeps: a step that changed no run sends no
    statement for runs. Over a row another writer committed (or one it no
    longer remembers) it rewrites them all. They load oldest first
    (``created_at``).

    ``echo=True`` logs SQL (parameters hidden). ``engine_options`` are passed
    to :func:`sqlalchemy.create_engine` (pool sizes and the like).
    """

    _wrapped_errors = (sa_exc.SQLAlchemyError, TypeError, ValueError)

    def __init__(
        self,
        url: str | URL,
        *,
        echo: bool = False,
        busy_timeout: float = 5.0,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError as exc:
            raise InvalidConfig(f"not a database URL: {exc}") from None
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self._backend = parsed.get_backend_name()
        super().__init__(_store_name(parsed))
        #: Set by a cluster shard (see :mod:`sessionhive.persistence.leases`): called inside
        #: every write transaction with the batch's ``{session id: version}`` and deletes, it
        #: returns the ids this writer no longer owns; they are left out of the write.
        self.write_fence: Callable[[Connection, dict[str, int], Sequence[str]], set[str]] | None = None
        #: The ids the fence left out of the last successful ``write_batch``.
        self.last_fenced: frozenset[str] = frozenset()
        # Session id -> (version, header key, runs) of the last row this store committed: a
        # later snapshot with the same header, over that very version, is a step, and its
        # runs are written only where they differ from those (the tuple is the snapshot's own).
        self._committed_headers: dict[str, _Committed] = {}
        options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self._backend == "sqlite":
            if self._name == "sqlite::memory:":
                # One connection for the whole store: each new connection to
                # :memory: would be a new, empty database.
                options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            # A server restart or an idle-timeout leaves dead connections in
            # the pool; test them before use rather than failing a batch.
            options["pool_pre_ping"] = True
        options.update(engine_options or {})
        try:
            self._engine = create_engine(parsed, **options)
        except (sa_exc.NoSuchModuleError, ImportError) as exc:
            hint = " (pip install 'sessionhive[postgres]')" if self._backend == "postgresql" else ""
            raise InvalidConfig(
                f"no database driver for {parsed.drivername!r}{hint}: {exc}; "
                f"stores accepted: {ACCEPTED_STORES}"
            ) from None
        except sa_exc.ArgumentError as exc:
            raise InvalidConfig(f"invalid database URL for store {self._name}: {exc}") from None
        if self._backend == "sqlite":
            self._configure_sqlite(busy_timeout)
        dialect = self._engine.dialect
        self._sql = _DriverSql(
            dialect.paramstyle,
            lock_rows=dialect.name != "sqlite",  # SQLite locks the whole file (BEGIN IMMEDIATE)
            cast_json=dialect.name == "postgresql",
            # UPDATE ... FROM came with SQLite 3.33.
            multirow=dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 33),
            # INSERT ... ON CONFLICT: PostgreSQL 9.5, SQLite 3.24.
            upsert=dialect.name == "postgresql"
            or (dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24)),
        )
        try:
            with self._transaction(write=True) as conn:
                if self._backend == "postgresql":
                    # Two Hives starting at once on a fresh database would both
                    # CREATE TABLE; the second fails. Let them take turns.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
                ensure_schema(conn, self._name)
        except StoreError:
            self._engine.dispose()
            raise
        except sa_exc.SQLAlchemyError as exc:
            self._engine.dispose()
            raise wrap_error(exc, self._name, "opening") from exc
        paths = self.data_paths()
        self._checkpointer = WalCheckpointer(paths[0]) if paths else None

    def _configure_sqlite(self, busy_timeout: float) -> None:
        timeout_ms = max(0, int(busy_timeout * 1000))
        checkpoint_apart = bool(self.data_paths())  # a file, not :memory:

        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite opens a transaction only before DML: the two SELECTs of
            # a load could see different commits, and a write would take the
            # lock only at its first INSERT, after its version check. Take
            # over BEGIN (see _on_begin) as SQLAlchemy's SQLite docs advise.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
                _use_wal(cursor, busy_timeout)
                cursor.execute("PRAGMA synchronous = NORMAL")
                if checkpoint_apart:
                    cursor.execute("PRAGMA wal_autocheckpoint = 0")  # the WalCheckpointer's thread does it
            finally:
                cursor.close()

        @event.listens_for(self._engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("sessionhive_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            if write:
                conn.execution_options(sessionhive_write=True)
            elif self._backend == "postgresql":
                # A load reads the session row, then its messages: one snapshot of the database.
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def data_paths(self) -> tuple[str, ...]:
        """An SQLite file with its journal, WAL and shared-memory files; nothing for a server."""
        if not self._name.startswith("sqlite:") or self._name == "sqlite::memory:":
            return ()
        database = self._name[len("sqlite:") :]
        return (database, f"{database}-wal", f"{database}-shm", f"{database}-journal")

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for inspection, benchmarks and event listeners)."""
        return self._engine

    def _do_write(self, newest: dict[str, SessionSnapshot], deletes: list[str]) -> dict[str, int]:
        """Apply ``deletes`` then ``newest`` in one transaction; on error nothing of the batch is written."""
        self.last_fenced = frozenset()
        if not newest and not deletes:
            return {}
        # TypeError/ValueError (a value that is not JSON; some drivers raise it
        # unwrapped) and SQLAlchemy errors become StoreError in BaseStore.
        with self._transaction(write=True) as conn:
            if self.write_fence is not None:
                versions = {sid: snap.version for sid, snap in newest.items()}
                refused = self.write_fence(conn, versions, deletes)
                if refused:
                    newest = {sid: snap for sid, snap in newest.items() if sid not in refused}
                    deletes = [sid for sid in deletes if sid not in refused]
                    self.last_fenced = frozenset(refused)
            rows, headers = self._write(conn, newest, deletes)
        # Only now, after the commit: a rolled-back batch must not be taken as stored.
        remembered = self._committed_headers
        for sid in deletes:
            remembered.pop(sid, None)
        if len(remembered) + len(headers) > _HEADER_MEMORY:
            remembered.clear()
        remembered.update(headers)
        return rows

    def _write(
        self, conn: Connection, newest: dict[str, SessionSnapshot], deletes: list[str]
    ) -> tuple[dict[str, int], dict[str, _Committed]]:
        for chunk in chunks(deletes):
            conn.execute(delete(MESSAGES).where(MESSAGES.c.session_id.in_(chunk)))
            conn.execute(delete(RUNS).where(RUNS.c.session_id.in_(chunk)))
            conn.execute(delete(SESSIONS).where(SESSIONS.c.id.in_(chunk)))
        plan = _WritePlan()
        stored = self._locked_rows(conn, sorted(newest))
        for sid in sorted(newest):
            plan.add(newest[sid], stored.get(sid), self._committed_headers.get(sid))
        for chunk in chunks(plan.clear_messages):
            conn.execute(delete(MESSAGES).where(MESSAGES.c.session_id.in_(chunk)))
        if plan.blobs:
            self._write_blobs(conn, plan.blobs)
        if plan.new_messages:
            self._sql.run(conn, "message", plan.new_messages)
        if plan.new_sessions:
            conn.execute(insert(SESSIONS), plan.new_sessions)
        if plan.updated_sessions:
            conn.execute(_UPDATE_SESSION, plan.updated_sessions)
        if plan.stepped_sessions:
            self._sql.run(conn, "step", plan.stepped_sessions)
        self._write_runs(conn, plan)
        written = len(plan.new_sessions) + len(plan.updated_sessions) + len(plan.stepped_sessions)
        rows = {"sessions": written, "messages": len(plan.new_messages)}
        if plan.upserted_runs:
            rows["runs"] = len(plan.upserted_runs)
        return rows, plan.headers

    def _write_blobs(self, conn: Connection, blobs: dict[str, bytes]) -> None:
        """Insert the blobs the database lacks: each is stored once, whatever refers to it."""
        missing = dict(blobs)
        for chunk in chunks(sorted(blobs)):
            for sha in conn.execute(select(BLOBS.c.sha256).where(BLOBS.c.sha256.in_(chunk))).scalars():
                missing.pop(sha, None)
        if not missing:
            return
        rows = [{"sha256": sha, "data": data, "size": len(data)} for sha, data in missing.items()]
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            # Another process may store the same bytes meanwhile: theirs are these.
            module = sqlite_dialect if dialect == "sqlite" else postgresql_dialect
            conn.execute(module.insert(BLOBS).on_conflict_do_nothing(), rows)
        else:
            conn.execute(insert(BLOBS), rows)

    def _write_runs(self, conn: Connection, plan: _WritePlan) -> None:
        """Delete the runs ``plan`` rewrites or prunes, then upsert the changed ones (none: no statement)."""
        for chunk in chunks(plan.clear_runs):
            conn.execute(delete(RUNS).where(RUNS.c.session_id.in_(chunk)))
        gone = plan.pruned_runs
        if not self._sql.upsert:
            gone = gone + [row[0] for row in plan.upserted_runs]
        for chunk in chunks(gone):
            conn.execute(delete(RUNS).where(RUNS.c.run_id.in_(chunk)))
        if plan.upserted_runs:
            self._sql.run(conn, "run", plan.upserted_runs)

    def _locked_rows(self, conn: Connection, ids: list[str]) -> dict[str, tuple[int, int, int]]:
        """``{id: (version, history_epoch, message_count)}`` of the stored rows among ``ids``, locked."""
        stored: dict[str, tuple[int, int, int]] = {}
        for chunk in chunks(ids):
            query = self._sql.select(len(chunk))
            (params,) = self._sql.rows([tuple(chunk)])
            for sid, version, epoch, count in conn.exec_driver_sql(query, params):
                stored[sid] = (version, epoch, count)
        return stored

    def _do_load(self, session_id: str) -> SessionSnapshot | None:
        """The stored snapshot of ``session_id`` with its messages in order, or ``None``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id)).mappings().one_or_none()
            if row is None:
                return None
            payloads = (
                conn.execute(
                    select(MESSAGES.c.payload)
                    .where(MESSAGES.c.session_id == session_id, MESSAGES.c.seq < row["message_count"])
                    .order_by(MESSAGES.c.seq)
                )
                .scalars()
                .all()
            )
            records = (
                conn.execute(
                    select(RUNS.c.record)
                    .where(RUNS.c.session_id == session_id)
                    .order_by(RUNS.c.created_at, RUNS.c.run_id)
                )
                .scalars()
                .all()
            )
            blobs: dict[str, bytes] = {}
            for chunk in chunks(sorted(blob_refs(payloads))):
                query = select(BLOBS.c.sha256, BLOBS.c.data).where(BLOBS.c.sha256.in_(chunk))
                blobs.update((sha, bytes(data)) for sha, data in conn.execute(query))
        if len(payloads) != row["message_count"]:
            raise StoreError(
                f"store {self._name} holds {len(payloads)} of the {row['message_count']} messages "
                f"of session {session_id!r}; the database was modified outside sessionhive"
            )
        header = dict(row)
        header["session_id"] = header.pop("id")
        header["runs"] = records
        try:
            messages = tuple(loaded_message(p, blobs, self._name) for p in payloads)
            return SessionSnapshot.from_dict(header, messages)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"store {self._name} holds an unreadable session {session_id!r}: {exc}") from exc

    def _do_list_ids(self) -> list[str]:
        with self._transaction(write=False) as conn:
            return list(conn.execute(select(SESSIONS.c.id).order_by(SESSIONS.c.id)).scalars())

    def _do_list_index(self) -> list[tuple[str, str | None]]:
        """Every stored session id with its parent's id, in one query."""
        with self._transaction(write=False) as conn:
            query = select(SESSIONS.c.id, SESSIONS.c.parent_id).order_by(SESSIONS.c.id)
            return [(row[0], row[1]) for row in conn.execute(query)]

    def health_check(self) -> None:
        """Run ``SELECT 1``; raise :class:`StoreError` when the database cannot answer."""
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar_one()
        except sa_exc.SQLAlchemyError as exc:
            raise wrap_error(exc, self._name, "health check") from exc

    def close(self) -> None:
        """Stop the checkpoint thread and close every pooled connection (the last one checkpoints)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self._engine.dispose()
