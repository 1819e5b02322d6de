"""Content parts in stores: they survive a reopen, and large bytes are stored once, as blobs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text

from sessionhive import FilePart, ImagePart, TextPart
from sessionhive.model.messages import Message
from sessionhive.persistence import SCHEMA_VERSION
from sessionhive.persistence.blobs import BLOB_THRESHOLD
from sessionhive.persistence.schema import BLOBS, MESSAGES, META
from tests.persistence.conftest_persistence import StoreFactory, conversation, make_snapshot

pytest_plugins = ("tests.persistence.conftest_persistence",)

# Not valid PNG/PDF files, but bytes no encoding step may change (every byte value, twice over).
BIG_IMAGE = bytes(range(256)) * (2 * BLOB_THRESHOLD // 256)
SMALL_IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


def with_parts(prefix: str = "m") -> tuple[Message, ...]:
    """A conversation whose prompt carries every kind of part, and a tool result with an image."""
    prompt = Message.user(
        "",
        (
            TextPart("What do these show?"),
            ImagePart(BIG_IMAGE, "image/png"),
            ImagePart(SMALL_IMAGE, "image/png"),
            ImagePart(url="https://example.com/cat.jpg"),
            FilePart(PDF, "application/pdf", name="report.pdf"),
        ),
    )
    shot = Message.tool("call_m1", "[image result (image/png)]", parts=(ImagePart(BIG_IMAGE, "image/png"),))
    history = conversation(3, prefix=prefix)
    return (prompt, history[1], shot)


def test_parts_survive_reopening_the_store(stores: StoreFactory) -> None:
    snapshot = make_snapshot("s", messages=with_parts())
    stores.open().write_batch([snapshot], [])

    loaded = stores.open().load("s")

    assert loaded == snapshot
    assert loaded is not None
    prompt = loaded.messages[0]
    assert prompt.text == "What do these show?"
    assert [type(p).__name__ for p in prompt.parts] == [
        "TextPart",
        "ImagePart",
        "ImagePart",
        "ImagePart",
        "FilePart",
    ]
    assert prompt.parts[1] == ImagePart(BIG_IMAGE, "image/png")
    assert loaded.messages[2].parts == (ImagePart(BIG_IMAGE, "image/png"),)


def count_blob_inserts(engine: Any) -> list[int]:
    inserts = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SESSIONHIVE_BLOBS"):
            inserts[0] += 1

    return inserts


def test_a_blob_is_stored_once_however_often_the_session_is_saved(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    inserts = count_blob_inserts(store.engine)
    history = with_parts()
    for version in range(1, 21):  # the session grows by a message with every save
        store.write_batch([make_snapshot("s", version, messages=history + conversation(version))], [])
    # Another session with the same image shares its blob.
    store.write_batch([make_snapshot("t", messages=with_parts(prefix="t"))], [])

    assert inserts[0] == 1  # one statement, in the first save: the big image and the PDF
    with store.engine.connect() as conn:
        blobs = conn.execute(select(BLOBS.c.sha256, BLOBS.c.size)).all()
        payloads = conn.execute(select(MESSAGES.c.payload).where(MESSAGES.c.seq == 0)).scalars().all()
    assert sorted(size for _, size in blobs) == sorted([len(BIG_IMAGE), len(PDF)])
    big = base64.b64encode(BIG_IMAGE).decode()
    for payload in payloads:  # the prompts of both sessions name the blobs instead of holding them
        stored = json.dumps(payload)
        assert big not in stored and all(sha in stored for sha, _ in blobs)
        assert base64.b64encode(SMALL_IMAGE).decode() in stored  # below the threshold: inline
    reloaded = sql_stores.open().load("s")
    assert reloaded is not None and reloaded.messages[:3] == history


def test_a_file_store_writes_each_blob_once_and_keeps_snapshots_small(tmp_path: Path) -> None:
    factory = StoreFactory("file", str(tmp_path / "sessions"))
    store = factory.open()
    history = with_parts()
    sizes = []
    for version in range(1, 11):
        store.write_batch([make_snapshot("s", version, messages=history)], [])
        (session_file,) = (tmp_path / "sessions").glob("[!.]*.json")
        sizes.append(session_file.stat().st_size)
    blobs = sorted((tmp_path / "sessions" / ".blobs").iterdir())

    # The big image and the PDF (both past the threshold), each once.
    assert sorted(path.stat().st_size for path in blobs) == sorted([len(BIG_IMAGE), len(PDF)])
    assert max(sizes) < len(BIG_IMAGE)  # the snapshot file names the blobs, it does not hold them
    assert factory.open().load("s") == make_snapshot("s", 10, messages=history)
    assert factory.open().list_ids() == ["s"]  # the blob folder is no session
    factory.close_all()


def test_a_schema_3_database_gains_the_blob_table(sql_stores: StoreFactory) -> None:
    store = sql_stores.open()
    store.write_batch([make_snapshot("old", messages=4)], [])
    with store.engine.begin() as conn:  # what sessionhive 3 left: no blobs table, version 3
        conn.execute(text(f"DROP TABLE {BLOBS.name}"))
        conn.execute(META.update().values(value="3"))
    store.close()

    migrated = sql_stores.open()
    assert migrated.load("old") == make_snapshot("old", messages=4)
    migrated.write_batch([make_snapshot("old", version=2, messages=with_parts())], [])
    assert sql_stores.open().load("old") == make_snapshot("old", version=2, messages=with_parts())
    with migrated.engine.connect() as conn:
        assert conn.execute(select(META.c.value)).scalar_one() == str(SCHEMA_VERSION) == "4"
        assert conn.execute(select(func.count()).select_from(BLOBS)).scalar_one() == 2
