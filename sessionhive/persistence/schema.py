"""The SQL tables of :class:`~sessionhive.persistence.stores.SqlStore`, in SQLAlchemy 2.x typed ORM style.

Six tables, all prefixed ``sessionhive_`` so that they can share a database
(or a PostgreSQL schema) with an application's own tables:

``sessionhive_sessions``
    One row per session: everything of a :class:`SessionSnapshot` except the
    messages, plus ``message_count`` (how many message rows belong to the
    current ``history_epoch``) and the snapshot ``version``.
``sessionhive_messages``
    One row per message, keyed by ``(session_id, seq)``. A turn appends rows;
    only a clear or a compaction (a new ``history_epoch``) rewrites them.
    There is deliberately no foreign key to the sessions table: the store
    deletes a session's messages itself, in the same transaction as the
    session row, and a foreign key would only add a lookup per inserted row.
``sessionhive_runs``
    One row per run a session keeps (:class:`~sessionhive.Run`), keyed by its
    ``run_id``: the record as JSON plus the columns a query looks for
    (``session_id``, ``idempotency_key``, ``status``, ``created_at``). A write
    upserts only the runs that changed since the store last wrote the session,
    and deletes those the session no longer keeps, in the same transaction as
    the session row (no foreign key, as for messages). Schema 3.
``sessionhive_webhook_outbox``
    One row per webhook delivery of a finished run (see
    :mod:`sessionhive.persistence.outbox`): the URL, the exact body to POST,
    and when it is next tried or was acknowledged. Never a secret. A table
    that ``create_all`` makes where missing, so it needs no migration step.
``sessionhive_blobs``
    The bytes of large content parts (images, files) of messages, one row per
    sha256 (:mod:`sessionhive.persistence.blobs`): a message row names its
    blobs, so that an image is stored once however many messages, sessions
    and saves refer to it. Rows are never deleted by a session's delete (a
    blob may be shared). A table ``create_all`` makes. Schema 4.
``sessionhive_meta``
    Key/value pairs; ``schema_version`` records the layout of these tables so
    that an older sessionhive refuses a database written by a newer one.

The store uses these tables through SQLAlchemy Core (bulk ``executemany``
inserts and updates); the ORM classes are the typed single source of the
layout and are handy for ad-hoc inspection::

    from sqlalchemy.orm import Session
    with Session(engine) as s:
        s.get(SessionRow, "my-session").message_count
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    Double,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sessionhive.model.errors import StoreError
from sessionhive.model.ids import MAX_ID_LENGTH
from sessionhive.model.runs import MAX_IDEMPOTENCY_KEY_LENGTH
from sessionhive.persistence.snapshot import SCHEMA_VERSION

__all__ = [
    "BLOBS",
    "ID_MAX_LENGTH",
    "MESSAGES",
    "META",
    "RUNS",
    "RUN_ID_MAX_LENGTH",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "SESSIONS",
    "WEBHOOK_OUTBOX",
    "Base",
    "BlobRow",
    "MessageRow",
    "MetaRow",
    "RunRow",
    "SessionRow",
    "WebhookOutboxRow",
    "ensure_schema",
]

#: Longest session id the SQL tables hold: the longest id sessionhive accepts
#: (characters, not bytes; 256 x 4 UTF-8 bytes stays within every database's
#: index key limit, MySQL's included).
ID_MAX_LENGTH = MAX_ID_LENGTH

#: Longest run id (:func:`~sessionhive.model.runs.make_run_id`): ``run_``, the longest session id
#: in unpadded base64url (at most 4 UTF-8 bytes a character), ``_`` and 16 hex digits.
RUN_ID_MAX_LENGTH = len("run_") + -(-4 * 4 * MAX_ID_LENGTH // 3) + 1 + 16

#: The ``sessionhive_meta`` key under which the schema version is recorded.
SCHEMA_VERSION_KEY = "schema_version"


class Base(DeclarativeBase):
    """Declarative base of the sessionhive tables; ``Base.metadata`` creates them."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class SessionRow(Base):
    """One session: its snapshot header at ``version``, without the messages."""

    __tablename__ = "sessionhive_sessions"

    id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(String(ID_MAX_LENGTH), index=True)
    state: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    confirmation_policy: Mapped[dict[str, Any]]
    #: The session's LLM config as :meth:`LlmConfig.to_dict` gives it: never the API key.
    llm_config: Mapped[dict[str, Any] | None]
    thinking: Mapped[bool]
    budget: Mapped[int | None] = mapped_column(BigInteger)
    usage: Mapped[dict[str, Any]]
    context_usage: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(BigInteger)
    history_epoch: Mapped[int] = mapped_column(Integer)
    #: Rows of ``sessionhive_messages`` that belong to ``history_epoch`` (seq 0..count-1).
    message_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    #: :meth:`RunningTurn.to_dict` while a turn is in flight (the turn journal), else NULL. Schema 2.
    running_turn: Mapped[dict[str, Any] | None]
    #: Id of the last event the session emitted (event ids keep growing across restarts). Schema 3.
    event_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class MessageRow(Base):
    """Message ``seq`` (0-based) of a session's current history."""

    __tablename__ = "sessionhive_messages"

    session_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    #: :meth:`Message.to_dict`.
    payload: Mapped[dict[str, Any]]


class RunRow(Base):
    """One run a session keeps: :meth:`Run.to_dict` in ``record``, a few of its fields as columns."""

    __tablename__ = "sessionhive_runs"

    run_id: Mapped[str] = mapped_column(String(RUN_ID_MAX_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(ID_MAX_LENGTH), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(MAX_IDEMPOTENCY_KEY_LENGTH))
    status: Mapped[str] = mapped_column(String(16))
    #: :meth:`Run.to_dict` (a webhook's URL, never its secret).
    record: Mapped[dict[str, Any]]
    created_at: Mapped[float] = mapped_column(Double)


class WebhookOutboxRow(Base):
    """One webhook delivery: POST ``body`` to ``url`` until a 2xx answer (then ``delivered_at`` is set)."""

    __tablename__ = "sessionhive_webhook_outbox"

    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    #: The exact JSON text POSTed (and signed): the finished run and its ``delivery_id``.
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    #: POSTs started so far (a claimed attempt counts before its answer).
    attempts: Mapped[int] = mapped_column(Integer)
    #: When the next attempt is due (a claimed attempt pushes it one lease ahead).
    next_attempt_at: Mapped[float] = mapped_column(Double, index=True)
    delivered_at: Mapped[float | None] = mapped_column(Double)


class BlobRow(Base):
    """The bytes of a large content part, named by their sha256 (hex)."""

    __tablename__ = "sessionhive_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)


class MetaRow(Base):
    """A key/value fact about the database itself (``schema_version``)."""

    __tablename__ = "sessionhive_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# The Core tables the store's bulk statements run against.
SESSIONS: Table = Base.metadata.tables[SessionRow.__tablename__]
MESSAGES: Table = Base.metadata.tables[MessageRow.__tablename__]
RUNS: Table = Base.metadata.tables[RunRow.__tablename__]
META: Table = Base.metadata.tables[MetaRow.__tablename__]
WEBHOOK_OUTBOX: Table = Base.metadata.tables[WebhookOutboxRow.__tablename__]
BLOBS: Table = Base.metadata.tables[BlobRow.__tablename__]


def ensure_schema(conn: Connection, store_name: str) -> int:
    """Create missing tables and record the schema version, inside ``conn``'s transaction.

    Returns the schema version the database is at afterwards. Raises
    :class:`StoreError` when the database was written by a newer sessionhive
    (whose layout this code cannot know), or holds an unreadable version.
    The version is checked *before* any table is created, so that an old
    sessionhive never touches a newer database.
    """
    stored: int | None = None
    if inspect(conn).has_table(META.name):
        raw = conn.execute(select(META.c.value).where(META.c.key == SCHEMA_VERSION_KEY)).scalar_one_or_none()
        if raw is not None:
            try:
                stored = int(raw)
            except ValueError:
                raise StoreError(
                    f"store {store_name} records an unreadable schema version {raw!r} in {META.name}; "
                    "it was not written by sessionhive, or was damaged"
                ) from None
    if stored is not None and stored > SCHEMA_VERSION:
        raise StoreError(
            f"store {store_name} was written by a newer sessionhive "
            f"(schema {stored} > {SCHEMA_VERSION}); upgrade sessionhive to open it"
        )
    Base.metadata.create_all(conn, checkfirst=True)
    if stored is None:
        conn.execute(META.insert().values(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION)))
    elif stored < SCHEMA_VERSION:
        _migrate(conn, stored)
        conn.execute(META.update().where(META.c.key == SCHEMA_VERSION_KEY).values(value=str(SCHEMA_VERSION)))
    return SCHEMA_VERSION


def _migrate(conn: Connection, stored: int) -> None:
    """Bring a database at schema ``stored`` to :data:`SCHEMA_VERSION`, one step at a time.

    Runs in the opening transaction (PostgreSQL runs DDL transactionally;
    SQLite's ``ALTER TABLE ADD COLUMN`` too), after ``create_all`` has made
    any missing table in the current layout.
    """
    if stored < 2:
        # Schema 2: the turn journal's in-flight turn. Added as a nullable column, so every
        # existing row reads as "no turn running". A table create_all just made has it already.
        columns = {column["name"] for column in inspect(conn).get_columns(SESSIONS.name)}
        if "running_turn" not in columns:
            column_type = SESSIONS.c.running_turn.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {SESSIONS.name} ADD COLUMN running_turn {column_type}"))
    if stored < 3:
        # Schema 3: runs (their table is new, create_all made it) and the session's last event id,
        # 0 for every existing row: its events start over at 1, as a session of schema 2 numbered none.
        columns = {column["name"] for column in inspect(conn).get_columns(SESSIONS.name)}
        if "event_seq" not in columns:
            column_type = SESSIONS.c.event_seq.type.compile(dialect=conn.dialect)
            conn.execute(
                text(f"ALTER TABLE {SESSIONS.name} ADD COLUMN event_seq {column_type} NOT NULL DEFAULT 0")
            )
    # Schema 4: content parts. Their blobs' table is new (create_all made it); messages of
    # schema 3 hold no parts, so every stored row reads as it did.
