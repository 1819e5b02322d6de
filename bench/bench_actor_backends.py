"""Compare sessionhive's actor backends: one OS thread per actor vs a pooled dispatcher.

Run from the repository root:

    python bench/bench_actor_backends.py [--actors 10000] [--repeat 3] [--backend both|threads|pooled]

For each backend and repetition, a fresh child process (so that memory freed
by an earlier run, or thread stacks cached by the C library, cannot flatter a
later one) starts N actors and measures:

* start-up per actor: N ``spawn`` calls until every actor has run ``on_start``;
* memory per idle actor, two ways: the growth of the process's resident set
  (``/proc/self/statm``; includes OS thread stacks and allocator overhead) and
  the Python heap growth seen by ``tracemalloc`` (excludes thread stacks, so
  it understates ThreadBackend; measured in a second batch of N actors,
  because tracing slows everything else down);
* ask round trip per message across the N live actors: one blocking ask to
  each actor in turn ("sequential"), and all N asks sent before waiting for
  any answer ("fire all, then wait").

Figures are medians over the repetitions. ``pooled/threads`` below 1 means the
pooled backend is cheaper. ``--json PATH`` also writes the figures (for
``bench/baselines/``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

if __package__ in (None, ""):
    # Run as a script: make the repository's package importable without installing it.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pykka

from sessionhive.runtime import ActorBackend, HiveActor, PooledBackend, ThreadBackend

METRICS = {
    "startup_us": "start-up per actor (us)",
    "rss_kb": "memory per idle actor, RSS (KB)",
    "traced_kb": "memory per idle actor, tracemalloc (KB)",
    "ask_seq_us": "ask, sequential (us/msg)",
    "ask_fire_us": "ask, fire all then wait (us/msg)",
}


@dataclass(frozen=True, slots=True)
class Ping:
    n: int


class StartBarrier:
    """Fires ``done`` once ``expected`` actors have run ``on_start``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        # itertools.count's __next__ is one C call, atomic under the GIL: the
        # bench needs no lock to count arrivals from many threads.
        self._arrivals = itertools.count(1)
        self.done = threading.Event()

    def arrive(self) -> None:
        if next(self._arrivals) == self.expected:
            self.done.set()


class BenchActor(HiveActor):
    """An actor with no state of its own, so memory figures are the runtime's."""

    barrier: ClassVar[StartBarrier | None] = None

    def on_start(self) -> None:
        barrier = BenchActor.barrier
        if barrier is not None:
            barrier.arrive()

    def on_Ping(self, message: Ping) -> int:
        return message.n


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_backend(name: str) -> ActorBackend:
    return ThreadBackend() if name == "threads" else PooledBackend()


def spawn_all(backend: ActorBackend, n: int) -> list[pykka.ActorRef[BenchActor]]:
    barrier = StartBarrier(n)
    BenchActor.barrier = barrier
    refs = [backend.spawn(BenchActor) for _ in range(n)]
    if not barrier.done.wait(600):
        raise RuntimeError("actors did not start")
    BenchActor.barrier = None
    return refs


def stop_all(refs: list[pykka.ActorRef[BenchActor]]) -> None:
    # Oldest first: pykka's registry finds (and unregisters) those at once.
    stops = [ref.stop(block=False) for ref in refs]
    for stop in stops:
        stop.get(timeout=600)


def child(backend_name: str, n: int) -> dict[str, float]:
    """One repetition for one backend, in this (fresh) process."""
    backend = make_backend(backend_name)
    try:
        warm = spawn_all(backend, 10)  # imports, first thread starts, class creation
        warm[0].ask(Ping(0), block=True)
        stop_all(warm)
        gc.collect()

        rss_before = resident_bytes()
        started = time.perf_counter()
        refs = spawn_all(backend, n)
        startup = time.perf_counter() - started
        gc.collect()
        rss = resident_bytes() - rss_before

        started = time.perf_counter()
        for i, ref in enumerate(refs):
            if ref.ask(Ping(i), block=True) != i:
                raise AssertionError("wrong answer")
        ask_seq = time.perf_counter() - started

        started = time.perf_counter()
        futures = [ref.ask(Ping(i), block=False) for i, ref in enumerate(refs)]
        if pykka.get_all(futures, timeout=600) != list(range(n)):
            raise AssertionError("wrong answers")
        ask_fire = time.perf_counter() - started
        del futures

        stop_all(refs)
        del refs
        gc.collect()

        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        refs = spawn_all(backend, n)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        tracemalloc.stop()
        stop_all(refs)
    finally:
        backend.shutdown()
    return {
        "startup_us": startup / n * 1e6,
        "rss_kb": rss / n / 1024,
        "traced_kb": traced / n / 1024,
        "ask_seq_us": ask_seq / n * 1e6,
        "ask_fire_us": ask_fire / n * 1e6,
    }


def run_child(backend_name: str, n: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", backend_name, "--actors", str(n)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--actors", type=int, default=10_000, help="live actors per run (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are shown (default 3)")
    parser.add_argument("--backend", choices=["both", "threads", "pooled"], default="both")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", choices=["threads", "pooled"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.actors)))
        return

    backends = ["threads", "pooled"] if args.backend == "both" else [args.backend]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in backends}
    for repetition in range(args.repeat):
        for name in backends:
            print(f"run {repetition + 1}/{args.repeat}: {name}, {args.actors} actors ...", file=sys.stderr)
            runs[name].append(run_child(name, args.actors))
    medians = {
        name: {key: statistics.median(run[key] for run in runs[name]) for key in METRICS} for name in runs
    }

    cpus = os.cpu_count() or 1
    print(
        f"\n{args.actors} actors, median of {args.repeat}; Python {platform.python_version()}, "
        f"pykka {version('pykka')}, {cpus} CPUs; pooled: {cpus} dispatcher threads, throughput 50\n"
    )
    header = f"{'':42}" + "".join(f"{name:>12}" for name in backends)
    if len(backends) == 2:
        header += f"{'pooled/threads':>16}"
    print(header)
    for key, label in METRICS.items():
        row = f"{label:42}" + "".join(f"{medians[name][key]:12.2f}" for name in backends)
        if len(backends) == 2:
            row += f"{medians['pooled'][key] / medians['threads'][key]:16.3f}"
        print(row)

    if args.json:
        result: dict[str, Any] = {
            "actors": args.actors,
            "repeat": args.repeat,
            "python": platform.python_version(),
            "pykka": version("pykka"),
            "cpus": cpus,
            "medians": medians,
            "runs": runs,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
