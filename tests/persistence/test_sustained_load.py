"""Sustained load: 200 sessions doing turns back to back, what is acknowledged against what is committed.

For each durability, an :class:`AsyncHive` on a real SQLite file runs 200
sessions that start a new turn (one ``list_dir`` call) as soon as the last one
is answered, for ``DURATION`` seconds. A reader thread with its own
connection samples the file every ``SAMPLE_EVERY`` seconds: every turn
acknowledged before the sample started, less the mode's bound, must be in it
(durable: 0 ms; batched: ``flush_interval``, 50 ms, plus the commit that may be
in flight and the turn's own, each as long as the longest commit the writer
reported so far in ``sessionhive_persistence_flush_duration_seconds`` (its
bucket's upper bound), plus the longest the process was kept from running,
measured by a thread that asks to wake every 5 ms; the test prints both). The
persistence backlog must stay bounded and the process's memory flat: what it
grows by is the histories themselves, not a queue of unwritten work.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from sessionhive import AsyncHive, Reply, ScriptedLlm, SessionConfig, ToolCall
from sessionhive.persistence.messages import MAX_BACKLOG

pytestmark = pytest.mark.slow

SESSIONS = 200
DURATION = 10.0  # seconds of load per durability (enough for 50 samples and a flat memory curve)
SAMPLE_EVERY = 0.2
FLUSH_INTERVAL = 0.05
# The README's batched bound: flush_interval from the acknowledgement, plus the commit in
# flight and the turn's own (at most the longest commit the writer reported), plus the longest
# the process was kept from running during the run (the StallProbe's measure: on a machine
# loaded past its cores no writer thread keeps a deadline).
MESSAGES_PER_TURN = 4  # prompt, the answer asking for list_dir, its result, the final answer
# What the process may grow by per stored message (the histories it keeps in memory), and
# at most in all: a backlog of unwritten turns would grow far past both.
BYTES_PER_MESSAGE = 4096
SCRIPT = [Reply("", [ToolCall("list_dir", {"path": "."})]), Reply("done")]


def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class StallProbe(threading.Thread):
    """Asks to wake every 5 ms; records the longest it was late (the machine kept the process waiting)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.worst = 0.0

    def run(self) -> None:
        while True:
            asked = time.monotonic()
            if self.stop.wait(0.005):
                return
            self.worst = max(self.worst, time.monotonic() - asked - 0.005)


def commit_buckets(registry: CollectorRegistry) -> list[tuple[float, float]]:
    """(upper bound, commits at most that long) of the commit-duration histogram, in bucket order."""
    for metric in registry.collect():
        if metric.name == "sessionhive_persistence_flush_duration_seconds":
            return [(float(s.labels["le"]), s.value) for s in metric.samples if s.name.endswith("_bucket")]
    return []


def longest_commit(before: list[tuple[float, float]], now: list[tuple[float, float]]) -> float:
    """The upper bound of the lowest bucket that holds every commit made since ``before``."""
    counts = [count - (before[n][1] if n < len(before) else 0.0) for n, (_, count) in enumerate(now)]
    total = max(counts, default=0.0)
    for (upper, _), count in zip(now, counts, strict=True):
        if count >= total:
            return upper
    return 0.0


class Sampler(threading.Thread):
    """Reads the committed message counts from the SQLite file, and checks them against the acks."""

    def __init__(
        self,
        db: Path,
        acks: dict[str, list[float]],
        bound: float,
        probe: StallProbe,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.registry = registry
        self.longest_commit = 0.0
        self.commits_before = commit_buckets(registry)  # the load's commits only, not the creates
        self.engine = create_engine(f"sqlite:///{db}")
        self.acks = acks  # session -> ack times of its turns, in order (appended by the loop thread)
        self.bound = bound
        self.stop = threading.Event()
        self.samples = 0
        self.worst_gap = 0.0  # seconds: the oldest acknowledged turn a sample did not find
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            started = time.monotonic()
            if self.bound > 0:
                self.longest_commit = longest_commit(self.commits_before, commit_buckets(self.registry))
            with self.engine.connect() as conn:
                rows = conn.execute(text("SELECT id, message_count FROM sessionhive_sessions")).all()
            stored = {session_id: count for session_id, count in rows}
            self.samples += 1
            for session_id, times in self.acks.items():
                committed_turns = stored.get(session_id, 0) // MESSAGES_PER_TURN
                acknowledged = list(times)
                if committed_turns < len(acknowledged):
                    gap = started - acknowledged[committed_turns]  # the oldest one missing
                    self.worst_gap = max(self.worst_gap, gap)
                    # Durable has no deadline to keep late: what it acknowledged is committed, always.
                    allowance = self.probe.worst + 2 * self.longest_commit if self.bound > 0 else 0.0
                    if gap > self.bound + allowance:
                        self.violations.append(
                            f"{session_id}: acknowledged {gap * 1000:.0f} ms ago, not committed"
                        )
        self.engine.dispose()


async def sustained(
    db: Path, workspace: Path, durability: Literal["durable", "batched"], bound: float
) -> None:
    llm = ScriptedLlm(lambda messages: SCRIPT[0] if messages[-1].role == "user" else SCRIPT[1])
    config = SessionConfig(durability=durability)
    acks: dict[str, list[float]] = {f"s{n}": [] for n in range(SESSIONS)}
    async with AsyncHive.start(
        store=f"sqlite:///{db}", llm=llm, workspace=workspace, flush_interval=FLUSH_INTERVAL
    ) as hive:
        for session_id in acks:
            await hive.create_session(session_id, config)
        await hive.flush()
        probe = StallProbe()
        probe.start()
        registry = hive.metrics.registry
        sampler = Sampler(db, acks, bound, probe, registry)
        sampler.start()
        rss: list[int] = []
        backlog: list[float] = []
        stopping = time.monotonic() + DURATION

        async def one(session_id: str) -> None:
            turn = 0
            while time.monotonic() < stopping:
                await hive.generate(session_id, f"turn {turn}")
                acks[session_id].append(time.monotonic())
                turn += 1

        async def watch() -> None:
            while time.monotonic() < stopping:
                await asyncio.sleep(1.0)
                rss.append(_rss())
                depth = registry.get_sample_value("sessionhive_mailbox_depth", {"actor": "persistence"})
                pending = registry.get_sample_value("sessionhive_persistence_pending_snapshots")
                backlog.append((depth or 0.0) + (pending or 0.0))

        await asyncio.gather(watch(), *(one(session_id) for session_id in acks))
        sampler.stop.set()
        await asyncio.to_thread(sampler.join)
        probe.stop.set()
    turns = sum(len(times) for times in acks.values())
    warm = len(rss) // 3
    grown = max(rss[warm:]) - rss[warm]
    later_messages = MESSAGES_PER_TURN * turns * (len(rss) - warm) / max(len(rss), 1)
    print(
        f"\n{durability}: {turns} turns in {DURATION:.0f} s ({turns / DURATION:.0f}/s), "
        f"{sampler.samples} samples, oldest acknowledged-not-committed {sampler.worst_gap * 1000:.0f} ms "
        f"(longest stall of the process {probe.worst * 1000:.0f} ms, "
        f"longest commit at most {sampler.longest_commit * 1000:.0f} ms), "
        f"largest backlog {max(backlog):.0f}, RSS {rss[warm] / 2**20:.0f} -> {max(rss[warm:]) / 2**20:.0f} MB"
    )
    assert turns >= SESSIONS, "the load ran less than a turn per session"
    assert sampler.samples >= 10
    assert sampler.violations == [], sampler.violations[:5]
    assert max(backlog) <= MAX_BACKLOG + SESSIONS * MESSAGES_PER_TURN
    assert grown <= BYTES_PER_MESSAGE * later_messages + 32 * 2**20, f"grew {grown / 2**20:.0f} MB"


@pytest.mark.parametrize(("durability", "bound"), [("durable", 0.0), ("batched", FLUSH_INTERVAL)])
def test_the_store_keeps_up_with_sustained_turns(
    tmp_path: Path, workspace: Path, durability: Literal["durable", "batched"], bound: float
) -> None:
    asyncio.run(sustained(tmp_path / "hive.db", workspace, durability, bound))
