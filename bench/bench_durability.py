"""What acknowledged-means-committed costs: the durable default against batched, in the same run.

The shared workload of issue 20: 1,000 sessions x 3 turns, all in flight, a
zero-latency scripted model asking for 2 ``list_dir`` calls per turn, SQLite.
Each durability runs in a fresh process, ``--runs`` times (default 3); the
table shows medians of turns/s, the ratio durable/batched, and the mean
number of saves one transaction commits (the reach of the group commit,
``sessionhive_store_commit_batch_size``). Then, on an idle Hive with the
memory store: ``create_session`` on the Hive's own loop (``AsyncHive``) and
from another thread (sync ``Hive``).

    .venv/bin/python bench/bench_durability.py [--runs 3] [--sessions 1000] [--turns 3] [--json out.json]
    .venv/bin/python bench/bench_durability.py --profile    # where a durable turn's time goes

``--profile`` runs the durable load once under a sampling profiler (every
thread's stack every millisecond, no dependency) and prints, per thread
group, the share of samples each sessionhive/SQLAlchemy/driver function was
running in (its own code, or what it called outside those packages).

Targets: durable >= 0.9x batched; ``create_session`` < 30 us on the loop and
< 60 us from another thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table, run_child
from sessionhive import AsyncHive, Hive, Reply, ScriptedLlm, SessionConfig, ToolCall, tune_gc

SCRIPT = [
    Reply("", [ToolCall("list_dir", {"path": "."}), ToolCall("list_dir", {"path": "."})]),
    Reply("done"),
]
MODES: tuple[Literal["durable", "batched"], ...] = ("durable", "batched")


def _llm() -> ScriptedLlm:
    # Tools after the prompt, the answer after their results.
    return ScriptedLlm(lambda messages: SCRIPT[0] if messages[-1].role == "user" else SCRIPT[1])


async def load(mode: Literal["durable", "batched"], sessions: int, turns: int, tmp: Path) -> dict[str, Any]:
    workspace = tmp / "ws"
    workspace.mkdir()
    for name in ("a.txt", "b.txt"):
        (workspace / name).write_text("x")
    config = SessionConfig(durability=mode)
    async with AsyncHive.start(
        store=f"sqlite:///{tmp / 'bench.db'}", llm=_llm(), workspace=workspace
    ) as hive:
        tune_gc()
        ids = [f"s{n}" for n in range(sessions)]
        for session_id in ids:
            await hive.create_session(session_id, config)
        await hive.flush()
        registry = hive.metrics.registry
        name = "sessionhive_store_commit_batch_size"
        count_before = registry.get_sample_value(name + "_count") or 0.0
        sum_before = registry.get_sample_value(name + "_sum") or 0.0

        async def one(session_id: str) -> None:
            for turn in range(turns):
                await hive.generate(session_id, f"{session_id} turn {turn}")

        started = time.perf_counter()
        await asyncio.gather(*(one(session_id) for session_id in ids))
        await hive.flush()  # batched: what it acknowledged is written too, as durable's is
        seconds = time.perf_counter() - started
        commits = (registry.get_sample_value(name + "_count") or 0.0) - count_before
        saves = (registry.get_sample_value(name + "_sum") or 0.0) - sum_before
    return {
        "turns_per_s": sessions * turns / seconds,
        "commits": commits,
        "saves_per_commit": saves / commits,
    }


def create_costs(creates: int) -> dict[str, float]:
    """Microseconds per ``create_session`` on the Hive's loop and from another thread (memory store)."""
    result: dict[str, float] = {}
    tune_gc()

    async def on_loop() -> None:
        async with AsyncHive.start(store="memory", llm=_llm()) as hive:
            started = time.perf_counter()
            for n in range(creates):
                await hive.create_session(f"c{n}")
            result["create_on_loop_us"] = (time.perf_counter() - started) / creates * 1e6

    asyncio.run(on_loop())
    with Hive.start(store="memory", llm=_llm()) as hive:

        def caller() -> None:
            started = time.perf_counter()
            for n in range(creates):
                hive.create_session(f"t{n}")
            result["create_from_thread_us"] = (time.perf_counter() - started) / creates * 1e6

        thread = threading.Thread(target=caller)
        thread.start()
        thread.join()
    return result


class Sampler(threading.Thread):
    """Samples every other thread's innermost frame each millisecond (a poor man's py-spy)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.counts: dict[str, dict[str, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        names = {}
        while not self.stop.wait(0.001):
            for thread in threading.enumerate():
                names[thread.ident] = thread.name
            for ident, frame in sys._current_frames().items():  # noqa: SLF001 - sampling is the point
                if ident == self.ident:
                    continue
                group = "persistence" if "Persistence" in names.get(ident, "") else names.get(ident, "?")
                group = "main loop" if group == "MainThread" else group.split("-")[0]
                code = frame.f_code
                where = f"{Path(code.co_filename).name}:{code.co_name}"
                per = self.counts.setdefault(group, {})
                per[where] = per.get(where, 0) + 1


def profile(sessions: int, turns: int) -> None:
    sampler = Sampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(load("durable", sessions, turns, Path(tmp)))
    sampler.stop.set()
    sampler.join()
    print(f"durable: {figures['turns_per_s']:.0f} turns/s while sampled")
    for group, counts in sorted(sampler.counts.items(), key=lambda item: -sum(item[1].values())):
        total = sum(counts.values())
        if total < 100:
            continue
        top = sorted(counts.items(), key=lambda item: -item[1])[:8]
        print(f"\n{group}: {total} samples")
        for where, count in top:
            print(f"  {count / total:6.1%}  {where}")


def child(args: argparse.Namespace) -> dict[str, Any]:
    if args.child == "create":
        return create_costs(args.creates)
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(load(args.child, args.sessions, args.turns, Path(tmp)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--creates", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        profile(args.sessions, args.turns)
        return
    if args.child:
        print(json.dumps(child(args)))
        return
    common = ["--sessions", str(args.sessions), "--turns", str(args.turns), "--creates", str(args.creates)]
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        figures: dict[str, Any] = {
            mode: run_child(Path(__file__), ["--child", mode, *common]) for mode in MODES
        }
        figures["create"] = run_child(Path(__file__), ["--child", "create", *common])
        runs.append(figures)
        durable, batched = figures["durable"]["turns_per_s"], figures["batched"]["turns_per_s"]
        print(f"run {run + 1}: durable {durable:.0f}, batched {batched:.0f} turns/s", file=sys.stderr)

    print(
        f"\n{args.sessions} sessions x {args.turns} turns, 2 list_dir per turn, SQLite; "
        f"medians of {args.runs} runs"
    )
    batched = median(r["batched"]["turns_per_s"] for r in runs)
    rows = [
        [
            mode,
            median(r[mode]["turns_per_s"] for r in runs),
            median(r[mode]["turns_per_s"] for r in runs) / batched,
            median(r[mode]["saves_per_commit"] for r in runs),
        ]
        for mode in MODES
    ]
    print_table(["durability", "turns/s", "x batched", "saves/commit"], rows)
    ratio = median(r["durable"]["turns_per_s"] / r["batched"]["turns_per_s"] for r in runs)
    print(f"durable / batched, median of per-run ratios: {ratio:.2f}x (target >= 0.9x)")
    on_loop = median(r["create"]["create_on_loop_us"] for r in runs)
    from_thread = median(r["create"]["create_from_thread_us"] for r in runs)
    print(
        f"create_session (memory store): {on_loop:.1f} us on the loop (target < 30), "
        f"{from_thread:.1f} us from another thread (target < 60)"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
