"""The webhook outbox: deliveries of finished runs, written before they are sent, kept until a 2xx.

A :class:`Delivery` is the exact body to POST to one URL, under an id the
receiver deduplicates by. The deliverer (:mod:`sessionhive.actors.webhooks`)
talks only to the :class:`WebhookOutbox` protocol; :func:`open_outbox` picks
the implementation that lives where the store keeps its sessions:

- :class:`SqlOutbox`: the ``sessionhive_webhook_outbox`` table in a
  :class:`~sessionhive.persistence.SqlStore`'s database (SQLite or
  PostgreSQL), through the store's engine;
- :class:`FileOutbox`: one JSON file per pending delivery in a
  ``.webhook-outbox`` directory inside a :class:`FileStore`'s directory;
- :class:`MemoryOutbox`: a dict, for the memory store (and an in-memory
  SQLite store, whose one connection belongs to its writer thread), or any
  other store: gone with the process, as the sessions are.

An attempt is *claimed* before it is sent (:meth:`WebhookOutbox.claim_due`):
the claim counts the attempt and pushes ``next_attempt_at`` one lease ahead,
atomically, so two Hives sharing a database never send the same attempt
twice, and a process killed mid-attempt leaves a row that is tried again once
the lease ends. No secret is ever written: a row holds the URL and the body.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc

from sessionhive.persistence._protocol import SessionStore
from sessionhive.persistence.schema import WEBHOOK_OUTBOX
from sessionhive.persistence.stores import FileStore, SqlStore
from sessionhive.persistence.stores.base import wrap_error
from sessionhive.persistence.stores.files import atomic_write

__all__ = ["Delivery", "FileOutbox", "MemoryOutbox", "SqlOutbox", "WebhookOutbox", "open_outbox"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery: POST ``body`` (JSON text, signed as it is) to ``url``."""

    delivery_id: str
    url: str
    body: str
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    delivered_at: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "delivery_id": self.delivery_id,
            "url": self.url,
            "body": self.body,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "delivered_at": self.delivered_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Delivery:
        delivered = data.get("delivered_at")
        return cls(
            delivery_id=str(data["delivery_id"]),
            url=str(data["url"]),
            body=str(data["body"]),
            created_at=float(data["created_at"]),  # type: ignore[arg-type]
            attempts=int(data.get("attempts") or 0),  # type: ignore[call-overload]
            next_attempt_at=float(data.get("next_attempt_at") or 0.0),  # type: ignore[arg-type]
            delivered_at=None if delivered is None else float(delivered),  # type: ignore[arg-type]
        )


@runtime_checkable
class WebhookOutbox(Protocol):
    """Where deliveries wait for their 2xx. Every method blocks on the medium; errors are StoreError."""

    @property
    def name(self) -> str: ...

    def add(self, delivery: Delivery) -> None:
        """Store a new delivery (committed when this returns)."""
        ...

    def claim_due(self, now: float, lease: float, limit: int) -> list[Delivery]:
        """Claim up to ``limit`` undelivered deliveries due by ``now``, oldest due first.

        Each claim counts one attempt and moves ``next_attempt_at`` to
        ``now + lease``; the returned deliveries carry both.
        """
        ...

    def retry_at(self, delivery_id: str, when: float) -> None:
        """The claimed attempt failed: try again at ``when``."""
        ...

    def mark_delivered(self, delivery_id: str, when: float) -> None:
        """The receiver answered 2xx: never send this delivery again."""
        ...

    def pending(self) -> tuple[int, float | None]:
        """How many deliveries wait for a 2xx, and when the earliest of them is due (None if none)."""
        ...

    def prune(self, before: float) -> int:
        """Forget deliveries acknowledged before ``before``; returns how many."""
        ...


def open_outbox(store: SessionStore) -> WebhookOutbox:
    """The outbox beside ``store``'s sessions: its database, its directory, or memory."""
    if isinstance(store, WebhookOutbox):
        return store  # a custom store that keeps its own outbox
    # An in-memory SQLite store is one connection its writer thread uses: not to be shared.
    if isinstance(store, SqlStore) and store.name != "sqlite::memory:":
        return SqlOutbox(store.engine, name=store.name)
    if isinstance(store, FileStore):
        (directory,) = store.data_paths()
        return FileOutbox(Path(directory) / FileOutbox.DIRECTORY)
    return MemoryOutbox()


# --------------------------------------------------------------------------- SQL


class SqlOutbox:
    """``sessionhive_webhook_outbox`` on a SQL store's engine (the store's ``create_all`` made the table).

    Delivered rows stay (with ``delivered_at``) until :meth:`prune`: an
    operator can see what was sent, and when.
    """

    _errors = (sa_exc.SQLAlchemyError, TypeError, ValueError)

    def __init__(self, engine: Engine, *, name: str) -> None:
        self._engine = engine
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                # The store's SQLite engine begins with BEGIN IMMEDIATE on this option: the claim's
                # read and update are one step even with the store's writer (or another Hive) busy.
                conn.execution_options(sessionhive_write=True)
                with conn.begin():
                    yield conn
        except self._errors as exc:
            raise wrap_error(exc, self._name, action) from exc

    def add(self, delivery: Delivery) -> None:
        with self._write("adding a webhook delivery") as conn:
            conn.execute(insert(WEBHOOK_OUTBOX).values(**delivery.to_dict()))

    def claim_due(self, now: float, lease: float, limit: int) -> list[Delivery]:
        table = WEBHOOK_OUTBOX
        claimed: list[Delivery] = []
        with self._write("claiming webhook deliveries") as conn:
            rows = conn.execute(
                select(table)
                .where(table.c.delivered_at.is_(None), table.c.next_attempt_at <= now)
                .order_by(table.c.next_attempt_at)
                .limit(limit)
            ).mappings()
            for row in list(rows):
                delivery = Delivery.from_dict(dict(row))
                # Compare-and-set on the due time read: another Hive that claimed the row first
                # moved it, and this update then changes nothing (PostgreSQL, READ COMMITTED).
                taken = conn.execute(
                    update(table)
                    .where(
                        and_(
                            table.c.delivery_id == delivery.delivery_id,
                            table.c.next_attempt_at == delivery.next_attempt_at,
                            table.c.delivered_at.is_(None),
                        )
                    )
                    .values(attempts=table.c.attempts + 1, next_attempt_at=now + lease)
                ).rowcount
                if taken == 1:
                    claimed.append(
                        replace(delivery, attempts=delivery.attempts + 1, next_attempt_at=now + lease)
                    )
        return claimed

    def retry_at(self, delivery_id: str, when: float) -> None:
        table = WEBHOOK_OUTBOX
        with self._write("rescheduling a webhook delivery") as conn:
            conn.execute(
                update(table)
                .where(table.c.delivery_id == delivery_id, table.c.delivered_at.is_(None))
                .values(next_attempt_at=when)
            )

    def mark_delivered(self, delivery_id: str, when: float) -> None:
        table = WEBHOOK_OUTBOX
        with self._write("marking a webhook delivered") as conn:
            conn.execute(update(table).where(table.c.delivery_id == delivery_id).values(delivered_at=when))

    def pending(self) -> tuple[int, float | None]:
        table = WEBHOOK_OUTBOX
        try:
            with self._engine.connect() as conn:
                count, earliest = conn.execute(
                    select(func.count(), func.min(table.c.next_attempt_at)).where(
                        table.c.delivered_at.is_(None)
                    )
                ).one()
        except self._errors as exc:
            raise wrap_error(exc, self._name, "counting webhook deliveries") from exc
        return int(count), None if earliest is None else float(earliest)

    def prune(self, before: float) -> int:
        table = WEBHOOK_OUTBOX
        with self._write("pruning delivered webhooks") as conn:
            result = conn.execute(delete(table).where(table.c.delivered_at < before))
        return int(result.rowcount)


# --------------------------------------------------------------------------- files and memory


class MemoryOutbox:
    """Deliveries in a dict, gone with the process; an acknowledged one is dropped at once."""

    def __init__(self) -> None:
        # Guards only the deliveries dict (the actors' thread adds, the deliverer's thread
        # claims): no session state.
        self._lock = threading.Lock()
        self._deliveries: dict[str, Delivery] = {}

    @property
    def name(self) -> str:
        return "memory"

    def add(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries[delivery.delivery_id] = delivery

    def claim_due(self, now: float, lease: float, limit: int) -> list[Delivery]:
        with self._lock:
            due = sorted(
                (d for d in self._deliveries.values() if d.next_attempt_at <= now),
                key=lambda d: d.next_attempt_at,
            )[:limit]
            claimed = [replace(d, attempts=d.attempts + 1, next_attempt_at=now + lease) for d in due]
            self._deliveries.update((d.delivery_id, d) for d in claimed)
        return claimed

    def retry_at(self, delivery_id: str, when: float) -> None:
        with self._lock:
            held = self._deliveries.get(delivery_id)
            if held is not None:
                self._deliveries[delivery_id] = replace(held, next_attempt_at=when)

    def mark_delivered(self, delivery_id: str, when: float) -> None:  # noqa: ARG002 - nothing is kept
        with self._lock:
            self._deliveries.pop(delivery_id, None)

    def pending(self) -> tuple[int, float | None]:
        with self._lock:
            dues = [d.next_attempt_at for d in self._deliveries.values()]
        return len(dues), min(dues, default=None)

    def prune(self, before: float) -> int:  # noqa: ARG002 - acknowledged deliveries are not kept
        return 0


class FileOutbox:
    """One JSON file per pending delivery in ``directory``, replaced atomically; removed once delivered.

    :func:`open_outbox` puts it in a :class:`FileStore`'s directory, under
    :attr:`DIRECTORY` (a dot-directory the store's listing skips). One
    process per directory, as for the file store itself.
    """

    DIRECTORY = ".webhook-outbox"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)
        self._name = f"file:{os.path.abspath(self._dir)}"
        # Guards the read-modify-write of a delivery's file (the actors' thread adds, the
        # deliverer's thread claims and updates): no session state.
        self._lock = threading.Lock()
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise wrap_error(exc, self._name, "opening the webhook outbox") from exc

    @property
    def name(self) -> str:
        return self._name

    def _path(self, delivery_id: str) -> Path:
        return self._dir / f"{delivery_id}.json"

    def _write_file(self, delivery: Delivery) -> None:
        atomic_write(
            self._path(delivery.delivery_id), json.dumps(delivery.to_dict(), separators=(",", ":")).encode()
        )

    def _all(self) -> list[Delivery]:
        found = []
        for entry in os.scandir(self._dir):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                try:
                    found.append(Delivery.from_dict(json.loads(Path(entry.path).read_bytes())))
                except FileNotFoundError:
                    continue  # delivered while listing
        return found

    def _guarded(self, action: str, step: Callable[[], T]) -> T:
        try:
            with self._lock:
                return step()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise wrap_error(exc, self._name, action) from exc

    def add(self, delivery: Delivery) -> None:
        self._guarded("adding a webhook delivery", lambda: self._write_file(delivery))

    def claim_due(self, now: float, lease: float, limit: int) -> list[Delivery]:
        def claim() -> list[Delivery]:
            due = sorted(
                (d for d in self._all() if d.next_attempt_at <= now), key=lambda d: d.next_attempt_at
            )
            claimed = [replace(d, attempts=d.attempts + 1, next_attempt_at=now + lease) for d in due[:limit]]
            for delivery in claimed:
                self._write_file(delivery)
            return claimed

        return self._guarded("claiming webhook deliveries", claim)

    def retry_at(self, delivery_id: str, when: float) -> None:
        def reschedule() -> None:
            try:
                held = Delivery.from_dict(json.loads(self._path(delivery_id).read_bytes()))
            except FileNotFoundError:
                return
            self._write_file(replace(held, next_attempt_at=when))

        self._guarded("rescheduling a webhook delivery", reschedule)

    def mark_delivered(self, delivery_id: str, when: float) -> None:  # noqa: ARG002 - nothing is kept
        def remove() -> None:
            try:
                os.unlink(self._path(delivery_id))
            except FileNotFoundError:
                pass

        self._guarded("marking a webhook delivered", remove)

    def pending(self) -> tuple[int, float | None]:
        def count() -> tuple[int, float | None]:
            dues = [d.next_attempt_at for d in self._all()]
            return len(dues), min(dues, default=None)

        return self._guarded("counting webhook deliveries", count)

    def prune(self, before: float) -> int:  # noqa: ARG002 - acknowledged deliveries are not kept
        return 0
