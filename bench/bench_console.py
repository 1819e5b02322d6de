"""What the console's requests cost with 100,000 stored sessions, against the cost of any request.

    python bench/bench_console.py [--sessions 100000] [--repeat 20]

Fills a fresh SQLite store with ``--sessions`` sessions (written straight
into the store, as a migration would), starts a Hive on it behind a real
``serve_app`` on 127.0.0.1, and times each request the console makes
(median and p95 of ``--repeat``): the first page of the session list with
details, a search by id prefix, a state filter, the last page, the approvals
inbox, and the newest page of a 10,000-message history. The baseline is
``GET /v1/whoami``, which touches no session: the ratio says how much a
request costs beyond the HTTP round trip itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, print_table
from sessionhive import (
    ConfirmationPolicy,
    ContextUsage,
    Hive,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    Usage,
)
from sessionhive.persistence import open_store
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.serve import ServerThread, serve_app

TOKEN = "bench-console-token-0123456789"


def _snapshot(session_id: str, messages: tuple[Message, ...] = ()) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id,
        version=1,
        parent_id=None,
        state="active",
        config=SessionConfig(),
        confirmation_policy=ConfirmationPolicy(),
        llm_config=None,
        thinking=False,
        budget=None,
        usage=Usage(),
        context_usage=ContextUsage(0, SessionConfig().max_context_length),
        messages=messages,
        history_epoch=0,
        created_at=0.0,
        updated_at=0.0,
    )


def fill(url: str, sessions: int) -> None:
    store = open_store(url)
    try:
        batch: list[SessionSnapshot] = []
        for i in range(sessions):
            batch.append(_snapshot(f"agent-{i:06d}"))
            if len(batch) == 5000:
                store.write_batch(batch, [])
                batch = []
        long_history = tuple(Message.user(f"prompt {i}") for i in range(10_000))
        store.write_batch([*batch, _snapshot("long-history", long_history)], [])
    finally:
        store.close()


def timed(client: httpx.Client, path: str, repeat: int) -> tuple[float, float]:
    client.get(path).raise_for_status()  # once to warm up (activations, caches)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'console.db'}"
        started = time.perf_counter()
        fill(url, args.sessions)
        print(f"stored {args.sessions} sessions in {time.perf_counter() - started:.1f} s")
        last = f"agent-{args.sessions - 1:06d}"
        requests = [
            ("GET /v1/whoami (baseline: no session touched)", "/v1/whoami"),
            ("list, first page of 50 with details", "/v1/sessions?limit=50&details=true"),
            ("list, id prefix of the last session", f"/v1/sessions?q={last[:-1]}&details=true"),
            ("list, state=waiting", "/v1/sessions?state=waiting&details=true"),
            ("list, state=idle, last page", f"/v1/sessions?state=idle&offset={args.sessions - 50}&limit=50"),
            ("approvals inbox", "/v1/confirmations"),
            ("history, newest 100 of 10,000", "/v1/sessions/long-history/history?limit=100"),
        ]
        with (
            Hive.start(store=url, llm=ScriptedLlm(lambda _messages: Reply("ok"))) as hive,
            ServerThread(serve_app(hive, token=TOKEN)) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            ) as client,
        ):
            rows = []
            baseline = 0.0
            for name, path in requests:
                p50, p95 = timed(client, path, args.repeat)
                baseline = baseline or p50
                rows.append([name, f"{p50:.1f}", f"{p95:.1f}", f"{p50 / baseline:.1f}x"])
    print(machine_info())
    print_table(["request", "p50 ms", "p95 ms", "p50 vs whoami"], rows)


if __name__ == "__main__":
    main()
