"""What the bash sandbox and the tool lanes cost: sandboxed vs plain ``true``, ``list_dir`` vs a plain thread.

    python bench/bench_sandbox.py [--bash-calls 100] [--list-calls 2000] [--repeat 3]

One process. Each figure is the median, over ``--repeat`` rounds, of the
mean wall time of one call made ``--bash-calls`` (``--list-calls``) times in
a row through ``ToolExecutor.execute``; rounds alternate the order of the
variants so that warm caches favour none.

- ``bash true``: the ``bash`` tool under the ``unsandboxed_bash=True``
  opt-out (one ``bash -c`` subprocess: the baseline), sandboxed as shipped
  (bubblewrap, namespaces, nobody, a ``pids`` cgroup per call where one can
  be made) and sandboxed without the per-call cgroup (what the process limit
  costs).
- ``list_dir``: ``execute("list_dir")`` (argument check, a slot of the
  built-in lane for the session, a reused daemon thread) vs the same
  function called with ``asyncio.to_thread`` (the default pool, no argument
  check, no per-session share).

The last column is the ratio to the baseline of its group.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, print_table
from sessionhive.tools import ToolContext, ToolExecutor


async def mean_call_s(make_call: Callable[[], Awaitable[object]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await make_call()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bash-calls", type=int, default=100)
    parser.add_argument("--list-calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as scratch:
        ws = Path(scratch)
        (ws / "a.txt").write_text("a")
        asyncio.run(measure(ws, args.bash_calls, args.list_calls, args.repeat))


async def measure(ws: Path, bash_calls: int, list_calls: int, repeat: int) -> None:
    plain = ToolExecutor(ws, unsandboxed_bash=True)
    sandboxed = ToolExecutor(ws)
    sandbox = sandboxed.bash_sandbox
    if sandbox is None or not sandbox.available:
        sys.exit(f"no working sandbox here: {sandbox.reason if sandbox else 'opted out'}")
    no_cgroup = ToolExecutor(ws)
    # The benchmark's one reach inside: the same sandbox minus the per-call cgroup.
    no_cgroup._builtins.sandbox = dataclasses.replace(sandbox, cgroups=None)  # noqa: SLF001
    builtins = sandboxed._builtins  # noqa: SLF001
    context = ToolContext(ws, "bench")

    def bash_on(executor: ToolExecutor) -> Callable[[], Awaitable[object]]:
        return lambda: executor.execute("bash", {"command": "true"}, session_id="bench")

    variants: dict[str, Callable[[], Awaitable[object]]] = {
        "bash true, unsandboxed (baseline)": bash_on(plain),
        "bash true, sandboxed": bash_on(sandboxed),
        "bash true, sandboxed without the cgroup": bash_on(no_cgroup),
        "list_dir, asyncio.to_thread (baseline)": lambda: asyncio.to_thread(
            builtins.list_dir, context=context
        ),
        "list_dir, its lane": lambda: sandboxed.execute("list_dir", {}, session_id="bench"),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(repeat + 1):  # round 0 warms up and is dropped
        names = list(variants) if round_number % 2 else list(reversed(variants))
        for name in names:
            calls = bash_calls if name.startswith("bash") else list_calls
            took = await mean_call_s(variants[name], calls)
            if round_number:
                samples[name].append(took)
    for executor in (plain, sandboxed, no_cgroup):
        executor.close()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows = []
    for name, value in medians.items():
        baseline = next(b for b in medians if b.startswith(name.split(",")[0]) and "baseline" in b)
        rows.append([name, value * 1000, value / medians[baseline]])
    info = machine_info()
    print(f"{info['cpus']} CPUs, Python {info['python']}, {info['platform']}")
    print(f"process limit: {sandbox.process_limit}")
    print_table(["variant", "ms per call", "x baseline"], rows)


if __name__ == "__main__":
    main()
