"""Persistence benchmark: batched PersistenceActor vs one transaction per snapshot, append vs rewrite.

Run from the repository root::

    python bench/bench_persistence.py                       # SQLite, plus PostgreSQL if reachable
    python bench/bench_persistence.py --sessions 200 --turns 20 --repeat 3 --postgres

What it measures, on one SQLite file (and one PostgreSQL schema):

(a) writer throughput: ``sessions`` sessions each run ``turns`` turns; a turn
    sends two snapshots (after the user message, after the reply), each
    one version newer with one more message. The same snapshot stream goes
    through (1) ``write_batch([snapshot])`` per snapshot, one transaction
    each, and (2) a PersistenceActor (coalescing + batching) followed by a
    Flush. Reported as snapshots/s and the ratio.
(b) append-only vs full rewrite of a 200-message history: time, rows and
    JSON bytes written per turn (a turn adds two messages).
(c) batch size sweep: 2,000 new sessions told at once; throughput and the
    longest single transaction (how long the actor's mailbox waits).
(d) flush interval sweep: snapshots paced at ``--rate`` per second; commit
    lag (send -> commit) percentiles and transactions per second.

Every figure is the median of ``--repeat`` runs. ``--json FILE`` also writes
the results, e.g. as a baseline under ``bench/baselines/``.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete, event

from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import ContextUsage, Message, ToolCall, Usage
from sessionhive.persistence import (
    Flush,
    PersistenceActor,
    Save,
    SessionSnapshot,
    SqlStore,
)
from sessionhive.persistence.schema import MESSAGES, SESSIONS
from sessionhive.runtime import ThreadBackend

POSTGRES_URL = os.environ.get(
    "SESSIONHIVE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_CONFIG = SessionConfig(system_prompt="You are a careful coding agent.", max_context_length=128_000)
_POLICY = ConfirmationPolicy()
_LLM = LlmConfig("openai", "gpt-4o-mini")


def message(seq: int) -> Message:
    """A realistic-sized message: prompts, replies with a tool call, tool output."""
    kind = seq % 4
    if kind == 0:
        return Message.user(f"turn {seq}: please update the parser to accept trailing commas " * 3)
    if kind == 1:
        call = ToolCall("read_file", {"path": f"src/module_{seq}.py"}, id=f"call_{seq}")
        return Message.assistant("Let me look at the parser first.", (call,))
    if kind == 2:
        return Message.tool(f"call_{seq - 1}", "def parse(tokens):\n    ...\n" * 20)
    return Message.assistant(f"Done: trailing commas are accepted now (step {seq}). " * 4)


def snapshot(session_id: str, version: int, messages: tuple[Message, ...], epoch: int = 0) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id,
        version=version,
        parent_id=None,
        state="active",
        config=_CONFIG,
        confirmation_policy=_POLICY,
        llm_config=_LLM,
        thinking=False,
        budget=None,
        usage=Usage(10 * version, 5 * version),
        context_usage=ContextUsage(100 * len(messages), 128_000),
        messages=messages,
        history_epoch=epoch,
        created_at=1.0,
        updated_at=1.0 + version,
    )


def turn_stream(sessions: int, turns: int, prefix: str) -> list[SessionSnapshot]:
    """Snapshots in arrival order: turn by turn, sessions interleaved, two snapshots per turn."""
    history = tuple(message(i) for i in range(2 * turns))
    stream = []
    for turn in range(turns):
        for s in range(sessions):
            for step in (1, 2):
                length = 2 * turn + step
                stream.append(snapshot(f"{prefix}{s}", length, history[:length]))
    return stream


class KeepOpen:
    """Lends a store to an actor without letting the actor close it; times every write."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.name = store.name
        self.write_times: list[float] = []
        self.commits: list[tuple[str, int, float]] = []  # (session, version, commit time), actor thread only

    @property
    def last_write_rows(self) -> Any:
        return self.store.last_write_rows

    def is_transient(self, exc: BaseException) -> bool:
        return self.store.is_transient(exc)

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        started = time.perf_counter()
        self.store.write_batch(snapshots, deletes)
        now = time.perf_counter()
        self.write_times.append(now - started)
        self.commits.extend((snap.session_id, snap.version, now) for snap in snapshots)

    def load(self, session_id: str) -> SessionSnapshot | None:
        return self.store.load(session_id)

    def list_ids(self) -> list[str]:
        return self.store.list_ids()

    def health_check(self) -> None:
        self.store.health_check()

    def close(self) -> None:
        pass


def clear(store: SqlStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(MESSAGES))
        conn.execute(delete(SESSIONS))


def run_actor(
    store: SqlStore,
    stream: Sequence[SessionSnapshot],
    *,
    batch_size: int,
    flush_interval: float,
    pace: float | None = None,
    lags: list[float] | None = None,
) -> tuple[float, KeepOpen]:
    """Tell every snapshot (``pace`` seconds apart if given), flush; return the elapsed seconds.

    With ``lags``, append each snapshot's commit lag: from its send to the
    commit of a write holding it or a newer version of its session.
    """
    lent = KeepOpen(store)
    backend = ThreadBackend()
    sent: list[tuple[str, int, float]] = []
    ref = backend.spawn(
        PersistenceActor, lent, batch_size=batch_size, flush_interval=flush_interval, metrics=HiveMetrics()
    )
    started = time.perf_counter()
    next_at = started
    for snap in stream:
        if pace is not None:
            next_at += pace
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent.append((snap.session_id, snap.version, time.perf_counter()))
        ref.tell(Save(snap))
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    ref.tell(Flush(done))
    done.result(timeout=600)
    elapsed = time.perf_counter() - started
    ref.stop(block=True, timeout=60)
    if lags is not None:
        # Per session, committed versions only grow with time: the first commit
        # whose version reaches the sent one is the one that made it durable.
        commits: dict[str, tuple[list[int], list[float]]] = {}
        for session_id, version, at in lent.commits:
            versions, times = commits.setdefault(session_id, ([], []))
            versions.append(version)
            times.append(at)
        for session_id, version, at in sent:
            versions, times = commits[session_id]
            lags.append(times[bisect.bisect_left(versions, version)] - at)
    return elapsed, lent


def run_naive(store: SqlStore, stream: Sequence[SessionSnapshot]) -> float:
    started = time.perf_counter()
    for snap in stream:
        store.write_batch([snap], [])
    return time.perf_counter() - started


def bench_throughput(store: SqlStore, args: argparse.Namespace) -> dict[str, float]:
    naive, batched = [], []
    transactions = 0
    for run in range(args.repeat):
        stream = turn_stream(args.sessions, args.turns, f"t{run}-")
        clear(store)
        naive.append(len(stream) / run_naive(store, stream))
        clear(store)
        elapsed, lent = run_actor(
            store, stream, batch_size=args.batch_size, flush_interval=args.flush_interval
        )
        batched.append(len(stream) / elapsed)
        transactions = len(lent.write_times)
    result = {
        "snapshots": args.sessions * args.turns * 2,
        "naive_snapshots_per_s": statistics.median(naive),
        "actor_snapshots_per_s": statistics.median(batched),
        "actor_transactions": transactions,
    }
    result["ratio"] = result["actor_snapshots_per_s"] / result["naive_snapshots_per_s"]
    return result


def bench_append(store: SqlStore, args: argparse.Namespace) -> dict[str, float]:
    """A 200-message history gains two messages per turn; append-only vs rewriting it each turn."""
    rows: list[int] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool) -> None:
        if statement.startswith("INSERT INTO sessionhive_messages"):
            rows.append(len(parameters) if executemany else 1)

    turns = 30
    history = tuple(message(i) for i in range(200 + 2 * turns))
    results: dict[str, float] = {}
    try:
        for mode in ("append", "rewrite"):
            per_turn: list[float] = []
            for run in range(args.repeat):
                clear(store)
                sid = f"hist-{mode}-{run}"
                store.write_batch([snapshot(sid, 1, history[:200])], [])
                rows.clear()
                payload = 0
                times = []
                for turn in range(1, turns + 1):
                    # A rewrite is what a new history epoch forces: delete every row, insert them again.
                    epoch = turn if mode == "rewrite" else 0
                    snap = snapshot(sid, turn + 1, history[: 200 + 2 * turn], epoch)
                    started = time.perf_counter()
                    store.write_batch([snap], [])
                    times.append(time.perf_counter() - started)
                    written = snap.messages if mode == "rewrite" else snap.messages[-2:]
                    payload += sum(len(json.dumps(m.to_dict())) for m in written)
                per_turn.append(statistics.median(times))
            results[f"{mode}_ms_per_turn"] = 1000 * statistics.median(per_turn)
            results[f"{mode}_rows_per_turn"] = sum(rows) / turns
            results[f"{mode}_bytes_per_turn"] = payload / turns
    finally:
        event.remove(store.engine, "before_cursor_execute", _count)
    results["speedup"] = results["rewrite_ms_per_turn"] / results["append_ms_per_turn"]
    return results


def bench_batch_sizes(store: SqlStore, args: argparse.Namespace) -> list[dict[str, float]]:
    history = tuple(message(i) for i in range(10))
    out = []
    for size in (1, 16, 64, 256, 1024):
        rates, longest = [], []
        for run in range(args.repeat):
            clear(store)
            stream = [snapshot(f"b{run}-{i}", 1, history) for i in range(2000)]
            elapsed, lent = run_actor(store, stream, batch_size=size, flush_interval=0.05)
            rates.append(len(stream) / elapsed)
            longest.append(max(lent.write_times))
        out.append(
            {
                "batch_size": size,
                "snapshots_per_s": statistics.median(rates),
                "longest_write_ms": 1000 * statistics.median(longest),
            }
        )
    return out


def bench_intervals(store: SqlStore, args: argparse.Namespace) -> list[dict[str, float]]:
    out = []
    count = int(args.rate * args.paced_seconds)
    for interval in (0.01, 0.05, 0.2):
        p50, p99, tps, cpu = [], [], [], []
        for run in range(args.repeat):
            clear(store)
            stream = turn_stream(200, max(1, count // 400), f"i{run}-")[:count]
            lags: list[float] = []
            cpu_started = time.process_time()
            elapsed, lent = run_actor(
                store,
                stream,
                batch_size=args.batch_size,
                flush_interval=interval,
                pace=1 / args.rate,
                lags=lags,
            )
            lags.sort()
            p50.append(lags[len(lags) // 2])
            p99.append(lags[int(len(lags) * 0.99)])
            tps.append(len(lent.write_times) / elapsed)
            cpu.append((time.process_time() - cpu_started) / elapsed)
        out.append(
            {
                "flush_interval_s": interval,
                "lag_p50_ms": 1000 * statistics.median(p50),
                "lag_p99_ms": 1000 * statistics.median(p99),
                "transactions_per_s": statistics.median(tps),
                "process_cpu_percent": 100 * statistics.median(cpu),
            }
        )
    return out


def postgres_schema_url() -> tuple[str, Callable[[], None]] | None:
    try:
        import psycopg
    except ImportError:
        return None
    plain = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    schema = f"sessionhive_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(plain, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        print(f"PostgreSQL not reachable at {POSTGRES_URL}: {str(exc).strip()}", file=sys.stderr)
        return None

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')

    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", drop


def run_all(label: str, store: SqlStore, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n=== {label}: {store.name}")
    results: dict[str, Any] = {}

    t = results["throughput"] = bench_throughput(store, args)
    print(
        f"(a) {t['snapshots']:.0f} snapshots ({args.sessions} sessions x {args.turns} turns x 2), "
        f"batch_size={args.batch_size}, flush_interval={args.flush_interval}s"
    )
    print(f"    one transaction per snapshot : {t['naive_snapshots_per_s']:10.0f} snapshots/s")
    print(
        f"    PersistenceActor             : {t['actor_snapshots_per_s']:10.0f} snapshots/s "
        f"({t['actor_transactions']:.0f} transactions)   ratio x{t['ratio']:.1f}"
    )

    a = results["append"] = bench_append(store, args)
    print("(b) 200-message history, +2 messages per turn")
    for mode in ("append", "rewrite"):
        print(
            f"    {mode:7}: {a[f'{mode}_ms_per_turn']:7.2f} ms/turn  "
            f"{a[f'{mode}_rows_per_turn']:6.0f} rows/turn  {a[f'{mode}_bytes_per_turn'] / 1024:8.1f} KiB/turn"
        )
    print(f"    append-only is x{a['speedup']:.1f} faster")

    results["batch_sizes"] = bench_batch_sizes(store, args)
    print("(c) 2000 new sessions (10 messages each) told at once")
    for row in results["batch_sizes"]:
        print(
            f"    batch_size {row['batch_size']:5.0f}: {row['snapshots_per_s']:8.0f} snapshots/s, "
            f"longest transaction {row['longest_write_ms']:7.1f} ms"
        )

    results["intervals"] = bench_intervals(store, args)
    print(
        f"(d) {args.rate:.0f} snapshots/s paced over 200 sessions for {args.paced_seconds}s "
        f"(one transaction per snapshot would need {args.rate:.0f} transactions/s; "
        f"it managed {t['naive_snapshots_per_s']:.0f}/s in (a))"
    )
    for row in results["intervals"]:
        print(
            f"    flush_interval {row['flush_interval_s']:5.2f}s: "
            f"commit lag p50 {row['lag_p50_ms']:6.1f} ms, "
            f"p99 {row['lag_p99_ms']:6.1f} ms, {row['transactions_per_s']:5.1f} transactions/s, "
            f"process CPU {row['process_cpu_percent']:4.0f}%"
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--flush-interval", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=2000.0, help="snapshots/s of the paced run (d)")
    parser.add_argument("--paced-seconds", type=float, default=1.5)
    parser.add_argument("--postgres", action="store_true", help="fail if PostgreSQL is not reachable")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            results["sqlite"] = run_all("SQLite (WAL, synchronous=NORMAL)", store, args)
        finally:
            store.close()

    if not args.no_postgres:
        found = postgres_schema_url()
        if found is None and args.postgres:
            return 2
        if found is not None:
            url, drop = found
            store = SqlStore(url)
            try:
                results["postgres"] = run_all("PostgreSQL (psycopg 3)", store, args)
            finally:
                store.close()
                drop()

    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
