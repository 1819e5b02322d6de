"""Session stores, one module each behind :class:`BaseStore` (``sql``, ``files``, ``memory``), and open_store.

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
  (``"sessions"``, ``"messages"``, ``"runs"`` when any) to the rows that write inserted or updated,
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

import os

from sqlalchemy.engine import URL

from sessionhive.model.errors import InvalidConfig
from sessionhive.persistence._protocol import SessionStore
from sessionhive.persistence.stores.base import ACCEPTED_STORES, BaseStore, TransientStoreError, is_transient
from sessionhive.persistence.stores.files import FileStore
from sessionhive.persistence.stores.memory import MemoryStore
from sessionhive.persistence.stores.sql import SqlStore

__all__ = [
    "BaseStore",
    "FileStore",
    "MemoryStore",
    "SessionStore",
    "SqlStore",
    "TransientStoreError",
    "is_transient",
    "open_store",
]


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
            f"store must be a string or a SessionStore, got {type(spec).__name__}; "
            f"accepted: {ACCEPTED_STORES}"
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
    raise InvalidConfig(f"unrecognized store {spec!r}; accepted: {ACCEPTED_STORES}")
