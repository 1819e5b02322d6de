"""GET /healthz on a reused keep-alive connection vs a fresh one per request, against `sessionhive serve`.

    python bench/bench_http_keepalive.py [--requests 200] [--repeat 3]

Starts ``sessionhive serve --store memory --port 0`` as a subprocess and
times ``--requests`` GETs with one httpx client: first reusing its
keep-alive connection, then with keep-alive off (a new TCP connection per
request, same client, so no client set-up is counted). Prints the medians
(ms) per run and the ratio reused / fresh. A reused connection should be
the cheaper one (ratio below 1); without TCP_NODELAY on the accepted
sockets it was ~44 ms against ~2 ms (ratio ~20), every request after a
connection's first waiting for the client's delayed ACK.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, machine_info, median, print_table


@contextmanager
def serve() -> Iterator[str]:
    """``sessionhive serve`` from this checkout on a free loopback port; yields its URL."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SESSIONHIVE_TOKEN", None)
    with tempfile.TemporaryDirectory() as workspace:
        command = [sys.executable, "-m", "sessionhive", "serve", "--store", "memory", "--port", "0"]
        process = subprocess.Popen(
            [*command, "--workspace", workspace],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                found = re.search(r"listening on (http://\S+?)/ ", line)
                if found:
                    yield found.group(1)
                    break
            else:
                raise RuntimeError("sessionhive serve exited before listening")
        finally:
            process.terminate()
            process.wait(30)


def timed_gets(url: str, requests: int, keep_alive: bool) -> list[float]:
    """Milliseconds per GET /healthz; one warm-up request is not counted."""
    limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
    samples: list[float] = []
    with httpx.Client(base_url=url, limits=limits) as client:
        client.get("/healthz").raise_for_status()
        for _ in range(requests):
            started = time.perf_counter()
            client.get("/healthz").raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per mode and run")
    parser.add_argument("--repeat", type=int, default=3, help="runs, each against a fresh server")
    args = parser.parse_args()
    print(machine_info())
    rows = []
    reused_medians: list[float] = []
    fresh_medians: list[float] = []
    for run in range(1, args.repeat + 1):
        with serve() as url:
            reused = median(timed_gets(url, args.requests, keep_alive=True))
            fresh = median(timed_gets(url, args.requests, keep_alive=False))
        reused_medians.append(reused)
        fresh_medians.append(fresh)
        rows.append([f"run {run}", f"{reused:.2f}", f"{fresh:.2f}", f"{reused / fresh:.2f}"])
    reused, fresh = median(reused_medians), median(fresh_medians)
    rows.append(["median", f"{reused:.2f}", f"{fresh:.2f}", f"{reused / fresh:.2f}"])
    print(f"GET /healthz, {args.requests} requests per mode, median ms per request")
    print_table(["", "reused connection", "fresh connection", "reused / fresh"], rows)


if __name__ == "__main__":
    main()
