"""How sessions survive: snapshots, stores and the actor that writes them.

- :class:`SessionSnapshot`: the immutable state of one session at one version.
- :class:`SessionStore`: the protocol of a store; :class:`SqlStore` (SQLite,
  PostgreSQL, any SQLAlchemy database), :class:`FileStore` (one JSON file per
  session) and :class:`MemoryStore` implement it; :func:`open_store` picks one
  from a string such as ``"sqlite:///sessionhive.db"``.
- :class:`PersistenceActor`: the single writer of a store; it coalesces
  snapshots per session, writes them in batches, retries transient errors and
  answers :class:`Flush` barriers. Its messages (``persistence.messages``):
  :class:`Save`, :class:`Delete`, :class:`Flush`, :class:`Load`,
  :class:`Exists`, :class:`ListIds`, :class:`Health`, :class:`Tick`.
- :class:`WebhookOutbox`: webhook deliveries of finished runs waiting for a
  2xx, beside the sessions (:func:`open_outbox`; see ``persistence.outbox``).
- :class:`AuditLog`: who owns each session served over HTTP, and who did
  what to it (:class:`AuditRecord`), in the store's database.
"""

from __future__ import annotations

from sessionhive.persistence._protocol import SessionStore
from sessionhive.persistence.actor import DEFAULT_BATCH_SIZE, DEFAULT_FLUSH_INTERVAL, PersistenceActor
from sessionhive.persistence.audit import AuditLog, AuditRecord
from sessionhive.persistence.messages import (
    Delete,
    Exists,
    Flush,
    Health,
    ListIds,
    ListIndex,
    Load,
    Save,
    Tick,
)
from sessionhive.persistence.outbox import Delivery, WebhookOutbox, open_outbox
from sessionhive.persistence.snapshot import SCHEMA_VERSION, SessionSnapshot
from sessionhive.persistence.stores import (
    FileStore,
    MemoryStore,
    SqlStore,
    TransientStoreError,
    is_transient,
    open_store,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_FLUSH_INTERVAL",
    "SCHEMA_VERSION",
    "AuditLog",
    "AuditRecord",
    "Delete",
    "Delivery",
    "Exists",
    "FileStore",
    "Flush",
    "Health",
    "ListIds",
    "ListIndex",
    "Load",
    "MemoryStore",
    "PersistenceActor",
    "Save",
    "SessionSnapshot",
    "SessionStore",
    "SqlStore",
    "Tick",
    "TransientStoreError",
    "WebhookOutbox",
    "is_transient",
    "open_outbox",
    "open_store",
]
