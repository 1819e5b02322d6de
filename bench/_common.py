"""Helpers shared by the benchmarks: medians of repeated runs, tables, process memory and I/O, machine facts.

Every benchmark runs each measured configuration in a fresh child process
(:func:`run_child`) so that threads, caches and freed-but-kept memory of one
run cannot flatter or penalize the next; the child prints one JSON object on
its last stdout line.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "io_write_bytes",
    "machine_info",
    "median",
    "print_table",
    "proc_status_bytes",
    "rss_bytes",
    "run_child",
]

REPO = Path(__file__).resolve().parent.parent


def median(values: Iterable[float]) -> float:
    """The median, ignoring NaNs (``nan`` when nothing is left)."""
    kept = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(kept) if kept else math.nan


def proc_status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``...) in bytes; 0 where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """The resident set size of this process now."""
    return proc_status_bytes("VmRSS")


def io_write_bytes() -> int:
    """Bytes this process has passed to ``write(2)`` and friends so far (``wchar`` of ``/proc/self/io``).

    Counts what the program asked to write, to any file, before the page
    cache: the figure to compare two storage strategies run alone in a
    process. 0 where ``/proc`` is unavailable.
    """
    try:
        with open("/proc/self/io", encoding="ascii") as io:
            for line in io:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    memory = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            memory = int(meminfo.readline().split()[1]) * 1024
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": os.cpu_count(),
        "memory_gb": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None) -> None:
    """A plain aligned table (first column left-aligned, the rest right-aligned)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(parts), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    out.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def run_child(script: Path, args: Sequence[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python script args`` from the repository root; return the JSON object on its last stdout line.

    The child's stderr passes through (progress, warnings). A failing child
    raises ``RuntimeError`` with its output.
    """
    command = [sys.executable, str(script), *args]
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed with code {done.returncode}:\n{done.stdout}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
