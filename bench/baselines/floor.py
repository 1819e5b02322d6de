"""The floor: the least a Python process can do for the load test's workload, with the same durability.

No framework, no actors, no locks: one asyncio program holding a dict of
sessions (id -> list of messages), driving the *same* scripted model
(:class:`sessionhive.ScriptedLlm`) and the *same* tool
(:class:`sessionhive.ToolExecutor`'s ``list_dir``, with its argument check,
workspace confinement and thread pool) as sessionhive does. A turn appends
the prompt, asks the model, runs the calls it asks for, asks again, and
appends the answer. Durability is the same as sessionhive's default
(``durability="batched"``): each turn's new messages go to a writer thread
that appends them to SQLite in batched transactions (one JSON row per
message), and the run ends only once everything is committed.

It is not a product: no validation of calls, no confirmation, no events,
no cancellation, no crash recovery, no metrics. It is what
``bench/bench_runtime.py`` compares sessionhive with, to show what the
runtime costs on top of the work itself.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sessionhive import Message, ScriptedLlm, ToolExecutor
from sessionhive.llm import LlmRequest

__all__ = ["FloorRun", "run_floor"]

_DONE = object()


@dataclass
class FloorRun:
    turns: int = 0
    seconds: float = 0.0
    messages: dict[str, list[Message]] = field(default_factory=dict)

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.seconds if self.seconds else 0.0


def _writer(db_path: Path, inbox: queue.SimpleQueue[Any], batch_size: int, flush_interval: float) -> None:
    """Append message rows in batched transactions until told to stop."""
    connection = sqlite3.connect(db_path)
    connection.execute("pragma journal_mode=wal")
    connection.execute("pragma synchronous=normal")
    connection.execute("create table if not exists messages (session_id text, seq integer, body text)")
    pending: list[tuple[str, int, str]] = []
    deadline = time.monotonic() + flush_interval
    finished = False
    while not finished:
        try:
            item = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            item = None
        if item is _DONE:
            finished = True
        elif item is not None:
            pending.extend(item)
        if pending and (finished or len(pending) >= batch_size or time.monotonic() >= deadline):
            with connection:
                connection.executemany("insert into messages values (?, ?, ?)", pending)
            pending.clear()
        if time.monotonic() >= deadline:
            deadline = time.monotonic() + flush_interval
    connection.close()


async def _turn(
    llm: ScriptedLlm,
    tools: ToolExecutor,
    session: list[Message],
    session_id: str,
    prompt: str,
    writes: queue.SimpleQueue[Any],
) -> None:
    start = len(session)
    session.append(Message.user(prompt))
    definitions = tuple(tools.definitions())
    while True:
        response = await llm.complete(LlmRequest(session_id, None, tuple(session), definitions))
        calls = tuple(replace(call, id=call.id or f"call_{n}") for n, call in enumerate(response.tool_calls))
        session.append(Message.assistant(response.text, calls))
        if not calls:
            break
        for call in calls:
            result = await tools.execute(call.name, call.arguments, session_id=session_id)
            session.append(Message.tool(call.id, result.output, is_error=result.is_error))
    encoded = json.JSONEncoder(separators=(",", ":")).encode
    writes.put([(session_id, seq, encoded(m.to_dict())) for seq, m in enumerate(session[start:], start)])


async def run_floor(
    sessions: int,
    turns: int,
    workspace: Path,
    db_path: Path,
    llm: ScriptedLlm,
    *,
    batch_size: int = 256,
    flush_interval: float = 0.05,
) -> FloorRun:
    """``sessions`` sessions, all in flight, ``turns`` turns each; returns once every row is committed."""
    writes: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = threading.Thread(target=_writer, args=(db_path, writes, batch_size, flush_interval), daemon=True)
    writer.start()
    tools = ToolExecutor(workspace)
    store: dict[str, list[Message]] = {f"s{n}": [] for n in range(sessions)}

    async def one_session(session_id: str) -> None:
        for turn in range(turns):
            await _turn(llm, tools, store[session_id], session_id, f"{session_id} turn {turn}", writes)

    started = time.perf_counter()
    await asyncio.gather(*(one_session(session_id) for session_id in store))
    writes.put(_DONE)
    await asyncio.to_thread(writer.join)
    seconds = time.perf_counter() - started
    tools.close()
    return FloorRun(turns=sessions * turns, seconds=seconds, messages=store)
