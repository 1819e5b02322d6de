"""The messages of the persistence protocol: one small frozen class per request to the writer.

Session actors, the supervisor and the facade send these to the
:class:`~sessionhive.persistence.PersistenceActor` (through the actors'
``PersistenceLink``). A request that needs an answer carries its own reply
channel (a :class:`concurrent.futures.Future` or a callback that must not
block), completed from the writer's thread. :class:`Backlog` is the one piece
of state the senders share with the writer: how many saves are told and not
yet committed, which tells a session when to wait for its commit.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sessionhive.model.errors import StoreError
from sessionhive.persistence.snapshot import SessionSnapshot

__all__ = [
    "MAX_BACKLOG",
    "MIN_BACKLOG",
    "Backlog",
    "Batch",
    "Delete",
    "Exists",
    "Flush",
    "Health",
    "ListIds",
    "ListIndex",
    "Load",
    "Save",
    "Tick",
    "WriteStillPending",
]

#: Bounds of the backlog of batched saves told and not committed before turns
#: wait for the writer. Between them the limit follows the measured commit
#: rate: what one commit writes in half a ``flush_interval``, so that the
#: backlog itself commits within the batched deadline.
MIN_BACKLOG = 64
MAX_BACKLOG = 4096


class WriteStillPending(StoreError):
    """What a :class:`Save`'s ``ack`` gets when its write failed after the retries: the snapshot
    stays pending and is written once the store answers, so its change may yet be stored."""


@dataclass(frozen=True, slots=True)
class Save:
    """Persist ``snapshot``. Only the newest pending snapshot of a session is written.

    With ``ack`` (``durability="durable"``) the future completes once a write
    holding this version (or a newer one of the session, or its delete)
    committed; it gets a :class:`WriteStillPending` if that write failed
    after its retries (the snapshot stays pending and is retried), a
    :class:`~sessionhive.StoreError` if it will never be written (its lease
    moved to another writer).

    ``issued`` is the :func:`time.monotonic` time of the oldest change this
    save carries (when it was acknowledged): the batched deadline counts from
    it. ``0.0`` means "when the actor receives it". ``saves`` is how many
    saves of the :class:`Backlog` it stands for (the link merges a session's
    saves of one loop pass into one).
    """

    snapshot: SessionSnapshot
    ack: concurrent.futures.Future[None] | None = None
    issued: float = 0.0
    saves: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete a session from the store, cancelling its pending snapshot.

    A :class:`Save` of the same id that arrives later belongs to a new
    session of that id: it is written after the delete.
    """

    session_id: str
    ack: concurrent.futures.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Several messages sent in one ``tell`` (one wake-up of this actor's thread), handled in order."""

    messages: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Flush:
    """Durability barrier: write everything pending, then complete ``done``.

    ``done`` gets a :class:`~sessionhive.StoreError` if the write still fails
    after its retries; the data stays pending.
    """

    done: concurrent.futures.Future[None]


@dataclass(frozen=True, slots=True)
class Load:
    """Answer the newest state of a session: pending snapshot first, then the store.

    ``on_loaded(snapshot_or_None, error_or_None)`` is called in the actor's
    thread and must not block (tell another actor, set a future).
    """

    session_id: str
    on_loaded: Callable[[SessionSnapshot | None, BaseException | None], None]


@dataclass(frozen=True, slots=True)
class Exists:
    """Answer whether the session exists (pending or stored); ``on_answer`` must not block."""

    session_id: str
    on_answer: Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class ListIds:
    """Answer every session id, stored or pending, sorted."""

    done: concurrent.futures.Future[list[str]]


@dataclass(frozen=True, slots=True)
class ListIndex:
    """Answer ``[(session id, parent id)]`` for every stored or pending session, sorted by id."""

    done: concurrent.futures.Future[list[tuple[str, str | None]]]


@dataclass(frozen=True, slots=True)
class Health:
    """Answer ``[(store name, "ok" | "error: ...")]``."""

    done: concurrent.futures.Future[list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class Tick:
    """Sent by the flush timer: write what is pending if the flush interval passed."""


class Backlog:
    """The writer's backlog, shared by the senders of saves and the persistence actor.

    - ``in_hand``: messages of the :class:`Batch` being handled still to come
      (for the mailbox gauge; written by the persistence actor alone): a
      batch stuck behind a slow write is still a backlog.
    - :attr:`unwritten`: saves told (:meth:`told`, by whoever sends them) and
      not yet committed (:meth:`committed`, by the persistence actor).
    - ``limit``: past it, :attr:`congested` is true and sessions wait for the
      commit of their batched saves (set by the persistence actor from the
      commit rate it measures).
    """

    __slots__ = ("_lock", "_unwritten", "in_hand", "limit")

    def __init__(self, limit: int = MAX_BACKLOG) -> None:
        self.in_hand = 0
        self.limit = limit
        self._unwritten = 0
        # Not session state: the backlog's two counters only. Senders run on the actors' loop,
        # on callers' threads and on the turn loop.
        self._lock = threading.Lock()

    def told(self, saves: int) -> None:
        with self._lock:
            self._unwritten += saves

    def committed(self, saves: int) -> None:
        with self._lock:
            self._unwritten -= saves

    @property
    def unwritten(self) -> int:
        return self._unwritten

    @property
    def congested(self) -> bool:
        """Whether the writer is behind: new batched saves should wait for their commit."""
        return self._unwritten > self.limit
