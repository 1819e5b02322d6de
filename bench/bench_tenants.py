"""One tenant floods a `sessionhive serve` with turns: how much slower are another tenant's turns?

    python bench/bench_tenants.py [--turns 100] [--flood 64] [--quota 8] [--llm-latency 0.02]

Each configuration runs against a fresh ``sessionhive serve --tokens FILE``
subprocess on 127.0.0.1 (SQLite store, the load test's scripted model: one
``list_dir`` call per turn, so two model answers, each after
``--llm-latency`` seconds; no confirmations; an audit row per turn). Tenant ``quiet``
runs ``--turns`` turns one after another and times each; tenant ``loud``,
from a process of its own, keeps ``--flood`` turns in flight on as many sessions, retrying 50 ms after a
429 (a polite client would wait the 1 s ``Retry-After`` says; this one does
not, to press harder). Three runs:

- ``alone``: quiet tenant only, the baseline;
- ``flood``: loud tenant without a quota;
- ``flood+quota``: loud tenant with ``max_concurrent_turns = --quota``.

The ratio is the quiet tenant's median (and p95) latency under the flood over
its latency alone. With two tenants on the machine a fair share is half of
it, so a ratio up to about 2 is within the machine's share.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

SERVE = "import sys; from sessionhive.cli import main; sys.exit(main())"
NO_CONFIRMATION = {"confirmation_policy": {"enabled": False}}
RETRY_AFTER_429_S = 0.05


def _tokens_file(directory: Path, quota: int | None) -> dict[str, str]:
    from sessionhive.serve import new_token

    tokens: dict[str, str] = {}
    tables: list[str] = []
    for tenant in ("quiet", "loud"):
        tokens[tenant], table = new_token(tenant, tenant, ["read", "write"])
        tables.append(table)
    if quota is not None:
        tables.append(f"[tenant.loud]\nmax_concurrent_turns = {quota}\n")
    (directory / "tokens.toml").write_text("\n".join(tables), encoding="utf-8")
    return tokens


def _start(directory: Path, llm_latency: float) -> tuple[subprocess.Popen[bytes], str]:
    log = directory / "serve.log"
    with log.open("wb") as output:  # a file, not a pipe: a pipe nobody reads would stall the server
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVE,
                "serve",
                "--store",
                f"sqlite:///{directory / 'bench.db'}",
                "--port",
                "0",
                "--tokens",
                str(directory / "tokens.toml"),
                "--workspace",
                str(directory),
                "--llm-latency",
                str(llm_latency),
                "--loadtest-script",
                "1",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "SESSIONHIVE_TOKEN"},
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", log.read_text(encoding="utf-8"))
        if found:
            return process, found.group(1)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("sessionhive serve did not start:\n" + log.read_text(encoding="utf-8"))


async def _quiet(url: str, token: str, turns: int) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        (
            await http.post("/v1/sessions", json={"id": "quiet-0", "config": NO_CONFIRMATION})
        ).raise_for_status()
        for n in range(turns):
            started = time.perf_counter()
            answer = await http.post("/v1/sessions/quiet-0/turns", json={"prompt": f"turn {n}"})
            answer.raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


async def _loud(url: str, token: str, flood: int, ready: Any, stop: Any) -> dict[str, int]:
    counts = {"turns": 0, "refused": 0, "transport_errors": 0}
    limits = httpx.Limits(max_connections=flood, max_keepalive_connections=flood)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60, limits=limits
    ) as http:
        for n in range(flood):
            (
                await http.post("/v1/sessions", json={"id": f"loud-{n}", "config": NO_CONFIRMATION})
            ).raise_for_status()
        ready.set()

        async def worker(n: int) -> None:
            while not stop.is_set():
                try:
                    answer = await http.post(f"/v1/sessions/loud-{n}/turns", json={"prompt": "flood"})
                except httpx.TransportError:
                    # A keep-alive connection the server closed as this request left: send it again.
                    counts["transport_errors"] += 1
                    continue
                if answer.status_code == 429:
                    counts["refused"] += 1
                    await asyncio.sleep(RETRY_AFTER_429_S)
                else:
                    answer.raise_for_status()
                    counts["turns"] += 1

        await asyncio.gather(*(worker(n) for n in range(flood)))
    return counts


def _flood_child(url: str, token: str, flood: int, ready: Any, stop: Any, results: Any) -> None:
    """The loud tenant in a process of its own: its client work must not delay the quiet client's loop."""
    results.put(asyncio.run(_loud(url, token, flood, ready, stop)))


def _measure(url: str, tokens: dict[str, str], turns: int, flood: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    loud = None
    if flood:
        loud = context.Process(target=_flood_child, args=(url, tokens["loud"], flood, ready, stop, results))
        loud.start()
        if not ready.wait(120):
            loud.kill()
            raise RuntimeError("the loud tenant did not start")
        time.sleep(2.0)  # let the flood reach its steady state
    started = time.perf_counter()
    latencies = asyncio.run(_quiet(url, tokens["quiet"], turns))
    elapsed = time.perf_counter() - started
    counts = {"turns": 0, "refused": 0, "transport_errors": 0}
    if loud is not None:
        stop.set()
        counts = results.get(timeout=120)
        loud.join(60)
    return {
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000,
        "loud_turns_per_s": counts["turns"] / elapsed,
        "loud_refused_per_s": counts["refused"] / elapsed,
        "loud_transport_errors": counts["transport_errors"],
    }


def run(turns: int, flood: int, quota: int | None, llm_latency: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        tokens = _tokens_file(directory, quota)
        process, url = _start(directory, llm_latency)
        try:
            return _measure(url, tokens, turns, flood)
        finally:
            process.terminate()
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--turns", type=int, default=100, help="the quiet tenant's turns (default: 100)")
    parser.add_argument(
        "--flood", type=int, default=64, help="the loud tenant's turns in flight (default: 64)"
    )
    parser.add_argument(
        "--quota", type=int, default=8, help="the loud tenant's max_concurrent_turns (default: 8)"
    )
    parser.add_argument(
        "--llm-latency", type=float, default=0.02, help="seconds the model takes per answer (default: 0.02)"
    )
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU(s); quiet tenant: {args.turns} turns in a row; loud: {args.flood} in flight")
    alone = run(args.turns, 0, None, args.llm_latency)
    rows = [("alone", alone)]
    print(f"  alone: {alone}", flush=True)
    for label, quota in (("flood", None), (f"flood+quota {args.quota}", args.quota)):
        rows.append((label, run(args.turns, args.flood, quota, args.llm_latency)))
        print(f"  {label}: {rows[-1][1]}", flush=True)
    print(
        f"{'run':<18}{'median ms':>10}{'p95 ms':>9}{'ratio':>7}{'p95 ratio':>10}{'loud t/s':>10}{'429/s':>8}"
    )
    for label, row in rows:
        print(
            f"{label:<18}{row['median_ms']:>10.1f}{row['p95_ms']:>9.1f}"
            f"{row['median_ms'] / alone['median_ms']:>7.2f}{row['p95_ms'] / alone['p95_ms']:>10.2f}"
            f"{row['loud_turns_per_s']:>10.0f}{row['loud_refused_per_s']:>8.0f}"
        )
    print("ratio: the quiet tenant's latency over its latency alone (two tenants: a fair share is about 2)")


if __name__ == "__main__":
    main()
