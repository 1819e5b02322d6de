"""A local Hive vs a cluster of 1 and 2 hive shards on Ray: turns/s, and what a cluster call adds to latency.

    python bench/bench_cluster.py [--sessions 1000] [--turns 5] [--concurrency 200] [--repeat 3] [--store URL]

Each configuration runs in a fresh child process on its own PostgreSQL schema
(``--store``, default the local test database) with a zero-latency scripted
model: ``--sessions`` sessions are created, then every session runs
``--turns`` turns, ``--concurrency`` sessions at a time, through the asyncio
API; every history is then checked (2 x turns messages, in order). Latency is
the p50 of 300 sequential ``history()`` calls and of 100 sequential
``generate()`` calls through the sync API on an idle system. A cluster starts
its own local Ray (loopback only). Figures are medians over ``--repeat`` runs;
the ratios compare each cluster with the local Hive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table, run_child

DEFAULT_STORE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _schema(base: str) -> tuple[str, str]:
    import psycopg

    schema = f"sessionhive_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{base}?options=-csearch_path%3D{schema}"


def _drop(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def child(mode: str, sessions: int, turns: int, concurrency: int, base: str) -> dict[str, float]:
    from sessionhive import AsyncHive, Hive, Reply, ScriptedLlm

    llm = ScriptedLlm([Reply("ok")])
    schema, url = _schema(base)
    sync: Any
    hive: Any
    try:
        if mode == "local":
            sync = Hive.start(store=url, llm=llm)
            hive = AsyncHive(sync)
        else:
            from sessionhive.cluster import AsyncClusterHive, ClusterHive

            sync = ClusterHive.start(
                shards=int(mode.removeprefix("cluster")),
                store=url,
                llm=llm,
                ray_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024},
            )
            hive = AsyncClusterHive(sync)
        ids = [f"s{i}" for i in range(sessions)]

        async def load() -> float:
            for start in range(0, sessions, concurrency):
                await asyncio.gather(*(hive.create_session(sid) for sid in ids[start : start + concurrency]))
            queue: asyncio.Queue[str] = asyncio.Queue()
            for sid in ids:
                queue.put_nowait(sid)

            async def worker() -> None:
                while not queue.empty():
                    sid = queue.get_nowait()
                    for turn in range(turns):
                        await hive.generate(sid, f"{sid}#{turn}")

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            for sid in ids:
                texts = [m.text for m in await hive.history(sid)]
                expected = [text for turn in range(turns) for text in (f"{sid}#{turn}", "ok")]
                if texts != expected:
                    raise AssertionError(f"{sid}: history {texts[:6]}... is not the {turns} turns sent")
            return sessions * turns / elapsed

        turns_per_s = asyncio.run(load())

        def p50_ms(call: Any, count: int) -> float:
            samples = []
            for _ in range(count):
                started = time.perf_counter()
                call()
                samples.append((time.perf_counter() - started) * 1000)
            return statistics.median(samples)

        sync.create_session("probe")
        history_ms = p50_ms(lambda: sync.history("s1"), 300)
        generate_ms = p50_ms(lambda: sync.generate("probe", "ping"), 100)
        sync.stop()
        return {"turns_per_s": turns_per_s, "history_p50_ms": history_ms, "generate_p50_ms": generate_ms}
    finally:
        _drop(base, schema)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help="PostgreSQL URL (a schema per run is made in it)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sessions, args.turns, args.concurrency, args.store)))
        return
    modes = ["local", "cluster1", "cluster2"]
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    common = [f"--sessions={args.sessions}", f"--turns={args.turns}", f"--concurrency={args.concurrency}"]
    for _ in range(args.repeat):
        for mode in modes:
            result = run_child(Path(__file__), [*common, f"--store={args.store}", f"--child={mode}"])
            runs[mode].append(result)
            print(f"{mode}: {result}", file=sys.stderr, flush=True)
    figures = {mode: {k: median(r[k] for r in runs[mode]) for k in runs[mode][0]} for mode in modes}
    local = figures["local"]
    print(json.dumps(machine_info()))
    print(
        f"{args.sessions} sessions x {args.turns} turns, {args.concurrency} at a time, zero-latency model, "
        f"PostgreSQL; medians of {args.repeat} runs"
    )
    rows = []
    for mode in modes:
        f = figures[mode]
        rows.append(
            [
                mode,
                f["turns_per_s"],
                f["turns_per_s"] / local["turns_per_s"],
                f["history_p50_ms"],
                f["history_p50_ms"] - local["history_p50_ms"],
                f["generate_p50_ms"],
                f["generate_p50_ms"] - local["generate_p50_ms"],
            ]
        )
    print_table(["", "turns/s", "x local", "history p50 ms", "added ms", "generate p50 ms", "added ms"], rows)
    two, one = figures["cluster2"]["turns_per_s"], figures["cluster1"]["turns_per_s"]
    print(f"2 shards / 1 shard: {two / one:.2f}x; 2 shards / local Hive: {two / local['turns_per_s']:.2f}x")


if __name__ == "__main__":
    main()
