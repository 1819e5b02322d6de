"""A local Hive vs a cluster of 1 and 2 hive shards on Ray: turns/s, and what a cluster call adds to latency.

    python bench/bench_cluster.py [--sessions 1000] [--turns 5] [--concurrency 200] [--repeat 3] [--store URL]
    python bench/bench_cluster.py --faults [--lease-ttl 5] [--pause 8] [--rounds 2] [--durability sync,...]
    python bench/bench_cluster.py --facades [--sessions 200] [--turns 5] [--clients 50] [--repeat 3]

Each configuration runs in a fresh child process on its own PostgreSQL schema
(``--store``, default the local test database) with a zero-latency scripted
model: ``--sessions`` sessions are created, then every session runs
``--turns`` turns, ``--concurrency`` sessions at a time, through the asyncio
API; every history is then checked (2 x turns messages, in order). Latency is
the p50 of 300 sequential ``history()`` calls and of 100 sequential
``generate()`` calls through the sync API on an idle system. A cluster starts
its own local Ray (loopback only). Figures are medians over ``--repeat`` runs;
the ratios compare each cluster with the local Hive.

``--faults``: how long a shard's sessions go unanswered when it is killed
(SIGKILL) or paused (SIGSTOP for ``--pause`` s, then SIGCONT). Two shards,
60 sessions, each with its own client thread running one turn after
another with 4 s timeouts (so that no session waits behind another's call);
per fault, every session placed on the victim is timed from the fault to
its first acknowledged turn after it (median and max over the victim's
sessions of every round). The baseline in the same run is the
same measure on the other shard's sessions (what a fault costs a session it
does not touch); the target ratio divides the max by lease + 1 s.

``--facades``: the sync ``ClusterHive`` (``--clients`` threads) against the
asyncio facade (``--clients`` coroutines on one event loop) on the same 2-shard
cluster in one child process, each running ``--turns`` turns on each of
``--sessions`` sessions; the async run is the baseline, the ratio is sync / async
turns/s (target >= 0.9: the sync facade gets the asyncio facade's batching).
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
            from sessionhive.cluster import ClusterHive

            sync = ClusterHive.start(
                shards=int(mode.removeprefix("cluster")),
                store=url,
                llm=llm,
                ray_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024},
            )
            hive = _async_facade(sync)
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


def facades_child(sessions: int, turns: int, clients: int, base: str) -> dict[str, float]:
    import threading

    from sessionhive import Reply, ScriptedLlm
    from sessionhive.cluster import ClusterHive

    schema, url = _schema(base)
    try:
        sync = ClusterHive.start(
            shards=2,
            store=url,
            llm=ScriptedLlm([Reply("ok")]),
            ray_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024},
        )
        aio = _async_facade(sync)
        ids = [f"s{i}" for i in range(sessions)]
        for sid in ids:
            sync.create_session(sid)
        shares = [ids[i::clients] for i in range(clients)]

        async def async_load() -> float:
            async def client(mine: list[str]) -> None:
                for turn in range(turns):
                    for sid in mine:
                        await aio.generate(sid, f"{sid}#a{turn}")

            started = time.perf_counter()
            await asyncio.gather(*(client(mine) for mine in shares))
            return sessions * turns / (time.perf_counter() - started)

        def sync_load() -> float:
            def client(mine: list[str]) -> None:
                for turn in range(turns):
                    for sid in mine:
                        sync.generate(sid, f"{sid}#s{turn}")

            threads = [threading.Thread(target=client, args=(mine,)) for mine in shares]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sessions * turns / (time.perf_counter() - started)

        async_turns = asyncio.run(async_load())
        sync_turns = sync_load()
        _check_prompts(sync, ids, [f"#a{t}" for t in range(turns)] + [f"#s{t}" for t in range(turns)])
        sync.stop()
        return {"async_turns_per_s": async_turns, "sync_turns_per_s": sync_turns}
    finally:
        _drop(base, schema)


def _check_prompts(hive: Any, ids: list[str], suffixes: list[str]) -> None:
    for sid in ids:
        texts = [m.text for m in hive.history(sid) if m.role == "user"]
        if texts != [f"{sid}{suffix}" for suffix in suffixes]:
            raise AssertionError(f"{sid}: history {texts[:4]}... is not the turns sent")


def _async_facade(sync: Any) -> Any:
    """The asyncio facade of a running cluster."""
    from sessionhive.cluster import AsyncClusterHive

    return AsyncClusterHive(sync.cluster)


def facades_main(args: argparse.Namespace) -> None:
    runs = []
    common = [f"--sessions={args.sessions}", f"--turns={args.turns}", f"--clients={args.clients}"]
    for _ in range(args.repeat):
        result = run_child(Path(__file__), [*common, f"--store={args.store}", "--child=facades"])
        print(f"facades: {result}", file=sys.stderr, flush=True)
        runs.append(result)
    sync, aio = median(r["sync_turns_per_s"] for r in runs), median(r["async_turns_per_s"] for r in runs)
    print(json.dumps(machine_info()))
    print(
        f"2 shards, {args.sessions} sessions x {args.turns} turns, {args.clients} clients, zero-latency "
        f"model, PostgreSQL; medians of {args.repeat} runs"
    )
    print_table(
        ["facade", "turns/s", "runs"],
        [
            ["AsyncClusterHive (coroutines)", aio, ", ".join(f"{r['async_turns_per_s']:.0f}" for r in runs)],
            ["ClusterHive (threads)", sync, ", ".join(f"{r['sync_turns_per_s']:.0f}" for r in runs)],
        ],
    )
    print(f"sync / async: {sync / aio:.2f}x (target >= 0.9x)")


def faults_child(lease_ttl: float, pause: float, rounds: int, durability: str, base: str) -> dict[str, Any]:
    import os
    import signal
    import threading

    from sessionhive import OutcomeUnknown, Reply, ScriptedLlm, SessionConfig, SessionhiveError
    from sessionhive.cluster import ClusterHive

    schema, url = _schema(base)
    acked: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    try:
        hive = ClusterHive.start(
            shards=2,
            store=url,
            llm=ScriptedLlm([Reply("ok")]),
            lease_ttl=lease_ttl,
            ray_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024},
        )
        ids = [f"s{i:03d}" for i in range(60)]
        config = (
            SessionConfig(durability="sync") if durability == "sync" else SessionConfig(durability="batched")
        )
        for sid in ids:
            hive.create_session(sid, config)
            acked[sid] = []

        def worker(mine: list[str]) -> None:
            turn = 0
            while not stop.is_set():
                for sid in mine:
                    turn += 1
                    try:
                        hive.generate(sid, f"{sid}#{turn}", timeout=4)
                    except SessionhiveError as exc:
                        kind = "OutcomeUnknown" if isinstance(exc, OutcomeUnknown) else type(exc).__name__
                        with lock:
                            errors[kind] = errors.get(kind, 0) + 1
                        continue
                    with lock:
                        acked[sid].append(time.monotonic())

        threads = [threading.Thread(target=worker, args=([sid],), daemon=True) for sid in ids]
        for thread in threads:
            thread.start()
        time.sleep(3.0)  # warm: every session owned by its shard
        gaps: dict[str, list[float]] = {
            "kill": [],
            "pause": [],
            "kill, other shard": [],
            "pause, other shard": [],
        }
        for _round in range(rounds):
            for fault in ("kill", "pause"):
                victim = "shard-0"
                pid = int(hive.shard_info()[victim]["pid"])
                on_victim = {sid for sid in ids if hive.shard_of(sid) == victim}
                at = time.monotonic()
                if fault == "kill":
                    os.kill(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGSTOP)
                    time.sleep(pause)  # the fault schedule
                    os.kill(pid, signal.SIGCONT)
                time.sleep(
                    max(0.0, at + pause + 3 * lease_ttl - time.monotonic())
                )  # settle: rejoin, hand back
                for sid in ids:
                    with lock:
                        after = [t for t in acked[sid] if t > at]
                    gap = (after[0] - at) if after else float("inf")
                    gaps[fault if sid in on_victim else f"{fault}, other shard"].append(gap)
                print(f"{fault} {durability}: done", file=sys.stderr, flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        hive.stop()
        return {
            key: {"median": statistics.median(values), "max": max(values), "sessions": len(values)}
            for key, values in gaps.items()
        } | {"errors": errors}
    finally:
        stop.set()
        _drop(base, schema)


def faults_main(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, Any]] = {}
    for durability in args.durability.split(","):
        common = [f"--lease-ttl={args.lease_ttl}", f"--pause={args.pause}", f"--rounds={args.rounds}"]
        result = run_child(
            Path(__file__), [*common, f"--store={args.store}", f"--durability={durability}", "--child=faults"]
        )
        print(f"{durability}: {result}", file=sys.stderr, flush=True)
        results[durability] = result
    print(json.dumps(machine_info()))
    print(
        f"2 shards, 60 sessions with a client thread each (4 s timeouts), lease_ttl={args.lease_ttl} s, "
        f"pause {args.pause} s, {args.rounds} rounds of each fault; seconds from the fault to each "
        "victim session's next acknowledged turn"
    )
    rows = []
    for durability, result in results.items():
        for fault in ("kill", "pause"):
            hit, other = result[fault], result[f"{fault}, other shard"]
            rows.append(
                [
                    f"{fault} ({durability})",
                    hit["sessions"],
                    hit["median"],
                    hit["max"],
                    other["median"],
                    hit["max"] / (args.lease_ttl + 1.0),
                ]
            )
        print(f"{durability}: errors clients saw: {result['errors']}")
    print_table(
        ["fault", "sessions", "median s", "max s", "other shard median s", "max / (lease + 1 s)"], rows
    )


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
    parser.add_argument(
        "--faults", action="store_true", help="measure unavailability after a kill and a pause"
    )
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=8.0, help="seconds a paused shard stays stopped")
    parser.add_argument("--rounds", type=int, default=2, help="kills and pauses each")
    parser.add_argument("--durability", default="sync,batched", help="comma-separated durabilities to run")
    parser.add_argument(
        "--facades", action="store_true", help="the sync ClusterHive against the asyncio facade"
    )
    parser.add_argument("--clients", type=int, default=50, help="client threads / coroutines (--facades)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "facades":
        print(json.dumps(facades_child(args.sessions, args.turns, args.clients, args.store)))
        return
    if args.facades:
        facades_main(args)
        return
    if args.child == "faults":
        result = faults_child(args.lease_ttl, args.pause, args.rounds, args.durability, args.store)
        print(json.dumps(result))
        return
    if args.faults:
        faults_main(args)
        return
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
