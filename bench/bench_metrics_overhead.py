"""Metrics overhead: turn throughput with Prometheus instrumentation on vs off, in one process.

Run from the repository root::

    python bench/bench_metrics_overhead.py
    python bench/bench_metrics_overhead.py --sessions 500 --turns 5 --repeat 5 --workload tool

What it measures: ``sessions`` sessions (memory store, a zero-latency
ScriptedLlm, confirmations off) each run ``turns`` turns; every round starts
one streaming turn in each session at once and waits for all of them. Only
the turns are timed (not start-up, session creation or stop). Throughput is
turns per second of wall time, and turns per CPU second of this process
(``time.process_time``, all threads): the second figure is steadier when
other processes share the machine.

- ``on``: the Hive as shipped, every metric recorded on its own registry.
- ``off``: the instrumentation is not executed. sessionhive has no switch
  for that, so this script replaces ``sessionhive.hive.HiveMetrics`` (the
  class ``Hive.start`` instantiates) with :class:`NoopHiveMetrics`, whose
  metric attributes are stand-ins with ``labels()/inc()/dec()/set()/observe()``
  that do nothing. Every call site still runs its Python call; what goes
  away is prometheus_client's work (label lookup, locks, bucket search).

Workloads: ``text`` (one LLM call per turn) or ``tool`` (an LLM call asking
for ``list_dir``, the tool, then a final LLM call: more events, tool and LLM
metrics per turn). On and off runs alternate (on/off, then off/on) after one
discarded warm-up run of each, and the medians of ``--repeat`` runs are
compared. A counting pass (stand-ins that tally calls) gives the metric calls
per turn; with the measured cost of one prometheus_client call, that yields
an estimate of the metrics' CPU share that other load on the machine does not
blur. ``--json FILE`` also writes the results, e.g. as a baseline under
``bench/baselines/``.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from sessionhive import ConfirmationPolicy, Hive, Message, Reply, ScriptedLlm, SessionConfig, ToolCall
from sessionhive.metrics.registry import HiveMetrics

Mode = Literal["on", "off", "count"]
Workload = Literal["text", "tool"]

_NO_CONFIRM = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
_MODES: tuple[Mode, Mode] = ("on", "off")
# itertools.count's next() is atomic under the GIL: exact tallies from many threads, no lock.
_LOOKUPS = itertools.count()
_UPDATES = itertools.count()
# Hive.start looks HiveMetrics up in this module's globals at call time: the name to replace.
_HIVE_MODULE: Any = importlib.import_module("sessionhive._core")  # where a Hive builds its HiveMetrics


class _NoopMetric:
    """Answers every prometheus_client metric call a Hive makes, and records nothing."""

    __slots__ = ()

    def labels(self, *_values: object, **_labels: object) -> _NoopMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


class _CountingMetric(_NoopMetric):
    """A no-op stand-in that tallies the calls: label lookups and value updates."""

    __slots__ = ()

    def labels(self, *_values: object, **_labels: object) -> _NoopMetric:
        next(_LOOKUPS)
        return self

    def inc(self, amount: float = 1) -> None:  # noqa: ARG002 - prometheus_client's name, callers may pass it by keyword
        next(_UPDATES)

    def dec(self, amount: float = 1) -> None:  # noqa: ARG002 - prometheus_client's name, callers may pass it by keyword
        next(_UPDATES)

    def set(self, value: float) -> None:  # noqa: ARG002 - prometheus_client's name, callers may pass it by keyword
        next(_UPDATES)

    def observe(self, amount: float) -> None:  # noqa: ARG002 - prometheus_client's name, callers may pass it by keyword
        next(_UPDATES)


_NOOP = _NoopMetric()


class NoopHiveMetrics(HiveMetrics):
    """A :class:`HiveMetrics` whose metrics are no-op stand-ins (same attribute names).

    The attribute names are read off a real HiveMetrics, so a metric added to
    the registry later is stubbed here too instead of failing with an
    AttributeError. ``registry`` stays a real, empty CollectorRegistry.
    """

    stand_in: _NoopMetric = _NOOP

    def __init__(self, registry: CollectorRegistry | None = None) -> None:  # noqa: ARG002 - HiveMetrics's signature (registry=)
        self.registry = CollectorRegistry(auto_describe=True)
        for name in _metric_attributes():
            setattr(self, name, self.stand_in)


class CountingHiveMetrics(NoopHiveMetrics):
    """Like :class:`NoopHiveMetrics`, but counts how many metric calls a Hive makes."""

    stand_in = _CountingMetric()


def _metric_attributes() -> list[str]:
    real = HiveMetrics(CollectorRegistry())
    return [
        name
        for name, value in vars(real).items()
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase)
    ]


@contextmanager
def metrics_mode(mode: Mode) -> Iterator[None]:
    """While active, ``Hive.start`` builds real metrics (``on``), no-op ones (``off``) or counting ones."""
    original = _HIVE_MODULE.HiveMetrics
    replacement = {"on": original, "off": NoopHiveMetrics, "count": CountingHiveMetrics}[mode]
    _HIVE_MODULE.HiveMetrics = replacement
    try:
        yield
    finally:
        _HIVE_MODULE.HiveMetrics = original


def _script(workload: Workload) -> ScriptedLlm:
    if workload == "text":
        return ScriptedLlm([Reply("a short final answer of a few words")])

    def tool_then_answer(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply("done: the workspace has what we need")
        return Reply("let me look", [ToolCall("list_dir", {"path": "."})])

    return ScriptedLlm(tool_then_answer)


def one_run(mode: Mode, sessions: int, turns: int, workload: Workload, backend: str) -> dict[str, Any]:
    """Start a Hive, create the sessions, time the turns; returns throughput and a sanity count."""
    with (
        tempfile.TemporaryDirectory() as workspace,
        metrics_mode(mode),
        Hive.start(store="memory", llm=_script(workload), workspace=workspace, actor_backend=backend) as hive,
    ):
        ids = [f"bench-{n:05d}" for n in range(sessions)]
        for session_id in ids:
            hive.create_session(session_id, _NO_CONFIRM)
        started, cpu_started = time.perf_counter(), time.process_time()
        for turn in range(turns):
            streams = [hive.generate_streaming(session_id, f"turn {turn}") for session_id in ids]
            for stream in streams:
                stream.result(timeout=300)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        recorded = hive.metrics.registry.get_sample_value("sessionhive_turns_total", {"outcome": "completed"})
    return {
        "turns_per_s": sessions * turns / elapsed,
        "turns_per_cpu_s": sessions * turns / cpu,
        "seconds": elapsed,
        "recorded_turns": recorded,
    }


def op_costs() -> dict[str, float]:
    """Nanoseconds per prometheus_client operation, as the Hive performs them."""
    registry = CollectorRegistry()
    counter = Counter("c_total", "c", ["a", "b"], registry=registry)
    histogram = Histogram("h_seconds", "h", ["a"], registry=registry)
    child = counter.labels("x", "y")
    number = 200_000

    def per_op(statement: Any) -> float:
        return min(timeit.repeat(statement, number=number, repeat=3)) / number * 1e9

    return {
        "counter.labels(...).inc()": per_op(lambda: counter.labels("x", "y").inc()),
        "cached child .inc()": per_op(child.inc),
        "histogram.labels(...).observe()": per_op(lambda: histogram.labels("x").observe(0.01)),
        "no-op stand-in .labels().inc()": per_op(lambda: _NOOP.labels("x", "y").inc()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--turns", type=int, default=5, help="turns per session per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per mode; the medians are compared")
    parser.add_argument("--workload", choices=("text", "tool"), default="tool")
    parser.add_argument("--backend", choices=("asyncio", "threads", "pooled"), default="asyncio")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    for name in ("sessions", "turns", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    print(
        f"metrics overhead: {args.sessions} sessions x {args.turns} turns, workload={args.workload}, "
        f"backend={args.backend}, {args.repeat} runs per mode, Python {platform.python_version()}"
    )
    print("'off' = sessionhive.hive.HiveMetrics monkeypatched to NoopHiveMetrics (no-op metric stand-ins)")
    warm = max(1, args.sessions // 5)
    for mode in _MODES:
        one_run(mode, warm, 1, args.workload, args.backend)  # imports, caches, thread pools

    lookups_before, updates_before = next(_LOOKUPS), next(_UPDATES)
    one_run("count", args.sessions, args.turns, args.workload, args.backend)
    per_turn = {
        # -1: the next() that read the tally before the run
        "labels() lookups": (next(_LOOKUPS) - lookups_before - 1) / (args.sessions * args.turns),
        "value updates": (next(_UPDATES) - updates_before - 1) / (args.sessions * args.turns),
    }

    runs: dict[Mode, list[dict[str, Any]]] = {"on": [], "off": []}
    for repeat in range(args.repeat):
        order: tuple[Mode, Mode] = ("on", "off") if repeat % 2 == 0 else ("off", "on")
        for mode in order:
            result = one_run(mode, args.sessions, args.turns, args.workload, args.backend)
            runs[mode].append(result)
            rate, per_cpu, seconds = result["turns_per_s"], result["turns_per_cpu_s"], result["seconds"]
            label = f"run {repeat + 1} {mode:>3}"
            print(f"  {label}: {rate:7.0f} turns/s  {per_cpu:7.0f} turns/CPU-s  ({seconds:.2f} s)")

    expected = args.sessions * args.turns
    assert all(r["recorded_turns"] == expected for r in runs["on"]), "'on' runs must record every turn"
    assert all(r["recorded_turns"] is None for r in runs["off"]), "'off' runs must record nothing"

    summary: dict[str, dict[str, float]] = {}
    print()
    for figure, unit in (("turns_per_s", "turns/s (wall)"), ("turns_per_cpu_s", "turns per CPU second")):
        values = {mode: [r[figure] for r in runs[mode]] for mode in _MODES}
        median: dict[str, float] = {mode: statistics.median(values[mode]) for mode in _MODES}
        ratio = median["on"] / median["off"]
        summary[figure] = {**median, "ratio": ratio}
        print(f"{unit}:")
        for mode in _MODES:
            low, high = min(values[mode]), max(values[mode])
            print(f"  metrics {mode:>3}: median {median[mode]:7.0f}  (min {low:.0f}, max {high:.0f})")
        print(f"  on/off ratio: {ratio:.3f}  (metrics cost {100 * (1 - ratio):+.1f}% of throughput)")

    costs = op_costs()
    print("\nper-operation cost (best of 3):")
    for name, nanoseconds in costs.items():
        print(f"  {name:<34} {nanoseconds:7.0f} ns")
    update_ns = costs["cached child .inc()"]
    lookup_ns = costs["counter.labels(...).inc()"] - update_ns
    estimate_us = (per_turn["labels() lookups"] * lookup_ns + per_turn["value updates"] * update_ns) / 1000
    cpu_per_turn_us = 1e6 / summary["turns_per_cpu_s"]["off"]
    print(
        f"\nmetric calls per turn (counted): {per_turn['labels() lookups']:.1f} labels() lookups, "
        f"{per_turn['value updates']:.1f} value updates"
    )
    share = 100 * estimate_us / cpu_per_turn_us
    print(
        f"estimated prometheus_client CPU per turn: {estimate_us:.0f} us, "
        f"{share:.1f}% of the {cpu_per_turn_us:.0f} us a turn costs with metrics off"
    )

    if args.json:
        results = {
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "off_means": "sessionhive.hive.HiveMetrics monkeypatched to NoopHiveMetrics",
            "medians": summary,
            "runs": runs,
            "op_cost_ns": costs,
            "metric_calls_per_turn": per_turn,
            "estimated_metrics_cpu_us_per_turn": estimate_us,
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
