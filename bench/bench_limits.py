"""1,000 sessions on one provider quota, with the account limiter and without it: turns/s and p99 call wait.

    python bench/bench_limits.py [--sessions 1000] [--turns 2] [--rpm 600] [--tpm 750000] [--repeat 3]

Each run starts llmock (``llmock serve --rpm --tpm``, a mock OpenAI that
enforces the quota as providers do, in its own process) and a Hive in a fresh
child process, creates ``--sessions`` sessions and runs ``--turns`` turns in
each, every session at once, through the real OpenAI client (``max_retries=8``).
The default quota (600 RPM = 10 calls/s after a burst of 600) is well below
what the Hive sustains against llmock on a 2-core machine (about 50 turns/s),
so the quota, not the CPU, bounds the run.

- ``limiter``: ``LlmConfig.rate_limit`` states the quota; calls wait for
  capacity before they are sent.
- ``none`` (the baseline, sessionhive before issue 23): the account limiter is
  replaced by one that never waits and learns nothing, so each session's client
  retries its own 429s after their ``Retry-After``, as before.

A "model-call wait" is the time from the turn asking for a model answer to
the answer (llmock answers at once, so it is the waiting: for capacity, or in
429s and retry sleeps). Prints per-run figures, the medians, and the ratios
limiter / none for turns/s and p99 wait; failed turns and the 429s llmock
journaled are shown beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table, run_child

MODES = ("limiter", "none")


class TimedClient:
    """An LlmClient that times every call of the client it wraps (wait, retries and answer)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seconds: list[float] = []

    @property
    def provider(self) -> str:
        return str(self._inner.provider)

    @property
    def model(self) -> str:
        return str(self._inner.model)

    async def complete(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._inner.complete(request)
        finally:
            self.seconds.append(time.perf_counter() - started)

    async def stream(self, request: Any, on_text: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._inner.stream(request, on_text)
        finally:
            self.seconds.append(time.perf_counter() - started)


def _without_limiter() -> None:
    """Give every client a limiter that admits at once and ignores the headers (the pre-limiter client)."""
    from sessionhive.llm import _sdk_base
    from sessionhive.llm.limits import AccountLimiter

    class NoLimiter(AccountLimiter):
        def observe(self, headers: Any, status: int, *, max_pause_s: float = 30.0) -> None:  # noqa: ARG002
            if status == 429:
                self.rate_limited += 1

    def no_limiter(provider: str, endpoint: str, api_key: str, stated: Any) -> AccountLimiter:  # noqa: ARG001
        return NoLimiter(provider, endpoint)

    _sdk_base.account_limiter = no_limiter  # type: ignore[attr-defined]


def child(mode: str, sessions: int, turns: int, rpm: int, tpm: int) -> dict[str, Any]:
    from sessionhive import ConfirmationPolicy, Hive, LlmConfig, RateLimit, SessionConfig
    from sessionhive.llm import create_client
    from sessionhive.loadtest.report import percentile
    from tests.llm.llmock_server import llmock_process

    if mode == "none":
        _without_limiter()
    no_confirm = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
    with (
        tempfile.TemporaryDirectory() as tmp,
        llmock_process(Path(tmp), ["--rpm", str(rpm), "--tpm", str(tpm), "--tool-mode", "off"]) as mock,
    ):
        limit = RateLimit(requests_per_minute=rpm, tokens_per_minute=tpm) if mode == "limiter" else None
        config = LlmConfig(
            "openai", "gpt-4o-mini", api_key="sk-bench-limits", base_url=mock.openai_url,
            max_tokens=64, rate_limit=limit, max_retries=8,
        )  # fmt: skip
        client = TimedClient(create_client(config))
        failed = done = 0
        with Hive.start(store="memory", llm=client, workspace=tmp) as hive:
            for i in range(sessions):
                hive.create_session(f"s{i}", no_confirm)
            started = time.perf_counter()
            for turn in range(turns):
                handles = [
                    hive.generate_streaming(f"s{i}", f"question {turn} of {i}") for i in range(sessions)
                ]
                for handle in handles:
                    try:
                        ok = handle.result(900).stop_reason == "stop"
                    except Exception:  # a failed turn is a figure here
                        ok = False
                    done += ok
                    failed += not ok
            drive = time.perf_counter() - started
        requests = mock.requests()
    waits = sorted(client.seconds)
    return {
        "mode": mode,
        "turns_per_s": done / drive,
        "failed_turns": failed,
        "p50_wait_s": percentile(waits, 0.50),
        "p99_wait_s": percentile(waits, 0.99),
        "requests": len(requests),
        "answered_429": sum(r["status"] == 429 for r in requests),
        "drive_s": drive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--tpm", type=int, default=750_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sessions, args.turns, args.rpm, args.tpm)))
        return
    print(json.dumps(machine_info()))
    print(
        f"{args.sessions} sessions x {args.turns} turns, llmock quota {args.rpm} RPM / {args.tpm} TPM, "
        f"{args.repeat} runs per mode (alternating)\n"
    )
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    script = Path(__file__).resolve()
    common = ["--sessions", str(args.sessions), "--turns", str(args.turns)]
    common += ["--rpm", str(args.rpm), "--tpm", str(args.tpm)]
    for _ in range(args.repeat):
        for mode in MODES:
            runs[mode].append(run_child(script, [*common, "--child", mode], timeout=1800))
    rows = []
    for mode in MODES:
        for run in runs[mode]:
            rows.append(
                [
                    mode, run["turns_per_s"], run["failed_turns"], run["p50_wait_s"] * 1000,
                    run["p99_wait_s"] * 1000, run["requests"], run["answered_429"],
                ]
            )  # fmt: skip
    print_table(["run", "turns/s", "failed", "p50 wait ms", "p99 wait ms", "requests", "429s"], rows)
    print()
    medians = {
        mode: {key: median(run[key] for run in runs[mode]) for key in runs[mode][0] if key != "mode"}
        for mode in MODES
    }
    print_table(
        ["median", "turns/s", "failed", "p99 wait ms", "requests", "429s"],
        [
            [
                mode, m["turns_per_s"], m["failed_turns"], m["p99_wait_s"] * 1000, m["requests"],
                m["answered_429"],
            ]
            for mode, m in medians.items()
        ],
    )  # fmt: skip
    with_limiter, without = medians["limiter"], medians["none"]
    print(
        f"\nturns/s limiter / none: {with_limiter['turns_per_s'] / without['turns_per_s']:.2f}x   "
        f"p99 model-call wait limiter / none: {with_limiter['p99_wait_s'] / without['p99_wait_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
