"""What every built-in store shares: the error taxonomy and :class:`BaseStore`, whose hooks stores fill in.

As SQLAlchemy's ``Pool`` does for its pools, :class:`BaseStore` owns the
public methods and their contract (newest snapshot per session wins, errors
become :class:`~sessionhive.StoreError` or :class:`TransientStoreError`,
``last_write_rows`` is set after a successful write); a store implements only
the ``_do_*`` hooks for its medium.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc

from sessionhive.model.errors import StoreError
from sessionhive.persistence.snapshot import SessionSnapshot

__all__ = [
    "ACCEPTED_STORES",
    "BaseStore",
    "TransientStoreError",
    "chunks",
    "is_transient",
    "newest_per_session",
    "wrap_error",
]

T = TypeVar("T")
R = TypeVar("R")

#: What :func:`~sessionhive.persistence.open_store` accepts, for error messages.
ACCEPTED_STORES = (
    "'memory', 'file:DIR', 'sqlite:///path/to/file.db', a path ending in .db/.sqlite/.sqlite3, "
    "'postgresql://user@host/db' (psycopg 3), any other SQLAlchemy URL, or a SessionStore object"
)

# Bound on the ids in one ``IN (...)`` list: far below every driver's
# parameter limit (SQLite's is 32766), large enough to be one statement for
# the usual batch.
_IN_CHUNK = 500


class TransientStoreError(StoreError):
    """A store failure that retrying the same operation may fix.

    Raised for lost connections, a locked or busy SQLite database,
    PostgreSQL serialization failures and deadlocks, and I/O errors. The
    original driver error is the ``__cause__``.
    """


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


def wrap_error(exc: BaseException, store_name: str, action: str) -> StoreError:
    """``exc`` as a :class:`StoreError` (or :class:`TransientStoreError`) naming the store and the action."""
    cls = TransientStoreError if is_transient(exc) else StoreError
    return cls(f"{action} on store {store_name} failed: {_describe(exc)}")


def chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (bounded ``IN (...)`` lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def newest_per_session(snapshots: Iterable[SessionSnapshot]) -> dict[str, SessionSnapshot]:
    """The highest-version snapshot of each session in ``snapshots``."""
    newest: dict[str, SessionSnapshot] = {}
    for snap in snapshots:
        held = newest.get(snap.session_id)
        if held is None or snap.version > held.version:
            newest[snap.session_id] = snap
    return newest


class BaseStore:
    """The public side of a store; a subclass fills in the ``_do_*`` hooks.

    ``write_batch`` hands the hook the newest snapshot of each session and
    the sorted, distinct deletes; the hook applies the deletes first and
    returns the rows written per table. Any error a hook raises that is in
    :attr:`_wrapped_errors` becomes a :class:`StoreError` naming the store
    (transient or not, see :func:`is_transient`); a :class:`StoreError` passes
    as it is.
    """

    is_transient = staticmethod(is_transient)
    #: Whether what it commits outlives the process. A store that does not
    #: (the memory store) has no commit worth waiting for: durable sessions
    #: are answered at once, as batched ones are.
    durable = True
    #: Exceptions of the medium that a hook may raise and that the base turns into StoreError.
    _wrapped_errors: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, TypeError)

    def __init__(self, name: str) -> None:
        self._name = name
        self.last_write_rows: Mapping[str, int] = {}

    @property
    def name(self) -> str:
        """Where the store keeps its data, for logs and health reports: never a password."""
        return self._name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"

    # ------------------------------------------------------------------ the public contract

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        """Apply ``deletes``, then the newest of ``snapshots``; an older version never overwrites a newer."""
        newest = newest_per_session(snapshots)
        self.last_write_rows = self._wrapped(
            f"writing {len(newest)} sessions", self._do_write, newest, sorted(set(deletes))
        )

    def load(self, session_id: str) -> SessionSnapshot | None:
        """The stored snapshot of ``session_id``, or ``None`` if there is none."""
        return self._wrapped(f"loading session {session_id!r}", self._do_load, session_id)

    def list_ids(self) -> list[str]:
        """Every stored session id, sorted."""
        return sorted(self._wrapped("listing sessions", lambda: list(self._do_list_ids())))

    def list_index(self) -> list[tuple[str, str | None]]:
        """Every stored session id with its parent's id, sorted by id."""
        return sorted(self._wrapped("listing sessions", lambda: list(self._do_list_index())))

    def _wrapped(self, action: str, hook: Callable[..., R], *args: Any) -> R:
        """``hook(*args)``; its medium's errors become :class:`StoreError` naming the store and ``action``."""
        try:
            return hook(*args)
        except StoreError:
            raise
        except self._wrapped_errors as exc:
            raise wrap_error(exc, self._name, action) from exc

    def data_paths(self) -> tuple[str, ...]:
        """The files and directories holding this store's data on this machine (none by default).

        For example to hide them from sandboxed commands:
        ``executor.hide_from_bash(*store.data_paths())``.
        """
        return ()

    def health_check(self) -> None:
        """Raise :class:`StoreError` when the store cannot serve; the default is always healthy."""

    def close(self) -> None:
        """Release what the store holds; the default holds nothing."""

    # ------------------------------------------------------------------ hooks

    def _do_write(self, newest: dict[str, SessionSnapshot], deletes: list[str]) -> dict[str, int]:
        """Apply ``deletes``, then ``newest`` where newer than stored; return rows written per table."""
        raise NotImplementedError

    def _do_load(self, session_id: str) -> SessionSnapshot | None:
        raise NotImplementedError

    def _do_list_ids(self) -> Iterable[str]:
        raise NotImplementedError

    def _do_list_index(self) -> Iterable[tuple[str, str | None]]:
        """By default: load every session to learn its parent (a store with an index overrides it)."""
        for session_id in self._do_list_ids():
            snapshot = self._do_load(session_id)
            if snapshot is not None:
                yield session_id, snapshot.parent_id
