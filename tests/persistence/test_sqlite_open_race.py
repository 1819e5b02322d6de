"""Hives starting at once on one fresh SQLite file: every store opens (none gets "database is locked")."""

from __future__ import annotations

import threading
from pathlib import Path

from sessionhive.persistence.stores.sql import SqlStore

ROUNDS = 30
OPENERS = 3


def test_stores_opening_one_fresh_sqlite_file_at_once_all_open(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'fresh{round_}.db'}"
        start = threading.Barrier(OPENERS)
        opened: list[SqlStore] = []

        def open_store(
            url: str = url, start: threading.Barrier = start, opened: list[SqlStore] = opened
        ) -> None:
            start.wait()
            try:
                opened.append(SqlStore(url))
            except BaseException as exc:  # the assertion below names it
                failures.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(OPENERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for store in opened:
            assert store.engine.dialect.name == "sqlite"
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            store.close()
    assert failures == []
