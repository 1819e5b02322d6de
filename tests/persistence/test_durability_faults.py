"""Acknowledged means committed, under ``kill -9`` at random moments (issue 20).

A child process runs an :class:`AsyncHive` on a real SQLite file: sessions
doing turns back to back, each turn ``ROUNDS`` calls of a tool that appends
one line per run to a ledger file, against a model that lives out of the
child: an OpenAI-compatible HTTP server in this process, which answers from
the conversation it is sent and logs every request. The child writes one line
per acknowledged turn (``generate`` returned), with the time. The parent
SIGKILLs it at a random moment, reads the SQLite file as it was left, and
checks:

- default (durable) settings: every acknowledged turn is stored, finished; no
  tool call ran twice (the ledger); no model request whose answer was stored
  was sent again (the server's log);
- ``durability="batched"``: what is lost was acknowledged less than
  ``flush_interval`` (50 ms) plus 25 ms for the commit before the kill, plus
  the longest the child was kept from running (a thread in it asks to wake
  every 5 ms and reports how late it woke at worst).

Then a new child starts on the same file (resuming interrupted turns), 20
times. Children are forked from a process that imported everything once (a
fresh interpreter costs seconds of imports on a loaded machine); each child
is a process of its own, killed by the parent with ``kill -9``. Each test
takes under a minute on 2 shared cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive import AsyncHive, ConfirmationPolicy, LlmConfig, Message, SessionConfig, ToolExecutor
from sessionhive.persistence import SqlStore
from tests.llm.llm_servers import OpenAiServer, ReplySpec, ToolCallSpec

pytestmark = pytest.mark.slow

SESSIONS = [f"s{n}" for n in range(6)]
ROUNDS = 2  # tool calls per turn; a final answer follows
FLUSH_INTERVAL = 0.05  # the Hive's default; the batched bound is counted from it
# What may come on top of the batched deadline: the commit itself, and the longest the child was
# kept from running (its stall probe's measure); see tests/persistence/test_sustained_load.py.
COMMIT_ALLOWANCE = 0.025
# Fewest acknowledged turns for a run to prove something (a loaded machine runs few turns per kill).
ENOUGH_ACKS = 10

# ---------------------------------------------------------------------------- the child


def append_line(path: Path, record: list[object]) -> None:
    """One ledger line, on disk (O_APPEND, one write) before the caller goes on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


async def child_main(
    db: str, workspace: str, ledger: str, acks: str, model_url: str, durability: str, cycle: str
) -> None:
    """Sessions doing turns back to back, one line in ``acks`` per acknowledged turn, until killed."""
    out = open(acks, "a", buffering=1)  # noqa: SIM115 - open until the kill

    def record(turn: str, entry: int) -> str:
        append_line(Path(ledger), [turn, entry])
        return f"recorded {entry}"

    tools = ToolExecutor(Path(workspace))
    tools.register("record", record, description="appends an entry to the ledger")
    config = SessionConfig(
        durability="batched"
        if durability == "batched"
        else ("sync" if durability == "sync" else SessionConfig().durability),
        resume_interrupted=True,
        confirmation_policy=ConfirmationPolicy(enabled=False),
    )
    model = LlmConfig("openai", "stub", api_key="test-key", base_url=model_url)
    async with AsyncHive.start(
        store=f"sqlite:///{db}",
        llm=model,
        workspace=Path(workspace),
        tools=tools,
        flush_interval=FLUSH_INTERVAL,
    ) as hive:
        for session_id in SESSIONS:
            await hive.get_or_create_session(session_id, config)
        out.write("running\n")
        threading.Thread(target=probe_stalls, args=(out,), daemon=True).start()
        threading.Thread(target=probe_commits, args=(out, hive.metrics.registry), daemon=True).start()

        async def run(session_id: str) -> None:
            turn = 0
            while True:
                prompt = f"c{cycle} t{turn} {session_id}"
                await hive.generate(session_id, prompt, timeout=None)
                out.write(json.dumps([session_id, prompt, time.monotonic()]) + "\n")
                turn += 1

        await asyncio.gather(*(run(session_id) for session_id in SESSIONS))


def probe_stalls(out: Any) -> None:
    """In the child: wake every 5 ms; each time it wakes later than ever, write ``["stall", seconds]``."""
    worst = 0.0
    while True:
        asked = time.monotonic()
        time.sleep(0.005)
        late = time.monotonic() - asked - 0.005
        if late > worst:
            worst = late
            out.write(json.dumps(["stall", late]) + "\n")


def probe_commits(out: Any, registry: Any) -> None:
    """In the child: every 20 ms, the longest commit so far (the upper bound of the lowest bucket of
    ``sessionhive_persistence_flush_duration_seconds`` holding them all); ``["commit", s]`` when it grows."""
    worst = 0.0
    while True:
        time.sleep(0.02)
        for metric in registry.collect():
            if metric.name != "sessionhive_persistence_flush_duration_seconds":
                continue
            buckets = [(float(b.labels["le"]), b.value) for b in metric.samples if b.name.endswith("_bucket")]
            total = max((count for _, count in buckets), default=0.0)
            longest = next((upper for upper, count in buckets if count >= total), 0.0)
            if longest > worst:
                worst = longest
                out.write(json.dumps(["commit", longest]) + "\n")


# Forks a child per line of arguments on stdin, answers its pid, reaps it once killed.
ZYGOTE = textwrap.dedent(
    """
    import asyncio, os, sys
    import openai, sqlalchemy
    from tests.persistence.test_durability_faults import child_main
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(child_main(*line.split()))
            finally:
                os._exit(1)
        print(pid, flush=True)
        os.waitpid(pid, 0)
    """
)

# ---------------------------------------------------------------------------- the model, out of the child


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


class LoggingModel(OpenAiServer):
    """Answers from the conversation: a ``record`` call per round, then a final answer.

    Every request is logged as ``(prompt, rounds done, serial)``, and every
    answer carries its serial (``r<serial>``), so that a stored answer names
    the request it answered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int, int]] = []
        self._lock = threading.Lock()

    def handle(self, handler: Any, request: Any) -> None:
        body = request.body
        if not isinstance(body, dict):
            return  # the child was killed while sending it
        messages = body["messages"]
        start = max(i for i, m in enumerate(messages) if m["role"] == "user")
        prompt = _text(messages[start]["content"])
        done = sum(1 for m in messages[start:] if m["role"] == "tool")
        with self._lock:
            serial = len(self.log)
            self.log.append((prompt, done, serial))
        if done >= ROUNDS:
            item = ReplySpec(f"finished r{serial}")
        else:
            call = ToolCallSpec("record", {"turn": prompt, "entry": done + 1}, id=f"call-{done + 1}")
            item = ReplySpec(f"r{serial}", [call])
        handler.send_json(200, self.reply_body(item, body.get("model", "")))


# ---------------------------------------------------------------------------- the parent


class Run:
    """The zygote, the files of the run, and the acknowledgements read so far."""

    def __init__(self, tmp: Path, model: LoggingModel, durability: str) -> None:
        self.tmp = tmp
        self.model = model
        self.durability = durability
        self.acks: list[tuple[str, str, float]] = []  # (session, prompt, monotonic time of the answer)
        self.stall = 0.0  # the longest the last child was kept from running (its probe's measure)
        self.commit = 0.0  # the longest commit of the last child (its histogram's bucket bound)
        self.db = tmp / "hive.db"
        self.ledger = tmp / "ledger.jsonl"
        self.workspace = tmp / "ws"
        self.workspace.mkdir()
        self.log = tmp / "children.log"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        with self.log.open("wb") as stderr:
            self.zygote = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )

    def close(self) -> None:
        assert self.zygote.stdin is not None and self.zygote.stdout is not None
        self.zygote.stdin.close()
        self.zygote.wait(timeout=30)
        self.zygote.stdout.close()

    def ledger_lines(self) -> list[tuple[str, int]]:
        return [(str(turn), int(entry)) for turn, entry in _lines(self.ledger)]

    def kill_at_random(self, cycle: int, rng: random.Random) -> float:
        """Fork a child, let it run a random while, SIGKILL it; the kill's monotonic time."""
        acks = self.tmp / f"acks-{cycle}.jsonl"
        acks.touch()
        args = [self.db, self.workspace, self.ledger, acks, self.model.url, self.durability, cycle]
        zygote = self.zygote
        assert zygote.stdin is not None and zygote.stdout is not None
        zygote.stdin.write((" ".join(map(str, args)) + "\n").encode())
        zygote.stdin.flush()
        pid = int(zygote.stdout.readline())
        try:
            deadline = time.monotonic() + 60
            while not acks.read_text().startswith("running\n"):
                # Polling another process's file, not waiting for an actor.
                assert time.monotonic() < deadline, f"the child did not start: {self.log.read_text()[-3000:]}"
                time.sleep(0.01)
            # The moment of the kill is what is random; the child is busy all along.
            time.sleep(rng.uniform(0.3, 1.5))
        finally:
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
        lines = _lines(acks, skip_first=True)
        self.acks.extend(
            (str(line[0]), str(line[1]), float(line[2]))
            for line in lines
            if line[0] not in ("stall", "commit")
        )
        self.commit = max([float(line[1]) for line in lines if line[0] == "commit"], default=0.0)
        self.stall = max([float(line[1]) for line in lines if line[0] == "stall"], default=0.0)
        return killed_at

    def stored(self) -> dict[str, list[Message]]:
        """Every session's messages as the killed child left them in the file (no Hive, no recovery)."""
        store = SqlStore(f"sqlite:///{self.db}")
        try:
            histories = {}
            for session_id in SESSIONS:
                snapshot = store.load(session_id)
                histories[session_id] = list(snapshot.messages) if snapshot is not None else []
            return histories
        finally:
            store.close()


def _lines(path: Path, *, skip_first: bool = False) -> list[list[Any]]:
    """The JSON lines of a file; a line cut by the kill (no newline yet) is a write that did not happen."""
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [json.loads(line) for line in lines[1 if skip_first else 0 :]]


def finished_turns(history: list[Message]) -> set[str]:
    """The prompts of the turns whose final answer is stored."""
    done: set[str] = set()
    prompt = None
    for message in history:
        if message.role == "user":
            prompt = message.text
        elif message.role == "assistant" and message.text.startswith("finished") and prompt is not None:
            done.add(prompt)
    return done


def stored_answers(histories: dict[str, list[Message]]) -> set[int]:
    """The serials of the model answers stored in any history."""
    serials: set[int] = set()
    for history in histories.values():
        for message in history:
            if message.role == "assistant":
                serials.update(
                    int(word[1:]) for word in message.text.split() if word[:1] == "r" and word[1:].isdigit()
                )
    return serials


def _story(run: Run, prompt: str) -> str:
    """What the model was asked and what the store holds for one turn (for a failure message)."""
    asked = [entry for entry in run.model.log if entry[0] == prompt]
    session_id = prompt.split()[-1]
    history = run.stored()[session_id]
    shown = [(m.role, m.text[:40], [c.id for c in m.tool_calls], m.tool_call_id) for m in history]
    logs = run.log.read_text()[-3000:]
    return f"requests: {asked}\nstored: {shown}\nchild logs: {logs}"


@pytest.fixture
def model() -> Iterator[LoggingModel]:
    with LoggingModel() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def durable_run(tmp_path: Path, model: LoggingModel) -> Iterator[Run]:
    run = Run(tmp_path, model, "default")
    yield run
    run.close()


@pytest.fixture
def batched_run(tmp_path: Path, model: LoggingModel) -> Iterator[Run]:
    run = Run(tmp_path, model, "batched")
    yield run
    run.close()


def test_default_durability_loses_no_acknowledged_turn_and_repeats_nothing(durable_run: Run) -> None:
    run, model = durable_run, durable_run.model
    rng = random.Random(20)
    kills, acknowledged = 0, 0
    for cycle in range(20):
        run.kill_at_random(cycle, rng)
        kills += 1
        histories = run.stored()
        finished = {prompt for history in histories.values() for prompt in finished_turns(history)}
        lost = [(session_id, prompt) for session_id, prompt, _ in run.acks if prompt not in finished]
        assert lost == [], f"kill {kills}: acknowledged turns not stored: {lost[:5]}"
        acknowledged = len(run.acks)

        ran = Counter(run.ledger_lines())
        twice = [call for call, count in ran.items() if count > 1]
        assert twice == [], f"kill {kills}: tool calls that ran twice: {twice[:5]}\n" + _story(
            run, twice[0][0]
        )

        answered = stored_answers(histories)
        first_serial: dict[tuple[str, int], int] = {}
        for prompt, done, serial in list(model.log):
            key = (prompt, done)
            earlier = first_serial.setdefault(key, serial)
            assert earlier == serial or earlier not in answered, (
                f"kill {kills}: request {key} was sent again (r{serial}); its answer r{earlier} was stored"
            )
    assert acknowledged >= ENOUGH_ACKS, (
        f"only {acknowledged} turns acknowledged in {kills} kills: the test proved little"
    )


def test_batched_loses_only_what_was_acknowledged_within_the_flush_interval(batched_run: Run) -> None:
    run = batched_run
    rng = random.Random(21)
    oldest_lost, worst_stall = 0.0, 0.0
    for cycle in range(20):
        before = len(run.acks)
        killed_at = run.kill_at_random(cycle, rng)
        histories = run.stored()
        finished = {prompt for history in histories.values() for prompt in finished_turns(history)}
        for _session_id, prompt, at in run.acks[before:]:
            if prompt not in finished:
                lost_since = killed_at - at
                oldest_lost = max(oldest_lost, lost_since)
                # The commit in flight when the deadline came and the turn's own: each at most
                # the longest the child's writer measured (at least COMMIT_ALLOWANCE in all).
                commits = max(COMMIT_ALLOWANCE, 2 * run.commit)
                assert lost_since <= FLUSH_INTERVAL + commits + run.stall, (
                    f"kill {cycle + 1}: a turn acknowledged {lost_since * 1000:.0f} ms before the kill was "
                    f"lost (bound: flush_interval {FLUSH_INTERVAL * 1000:.0f} ms + two commits "
                    f"{commits * 1000:.0f} ms + the child's longest stall {run.stall * 1000:.0f} ms)"
                )
        worst_stall = max(worst_stall, run.stall)
    print(
        f"batched: {len(run.acks)} turns acknowledged; oldest lost: {oldest_lost * 1000:.0f} ms before "
        f"a kill; longest stall of a child {worst_stall * 1000:.0f} ms"
    )
    assert len(run.acks) >= ENOUGH_ACKS
