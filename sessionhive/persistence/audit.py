"""Who owns each session and who did what to it: two tables beside the store's own, for ``serve``.

``sessionhive_owners``
    One row per session created through the service: the tenant it belongs
    to. A session without a row (created by the library, or before tenants
    existed) belongs to :data:`DEFAULT_TENANT`.
``sessionhive_audit``
    One row per action taken through the service: when, which token (its
    name, never the token or a key), its tenant, the action, the session, the
    tenant that owned the session then, and a small JSON ``detail`` (the
    decision and reason of an approval, the model of a configure).

With a :class:`~sessionhive.persistence.SqlStore` both tables live in the
store's database and go through its engine (SQLite or PostgreSQL); with any
other store they live in an in-memory SQLite database, which keeps the newest
:data:`MEMORY_RECORDS` records and ends with the process.
Every method blocks on the database: the service calls them off its event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Connection,
    Double,
    Engine,
    Integer,
    String,
    create_engine,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from sessionhive.model.errors import StoreError
from sessionhive.model.ids import MAX_ID_LENGTH
from sessionhive.persistence._protocol import SessionStore
from sessionhive.persistence.stores import SqlStore

__all__ = ["DEFAULT_TENANT", "AuditLog", "AuditRecord"]

#: The tenant of a session nobody claimed, and of the single ``--token-file`` token.
DEFAULT_TENANT = "default"

_NAME_MAX = 128
_ACTION_MAX = 32
#: Records an in-memory log keeps (the newest): a service on a memory or file store must not
#: grow without bound with every turn it runs. About 200 bytes each in SQLite: ~20 MB.
MEMORY_RECORDS = 100_000
#: The in-memory log trims its oldest records once per this many writes, not on every one.
_TRIM_EVERY = 1_000


class _AuditBase(DeclarativeBase):
    """Kept apart from the store's ``Base``: the store's schema version does not cover these tables."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class OwnerRow(_AuditBase):
    __tablename__ = "sessionhive_owners"

    session_id: Mapped[str] = mapped_column(String(MAX_ID_LENGTH), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(_NAME_MAX), index=True)
    created_at: Mapped[float] = mapped_column(Double)


class AuditRow(_AuditBase):
    __tablename__ = "sessionhive_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Double)
    token_name: Mapped[str] = mapped_column(String(_NAME_MAX))
    tenant: Mapped[str] = mapped_column(String(_NAME_MAX))
    action: Mapped[str] = mapped_column(String(_ACTION_MAX))
    session_id: Mapped[str | None] = mapped_column(String(MAX_ID_LENGTH), index=True)
    #: The tenant that owned the session when this happened: a tenant reads its sessions' records
    #: (an operator's actions on them included), even after the session is gone.
    session_tenant: Mapped[str] = mapped_column(String(_NAME_MAX), index=True)
    detail: Mapped[dict[str, Any]]


_OWNERS = _AuditBase.metadata.tables[OwnerRow.__tablename__]
_AUDIT = _AuditBase.metadata.tables[AuditRow.__tablename__]


@dataclass(frozen=True)
class AuditRecord:
    """One action: ``to_dict()`` is the JSON ``GET /v1/audit`` answers with."""

    time: float
    token_name: str
    tenant: str
    action: str
    session_id: str | None
    session_tenant: str = DEFAULT_TENANT
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(),
            "token_name": self.token_name,
            "tenant": self.tenant,
            "action": self.action,
            "session_id": self.session_id,
            "detail": self.detail,
        }


class AuditLog:
    """The owners and audit tables on ``engine`` (created if missing)."""

    def __init__(self, engine: Engine, *, name: str = "audit", max_records: int | None = None) -> None:
        self._engine = engine
        self._name = name
        #: False for the in-memory log: what it holds ends with the process.
        self.persistent = max_records is None
        self._max_records = max_records
        self._writes = 0  # guarded by _serial when trimming matters (in memory); else a hint
        # The in-memory engine is one shared connection (StaticPool): two threads in it at once
        # would mix their transactions (and can crash sqlite3), so its callers take turns. A
        # store's engine pools connections and needs no such turn-taking.
        self._serial: AbstractContextManager[object] = (
            threading.Lock() if max_records is not None else nullcontext()
        )
        try:
            with self._write() as conn:
                _AuditBase.metadata.create_all(conn, checkfirst=True)
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot create the audit tables in {name}: {exc}") from exc

    @classmethod
    def in_memory(cls, max_records: int = MEMORY_RECORDS) -> AuditLog:
        """A log that ends with the process and keeps about its newest ``max_records`` records."""
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        return cls(engine, name="sqlite::memory:", max_records=max_records)

    @classmethod
    def for_store(cls, store: SessionStore) -> AuditLog:
        """In ``store``'s own database when it is a SQL store on disk or a server, else in memory."""
        # An in-memory SQLite store is one connection its writer thread uses: not to be shared.
        if isinstance(store, SqlStore) and store.name != "sqlite::memory:":
            return cls(store.engine, name=store.name)
        return cls.in_memory()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._serial, self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._serial, self._engine.connect() as conn:
            # The store's SQLite engine begins with BEGIN IMMEDIATE on this option, so that a
            # write never fails upgrading a read lock while the store writes too.
            conn.execution_options(sessionhive_write=True)
            with conn.begin():
                yield conn

    # ------------------------------------------------------------------ owners

    def owners(self) -> dict[str, str]:
        """Every claimed session's tenant."""
        with self._read() as conn:
            return {row.session_id: row.tenant for row in conn.execute(select(_OWNERS))}

    def claim(self, session_ids: Sequence[str], tenant: str) -> None:
        """Record ``tenant`` as the owner of each of ``session_ids`` (replacing an older claim)."""
        now = time.time()
        with self._write() as conn:
            conn.execute(delete(_OWNERS).where(_OWNERS.c.session_id.in_(list(session_ids))))
            conn.execute(
                insert(_OWNERS), [{"session_id": s, "tenant": tenant, "created_at": now} for s in session_ids]
            )

    def release(self, session_ids: Iterable[str]) -> None:
        ids = list(session_ids)
        if ids:
            with self._write() as conn:
                conn.execute(delete(_OWNERS).where(_OWNERS.c.session_id.in_(ids)))

    # ------------------------------------------------------------------ audit

    def record(self, record: AuditRecord) -> None:
        with self._write() as conn:
            conn.execute(
                insert(_AUDIT).values(
                    time=record.time,
                    token_name=record.token_name,
                    tenant=record.tenant,
                    action=record.action,
                    session_id=record.session_id,
                    session_tenant=record.session_tenant,
                    detail=record.detail,
                )
            )
            self._writes += 1
            if self._max_records is not None and self._writes % min(_TRIM_EVERY, self._max_records) == 0:
                newest = conn.execute(select(func.max(_AUDIT.c.id))).scalar_one()
                conn.execute(delete(_AUDIT).where(_AUDIT.c.id <= newest - self._max_records))

    def records(
        self,
        *,
        session_id: str | None = None,
        session_tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[AuditRecord]]:
        """``(total, page)``, oldest first, of the records matching the filters given."""
        where = []
        if session_id is not None:
            where.append(_AUDIT.c.session_id == session_id)
        if session_tenant is not None:
            where.append(_AUDIT.c.session_tenant == session_tenant)
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(_AUDIT).where(*where)).scalar_one()
            rows = conn.execute(
                select(_AUDIT).where(*where).order_by(_AUDIT.c.id).offset(offset).limit(limit)
            ).all()
        page = [
            AuditRecord(
                time=row.time,
                token_name=row.token_name,
                tenant=row.tenant,
                action=row.action,
                session_id=row.session_id,
                session_tenant=row.session_tenant,
                detail=dict(row.detail or {}),
            )
            for row in rows
        ]
        return int(total), page

    def close(self) -> None:
        """Dispose of an in-memory log's engine; a store's engine is the store's to close."""
        if not self.persistent:
            self._engine.dispose()
