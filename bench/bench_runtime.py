"""sessionhive's durable and batched modes against two floors, in the same run: turns/s and ratios.

The workload of issue 10: 1,000 sessions x 3 turns, all in flight, a
zero-latency scripted model asking for 2 ``list_dir`` calls per turn,
SQLite. sessionhive runs it twice per actor backend: with
``durability=DURABLE`` (a turn is acknowledged once committed) and with
``durability=BATCHED``. It is compared with

- the plain floor (``bench/baselines/plain_floor.py``): a short asyncio
  program with nothing of sessionhive in it (message dicts, ``os.scandir``
  inline, one sqlite3 writer thread), in its two modes: commit before
  acknowledging (group commit) and batched (256 rows or 50 ms);
- the shared floor (``bench/baselines/floor.py``): plain asyncio too, but
  it uses sessionhive's tool executor and scripted model (batched writes).

While sessionhive runs under load, a probe on the same event loop measures
the calls a service answers its own users with: reads (``history``,
``context_usage``) and control calls (``confirm_tool``, ``pause_session``,
``cancel_operation``). Then, on an idle Hive: the cost of
``create_session`` on the Hive's own loop and from another thread, of one
call from another thread (sync ``Hive``) and on the loop (``AsyncHive``),
and the memory of an idle session.

Each configuration runs in a fresh process, ``--runs`` times (default 3);
the tables show medians, and ratios taken within each run, then their median.

    .venv/bin/python bench/bench_runtime.py [--runs 3] [--sessions 1000] [--turns 3] \\
        [--backends asyncio,pooled] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table, rss_bytes, run_child
from bench.baselines.floor import run_floor
from bench.baselines.plain_floor import run_plain_floor
from sessionhive import (
    AsyncHive,
    ConfirmationRequired,
    Hive,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    tune_gc,
)
from sessionhive.hive import DEFAULT_ACTOR_BACKEND

SCRIPT = [
    Reply("", [ToolCall("list_dir", {"path": "."}), ToolCall("list_dir", {"path": "."})]),
    Reply("done"),
]
CONFIRMED = [Reply("", [ToolCall("write_file", {"path": "probe.txt", "content": "x"})]), Reply("written")]
NO_CONFIRMATION = SessionConfig()
#: sessionhive's durability that acknowledges a turn only once it is committed ("durable" once renamed).
DURABLE = "durable"
#: sessionhive's durability that acknowledges at once and commits within flush_interval.
BATCHED = "batched"
DURABILITY_MODES = (DURABLE, BATCHED)
PLAIN_DURABLE = "plain floor, durable (commit before ack, group commit)"
PLAIN_BATCHED = "plain floor, batched (256 rows or 50 ms)"
SHARED_FLOOR = "shared floor (uses our tool executor and model)"
#: (what is divided, by what, the issue's target): each ratio is taken within a run.
TARGETS = (
    (DURABLE, "plain-durable", 0.3),
    (DURABLE, BATCHED, 0.9),
    (BATCHED, "plain-batched", 0.4),
)


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _probe(hive: AsyncHive, stop: asyncio.Event, figures: dict[str, list[float]]) -> None:
    """Reads and control calls on the Hive's own loop while the load runs (ms)."""
    await hive.create_session("probe-read")
    await hive.generate("probe-read", "warm up")
    n = 0
    while not stop.is_set():
        n += 1
        for name, call in (
            ("history", lambda: hive.history("probe-read")),
            ("context_usage", lambda: hive.context_usage("probe-read")),
            ("pause_session", lambda: hive.pause_session("probe-read")),
            ("resume_session", lambda: hive.resume_session("probe-read")),
            ("cancel_operation", lambda: hive.cancel_operation("probe-read")),
        ):
            started = time.perf_counter()
            await call()
            figures[name].append((time.perf_counter() - started) * 1000)
        # confirm_tool: a turn that waits for a human, answered as soon as it asks.
        session = f"probe-confirm-{n}"
        await hive.create_session(session)
        stream = await hive.generate_streaming(session, "write it")
        async for event in stream:
            if isinstance(event, ConfirmationRequired):
                started = time.perf_counter()
                await hive.confirm_tool(session, event.tool_id, True)
                figures["confirm_tool"].append((time.perf_counter() - started) * 1000)
        await stream.result()
        await asyncio.sleep(0.005)


def _llm() -> ScriptedLlm:
    def script(messages: list[Any]) -> Reply:
        # A turn asks for its tools after the prompt and answers after their results;
        # the confirmation probe's sessions write a file (which waits for a human).
        prompt = next(m.text for m in reversed(messages) if m.role == "user")
        plan = CONFIRMED if prompt == "write it" else SCRIPT
        return plan[0] if messages[-1].role == "user" else plan[1]

    return ScriptedLlm(script)


async def sessionhive_load(
    sessions: int, turns: int, backend: str, durability: str, workspace: Path, db: Path
) -> dict[str, Any]:
    figures: dict[str, list[float]] = {
        k: []
        for k in (
            "history",
            "context_usage",
            "pause_session",
            "resume_session",
            "cancel_operation",
            "confirm_tool",
        )
    }
    async with AsyncHive.start(
        store=f"sqlite:///{db}", llm=_llm(), workspace=workspace, actor_backend=backend
    ) as hive:
        tune_gc()
        ids = [f"s{n}" for n in range(sessions)]
        config = SessionConfig(durability=durability)  # type: ignore[arg-type]
        for session_id in ids:
            await hive.create_session(session_id, config)
        await hive.flush()
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(hive, stop, figures))

        async def one(session_id: str) -> None:
            for turn in range(turns):
                await hive.generate(session_id, f"{session_id} turn {turn}")

        started = time.perf_counter()
        await asyncio.gather(*(one(session_id) for session_id in ids))
        await hive.flush()
        seconds = time.perf_counter() - started
        stop.set()
        await probe
        histories = [len(await hive.history(session_id)) for session_id in ids]
        assert all(length == turns * 5 for length in histories), "a history is not what the turns wrote"
    result: dict[str, Any] = {"turns_per_s": sessions * turns / seconds, "probes": {}}
    for name, values in figures.items():
        result["probes"][name] = {"p50_ms": _p(values, 0.5), "p99_ms": _p(values, 0.99), "n": len(values)}
    return result


def idle_costs(backend: str, creates: int) -> dict[str, Any]:
    """create_session, one call from another thread, one on the Hive's own loop, memory per idle session."""
    result: dict[str, Any] = {}
    tune_gc()

    async def on_loop() -> None:
        async with AsyncHive.start(store="memory", llm=ScriptedLlm(SCRIPT), actor_backend=backend) as hive:
            gc.collect()
            before = rss_bytes()
            started = time.perf_counter()
            for n in range(creates):
                await hive.create_session(f"c{n}")
            result["create_us"] = (time.perf_counter() - started) / creates * 1e6
            gc.collect()
            result["bytes_per_idle_session"] = (rss_bytes() - before) / creates
            samples = []
            for _ in range(5000):
                started = time.perf_counter()
                await hive.pause_session("c0")
                await hive.resume_session("c0")
                samples.append((time.perf_counter() - started) / 2 * 1e6)
            result["async_call_us"] = statistics.median(samples)

    asyncio.run(on_loop())
    with Hive.start(store="memory", llm=ScriptedLlm(SCRIPT), actor_backend=backend) as hive:
        hive.create_session("x")
        samples = []

        def creator() -> None:
            count = max(1, creates // 10)
            started = time.perf_counter()
            for n in range(count):
                hive.create_session(f"t{n}")
            result["create_thread_us"] = (time.perf_counter() - started) / count * 1e6

        def caller() -> None:
            for _ in range(3000):
                started = time.perf_counter()
                hive.pause_session("x")
                hive.resume_session("x")
                samples.append((time.perf_counter() - started) / 2 * 1e6)

        for work in (creator, caller):
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
        result["sync_call_us"] = statistics.median(samples)
    return result


def child(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        workspace.mkdir()
        for name in ("a.txt", "b.txt", "src"):
            (workspace / name).write_text("x") if "." in name else (workspace / name).mkdir()
        db = Path(tmp) / "bench.db"
        if args.child == "shared-floor":
            tune_gc()
            run = asyncio.run(run_floor(args.sessions, args.turns, workspace, db, _llm()))
            return {"turns_per_s": run.turns_per_s}
        if args.child.startswith("plain-"):
            mode = args.child.removeprefix("plain-")
            plain = asyncio.run(run_plain_floor(args.sessions, args.turns, workspace, db, mode))
            assert plain.rows_committed == args.sessions * args.turns * 5, "the plain floor lost rows"
            return {"turns_per_s": plain.turns_per_s, "commits": plain.commits}
        if args.child.startswith("idle-"):
            return idle_costs(args.child.removeprefix("idle-"), args.creates)
        backend, durability = args.child.split(":")
        return asyncio.run(sessionhive_load(args.sessions, args.turns, backend, durability, workspace, db))


def _label(config: str) -> str:
    backend, durability = config.split(":")
    # Compared through SessionConfig, so that an alias ("sync" for "durable") counts as its name.
    chosen = SessionConfig(durability=durability).durability  # type: ignore[arg-type]
    default = " (default)" if chosen == SessionConfig().durability else ""
    return f"sessionhive {backend}, {durability}{default}"


def _ratio(runs: list[dict[str, Any]], top: str, bottom: str) -> float:
    return median(r[top]["turns_per_s"] / r[bottom]["turns_per_s"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--creates", type=int, default=100_000)
    parser.add_argument(
        "--backends", default=DEFAULT_ACTOR_BACKEND, help="comma-separated, e.g. asyncio,pooled"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    common = ["--sessions", str(args.sessions), "--turns", str(args.turns), "--creates", str(args.creates)]
    backends = args.backends.split(",")
    configs = [f"{backend}:{mode}" for backend in backends for mode in DURABILITY_MODES]
    floors = {"plain-durable": PLAIN_DURABLE, "plain-batched": PLAIN_BATCHED, "shared-floor": SHARED_FLOOR}
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    for run in range(args.runs):
        figures: dict[str, Any] = {}
        for name in (*floors, *configs):
            figures[name] = run_child(Path(__file__), ["--child", name, *common])
        for backend in backends:
            figures[f"idle-{backend}"] = run_child(Path(__file__), ["--child", f"idle-{backend}", *common])
        runs.append(figures)
        shown = ", ".join(f"{name} {figures[name]['turns_per_s']:.0f}" for name in (*floors, *configs))
        print(f"run {run + 1} (turns/s): {shown}", file=sys.stderr)

    print(
        f"\n{args.sessions} sessions x {args.turns} turns, 2 list_dir per turn, SQLite; "
        f"medians of {args.runs} runs; ratios taken within each run"
    )
    # Other processes on the machine move every figure; the ratios within a run less so.
    print(
        f"{os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} before the runs, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    rows: list[list[Any]] = []
    for name, label in [*floors.items(), *((config, _label(config)) for config in configs)]:
        rows.append(
            [
                label,
                median(r[name]["turns_per_s"] for r in runs),
                _ratio(runs, name, "plain-durable"),
                _ratio(runs, name, "plain-batched"),
                _ratio(runs, name, "shared-floor"),
            ]
        )
    print_table(["", "turns/s", "x plain durable", "x plain batched", "x shared floor"], rows)
    print("\ntargets of issue 20 (ratios within a run, medians)")
    target_rows = []
    for backend in backends:
        for top, bottom, goal in TARGETS:
            top_name = f"{backend}:{top}"
            bottom_name = bottom if bottom.startswith("plain-") else f"{backend}:{bottom}"
            bottom_label = floors[bottom_name] if bottom_name in floors else _label(bottom_name)
            ratio = _ratio(runs, top_name, bottom_name)
            met = "met" if ratio >= goal else "not met"
            target_rows.append([f"{_label(top_name)} / {bottom_label}", ratio, f">= {goal}", met])
    print_table(["", "ratio", "target", ""], target_rows)
    print("\ncalls on the Hive's loop while the load runs (ms)")
    probe_rows = []
    for config in configs:
        for name in runs[0][config]["probes"]:
            probe_rows.append(
                [
                    f"{_label(config)}: {name}",
                    median(r[config]["probes"][name]["p50_ms"] for r in runs),
                    median(r[config]["probes"][name]["p99_ms"] for r in runs),
                    # A call that waits long gets few samples: its p99 is then its worst.
                    min(r[config]["probes"][name]["n"] for r in runs),
                ]
            )
    print_table(["", "p50", "p99", "fewest samples in a run"], probe_rows)
    print(f"\nidle Hive ({args.creates:,} sessions created on the loop, a tenth from a thread; memory store)")
    idle_rows = []
    for backend in backends:
        key = f"idle-{backend}"
        idle_rows.append(
            [
                backend,
                median(r[key]["create_us"] for r in runs),
                median(r[key]["create_thread_us"] for r in runs),
                median(r[key]["async_call_us"] for r in runs),
                median(r[key]["sync_call_us"] for r in runs),
                median(r[key]["bytes_per_idle_session"] for r in runs),
            ]
        )
    print_table(
        [
            "backend",
            "create, loop (us)",
            "create, other thread (us)",
            "AsyncHive call (us)",
            "Hive call, other thread (us)",
            "bytes/idle session",
        ],
        idle_rows,
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
