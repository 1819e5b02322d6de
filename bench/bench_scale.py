"""How many sessions one process holds: live sessions, memory per idle session, activation from a big store.

Run from the repository root::

    python bench/bench_scale.py                          # 10,000 live, 100,000 stored, both backends
    python bench/bench_scale.py --sessions 2000 --stored 20000 --repeat 1 --backend threads

Two measurements, each in a fresh child process per backend and repetition:

1. **Live sessions** (``--sessions``): start a Hive on a fresh SQLite file,
   create N sessions (their actors stay live: no idle timeout), check that
   ``live_session_count()`` is N and that a sample of them answers
   ``history()``, and report the resident-set growth per session
   (``/proc/self/status`` VmRSS after a ``gc.collect()``, before and after),
   the creation rate, and the ``history()`` latency of idle live sessions.
2. **Activation from a big store** (``--stored``): the store is filled once
   with ``--stored`` sessions of ``--messages`` messages each, written
   straight through :meth:`SqlStore.write_batch` in large batches. A Hive
   started on it (the start time is reported: it reads the session index)
   answers ``history(id)`` for ``--samples`` random stored sessions that are
   not live, one after another: each call loads the session from SQLite and
   starts its actor. p50/p99 of those calls.

Backends: ``threads`` (one OS thread per actor) and ``pooled`` (a fixed pool
of dispatcher threads), ``--backend both`` by default. Figures are medians of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table, proc_status_bytes, rss_bytes, run_child
from sessionhive import AsyncHive, Hive, SessionConfig
from sessionhive.loadtest import LatencyStats
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.messages import ContextUsage, Message, ToolCall, Usage
from sessionhive.persistence import SessionSnapshot, SqlStore

SCRIPT = Path(__file__).resolve()
BACKENDS = ("asyncio", "threads", "pooled")


def _pooled_available() -> str | None:
    """None if the pooled backend can run here, else why not."""
    try:
        from sessionhive.runtime import PooledBackend

        PooledBackend(threads=1).shutdown()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------- children


def child_live(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-live-"))
    try:

        async def main() -> dict[str, Any]:
            hive = await AsyncHive.start(
                store=f"sqlite:///{root / 'live.db'}", workspace=root, actor_backend=args.backend
            )
            try:
                gc.collect()
                before = rss_bytes()
                ids = [f"live-{i:06d}" for i in range(args.sessions)]
                started = time.perf_counter()
                for start in range(0, len(ids), 500):
                    await asyncio.gather(*(hive.create_session(s) for s in ids[start : start + 500]))
                create_seconds = time.perf_counter() - started
                await hive.flush()
                gc.collect()
                after = rss_bytes()
                live = await hive.live_session_count()
                sample = random.Random(1).sample(ids, min(1000, len(ids)))
                seconds = []
                for session_id in sample:
                    asked = time.perf_counter()
                    await hive.history(session_id)
                    seconds.append(time.perf_counter() - asked)
                stats = LatencyStats.of(seconds)
                return {
                    "sessions": args.sessions,
                    "live": live,
                    "rss_before_mb": before / 2**20,
                    "rss_after_mb": after / 2**20,
                    "kib_per_session": (after - before) / 1024 / args.sessions,
                    "creates_per_s": args.sessions / create_seconds,
                    "history_p50_ms": stats.p50_ms,
                    "history_p99_ms": stats.p99_ms,
                    "threads": _thread_count(),
                }
            finally:
                await hive.stop()

        return asyncio.run(main())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _thread_count() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _message(seq: int) -> Message:
    kind = seq % 4
    if kind == 0:
        return Message.user(f"step {seq}: please update the parser to accept trailing commas")
    if kind == 1:
        return Message.assistant(
            "Let me look first.", (ToolCall("read_file", {"path": f"src/m{seq}.py"}, f"c{seq}"),)
        )
    if kind == 2:
        return Message.tool(f"c{seq - 1}", "def parse(tokens):\n    ...\n" * 4)
    return Message.assistant(f"Done with step {seq}.")


def child_fill(args: argparse.Namespace) -> dict[str, Any]:
    """Write ``--stored`` sessions into ``--db`` with large write_batch calls."""
    store = SqlStore(f"sqlite:///{args.db}")
    messages = tuple(_message(i) for i in range(args.messages))
    config, policy = SessionConfig(), ConfirmationPolicy()
    started = time.perf_counter()
    batch: list[SessionSnapshot] = []
    for i in range(args.stored):
        batch.append(
            SessionSnapshot(
                session_id=f"stored-{i:07d}",
                version=1,
                parent_id=None,
                state="active",
                config=config,
                confirmation_policy=policy,
                llm_config=None,
                thinking=False,
                budget=None,
                usage=Usage(100, 50),
                context_usage=ContextUsage(150, 200_000),
                messages=messages,
                history_epoch=0,
                created_at=1.0,
                updated_at=1.0,
            )
        )
        if len(batch) == 2000:
            store.write_batch(batch, [])
            batch.clear()
    if batch:
        store.write_batch(batch, [])
    store.close()
    seconds = time.perf_counter() - started
    return {"stored": args.stored, "seconds": seconds, "sessions_per_s": args.stored / seconds}


def child_activate(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    with Hive.start(
        store=f"sqlite:///{args.db}", workspace=Path(args.db).parent, actor_backend=args.backend
    ) as hive:
        start_seconds = time.perf_counter() - started
        count = hive.session_count()
        ids = random.Random(args.seed).sample(range(args.stored), args.samples)
        seconds = []
        for i in ids:
            session_id = f"stored-{i:07d}"
            asked = time.perf_counter()
            history = hive.history(session_id)
            seconds.append(time.perf_counter() - asked)
            assert len(history) == args.messages, (session_id, len(history))
        # A second call to an activated session: the cost of a live one, for comparison.
        live = []
        for i in ids[:200]:
            asked = time.perf_counter()
            hive.history(f"stored-{i:07d}")
            live.append(time.perf_counter() - asked)
        stats, live_stats = LatencyStats.of(seconds), LatencyStats.of(live)
        return {
            "stored": count,
            "start_seconds": start_seconds,
            "activation_p50_ms": stats.p50_ms,
            "activation_p99_ms": stats.p99_ms,
            "activation_max_ms": stats.max_ms,
            "live_history_p50_ms": live_stats.p50_ms,
            "peak_rss_mb": proc_status_bytes("VmHWM") / 2**20,
        }


CHILDREN = {"live": child_live, "fill": child_fill, "activate": child_activate}


# --------------------------------------------------------------------------- parent


def _run(mode: str, **params: Any) -> dict[str, Any]:
    argv = ["--child", mode]
    for key, value in params.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return run_child(SCRIPT, argv, timeout=1800)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="live sessions to create")
    parser.add_argument("--stored", type=int, default=100_000, help="sessions in the big store")
    parser.add_argument("--messages", type=int, default=20, help="messages of each stored session")
    parser.add_argument("--samples", type=int, default=1000, help="activations timed per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["both", *BACKENDS], default="both")
    parser.add_argument("--only", choices=["live", "activate"], action="append")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    info = machine_info()
    print(
        f"bench_scale on {info['cpus']} CPUs, {info['memory_gb']} GB, Python {info['python']}, {info['date']}"
    )
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    if "pooled" in backends and (why := _pooled_available()) is not None:
        print(f"the pooled backend does not run here ({why}); measuring threads only")
        backends = ["threads"]
    only = set(args.only or ("live", "activate"))
    results: dict[str, Any] = {"machine": info, "args": vars(args) | {"json": None}, "backends": backends}

    if "live" in only:
        live: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for repeat in range(args.repeat):
            for backend in backends:
                print(f"  live sessions, run {repeat + 1}: {backend} ...", file=sys.stderr, flush=True)
                live[backend].append(_run("live", sessions=args.sessions, backend=backend))
        results["live"] = live
        print(f"\nLive sessions: {args.sessions} created and kept live (medians of {args.repeat} runs)")
        rows: list[tuple[Any, ...]] = []
        for backend in backends:
            runs = live[backend]
            rows.append(
                (
                    backend,
                    min(r["live"] for r in runs),
                    median(r["kib_per_session"] for r in runs),
                    median(r["rss_after_mb"] for r in runs),
                    median(r["creates_per_s"] for r in runs),
                    median(r["history_p50_ms"] for r in runs),
                    median(r["history_p99_ms"] for r in runs),
                    median(r["threads"] for r in runs),
                )
            )
        print_table(
            (
                "backend",
                "live",
                "KiB/session",
                "RSS MB",
                "creates/s",
                "history p50 ms",
                "p99 ms",
                "OS threads",
            ),
            rows,
        )

    if "activate" in only:
        root = Path(tempfile.mkdtemp(prefix="bench-scale-store-"))
        try:
            db = root / "stored.db"
            print(f"  filling a store with {args.stored} sessions ...", file=sys.stderr, flush=True)
            fill = _run("fill", stored=args.stored, messages=args.messages, db=db)
            results["fill"] = fill
            activations: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
            for repeat in range(args.repeat):
                for backend in backends:
                    print(f"  activations, run {repeat + 1}: {backend} ...", file=sys.stderr, flush=True)
                    activations[backend].append(
                        _run(
                            "activate",
                            db=db,
                            stored=args.stored,
                            messages=args.messages,
                            samples=args.samples,
                            backend=backend,
                            seed=repeat,
                        )
                    )
            results["activate"] = activations
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(
            f"\nActivation from a store of {args.stored} sessions x {args.messages} messages "
            f"(filled at {fill['sessions_per_s']:,.0f} sessions/s; {args.samples} random ids per run, "
            f"medians of {args.repeat} runs)"
        )
        rows = []
        for backend in backends:
            runs = activations[backend]
            rows.append(
                (
                    backend,
                    min(r["stored"] for r in runs),
                    median(r["start_seconds"] for r in runs),
                    median(r["activation_p50_ms"] for r in runs),
                    median(r["activation_p99_ms"] for r in runs),
                    median(r["live_history_p50_ms"] for r in runs),
                )
            )
        print_table(
            ("backend", "stored", "Hive start s", "activation p50 ms", "p99 ms", "once live p50 ms"),
            rows,
        )

    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"\nfigures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
