"""The plain floor: the benchmark's workload by a short asyncio program with nothing of sessionhive in it.

It imports nothing from sessionhive, so nothing of ours can flatter or slow
it: a session is a list of message dicts, the model is a plain coroutine
answering the benchmark's script (two ``list_dir`` calls, then "done"), and
``list_dir`` is an ``os.scandir`` of the session's workspace, inline on the
event loop. A turn appends the prompt, asks the model, runs the calls it
asks for, asks again and appends the answer; its new messages become JSON
rows (one per message) that one writer thread appends to SQLite with
``sqlite3`` (WAL, ``synchronous=NORMAL``, as sessionhive's SQLite store).

Two modes, the two promises a store can make:

- ``"durable"``: a turn is acknowledged only once its rows are committed.
  The writer commits by group commit: as soon as one commit ends it takes
  everything that arrived meanwhile into the next transaction, so the
  sessions in flight share commits and nobody waits for a timer.
- ``"batched"``: a turn is acknowledged at once; the writer commits every
  256 rows or 50 ms after the first row waiting, whichever comes first.

Either way the run ends only once every row is committed. It is not a
product (no validation, confirmation, events, cancellation, recovery or
metrics): it is the least Python does for this work, which
``bench/bench_runtime.py`` compares sessionhive with.

    .venv/bin/python bench/baselines/plain_floor.py [--mode durable|batched] [--sessions 1000] [--turns 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BATCH_ROWS",
    "FLUSH_INTERVAL",
    "MODES",
    "PlainFloorRun",
    "RowWriter",
    "run_plain_floor",
    "run_turn",
]

#: The floor's two acknowledgement rules.
MODES = ("durable", "batched")
#: Batched mode: commit once this many rows wait...
BATCH_ROWS = 256
#: ...or once the first waiting row has waited this long (seconds).
FLUSH_INTERVAL = 0.05

Row = tuple[str, int, str]
MessageDict = dict[str, Any]
_STOP = None


@dataclass(frozen=True)
class PlainFloorRun:
    """What one run did: turns acknowledged, rows found committed at the end, seconds, commits."""

    mode: str
    turns: int
    rows_committed: int
    seconds: float
    commits: int

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0


async def scripted_model(messages: list[MessageDict]) -> MessageDict:
    """The benchmark's script: two ``list_dir`` calls after a prompt, "done" after their results."""
    if messages[-1]["role"] == "user":
        calls = [{"id": f"call_{n}", "name": "list_dir", "arguments": {"path": "."}} for n in range(2)]
        return {"role": "assistant", "content": "", "tool_calls": calls}
    return {"role": "assistant", "content": "done"}


def list_dir(workspace: str, path: str) -> tuple[str, bool]:
    """The entries of ``path`` inside ``workspace`` (directories end with "/"), or an error."""
    target = os.path.realpath(os.path.join(workspace, path))
    if target != workspace and not target.startswith(workspace + os.sep):
        return f"{path!r} is outside the workspace", True
    try:
        with os.scandir(target) as entries:
            names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in entries)
    except OSError as exc:
        return str(exc), True
    return "\n".join(names), False


class RowWriter:
    """One thread appending rows to SQLite; durable mode answers each turn once its rows are committed."""

    def __init__(self, db_path: Path, mode: str, loop: asyncio.AbstractEventLoop) -> None:
        self._db_path = db_path
        self._mode = mode
        self._loop = loop
        # (rows, the turn's commit future or None); _STOP ends the thread once all is committed.
        self._inbox: queue.SimpleQueue[tuple[list[Row], asyncio.Future[None] | None] | None] = (
            queue.SimpleQueue()
        )
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="plain-floor-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[Row], committed: asyncio.Future[None] | None) -> None:
        self._inbox.put((rows, committed))

    async def close(self) -> None:
        self._inbox.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        connection = sqlite3.connect(self._db_path)
        connection.execute("pragma journal_mode=wal")
        connection.execute("pragma synchronous=normal")
        connection.execute("create table messages (session_id text, seq integer, body text)")
        try:
            if self._mode == "durable":
                self._group_commit(connection)
            else:
                self._batched(connection)
        finally:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, rows: list[Row]) -> None:
        with connection:
            connection.executemany("insert into messages values (?, ?, ?)", rows)
        self.commits += 1

    def _group_commit(self, connection: sqlite3.Connection) -> None:
        while True:
            first = self._inbox.get()  # idle: wait for work, no timer
            items = [first]
            while True:  # and everything that arrived while the last commit ran
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            stopping = _STOP in items
            work = [item for item in items if item is not _STOP]
            rows = [row for item_rows, _future in work for row in item_rows]
            if rows:
                self._commit(connection, rows)
            waiting = [future for _rows, future in work if future is not None]
            if waiting:
                self._loop.call_soon_threadsafe(_acknowledge, waiting)
            if stopping:
                return

    def _batched(self, connection: sqlite3.Connection) -> None:
        pending: list[Row] = []
        deadline = float("inf")  # of the oldest pending row
        while True:
            timeout = None if not pending else max(0.0, deadline - time.monotonic())
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = ([], None)
            if item is _STOP:
                if pending:
                    self._commit(connection, pending)
                return
            if item[0] and not pending:
                deadline = time.monotonic() + FLUSH_INTERVAL
            pending.extend(item[0])
            if pending and (len(pending) >= BATCH_ROWS or time.monotonic() >= deadline):
                self._commit(connection, pending)
                pending = []


def _acknowledge(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


async def run_turn(
    session: list[MessageDict], session_id: str, prompt: str, workspace: str, writer: RowWriter, mode: str
) -> None:
    start = len(session)
    session.append({"role": "user", "content": prompt})
    while True:
        answer = await scripted_model(session)
        session.append(answer)
        calls = answer.get("tool_calls")
        if not calls:
            break
        for call in calls:
            output, is_error = list_dir(workspace, call["arguments"]["path"])
            session.append(
                {"role": "tool", "tool_call_id": call["id"], "content": output, "is_error": is_error}
            )
    encode = json.JSONEncoder(separators=(",", ":")).encode
    rows = [(session_id, seq, encode(message)) for seq, message in enumerate(session[start:], start)]
    if mode == "durable":
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writer.submit(rows, committed)
        await committed  # acknowledged only once committed
    else:
        writer.submit(rows, None)


async def run_plain_floor(
    sessions: int, turns: int, workspace: Path, db_path: Path, mode: str = "durable"
) -> PlainFloorRun:
    """``sessions`` sessions, all in flight, ``turns`` turns each; returns once every row is committed."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    writer = RowWriter(db_path, mode, asyncio.get_running_loop())
    root = os.path.realpath(workspace)
    store: dict[str, list[MessageDict]] = {f"s{n}": [] for n in range(sessions)}

    async def one_session(session_id: str) -> None:
        for turn in range(turns):
            await run_turn(store[session_id], session_id, f"{session_id} turn {turn}", root, writer, mode)

    started = time.perf_counter()
    await asyncio.gather(*(one_session(session_id) for session_id in store))
    await writer.close()
    seconds = time.perf_counter() - started
    with sqlite3.connect(db_path) as check:
        (rows,) = check.execute("select count(*) from messages").fetchone()
    return PlainFloorRun(mode, sessions * turns, int(rows), seconds, writer.commits)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=MODES, default="durable")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        (workspace / "a.txt").write_text("x")
        (workspace / "src").mkdir()
        run = asyncio.run(
            run_plain_floor(args.sessions, args.turns, workspace, Path(tmp) / "floor.db", args.mode)
        )
    print(
        f"plain floor, {run.mode}: {run.turns_per_s:.0f} turns/s "
        f"({run.turns} turns, {run.rows_committed} rows in {run.commits} commits, {run.seconds:.2f} s)"
    )


if __name__ == "__main__":
    main()
