"""The store contract, run against real stores: SQLite files, PostgreSQL, JSON files, memory."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import URL, make_url

from sessionhive.model.errors import InvalidConfig, StoreError
from sessionhive.model.ids import MAX_ID_LENGTH
from sessionhive.model.messages import Message, RunningTurn, ToolCall
from sessionhive.persistence import (
    SCHEMA_VERSION,
    FileStore,
    MemoryStore,
    SessionStore,
    SqlStore,
    TransientStoreError,
    is_transient,
    open_store,
)
from sessionhive.persistence.schema import MESSAGES, META, SCHEMA_VERSION_KEY, SESSIONS
from sessionhive.persistence.stores._checkpoint import WalCheckpointer
from tests.persistence.conftest_persistence import (
    POSTGRES_URL,
    SECRET_KEY,
    StoreFactory,
    conversation,
    locked_error,
    make_snapshot,
)

pytest_plugins = ("tests.persistence.conftest_persistence",)


def count_message_inserts(store: SqlStore) -> list[int]:
    """Rows the database is asked to insert into the messages table, per batch (a live list)."""
    inserted: list[int] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SESSIONHIVE_MESSAGES"):
            # SQLite gets its rows in one multi-row INSERT (4 parameters a row); others by executemany.
            inserted.append(len(parameters) if executemany else len(parameters) // 4)

    return inserted


def message_rows(store: SqlStore, session_id: str | None = None) -> int:
    query = select(func.count()).select_from(MESSAGES)
    if session_id is not None:
        query = query.where(MESSAGES.c.session_id == session_id)
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# --------------------------------------------------------------------------- contract, every store


def test_full_snapshot_round_trips_through_a_reopened_store(stores: StoreFactory) -> None:
    snapshot = make_snapshot("alpha", version=4, messages=9, epoch=2, parent_id="root", state="paused")
    stores.open().write_batch([snapshot], [])

    loaded = stores.open().load("alpha")

    assert loaded == snapshot
    assert loaded is not None
    assert loaded.llm_config is not None and loaded.llm_config.api_key is None
    assert loaded.config.metadata == {"team": "search", "tags": ["a", "b"]}
    assert loaded.messages[1].tool_calls[0].arguments == {"path": "file_1.txt", "limit": 1}
    assert loaded.messages[2].tool_call_id == "call_m1" and loaded.messages[2].is_error


def test_a_running_turn_is_stored_with_its_journaled_messages_and_cleared_when_it_ends(
    stores: StoreFactory,
) -> None:
    store = stores.open()
    store.write_batch([make_snapshot("s", version=1, messages=3)], [])
    running = RunningTurn(
        turn_id=7, prompt="fix the build", started_at=1.5, first_message=3, running_call="c1"
    )
    call = ToolCall("bash", {"command": "make"}, "c1")
    journaled = (*conversation(3), Message.user("fix the build"), Message.assistant("on it", (call,)))
    store.write_batch([replace(make_snapshot("s", version=2, messages=journaled), running_turn=running)], [])

    loaded = stores.open().load("s")
    assert loaded is not None and loaded.running_turn == running
    assert loaded.messages == journaled

    finished = (*journaled, Message.tool("c1", "ok"), Message.assistant("built"))
    store.write_batch([make_snapshot("s", version=3, messages=finished)], [])
    loaded = stores.open().load("s")
    assert loaded is not None and loaded.running_turn is None and loaded.messages == finished


def test_unknown_session_loads_as_none_and_ids_are_listed_sorted(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch([make_snapshot(sid) for sid in ("b", "a/../x", "ünï", "A")], [])

    assert store.load("nope") is None
    assert store.list_ids() == sorted(["b", "a/../x", "ünï", "A"])


def test_the_longest_accepted_id_round_trips(stores: StoreFactory) -> None:
    longest = ("é" + "x" * 9) * (MAX_ID_LENGTH // 10) + "z" * (MAX_ID_LENGTH % 10)
    assert len(longest) == MAX_ID_LENGTH
    store = stores.open()
    store.write_batch([make_snapshot(longest, messages=2)], [])

    assert stores.open().load(longest) == make_snapshot(longest, messages=2)
    assert store.list_ids() == [longest]


def test_an_older_version_never_overwrites_a_newer_one(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch([make_snapshot("s", version=5, messages=6, prefix="new")], [])

    store.write_batch([make_snapshot("s", version=3, messages=2, prefix="old")], [])
    store.write_batch([make_snapshot("s", version=5, messages=1, prefix="same")], [])

    loaded = stores.open().load("s")
    assert loaded is not None
    assert loaded.version == 5
    assert [m.text for m in loaded.messages] == [m.text for m in conversation(6, prefix="new")]


def test_within_one_batch_the_newest_snapshot_of_a_session_wins(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch(
        [make_snapshot("s", version=7, messages=4), make_snapshot("s", version=6, messages=9)], []
    )

    loaded = store.load("s")
    assert loaded is not None and (loaded.version, len(loaded.messages)) == (7, 4)


def test_messages_grow_by_appending_and_stay_in_order(stores: StoreFactory) -> None:
    store = stores.open()
    history = conversation(30)
    for version, length in enumerate((1, 2, 5, 5, 17, 30), start=1):
        store.write_batch([make_snapshot("s", version=version, messages=history[:length])], [])

    loaded = stores.open().load("s")
    assert loaded is not None and loaded.messages == history


def test_a_new_history_epoch_replaces_the_messages(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch([make_snapshot("s", version=1, messages=50)], [])

    compacted = (Message.user("summary of 48 messages"), *conversation(2, prefix="kept"))
    store.write_batch([make_snapshot("s", version=2, messages=compacted, epoch=1)], [])

    loaded = stores.open().load("s")
    assert loaded is not None and loaded.messages == compacted and loaded.history_epoch == 1
    if stores.is_sql:
        assert message_rows(stores.open(), "s") == 3


def test_a_shorter_history_in_the_same_epoch_is_rewritten_not_appended(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch([make_snapshot("s", version=1, messages=10)], [])
    store.write_batch([make_snapshot("s", version=2, messages=conversation(4, prefix="z"))], [])

    loaded = store.load("s")
    assert loaded is not None and loaded.messages == conversation(4, prefix="z")


def test_delete_removes_the_session_and_its_messages(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch([make_snapshot("gone", messages=12), make_snapshot("kept")], [])

    store.write_batch([], ["gone", "never-existed"])

    reopened = stores.open()
    assert reopened.load("gone") is None
    assert reopened.list_ids() == ["kept"]
    if stores.is_sql:
        assert message_rows(reopened, "gone") == 0


def test_delete_and_resave_in_one_batch_writes_the_new_session_after_the_delete(stores: StoreFactory) -> None:
    store = stores.open()
    store.write_batch([make_snapshot("s", version=10, messages=20, prefix="old")], [])

    recreated = make_snapshot("s", version=1, messages=2, prefix="new")
    store.write_batch([recreated], ["s"])

    loaded = stores.open().load("s")
    assert loaded == recreated
    if stores.is_sql:
        assert message_rows(stores.open(), "s") == 2


def test_health_check_passes_on_a_working_store(stores: StoreFactory) -> None:
    store = stores.open()
    store.health_check()
    assert store.name


# --------------------------------------------------------------------------- SQL specifics


def test_a_turn_inserts_only_its_new_messages(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    inserted = count_message_inserts(store)
    history = conversation(202)

    store.write_batch([make_snapshot("s", version=1, messages=history[:200])], [])
    store.write_batch([make_snapshot("s", version=2, messages=history)], [])

    assert inserted == [200, 2]
    assert store.last_write_rows == {"sessions": 1, "messages": 2}
    assert message_rows(store, "s") == 202
    loaded = store.load("s")
    assert loaded is not None and loaded.messages == history


def test_a_batch_is_one_transaction_with_bulk_statements(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch([make_snapshot(f"s{i}", version=1, messages=3) for i in range(40)], [])
    statements: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.split()[0].upper()
        if verb in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            statements.append(verb)

    store.write_batch([make_snapshot(f"s{i}", version=2, messages=5) for i in range(40)], [])

    # One SELECT of the stored versions, one INSERT of 80 messages, one UPDATE of 40 sessions.
    assert sorted(statements) == ["INSERT", "SELECT", "UPDATE"]
    assert message_rows(store) == 200


def test_a_batch_larger_than_one_statement_stores_every_step(sql_stores: StoreFactory) -> None:
    # 300 sessions: their 1,200 new messages and 300 step updates take several multi-row
    # statements on SQLite; every session must read back whole, its running turn too.
    store = sql_stores.open()
    ids = [f"s{i:03d}" for i in range(300)]
    store.write_batch([make_snapshot(sid, version=1, messages=2) for sid in ids], [])
    running = RunningTurn(turn_id=1, prompt="go", started_at=2.0, first_message=2, running_call="c1")
    stepped = [replace(make_snapshot(sid, version=2, messages=6), running_turn=running) for sid in ids]
    store.write_batch(stepped, [])

    assert store.last_write_rows == {"sessions": 300, "messages": 1200}
    reopened = sql_stores.open()
    for sid in (ids[0], ids[149], ids[299]):
        loaded = reopened.load(sid)
        assert loaded is not None and loaded.version == 2 and loaded.running_turn == running
        assert loaded.messages == conversation(6)
    assert message_rows(store) == 300 * 6


def test_a_failing_batch_writes_nothing(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch([make_snapshot("ok", version=1, messages=2)], [])
    unserializable = make_snapshot("bad", metadata={"handle": object()})

    with pytest.raises(StoreError) as caught:
        store.write_batch([make_snapshot("ok", version=2, messages=4), unserializable], ["other"])

    assert not is_transient(caught.value)
    loaded = store.load("ok")
    assert loaded is not None and loaded.version == 1 and len(loaded.messages) == 2
    assert store.list_ids() == ["ok"]


def test_a_database_from_a_newer_sessionhive_is_refused(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    with store.engine.begin() as conn:
        conn.execute(
            META.update().where(META.c.key == SCHEMA_VERSION_KEY).values(value=str(SCHEMA_VERSION + 1))
        )

    with pytest.raises(
        StoreError, match=rf"newer sessionhive \(schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}\)"
    ):
        sql_stores.open()


def test_opening_records_the_schema_version_once(sql_stores: StoreFactory) -> None:
    sql_stores.open()
    store = sql_stores.open()
    with store.engine.connect() as conn:
        rows = conn.execute(select(META.c.key, META.c.value)).all()
    assert [tuple(r) for r in rows] == [(SCHEMA_VERSION_KEY, str(SCHEMA_VERSION))]


def test_a_schema_1_database_is_migrated_and_keeps_its_sessions(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch([make_snapshot("old", messages=4)], [])
    with store.engine.begin() as conn:  # what sessionhive 1 left: no running_turn column, version 1
        conn.execute(text(f"ALTER TABLE {SESSIONS.name} DROP COLUMN running_turn"))
        conn.execute(META.update().values(value="1"))
    store.close()

    migrated = sql_stores.open()
    assert migrated.load("old") == make_snapshot("old", messages=4)
    running = RunningTurn(1, "go", 2.0, first_message=4)
    migrated.write_batch([replace(make_snapshot("old", version=2, messages=5), running_turn=running)], [])
    loaded = sql_stores.open().load("old")
    assert loaded is not None and loaded.running_turn == running
    with migrated.engine.connect() as conn:
        assert conn.execute(select(META.c.value)).scalar_one() == str(SCHEMA_VERSION) == "4"


def test_load_refuses_a_history_damaged_outside_sessionhive(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch([make_snapshot("s", messages=5)], [])
    with store.engine.begin() as conn:
        conn.execute(MESSAGES.delete().where(MESSAGES.c.seq == 3))

    with pytest.raises(StoreError, match="4 of the 5 messages"):
        store.load("s")


def test_concurrent_writers_never_let_an_older_version_win(sql_stores: StoreFactory) -> None:
    """Two stores on one database (two Hives) race on the same sessions."""
    sessions = [f"race{i}" for i in range(8)]
    history = conversation(40)
    errors: list[BaseException] = []

    def writer(versions: range) -> None:
        try:
            store = sql_stores.open()
            for version in versions:
                batch = [make_snapshot(s, version=version, messages=history[:version]) for s in sessions]
                for _attempt in range(50):
                    try:
                        store.write_batch(batch, [])
                        break
                    except StoreError as exc:
                        if not is_transient(exc):
                            raise
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(range(start, 41, 2),)) for start in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    store = sql_stores.open()
    for session_id in sessions:
        loaded = store.load(session_id)
        assert loaded is not None and loaded.version == 40 and loaded.messages == history
        assert message_rows(store, session_id) == 40


def test_sqlite_commits_leave_the_checkpoint_to_a_thread_of_its_own(tmp_path: Path) -> None:
    # A commit that ran SQLite's automatic checkpoint synced the database file while every turn
    # waiting for that commit waited too; the store's checkpoint thread does it instead.
    path = tmp_path / "hive.db"
    store = SqlStore(f"sqlite:///{path}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
        store.write_batch([make_snapshot(f"s{i}", messages=20) for i in range(300)], [])
        assert Path(f"{path}-wal").stat().st_size > 0  # committed to the log, not yet to the file

        checkpointer = WalCheckpointer(str(path), interval=3600.0)
        reader = sqlite3.connect(path)
        try:
            busy, logged, copied = checkpointer.checkpoint(reader)
        finally:
            reader.close()
            checkpointer.close()
        assert (busy, copied) == (0, logged) and logged > 0
    finally:
        store.close()
    reopened = SqlStore(f"sqlite:///{path}")
    try:
        assert len(reopened.list_ids()) == 300
    finally:
        reopened.close()


def test_a_locked_sqlite_database_is_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SqlStore(f"sqlite:///{path}", busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientStoreError, match="locked"):
            store.write_batch([make_snapshot("s")], [])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    store.write_batch([make_snapshot("s")], [])  # the same batch, retried, succeeds
    assert store.load("s") == make_snapshot("s")
    store.close()


def test_a_broken_schema_is_a_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    store = SqlStore(f"sqlite:///{path}")
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE sessionhive_messages"))

    with pytest.raises(StoreError) as caught:
        store.write_batch([make_snapshot("s")], [])

    assert not is_transient(caught.value)
    assert "no such table" in str(caught.value)
    store.close()


def test_an_unreachable_server_is_a_transient_error_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        SqlStore("postgresql://app:hunter2@127.0.0.1:1/app")
    assert is_transient(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "postgresql:127.0.0.1/app" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (locked_error(), True),
        (ConnectionResetError("peer reset"), True),
        (OSError(28, "No space left on device"), True),
        (PermissionError(13, "Permission denied"), False),
        (ValueError("bad data"), False),
        (StoreError("permanent"), False),
        (TransientStoreError("retry me"), True),
    ],
)
def test_is_transient_tells_retryable_errors_apart(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


@pytest.mark.postgres
def test_postgres_store_name_has_host_and_database_never_the_password(postgres_url: str) -> None:
    url = make_url(postgres_url).set(password="hunter2")
    store = SqlStore(url)  # trust auth: the password is ignored by the server
    try:
        assert store.name == f"postgresql:{url.host}/{url.database}"
        assert "hunter2" not in store.name and "hunter2" not in repr(store)
    finally:
        store.close()


# --------------------------------------------------------------------------- API keys


def test_the_api_key_is_never_written(stores: StoreFactory, tmp_path: Path) -> None:
    store = stores.open()
    store.write_batch([make_snapshot(f"s{i}", version=1, messages=4) for i in range(3)], [])
    store.write_batch([make_snapshot("s0", version=2, messages=6)], [])
    stores.close_all()  # SQLite folds its WAL into the main file on close

    if stores.kind == "postgres":
        with stores.open().engine.connect() as conn:
            dumped = " ".join(
                str(row) for table in (SESSIONS, MESSAGES, META) for row in conn.execute(select(table)).all()
            )
        assert "gpt-4o-mini" in dumped
        assert SECRET_KEY not in dumped
    elif stores.kind == "memory":
        dumped = " ".join(str(stores.open().load(f"s{i}")) for i in range(3))
        assert SECRET_KEY not in dumped
    else:
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert SECRET_KEY.encode() not in path.read_bytes(), path
        assert any(b"gpt-4o-mini" in p.read_bytes() for p in files)


# --------------------------------------------------------------------------- FileStore specifics


def test_file_store_ids_survive_case_insensitive_and_long_names(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    long_id = "x" * 250
    ids = ["Abc", "abc", "a/b\\c:d", long_id, "😀 emoji"]
    store.write_batch([make_snapshot(i, messages=1) for i in ids], [])

    names = [p.name for p in (tmp_path / "s").iterdir()]
    assert len({n.lower() for n in names if not n.startswith(".")}) == len(ids)
    assert all(len(n) <= 255 for n in names)
    reopened = FileStore(tmp_path / "s")
    assert reopened.list_ids() == sorted(ids)
    assert reopened.load(long_id) == make_snapshot(long_id, messages=1)
    reopened.write_batch([], [long_id])
    assert long_id not in reopened.list_ids()


def test_file_store_skips_json_files_it_did_not_write_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "s"
    store = FileStore(directory)
    store.write_batch([make_snapshot("alpha", messages=2), make_snapshot("beta", parent_id="alpha")], [])
    (directory / "notes.json").write_text('{"todo": "back up the sessions"}')
    (directory / "data.json").write_text("[1, 2, 3]")  # a name that decodes as base32, but not ours
    (directory / "BACKUP.json").write_text("not even JSON")
    (directory / ("~" + "0" * 64 + ".json")).write_text('{"session_id": "elsewhere"}')

    with caplog.at_level("WARNING", logger="sessionhive.persistence"):
        reopened = FileStore(directory)
        assert reopened.list_ids() == ["alpha", "beta"]
        assert reopened.list_index() == [("alpha", None), ("beta", "alpha")]
        assert reopened.list_ids() == ["alpha", "beta"]
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 4, skipped
    assert any("notes.json" in m for m in skipped) and any("data.json" in m for m in skipped)
    assert reopened.load("alpha") == make_snapshot("alpha", messages=2)
    assert (directory / "notes.json").read_text() == '{"todo": "back up the sessions"}'


def test_file_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    for version in range(1, 4):
        store.write_batch([make_snapshot("s", version=version)], [])
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")) == []


def test_file_store_from_a_newer_sessionhive_is_refused(tmp_path: Path) -> None:
    FileStore(tmp_path / "s")
    (tmp_path / "s" / ".sessionhive-meta.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(StoreError, match="newer sessionhive"):
        FileStore(tmp_path / "s")


def test_file_store_health_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    (tmp_path / "s" / ".sessionhive-meta.json").unlink()
    (tmp_path / "s").rmdir()
    with pytest.raises(StoreError, match="does not exist"):
        store.health_check()


def test_memory_store_refuses_what_a_durable_store_could_not_hold() -> None:
    store = MemoryStore()
    with pytest.raises(StoreError):
        store.write_batch([make_snapshot("a"), make_snapshot("b", metadata={"x": object()})], [])
    assert store.list_ids() == []


# --------------------------------------------------------------------------- open_store


def test_open_store_accepts_every_documented_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opened: list[SessionStore] = []
    try:
        memory = open_store("memory")
        opened.append(memory)
        assert isinstance(memory, MemoryStore)
        assert open_store(memory) is memory

        relative = open_store("file:sessions")
        opened.append(relative)
        assert isinstance(relative, FileStore) and relative.name == f"file:{tmp_path / 'sessions'}"
        absolute = open_store(f"file://{tmp_path / 'abs'}")
        opened.append(absolute)
        assert absolute.name == f"file:{tmp_path / 'abs'}"

        default = open_store("sqlite:///sessionhive.db")
        opened.append(default)
        assert isinstance(default, SqlStore) and default.name == f"sqlite:{tmp_path / 'sessionhive.db'}"
        bare = open_store("data.sqlite3")
        opened.append(bare)
        assert bare.name == f"sqlite:{tmp_path / 'data.sqlite3'}"
        in_memory = open_store("sqlite://")
        opened.append(in_memory)
        in_memory.write_batch([make_snapshot("m")], [])
        assert in_memory.load("m") == make_snapshot("m")
    finally:
        for store in opened:
            store.close()


@pytest.mark.postgres
def test_open_store_reads_postgresql_urls_as_psycopg3(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    store = open_store(plain)
    try:
        assert isinstance(store, SqlStore)
        assert store.engine.url.drivername == "postgresql+psycopg"
        assert store.name == f"postgresql:{make_url(POSTGRES_URL).host}/{make_url(POSTGRES_URL).database}"
    finally:
        store.close()


@pytest.mark.parametrize("spec", ["", "redis", "sessions.json", "file:", "nosuchdb://host/db", 42])
def test_open_store_rejects_what_it_does_not_know_and_says_what_it_accepts(spec: Any) -> None:
    with pytest.raises(InvalidConfig) as caught:
        open_store(spec)
    message = str(caught.value)
    assert "memory" in message or "driver" in message or "file:DIR" in message


def test_open_store_creates_sqlite_under_an_explicit_url(tmp_path: Path) -> None:
    store = open_store(URL.create("sqlite", database=str(tmp_path / "u.db")).render_as_string())
    store.close()
    assert (tmp_path / "u.db").exists()


@pytest.mark.postgres
@pytest.mark.parametrize(("mine", "theirs"), [(2, 5), (7, 5)])
def test_postgres_two_hives_creating_one_session_at_once(postgres_url: str, mine: int, theirs: int) -> None:
    """Another Hive commits the same new session between our version check and our insert.

    Our write fails with a transient error; its retry sees the other row and
    keeps whichever version is newer. (Both write states of one session's
    lineage: the store guarantees the order of versions, it cannot merge two
    diverging histories.)
    """
    ours, other = SqlStore(postgres_url), SqlStore(postgres_url)
    history = conversation(10)
    interleaved: list[bool] = []

    @event.listens_for(ours.engine, "before_cursor_execute")
    def _interleave(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("INSERT INTO sessionhive_messages") and not interleaved:
            interleaved.append(True)
            other.write_batch([make_snapshot("s", version=theirs, messages=history[:theirs])], [])

    try:
        with pytest.raises(TransientStoreError, match="UniqueViolation"):
            ours.write_batch([make_snapshot("s", version=mine, messages=history[:mine])], [])
        ours.write_batch([make_snapshot("s", version=mine, messages=history[:mine])], [])  # the retry

        loaded = ours.load("s")
        newest = max(mine, theirs)
        assert loaded is not None and loaded.version == newest and loaded.messages == history[:newest]
        assert message_rows(ours, "s") == newest
    finally:
        ours.close()
        other.close()
