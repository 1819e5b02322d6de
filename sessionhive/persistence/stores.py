"""Session stores: :class:`SqlStore` (SQLite, PostgreSQL...), :class:`FileStore`, :class:`MemoryStore`.

Every store implements :class:`~sessionhive.persistence.SessionStore`, whose
contract all three keep:

- ``write_batch(snapshots, deletes)`` applies the deletes first, then the
  snapshots; a snapshot whose version is not newer than the stored one is
  skipped, so an older state never overwrites a newer one.
- A failure raises :class:`~sessionhive.StoreError`; one that a retry may fix
  (connection lost, database locked, serialization failure, disk I/O) raises
  its subclass :class:`TransientStoreError`, and :func:`is_transient` tells the
  two apart for the caller's retry policy. Error messages never carry SQL
  parameters (session content) nor a password.
- After a successful ``write_batch``, ``last_write_rows`` maps a table name
  (``"sessions"``, ``"messages"``) to the rows that write inserted or updated,
  for the ``persistence_rows_written_total`` metric.

Only the :class:`~sessionhive.persistence.PersistenceActor` calls a store, so
a store needs no locking of its own; it may be created in one thread and used
in another.

Pick one with :func:`open_store`::

    open_store("sqlite:///sessionhive.db")                          # embedded, the default
    open_store("postgresql://app@db.internal/app")                  # psycopg 3
    open_store("file:/var/lib/app/sessions")                        # one JSON file per session
    open_store("memory")                                            # tests, ephemeral hives
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from sessionhive.model.errors import InvalidConfig, StoreError
from sessionhive.model.messages import Message
from sessionhive.persistence._protocol import SessionStore
from sessionhive.persistence.schema import MESSAGES, SESSIONS, ensure_schema
from sessionhive.persistence.snapshot import SCHEMA_VERSION, SessionSnapshot

__all__ = [
    "FileStore",
    "MemoryStore",
    "SessionStore",
    "SqlStore",
    "TransientStoreError",
    "is_transient",
    "open_store",
]

T = TypeVar("T")

# Bound on the ids in one ``IN (...)`` list: far below every driver's
# parameter limit (SQLite's is 32766), large enough to be one statement for
# the usual batch.
_IN_CHUNK = 500
# Arbitrary constant key of the PostgreSQL advisory lock held while creating the tables.
_PG_SCHEMA_LOCK = 0x5E55_1011_4E


class TransientStoreError(StoreError):
    """A store failure that retrying the same operation may fix.

    Raised for lost connections, a locked or busy SQLite database,
    PostgreSQL serialization failures and deadlocks, and I/O errors. The
    original driver error is the ``__cause__``.
    """


# --------------------------------------------------------------------------- errors

# SQLite result codes (extended codes share the prefix) that describe a
# moment, not the data: another writer holds the lock, or the disk hiccuped.
_SQLITE_TRANSIENT = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_PROTOCOL",
)
# PostgreSQL SQLSTATE classes: 08 connection exception, 40 transaction
# rollback (serialization failure, deadlock), 53 insufficient resources,
# 57 operator intervention (shutdown, statement timeout).
_PG_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57"})
# 55P03 lock_not_available; 23505 unique_violation, which the SQL store can
# only meet when another writer inserted the same new session concurrently:
# the retry reads that row and applies the version check.
_PG_TRANSIENT_STATES = frozenset({"55P03", "23505"})
_OS_PERMANENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _sqlite_transient(error: sqlite3.Error) -> bool:
    name = getattr(error, "sqlite_errorname", None)
    if isinstance(name, str) and name:
        return name.startswith(_SQLITE_TRANSIENT)
    # An error raised without a result code (e.g. constructed by hand): go by its text.
    text = str(error).lower()
    return any(word in text for word in ("locked", "busy", "disk i/o", "unable to open"))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the failed store operation may succeed.

    True for :class:`TransientStoreError`, for SQLAlchemy errors that lost
    their connection, for SQLite busy/locked/I/O errors, for PostgreSQL
    connection, serialization, deadlock and resource errors, and for OS
    errors other than a missing path or a permission problem. False for
    everything else (a broken schema, bad data, a bug): retrying would only
    fail again. A driver's ``OperationalError`` that carries no recognisable
    code counts as transient.
    """
    if isinstance(exc, TransientStoreError):
        return True
    if isinstance(exc, StoreError):
        return False
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if isinstance(orig, sqlite3.Error):
            return _sqlite_transient(orig)
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_STATES
        return isinstance(exc, sa_exc.OperationalError)
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sqlite3.Error):
        return _sqlite_transient(exc)
    if isinstance(exc, OSError):  # ConnectionError and TimeoutError included
        return not isinstance(exc, _OS_PERMANENT)
    return False


def _describe(exc: BaseException) -> str:
    # A DBAPIError's own text includes the SQL statement; its ``orig`` says
    # what went wrong without it.
    cause: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        cause = exc.orig
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else 'no details'}"


def _wrap(exc: BaseException, store_name: str, action: str) -> StoreError:
    cls = TransientStoreError if is_transient(exc) else StoreError
    return cls(f"{action} on store {store_name} failed: {_describe(exc)}")


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _newest_per_session(snapshots: Iterable[SessionSnapshot]) -> dict[str, SessionSnapshot]:
    newest: dict[str, SessionSnapshot] = {}
    for snap in snapshots:
        held = newest.get(snap.session_id)
        if held is None or snap.version > held.version:
            newest[snap.session_id] = snap
    return newest


# --------------------------------------------------------------------------- SqlStore


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
    header = snap.header_dict()
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
    }


# One executemany UPDATE for every existing session of a batch. The version
# guard repeats the check made under the row lock, so that even a database
# without SELECT ... FOR UPDATE never lets an older snapshot win.
_UPDATE_SESSION = update(SESSIONS).where(
    SESSIONS.c.id == bindparam("b_id"), SESSIONS.c.version < bindparam("b_version")
)


class SqlStore:
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

    ``echo=True`` logs SQL (parameters hidden). ``engine_options`` are passed
    to :func:`sqlalchemy.create_engine` (pool sizes and the like).
    """

    is_transient = staticmethod(is_transient)

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
        self._name = _store_name(parsed)
        self.last_write_rows: Mapping[str, int] = {}
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
                f"no database driver for {parsed.drivername!r}{hint}: {exc}; stores accepted: {_ACCEPTED}"
            ) from None
        except sa_exc.ArgumentError as exc:
            raise InvalidConfig(f"invalid database URL for store {self._name}: {exc}") from None
        if self._backend == "sqlite":
            self._configure_sqlite(busy_timeout)
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
            raise _wrap(exc, self._name, "opening") from exc

    def _configure_sqlite(self, busy_timeout: float) -> None:
        timeout_ms = max(0, int(busy_timeout * 1000))

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
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
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

    @property
    def name(self) -> str:
        """``sqlite:<absolute path>`` or ``postgresql:<host>/<database>``: never a password."""
        return self._name

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for inspection, benchmarks and event listeners)."""
        return self._engine

    def __repr__(self) -> str:
        return f"SqlStore({self._name!r})"

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        """Apply ``deletes`` then ``snapshots`` in one transaction.

        Raises :class:`TransientStoreError` or :class:`StoreError`; on error
        nothing of the batch is written.
        """
        newest = _newest_per_session(snapshots)
        if not newest and not deletes:
            self.last_write_rows = {}
            return
        try:
            with self._transaction(write=True) as conn:
                rows = self._write(conn, newest, sorted(set(deletes)))
        except (sa_exc.SQLAlchemyError, TypeError, ValueError) as exc:
            # TypeError/ValueError: a value that is not JSON (some drivers raise it unwrapped).
            raise _wrap(exc, self._name, f"writing {len(newest)} sessions") from exc
        self.last_write_rows = rows

    def _write(
        self, conn: Connection, newest: dict[str, SessionSnapshot], deletes: list[str]
    ) -> dict[str, int]:
        for chunk in _chunks(deletes):
            conn.execute(delete(MESSAGES).where(MESSAGES.c.session_id.in_(chunk)))
            conn.execute(delete(SESSIONS).where(SESSIONS.c.id.in_(chunk)))
        ids = sorted(newest)
        stored: dict[str, tuple[int, int, int]] = {}
        for chunk in _chunks(ids):
            query = (
                select(SESSIONS.c.id, SESSIONS.c.version, SESSIONS.c.history_epoch, SESSIONS.c.message_count)
                .where(SESSIONS.c.id.in_(chunk))
                .order_by(SESSIONS.c.id)  # one lock order for every writer: no deadlock between Hives
                .with_for_update()
            )
            for sid, version, epoch, count in conn.execute(query):
                stored[sid] = (version, epoch, count)

        new_sessions: list[dict[str, Any]] = []
        updated_sessions: list[dict[str, Any]] = []
        new_messages: list[dict[str, Any]] = []
        clear_messages: list[str] = []
        for sid in ids:
            snap = newest[sid]
            row = _session_row(snap)
            held = stored.get(sid)
            if held is None:
                start = 0
                row["id"] = sid
                new_sessions.append(row)
                clear_messages.append(sid)  # stray rows of a half-deleted session must not collide
            else:
                version, epoch, count = held
                if version >= snap.version:
                    continue  # the store already holds this state or a newer one
                if epoch == snap.history_epoch and count <= len(snap.messages):
                    start = count  # append-only: the stored messages are a prefix of these
                else:
                    start = 0
                    clear_messages.append(sid)  # cleared or compacted: rewrite the history
                row["b_id"] = sid
                row["b_version"] = snap.version
                updated_sessions.append(row)
            new_messages.extend(
                {"session_id": sid, "seq": seq, "role": message.role, "payload": message.to_dict()}
                for seq, message in enumerate(snap.messages[start:], start)
            )

        for chunk in _chunks(clear_messages):
            conn.execute(delete(MESSAGES).where(MESSAGES.c.session_id.in_(chunk)))
        if new_messages:
            conn.execute(insert(MESSAGES), new_messages)
        if new_sessions:
            conn.execute(insert(SESSIONS), new_sessions)
        if updated_sessions:
            conn.execute(_UPDATE_SESSION, updated_sessions)
        return {"sessions": len(new_sessions) + len(updated_sessions), "messages": len(new_messages)}

    def load(self, session_id: str) -> SessionSnapshot | None:
        """The stored snapshot of ``session_id`` with its messages in order, or ``None``."""
        try:
            with self._transaction(write=False) as conn:
                row = (
                    conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id)).mappings().one_or_none()
                )
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
        except sa_exc.SQLAlchemyError as exc:
            raise _wrap(exc, self._name, f"loading session {session_id!r}") from exc
        if len(payloads) != row["message_count"]:
            raise StoreError(
                f"store {self._name} holds {len(payloads)} of the {row['message_count']} messages "
                f"of session {session_id!r}; the database was modified outside sessionhive"
            )
        header = dict(row)
        header["session_id"] = header.pop("id")
        try:
            return SessionSnapshot.from_dict(header, tuple(Message.from_dict(p) for p in payloads))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"store {self._name} holds an unreadable session {session_id!r}: {exc}") from exc

    def list_ids(self) -> list[str]:
        """Every stored session id, sorted."""
        try:
            with self._transaction(write=False) as conn:
                return list(conn.execute(select(SESSIONS.c.id).order_by(SESSIONS.c.id)).scalars())
        except sa_exc.SQLAlchemyError as exc:
            raise _wrap(exc, self._name, "listing sessions") from exc

    def list_index(self) -> list[tuple[str, str | None]]:
        """Every stored session id with its parent's id, sorted by id (one query)."""
        try:
            with self._transaction(write=False) as conn:
                query = select(SESSIONS.c.id, SESSIONS.c.parent_id).order_by(SESSIONS.c.id)
                return [(row[0], row[1]) for row in conn.execute(query)]
        except sa_exc.SQLAlchemyError as exc:
            raise _wrap(exc, self._name, "listing sessions") from exc

    def health_check(self) -> None:
        """Run ``SELECT 1``; raise :class:`StoreError` when the database cannot answer."""
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar_one()
        except sa_exc.SQLAlchemyError as exc:
            raise _wrap(exc, self._name, "health check") from exc

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()


# --------------------------------------------------------------------------- FileStore

_META_FILE = ".sessionhive-meta.json"
# Longest encoded name kept readable; longer ids are hashed (file names are
# limited to 255 bytes on common file systems).
_MAX_ENCODED = 200


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its os.replace is already durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class FileStore:
    """One JSON file per session in ``directory``; for small deployments and inspection by eye.

    A session's file is named after its id, base32-encoded in lower case
    (case-insensitive file systems cannot tell base64's ``a`` from ``A``);
    an id whose encoding would be too long for a file name gets the SHA-256
    of the id instead, and its file carries the id. Each file is replaced
    atomically (temporary file in the same directory, ``fsync``,
    ``os.replace``, ``fsync`` of the directory), so a crash leaves the old or
    the new version of a session, never a torn one. A batch is not atomic
    across sessions: it is applied one file after another, deletes first.

    Every write rewrites the whole history of the session: use
    :class:`SqlStore` for long histories.
    """

    is_transient = staticmethod(is_transient)

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)
        self._name = f"file:{os.path.abspath(self._dir)}"
        self.last_write_rows: Mapping[str, int] = {}
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._check_meta()
        except StoreError:
            raise
        except (OSError, ValueError) as exc:
            raise _wrap(exc, self._name, "opening") from exc

    def _check_meta(self) -> None:
        meta = self._dir / _META_FILE
        stored: int | None = None
        if meta.exists():
            data = json.loads(meta.read_text("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
                raise StoreError(f"store {self._name}: {_META_FILE} was not written by sessionhive")
            stored = int(data["schema_version"])
            if stored > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self._name} was written by a newer sessionhive "
                    f"(schema {stored} > {SCHEMA_VERSION}); upgrade sessionhive to open it"
                )
        if stored != SCHEMA_VERSION:
            _atomic_write(meta, json.dumps({"schema_version": SCHEMA_VERSION}).encode())
            _fsync_dir(self._dir)

    @property
    def name(self) -> str:
        """``file:<absolute directory>``."""
        return self._name

    def __repr__(self) -> str:
        return f"FileStore({self._name!r})"

    def _path(self, session_id: str) -> Path:
        encoded = base64.b32encode(session_id.encode("utf-8")).decode("ascii").rstrip("=").lower()
        if len(encoded) > _MAX_ENCODED:
            encoded = "~" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()
        return self._dir / f"{encoded}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"{path.name} does not hold a JSON object")
        schema = int(data.get("schema_version", SCHEMA_VERSION))
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer sessionhive (schema {schema} > {SCHEMA_VERSION}); "
                "upgrade sessionhive to read it"
            )
        return data

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        """Delete then write files; each file atomically, the batch one file after another."""
        newest = _newest_per_session(snapshots)
        written = 0
        try:
            for session_id in sorted(set(deletes)):
                try:
                    os.unlink(self._path(session_id))
                except FileNotFoundError:
                    pass
            for snap in newest.values():
                path = self._path(snap.session_id)
                held = self._read(path)
                if held is not None and int(held.get("version", 0)) >= snap.version:
                    continue
                data = snap.to_dict()
                data["schema_version"] = SCHEMA_VERSION
                _atomic_write(path, json.dumps(data, separators=(",", ":")).encode("utf-8"))
                written += 1
            if deletes or written:
                # One directory fsync makes every rename and unlink of the batch durable.
                _fsync_dir(self._dir)
        except StoreError:
            raise
        except (OSError, ValueError, TypeError) as exc:
            raise _wrap(exc, self._name, f"writing {len(newest)} sessions") from exc
        self.last_write_rows = {"sessions": written}

    def load(self, session_id: str) -> SessionSnapshot | None:
        """The snapshot in ``session_id``'s file, or ``None`` if there is none."""
        try:
            data = self._read(self._path(session_id))
            if data is None:
                return None
            return SessionSnapshot.from_dict(data)
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _wrap(exc, self._name, f"loading session {session_id!r}") from exc

    def list_ids(self) -> list[str]:
        """Every stored session id, sorted (temporary and meta files skipped)."""
        ids: list[str] = []
        try:
            for entry in os.scandir(self._dir):
                name = entry.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                stem = name[: -len(".json")]
                if stem.startswith("~"):
                    data = self._read(Path(entry.path))
                    if data is not None:
                        ids.append(str(data["session_id"]))
                    continue
                padded = stem.upper() + "=" * (-len(stem) % 8)
                ids.append(base64.b32decode(padded).decode("utf-8"))
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _wrap(exc, self._name, "listing sessions") from exc
        return sorted(ids)

    def list_index(self) -> list[tuple[str, str | None]]:
        """Every stored session id with its parent's id (reads each file), sorted by id."""
        index: list[tuple[str, str | None]] = []
        for session_id in self.list_ids():
            snapshot = self.load(session_id)
            if snapshot is not None:
                index.append((session_id, snapshot.parent_id))
        return index

    def health_check(self) -> None:
        """Raise :class:`StoreError` unless the directory exists and is writable."""
        if not self._dir.is_dir():
            raise StoreError(f"store {self._name}: the directory does not exist")
        if not os.access(self._dir, os.W_OK):
            raise StoreError(f"store {self._name}: the directory is not writable")

    def close(self) -> None:
        """Nothing to release: every write is complete when ``write_batch`` returns."""


# --------------------------------------------------------------------------- MemoryStore


class MemoryStore:
    """Sessions in a dict, gone with the process: tests, demos, ``store="memory"``.

    It keeps each snapshot as JSON text, exactly as the durable stores do, so
    that whatever would not survive a real store (a value that is not JSON)
    fails here too, and a loaded snapshot shares nothing with the saved one.
    """

    is_transient = staticmethod(is_transient)

    def __init__(self) -> None:
        self._data: dict[str, tuple[int, str]] = {}
        self.last_write_rows: Mapping[str, int] = {}

    @property
    def name(self) -> str:
        return "memory"

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._data)} sessions)"

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        """Apply ``deletes`` then ``snapshots``, all or nothing."""
        try:
            encoded = [
                (snap.session_id, snap.version, json.dumps(snap.to_dict(), separators=(",", ":")))
                for snap in _newest_per_session(snapshots).values()
            ]
        except (TypeError, ValueError) as exc:
            raise _wrap(exc, self.name, f"writing {len(snapshots)} sessions") from exc
        for session_id in deletes:
            self._data.pop(session_id, None)
        written = 0
        for session_id, version, document in encoded:
            held = self._data.get(session_id)
            if held is None or held[0] < version:
                self._data[session_id] = (version, document)
                written += 1
        self.last_write_rows = {"sessions": written}

    def load(self, session_id: str) -> SessionSnapshot | None:
        held = self._data.get(session_id)
        return None if held is None else SessionSnapshot.from_dict(json.loads(held[1]))

    def list_ids(self) -> list[str]:
        return sorted(self._data)

    def list_index(self) -> list[tuple[str, str | None]]:
        """Every session id with its parent's id, sorted by id."""
        return [(sid, json.loads(self._data[sid][1]).get("parent_id")) for sid in sorted(self._data)]

    def health_check(self) -> None:
        """Always healthy."""

    def close(self) -> None:
        """Keeps the data: a closed MemoryStore can still be read (handy in tests)."""


# --------------------------------------------------------------------------- open_store

_ACCEPTED = (
    "'memory', 'file:DIR', 'sqlite:///path/to/file.db', a path ending in .db/.sqlite/.sqlite3, "
    "'postgresql://user@host/db' (psycopg 3), any other SQLAlchemy URL, or a SessionStore object"
)


def open_store(spec: str | os.PathLike[str] | SessionStore) -> SessionStore:
    """Open the store that ``spec`` names.

    - ``"memory"``: a :class:`MemoryStore`;
    - ``"file:DIR"`` (or ``file:///abs/dir``): a :class:`FileStore` in ``DIR``;
    - ``"sqlite:///path.db"``, ``"postgresql+psycopg://..."`` or any other
      SQLAlchemy URL: a :class:`SqlStore`; ``postgresql://`` and
      ``postgres://`` mean psycopg 3;
    - a bare path ending in ``.db``, ``.sqlite`` or ``.sqlite3``: SQLite;
    - a :class:`SessionStore` object: returned as it is.

    Raises :class:`~sessionhive.InvalidConfig` for anything else, and
    :class:`~sessionhive.StoreError` when the store cannot be opened.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        if isinstance(spec, SessionStore):
            return spec
        raise InvalidConfig(
            f"store must be a string or a SessionStore, got {type(spec).__name__}; accepted: {_ACCEPTED}"
        )
    text = spec.strip()
    if text == "memory":
        return MemoryStore()
    if text.startswith("file:"):
        directory = text[len("file:") :].removeprefix("//")
        if not directory:
            raise InvalidConfig(f"store {spec!r} names no directory; write 'file:DIR'")
        return FileStore(directory)
    for prefix in ("postgresql://", "postgres://"):
        if text.startswith(prefix):
            text = "postgresql+psycopg://" + text[len(prefix) :]
    if "://" in text:
        return SqlStore(text)
    if text.lower().endswith((".db", ".sqlite", ".sqlite3")):
        return SqlStore(URL.create("sqlite", database=os.path.abspath(text)))
    raise InvalidConfig(f"unrecognized store {spec!r}; accepted: {_ACCEPTED}")
