"""sessionhive vs the reference's lock-based design, on the same workload, on this machine.

Run from the repository root::

    python bench/bench_vs_locked.py                      # 1,000 sessions x 5 turns, 3 runs each
    python bench/bench_vs_locked.py --sessions 200 --turns 3 --repeat 1 --levels 10,100

The baseline is ``bench/baselines/locked_manager.py``, a faithful Python port
of ``SessionManager`` (a dict of sessions behind readers-writer locks, each
session behind its own, the whole session rewritten as a JSON file by a
background task after every change). Both systems get the same workload: the
load test's scripted agent (:class:`sessionhive.loadtest.LoadtestScript`,
zero LLM latency, ``--tools-per-turn`` tool calls per turn through the same
:class:`~sessionhive.ToolExecutor`), one turn per session at a time, every
session at once; and the same :class:`~sessionhive.loadtest.ControlProber`
timing ``history``, ``confirm_tool`` and ``pause+resume`` while the turns run.
sessionhive uses SQLite (a fresh file per run) and is driven by
:func:`sessionhive.loadtest.run_loadtest` (one asyncio driver, AsyncHive),
calling ``generate`` as the baseline does (``--stream`` reads every turn's
event stream instead; confirmations need it); the baseline's API blocks its
caller, so it is driven by one thread per session in flight, with one more
thread approving confirmations.

Three measurements, each run in a fresh child process:

1. **Load** (``--sessions`` x ``--turns``, ``--repeat`` runs each): turns/s,
   turn latency, control-call latency under load, peak RSS, and whether every
   stored history matches what was driven.
2. **As histories grow** (``--growth-sessions`` sessions run
   ``--growth-turns`` turns in waves; after each wave everything is flushed):
   turns/s of the wave (turns and their writes), the payload bytes sent to
   storage per turn (SQL parameters for sessionhive, JSON file bytes for the
   baseline) and the bytes the process passed to ``write(2)``
   (``/proc/self/io`` wchar: WAL frames, checkpoints, files), by wave.
3. **Turn latency vs concurrency** (``--levels``, sessions = concurrency):
   p50/p99 turn latency of both, plotted to ``--plot``
   (``bench/latency_vs_concurrency.png``).

Figures are medians over ``--repeat`` runs; ratios are sessionhive/baseline.
``--json FILE`` writes everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import queue
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    REPO,
    io_write_bytes,
    machine_info,
    median,
    print_table,
    proc_status_bytes,
    run_child,
)
from bench.baselines.locked_manager import LockedSessionManager
from sessionhive import AsyncHive, ConfirmationPolicy, ConfirmationRequired, ScriptedLlm, SessionConfig
from sessionhive.hive import DEFAULT_ACTOR_BACKEND
from sessionhive.loadtest import (
    ControlProber,
    LatencyStats,
    LoadtestOptions,
    LoadtestScript,
    run_loadtest,
)
from sessionhive.model.events import AgentEvent
from sessionhive.model.messages import Message
from sessionhive.persistence import SqlStore
from sessionhive.tools import ToolExecutor

SCRIPT = Path(__file__).resolve()
SYSTEMS = ("sessionhive", "locked")


def _stats_dict(stats: LatencyStats) -> dict[str, float]:
    return {"p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms, "count": stats.count}


def _session_config(workspace: Path, session_id: str) -> SessionConfig:
    folder = workspace / session_id
    folder.mkdir(parents=True, exist_ok=True)
    policy = ConfirmationPolicy(require_confirmation=("write_file",), timeout_s=600.0)
    return SessionConfig(workspace=str(folder), confirmation_policy=policy)


# --------------------------------------------------------------------------- children: load


def child_load_sessionhive(args: argparse.Namespace) -> dict[str, Any]:
    written = io_write_bytes()
    report = run_loadtest(
        LoadtestOptions(
            sessions=args.sessions,
            turns=args.turns,
            tools_per_turn=args.tools_per_turn,
            confirm_rate=args.confirm_rate,
            actor_backend=args.actor_backend,
            stream=args.stream or args.confirm_rate > 0,
            verify=not args.no_verify,
        )
    )
    return {
        "turns": report.turns_completed,
        "failed": report.turns_failed,
        "seconds": report.drive_seconds,
        "turns_per_s": report.turns_per_second,
        "turn": _stats_dict(report.turn_latency),
        "control": {kind: _stats_dict(stats) for kind, stats in report.control.items()},
        "peak_rss_mb": report.peak_rss_mb,
        "wchar_per_turn": (io_write_bytes() - written) / max(1, report.turns_completed),
        "verified": report.verification.ok if not args.no_verify else None,
        "mismatches": report.verification.mismatches[:3],
    }


class LockedRun:
    """Drives the baseline like run_loadtest drives a Hive: same script, tools, prober, verification."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.script = LoadtestScript(args.tools_per_turn, args.confirm_rate)
        self.workspace = root / "workspace"
        self.workspace.mkdir()
        self.tools = ToolExecutor(self.workspace)
        self.manager = LockedSessionManager(ScriptedLlm(self.script), self.tools, root / "sessions")
        self.sessions = [f"lk-{i:06d}" for i in range(args.sessions)]
        self.probe = "lk-probe"
        self.events: queue.SimpleQueue[AgentEvent | None] = queue.SimpleQueue()
        self.confirm_seconds: list[float] = []
        self.turn_seconds: list[float] = []
        self.failures: list[str] = []

    def create(self) -> None:
        for session_id in self.sessions:
            self.manager.create_session(session_id, _session_config(self.workspace, session_id))
            self.manager.subscribe(session_id, self.events.put)
        self.manager.create_session(self.probe, SessionConfig(storage="memory"))

    def approve(self) -> None:
        """The client side of confirmations: approve every ConfirmationRequired seen."""
        while (event := self.events.get()) is not None:
            if isinstance(event, ConfirmationRequired):
                asked = time.perf_counter()
                self.manager.confirm_tool(event.session_id, event.tool_id, True)
                self.confirm_seconds.append(time.perf_counter() - asked)

    def session_turns(self, session_id: str, turns: range) -> None:
        for turn in turns:
            started = time.perf_counter()
            try:
                self.manager.generate(session_id, f"{session_id} turn {turn}")
            except Exception as exc:
                self.failures.append(f"{session_id} turn {turn}: {exc}")
                continue
            self.turn_seconds.append(time.perf_counter() - started)

    def drive(self, turns: range, concurrency: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="locked-driver") as pool:
            for future in [pool.submit(self.session_turns, s, turns) for s in self.sessions]:
                future.result()
        return time.perf_counter() - started

    def verify(self) -> tuple[bool, list[str]]:
        """Every file holds the in-memory history, and that history is the script's."""
        store = self.manager.store
        assert store is not None
        mismatches: list[str] = []
        for session_id in self.sessions:
            memory = self.manager.history(session_id)
            outputs = {
                m.tool_call_id: (m.text, m.is_error) for m in memory if m.role == "tool" and m.tool_call_id
            }
            expected = self.script.expected_history(session_id, self.args.turns, outputs)
            data = store.load(session_id)
            stored = [Message.from_dict(m) for m in data["messages"]] if data else None
            if memory != expected or stored != expected:
                mismatches.append(
                    f"{session_id}: memory {len(memory)} / file {len(stored) if stored else None} "
                    f"messages, {len(expected)} expected"
                )
        return not mismatches, mismatches


def child_load_locked(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-locked-"))
    try:
        run = LockedRun(args, root)
        run.create()
        run.manager.wait_for_background()
        approver = threading.Thread(target=run.approve, daemon=True)
        approver.start()
        prober = ControlProber(run.manager, run.sessions, run.probe).start()
        written = io_write_bytes()
        try:
            seconds = run.drive(range(1, args.turns + 1), args.sessions)
        finally:
            prober.stop()
        run.manager.wait_for_background()
        wchar = io_write_bytes() - written
        run.events.put(None)
        approver.join()
        verified, mismatches = run.verify() if not args.no_verify else (None, [])
        control = {kind: _stats_dict(stats) for kind, stats in prober.stats().items()}
        control["confirm_driver"] = _stats_dict(LatencyStats.of(run.confirm_seconds))
        turns = len(run.turn_seconds)
        run.manager.shutdown()
        run.tools.close()
        return {
            "turns": turns,
            "failed": len(run.failures),
            "seconds": seconds,
            "turns_per_s": turns / seconds,
            "turn": _stats_dict(LatencyStats.of(run.turn_seconds)),
            "control": control,
            "peak_rss_mb": proc_status_bytes("VmHWM") / 2**20,
            "wchar_per_turn": wchar / max(1, turns),
            "verified": verified,
            "mismatches": mismatches[:3],
            "persist_failures": run.manager.persist_failures,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- children: growth


def _param_bytes(parameters: Any) -> int:
    if isinstance(parameters, dict):
        parameters = parameters.values()
    total = 0
    for value in parameters:
        if isinstance(value, str | bytes):
            total += len(value)
        elif isinstance(value, dict | list | tuple):
            total += _param_bytes(value)
        elif value is not None:
            total += 8
    return total


def child_growth_sessionhive(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import event

    root = Path(tempfile.mkdtemp(prefix="bench-growth-sh-"))
    store = SqlStore(f"sqlite:///{root / 'growth.db'}")
    payload = [0]

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool) -> None:
        if statement.startswith(("INSERT", "UPDATE")):
            payload[0] += _param_bytes(parameters) if executemany else _param_bytes([parameters])

    script = LoadtestScript(args.tools_per_turn, 0.0)
    workspace = root / "workspace"
    workspace.mkdir()
    sessions = [f"gr-{i:05d}" for i in range(args.sessions)]
    waves: list[dict[str, float]] = []

    async def main() -> None:
        backend = {"actor_backend": args.actor_backend} if args.actor_backend else {}
        hive = await AsyncHive.start(store=store, llm=ScriptedLlm(script), workspace=workspace, **backend)
        try:
            for s in sessions:
                await hive.create_session(s, _session_config(workspace, s))
            await hive.flush()
            for turn in range(1, args.turns + 1):
                before_payload, before_wchar = payload[0], io_write_bytes()
                started = time.perf_counter()
                await asyncio.gather(*(hive.generate(s, f"{s} turn {turn}") for s in sessions))
                await hive.flush()
                seconds = time.perf_counter() - started
                waves.append(
                    {
                        "turn": turn,
                        "turns_per_s": len(sessions) / seconds,
                        "payload_per_turn": (payload[0] - before_payload) / len(sessions),
                        "wchar_per_turn": (io_write_bytes() - before_wchar) / len(sessions),
                    }
                )
        finally:
            await hive.stop()

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"waves": waves, "messages_per_turn": 2 * args.tools_per_turn + 2}


def child_growth_locked(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-growth-lk-"))
    try:
        args.confirm_rate = 0.0
        run = LockedRun(args, root)
        run.create()
        run.manager.wait_for_background()
        store = run.manager.store
        assert store is not None
        waves: list[dict[str, float]] = []
        for turn in range(1, args.turns + 1):
            before_payload, before_wchar = store.bytes_written, io_write_bytes()
            started = time.perf_counter()
            run.drive(range(turn, turn + 1), len(run.sessions))
            run.manager.wait_for_background()
            seconds = time.perf_counter() - started
            waves.append(
                {
                    "turn": turn,
                    "turns_per_s": len(run.sessions) / seconds,
                    "payload_per_turn": (store.bytes_written - before_payload) / len(run.sessions),
                    "wchar_per_turn": (io_write_bytes() - before_wchar) / len(run.sessions),
                }
            )
        run.manager.shutdown()
        run.tools.close()
        return {"waves": waves, "messages_per_turn": 2 * args.tools_per_turn + 2}
    finally:
        shutil.rmtree(root, ignore_errors=True)


CHILDREN = {
    ("load", "sessionhive"): child_load_sessionhive,
    ("load", "locked"): child_load_locked,
    ("growth", "sessionhive"): child_growth_sessionhive,
    ("growth", "locked"): child_growth_locked,
}


# --------------------------------------------------------------------------- parent


def _child(mode: str, system: str, **params: Any) -> dict[str, Any]:
    argv = ["--child", system, "--mode", mode]
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(f"--{key.replace('_', '-')}")
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return run_child(SCRIPT, argv)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def bench_load(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
    for repeat in range(args.repeat):
        for system in SYSTEMS:
            print(f"  load run {repeat + 1}/{args.repeat}: {system} ...", file=sys.stderr, flush=True)
            runs[system].append(
                _child(
                    "load",
                    system,
                    sessions=args.sessions,
                    turns=args.turns,
                    tools_per_turn=args.tools_per_turn,
                    confirm_rate=args.confirm_rate,
                    actor_backend=args.actor_backend,
                    stream=args.stream,
                )
            )
    summary: dict[str, dict[str, float]] = {}
    for system, results in runs.items():
        row = {
            "turns_per_s": median(r["turns_per_s"] for r in results),
            "turn_p50_ms": median(r["turn"]["p50_ms"] for r in results),
            "turn_p99_ms": median(r["turn"]["p99_ms"] for r in results),
            "peak_rss_mb": median(r["peak_rss_mb"] for r in results),
            "wchar_per_turn": median(r["wchar_per_turn"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "verified": all(r["verified"] for r in results),
        }
        for kind in ("history", "confirm", "pause_resume", "confirm_driver"):
            row[f"{kind}_p50_ms"] = median(r["control"][kind]["p50_ms"] for r in results)
            row[f"{kind}_p99_ms"] = median(r["control"][kind]["p99_ms"] for r in results)
        summary[system] = row
    return {"runs": runs, "median": summary}


def bench_growth(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for system in SYSTEMS:
        runs = []
        for repeat in range(args.repeat):
            print(f"  growth, run {repeat + 1}/{args.repeat}: {system} ...", file=sys.stderr, flush=True)
            runs.append(
                _child(
                    "growth",
                    system,
                    sessions=args.growth_sessions,
                    turns=args.growth_turns,
                    tools_per_turn=args.tools_per_turn,
                    actor_backend=args.actor_backend if system == "sessionhive" else None,
                )
            )
        # Wave by wave, the median over the runs.
        waves = [
            {
                "turn": wave[0]["turn"],
                **{
                    key: median(w[key] for w in wave)
                    for key in ("turns_per_s", "payload_per_turn", "wchar_per_turn")
                },
            }
            for wave in zip(*(run["waves"] for run in runs), strict=True)
        ]
        results[system] = {"waves": waves, "messages_per_turn": runs[0]["messages_per_turn"], "runs": runs}
    return results


def bench_levels(args: argparse.Namespace) -> dict[str, Any]:
    levels: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
    for level in args.levels:
        for system in SYSTEMS:
            runs = []
            for repeat in range(args.repeat):
                print(f"  concurrency {level}, run {repeat + 1}: {system} ...", file=sys.stderr, flush=True)
                runs.append(
                    _child(
                        "load",
                        system,
                        sessions=level,
                        turns=args.level_turns,
                        tools_per_turn=args.tools_per_turn,
                        confirm_rate=args.confirm_rate,
                        actor_backend=args.actor_backend,
                        stream=args.stream,
                        no_verify=True,
                    )
                )
            levels[system].append(
                {
                    "concurrency": level,
                    "turn_p50_ms": median(r["turn"]["p50_ms"] for r in runs),
                    "turn_p99_ms": median(r["turn"]["p99_ms"] for r in runs),
                    "turns_per_s": median(r["turns_per_s"] for r in runs),
                    "history_p99_ms": median(r["control"]["history"]["p99_ms"] for r in runs),
                    "runs": runs,
                }
            )
    return levels


def plot_levels(levels: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"sessionhive": "tab:blue", "locked": "tab:red"}
    names = {"sessionhive": "sessionhive (actors, SQLite)", "locked": "locked baseline (RwLock, JSON files)"}
    for system, points in levels.items():
        xs = [p["concurrency"] for p in points]
        ax.plot(
            xs,
            [p["turn_p50_ms"] for p in points],
            "o-",
            color=colors[system],
            label=f"{names[system]} p50",
        )
        ax.plot(
            xs,
            [p["turn_p99_ms"] for p in points],
            "s--",
            color=colors[system],
            label=f"{names[system]} p99",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sessions (one turn each in flight)")
    ax.set_ylabel("turn latency (ms)")
    ax.set_title("Turn latency vs concurrency (scripted LLM, 0 ms latency)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    backend = args.actor_backend or f"the Hive's default ({DEFAULT_ACTOR_BACKEND})"
    print(
        f"sessionhive ('sh') actors: {backend}; SQLite store; the baseline: bench/baselines/locked_manager.py"
    )
    if "load" in results:
        sh, lk = results["load"]["median"]["sessionhive"], results["load"]["median"]["locked"]
        print(
            f"\nLoad: {args.sessions} sessions x {args.turns} turns x {args.tools_per_turn} tools, "
            f"all at once (medians of {args.repeat} runs)"
        )
        rows: list[tuple[Any, ...]] = []
        for key, label in (
            ("turns_per_s", "turns/s"),
            ("turn_p50_ms", "turn latency p50 (ms)"),
            ("turn_p99_ms", "turn latency p99 (ms)"),
            ("history_p50_ms", "history() p50 under load (ms)"),
            ("history_p99_ms", "history() p99 under load (ms)"),
            ("confirm_p99_ms", "confirm_tool() p99 under load (ms)"),
            ("pause_resume_p99_ms", "pause+resume p99 under load (ms)"),
            ("peak_rss_mb", "peak RSS (MB)"),
            ("wchar_per_turn", "bytes to write(2) per turn"),
        ):
            rows.append((label, sh[key], lk[key], _ratio(sh[key], lk[key])))
        rows.append(("histories verified", str(sh["verified"]), str(lk["verified"]), ""))
        rows.append(("failed turns", sh["failed"], lk["failed"], ""))
        print_table(("", "sessionhive", "locked", "ratio"), rows)
    if "growth" in results:
        sh_w, lk_w = results["growth"]["sessionhive"]["waves"], results["growth"]["locked"]["waves"]
        per_turn = results["growth"]["sessionhive"]["messages_per_turn"]
        window = max(1, len(sh_w) // 4)
        print(
            f"\nAs histories grow: {args.growth_sessions} sessions run turns in waves, each wave flushed "
            f"({per_turn} messages per turn; figures per turn, over windows of {window} waves)"
        )
        rows = []
        for first in range(0, len(sh_w), window):
            a, b = sh_w[first : first + window], lk_w[first : first + window]
            # Turns/s over the window: total turns over total time, i.e. the harmonic mean of the waves.
            a_rate = len(a) / sum(1 / w["turns_per_s"] for w in a)
            b_rate = len(b) / sum(1 / w["turns_per_s"] for w in b)
            a_payload = sum(w["payload_per_turn"] for w in a) / len(a)
            b_payload = sum(w["payload_per_turn"] for w in b) / len(b)
            a_wchar = sum(w["wchar_per_turn"] for w in a) / len(a)
            b_wchar = sum(w["wchar_per_turn"] for w in b) / len(b)
            rows.append(
                (
                    f"{a[0]['turn']}-{a[-1]['turn']}",
                    f"{a[0]['turn'] * per_turn}-{a[-1]['turn'] * per_turn}",
                    a_rate,
                    b_rate,
                    _ratio(a_rate, b_rate),
                    a_payload,
                    b_payload,
                    _ratio(a_payload, b_payload),
                    a_wchar,
                    b_wchar,
                    _ratio(a_wchar, b_wchar),
                )
            )
        print_table(
            (
                "turns",
                "messages",
                "sh turns/s",
                "locked turns/s",
                "ratio",
                "sh payload B",
                "locked payload B",
                "ratio",
                "sh write(2) B",
                "locked write(2) B",
                "ratio",
            ),
            rows,
        )
    if "levels" in results:
        print(f"\nTurn latency vs concurrency (sessions = concurrency, medians of {args.repeat} runs)")
        rows = []
        for a, b in zip(results["levels"]["sessionhive"], results["levels"]["locked"], strict=True):
            rows.append(
                (
                    a["concurrency"],
                    a["turn_p50_ms"],
                    a["turn_p99_ms"],
                    b["turn_p50_ms"],
                    b["turn_p99_ms"],
                    a["turns_per_s"],
                    b["turns_per_s"],
                    a["history_p99_ms"],
                    b["history_p99_ms"],
                )
            )
        print_table(
            (
                "concurrency",
                "sh p50 ms",
                "sh p99 ms",
                "locked p50 ms",
                "locked p99 ms",
                "sh turns/s",
                "locked turns/s",
                "sh history p99",
                "locked history p99",
            ),
            rows,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--tools-per-turn", type=int, default=2)
    parser.add_argument("--confirm-rate", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--actor-backend",
        choices=["asyncio", "threads", "pooled"],
        help="sessionhive's actors (default: the Hive's default)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="drive sessionhive with generate_streaming (default: generate, as the baseline's generate)",
    )
    parser.add_argument("--growth-sessions", type=int, default=100)
    parser.add_argument("--growth-turns", type=int, default=40)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    parser.add_argument("--level-turns", type=int, default=3)
    parser.add_argument("--only", choices=["load", "growth", "levels"], action="append")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "latency_vs_concurrency.png")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--from-json", type=Path, help="print the tables and plot of an earlier --json run")
    # Internal: one measurement in this (child) process.
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["load", "growth"], help=argparse.SUPPRESS)
    parser.add_argument("--no-verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = CHILDREN[(args.mode, args.child)](args)
        print(json.dumps(result))
        return 0

    if args.from_json:
        results: dict[str, Any] = json.loads(args.from_json.read_text(encoding="utf-8"))
        for key, value in results["args"].items():
            if key not in ("from_json", "only"):
                setattr(args, key, value)
    else:
        only = set(args.only or ("load", "growth", "levels"))
        info = machine_info()
        print(
            f"bench_vs_locked on {info['cpus']} CPUs, {info['memory_gb']} GB, "
            f"Python {info['python']}, {info['date']}"
        )
        results = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items() if k not in ("plot", "json", "from_json")},
        }
        if "load" in only:
            results["load"] = bench_load(args)
        if "growth" in only:
            results["growth"] = bench_growth(args)
        if "levels" in only:
            results["levels"] = bench_levels(args)
        if args.json:
            # Written before anything else can fail: a long run is never lost.
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
            print(f"figures: {args.json}")
    report(results, args)
    if "levels" in results:
        try:
            plot_levels(results["levels"], args.plot)
        except ImportError:
            print("\nno plot: matplotlib is missing (pip install -e '.[bench]')")
        else:
            print(f"\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
