"""Control-call latency while 1,000 sessions run turns, on each actor backend (asyncio, pooled, threads).

    python bench/bench_control_latency.py [--sessions 1000] [--turns 5] [--repeat 3] [--store sqlite]

One process, one plain-thread driver (``generate_streaming`` for every
session, then ``result()``), a zero-latency scripted model making two
``list_dir`` calls per turn, and a prober thread timing ``session_count()``
(the supervisor alone), ``history()`` and ``context_usage()`` of random
sessions every 10 ms while the turns run. Each backend runs in a fresh child
process; figures are medians over ``--repeat`` runs, and the last column is
pooled / threads.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path


def child(backend: str, sessions: int, turns: int, store_kind: str) -> dict[str, float]:
    from sessionhive import ConfirmationPolicy, Hive, Message, Reply, ScriptedLlm, SessionConfig, ToolCall

    def script(messages: list[Message]) -> Reply:
        tools_this_turn = 0
        for message in reversed(messages):
            if message.role == "user":
                break
            tools_this_turn += message.role == "tool"
        if tools_this_turn < 2:
            return Reply("step " * 5, [ToolCall("list_dir", {"path": "."})])
        return Reply("done " * 10)

    workdir = Path(tempfile.mkdtemp())
    store = f"sqlite:///{workdir / 'bench.db'}" if store_kind == "sqlite" else "memory"
    no_confirm = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
    with Hive.start(store=store, llm=ScriptedLlm(script), workspace=workdir, actor_backend=backend) as hive:
        ids = [f"s{n}" for n in range(sessions)]
        for session_id in ids:
            hive.create_session(session_id, no_confirm)
        stop = threading.Event()
        samples: dict[str, list[float]] = {"session_count": [], "history": [], "context_usage": []}
        calls: dict[str, Callable[[], object]] = {
            "session_count": lambda: hive.session_count(),
            "history": lambda: hive.history(random.choice(ids)),
            "context_usage": lambda: hive.context_usage(random.choice(ids)),
        }

        def probe() -> None:
            while not stop.is_set():
                for name, call in calls.items():
                    started = time.perf_counter()
                    call()
                    samples[name].append((time.perf_counter() - started) * 1000)
                stop.wait(0.01)

        prober = threading.Thread(target=probe)
        prober.start()
        started = time.perf_counter()
        for turn in range(turns):
            streams = [hive.generate_streaming(session_id, f"turn {turn}") for session_id in ids]
            for stream in streams:
                stream.result()
        elapsed = time.perf_counter() - started
        stop.set()
        prober.join()
    figures = {"turns_per_s": sessions * turns / elapsed}
    for name, values in samples.items():
        values.sort()
        figures[f"{name}_p50_ms"] = values[len(values) // 2]
        figures[f"{name}_p99_ms"] = values[min(len(values) - 1, int(len(values) * 0.99))]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sessions, args.turns, args.store)))
        return
    runs: dict[str, list[dict[str, float]]] = {"asyncio": [], "pooled": [], "threads": []}
    for attempt in range(args.repeat):
        for backend in runs:
            command = [sys.executable, __file__, "--child", backend, "--sessions", str(args.sessions)]
            command += ["--turns", str(args.turns), "--store", args.store]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[backend].append(json.loads(out.strip().splitlines()[-1]))
            print(f"run {attempt + 1}/{args.repeat} {backend}: {runs[backend][-1]}", file=sys.stderr)
    print(f"{args.sessions} sessions x {args.turns} turns, {args.store} store, medians of {args.repeat} runs")
    print(f"{'figure':<26}{'threads':>12}{'pooled':>12}{'pooled/threads':>16}")
    for key in runs["threads"][0]:
        threads = statistics.median(r[key] for r in runs["threads"])
        pooled = statistics.median(r[key] for r in runs["pooled"])
        print(f"{key:<26}{threads:>12.2f}{pooled:>12.2f}{pooled / threads:>16.2f}")


if __name__ == "__main__":
    main()
