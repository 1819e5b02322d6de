"""Durable turns under ``kill -9``: a child process running long turns is killed at random moments.

The child runs a Hive on a real SQLite file: sessions whose turns make
``ROUNDS`` tool rounds, half with ``durability="sync"``. Its tool appends one
line per run to a ledger file and its model one line per call to another, so
the parent can tell afterwards what really happened. The parent kills the
child after a random number of tool runs, opens a Hive on the same file and
compares the stored histories with the ledgers; then starts the child again
(a few kills per test). A last test kills a child while a tool call waits for
a human, and resumes the turn: the call is asked again, runs once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sessionhive import (
    ConfirmationPolicy,
    ConfirmationRequired,
    Hive,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    ToolExecutor,
)
from sessionhive.agent.recovery import (
    INTERRUPTED_ANSWER,
    INTERRUPTED_BEFORE_RUNNING,
    INTERRUPTED_WHILE_RUNNING,
    history_problems,
)

ROUNDS = 12  # tool rounds per turn; a final answer follows
SYNC = [f"sync{n}" for n in range(3)]
BATCHED = [f"batched{n}" for n in range(3)]
KILLS = 4
MODEL_LATENCY = 0.005  # seconds per model call: a turn spans many persistence flushes
PROBE, PROBE_ANSWER = "probe", "probe answered"  # a turn without tools, kept out of the ledgers

# ---------------------------------------------------------------------------- the child's parts
# The child imports these (the parent's resumed turns use them too), so both
# processes write the same ledgers the same way.


def append_line(path: Path, record: list[object]) -> None:
    """One ledger line, on disk (O_APPEND, one write) before the caller goes on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def turn_messages(messages: list[Message]) -> list[Message]:
    """The current turn's messages: from its prompt (the last user message) on."""
    start = max(i for i, m in enumerate(messages) if m.role == "user")
    return messages[start:]


def make_model(model_ledger: Path, rounds: int = ROUNDS) -> ScriptedLlm:
    """Asks for ``rounds`` ledger entries, one per round, then answers; each call is logged."""

    def script(messages: list[Message]) -> Reply:
        turn = turn_messages(messages)
        prompt = turn[0].text
        if prompt == PROBE:
            return Reply(PROBE_ANSWER)
        done = sum(1 for m in turn if m.role == "tool")
        append_line(model_ledger, [prompt, done])
        if done >= rounds:
            return Reply(f"all {done} recorded")
        return Reply(f"recording {done + 1}", [ToolCall("record", {"turn": prompt, "entry": done + 1})])

    return ScriptedLlm(script, latency=MODEL_LATENCY)


def make_tools(workspace: Path, ledger: Path) -> ToolExecutor:
    def record(turn: str, entry: int) -> str:
        append_line(ledger, [turn, entry])
        return f"recorded {entry}"

    executor = ToolExecutor(workspace)
    executor.register("record", record, description="appends an entry to the ledger")
    return executor


def session_config(session_id: str, resume: bool) -> SessionConfig:
    return SessionConfig(
        durability="sync" if session_id in SYNC else "batched",
        resume_interrupted=resume,
        confirmation_policy=ConfirmationPolicy(enabled=False),
    )


def start_hive(db: Path, workspace: Path, ledger: Path, model_ledger: Path) -> Hive:
    return Hive.start(
        store=f"sqlite:///{db}",
        llm=make_model(model_ledger),
        workspace=workspace,
        tools=make_tools(workspace, ledger),
    )


def confirming_config() -> SessionConfig:
    """Sync, resumed after a crash, and every ``record`` call waits for a human."""
    policy = ConfirmationPolicy(require_confirmation=("record",), timeout_s=300.0)
    return SessionConfig(durability="sync", resume_interrupted=True, confirmation_policy=policy)


CHILD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from tests.agent.test_fault_turns import BATCHED, SYNC, session_config, start_hive
    db, workspace, ledger, model_ledger = map(Path, sys.argv[1:5])
    resume, cycle = sys.argv[5] == "resume", int(sys.argv[6])
    hive = start_hive(db, workspace, ledger, model_ledger)
    for session_id in SYNC + BATCHED:
        hive.get_or_create_session(session_id, session_config(session_id, resume))

    def run(session_id):
        turn = 0
        while True:
            hive.generate(session_id, f"c{cycle} t{turn} {session_id}", timeout=None)
            turn += 1

    for session_id in SYNC + BATCHED:
        threading.Thread(target=run, args=(session_id,), daemon=True).start()
    print("running", flush=True)
    threading.Event().wait()
    """
)

# ---------------------------------------------------------------------------- the parent's view


@dataclass
class Files:
    db: Path
    workspace: Path
    ledger: Path
    model_ledger: Path

    def lines(self, path: Path) -> list[tuple[str, int]]:
        if not path.exists():
            return []
        # A line cut by the kill (no newline yet) is a write that did not happen.
        text = path.read_text()
        return [tuple(json.loads(line)) for line in text.split("\n")[:-1]]


def run_child_and_kill(files: Files, resume: bool, cycle: int, rng: random.Random) -> None:
    """Starts the child, lets it run until a random number of new tool runs, then SIGKILLs it."""
    before = len(files.lines(files.ledger))
    target = before + rng.randint(10, 120)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    args = [str(files.db), str(files.workspace), str(files.ledger), str(files.model_ledger)]
    # Its log goes to a file: a pipe nobody reads could fill up and stall it.
    errors = files.db.with_name(f"child-{cycle}.log")
    with errors.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args, "resume" if resume else "close", str(cycle)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert child.stdout is not None
    try:
        if child.stdout.readline() != b"running\n":
            child.wait(timeout=10)
            pytest.fail(f"the child did not start: {errors.read_text()[-3000:]}")
        deadline = time.monotonic() + 30
        while len(files.lines(files.ledger)) < target:
            if child.poll() is not None:
                pytest.fail(f"the child exited early: {errors.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the child made no progress in 30 s"
            time.sleep(0.002)  # polling an external process's ledger, not waiting for an actor
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()


def history_after_recovery(hive: Hive, session_id: str) -> list[Message]:
    """The session's history once an interrupted turn was closed or its resumed run finished.

    A probe turn (no tool, not in the ledgers) queues behind the resumed
    turn, so its answer is the barrier; it is cut off the returned history.
    """
    assert hive.generate(session_id, PROBE, timeout=30).text == PROBE_ANSWER
    history = hive.history(session_id)
    assert [m.text for m in history[-2:]] == [PROBE, PROBE_ANSWER], session_id
    return [m for m in history if m.text not in (PROBE, PROBE_ANSWER)]


def results_by_call(history: list[Message]) -> dict[tuple[str, int], str]:
    """``(turn prompt, entry) -> result text`` for every ``record`` call in the history.

    Call ids are unique within a turn only, so each result is paired with the
    call of that id in the answer right before it.
    """
    calls: dict[tuple[str, int], str] = {}
    asking: dict[str, tuple[str, int]] = {}
    for message in history:
        if message.role == "assistant":
            asking = {}
            for call in message.tool_calls:
                assert isinstance(call.arguments, dict)
                key = (str(call.arguments["turn"]), int(call.arguments["entry"]))
                assert key not in calls and key not in asking.values(), f"{key} was asked for twice"
                asking[call.id] = key
        elif message.role == "tool":
            assert message.tool_call_id is not None
            calls[asking.pop(message.tool_call_id)] = message.text
    return calls


def check_after_kill(
    hive: Hive, files: Files, resume: bool, kills: int, recovered: Callable[[str], bool]
) -> tuple[int, int]:
    """Checks every session against the ledgers; returns how many interrupted turns were closed
    and how many tool calls were in flight at a kill, as the histories say."""
    histories = {session_id: history_after_recovery(hive, session_id) for session_id in SYNC + BATCHED}
    ledger = files.lines(files.ledger)  # read after the resumed turns, which write to it too
    model_calls = files.lines(files.model_ledger)
    closed = unknown = 0
    for session_id, history in histories.items():
        assert history, f"{session_id} stored nothing"
        assert history_problems(history) == [], session_id
        last = history[-1]
        assert last.role == "assistant" and not last.tool_calls, f"{session_id} ends mid-turn: {last}"
        if last.text == INTERRUPTED_ANSWER:
            assert recovered(session_id), f"{session_id} was closed without saying so"

        calls = results_by_call(history)  # also: no (turn, entry) was asked for twice
        runs = Counter(key for key in ledger if key[0].endswith(f" {session_id}"))
        asked = Counter(key for key in model_calls if key[0].endswith(f" {session_id}"))
        # A batched session may lose the steps of its last flush interval; resumed, its model may then
        # ask again for an entry whose run was lost. Everywhere else a run is a run of a stored call.
        once = session_id in SYNC or not resume
        for key, text in calls.items():
            if text.startswith("recorded"):
                assert runs[key] == 1 if once else runs[key] >= 1, f"{session_id}: {key} ran {runs[key]}x"
            elif text == INTERRUPTED_BEFORE_RUNNING:
                assert not once or runs[key] == 0, f"{session_id}: {key} is said not to have run, but it did"
            else:
                assert text == INTERRUPTED_WHILE_RUNNING, f"{session_id}: {key}: {text!r}"
                assert not once or runs[key] <= 1, f"{session_id}: {key} ran {runs[key]}x"
        closed += sum(1 for m in history if m.role == "assistant" and m.text == INTERRUPTED_ANSWER)
        unknown += sum(1 for text in calls.values() if text == INTERRUPTED_WHILE_RUNNING)

        if session_id in SYNC:
            # Every completed round is stored: every run of the tool is a call in the history ...
            assert set(runs) <= set(calls), f"{session_id}: runs missing from the history"
            # ... at most one per kill is the call in flight (effects unknown) ...
            in_flight = [k for k, text in calls.items() if text == INTERRUPTED_WHILE_RUNNING]
            assert len(in_flight) <= kills, f"{session_id}: {in_flight}"
            # ... so no tool ran more often than the history says plus the one in flight per kill.
            stored_runs = sum(1 for text in calls.values() if text.startswith("recorded"))
            assert sum(runs.values()) <= stored_runs + len(in_flight), session_id
            # A model call is repeated only if it was in flight at a kill (never one whose answer
            # was stored: results_by_call saw each entry asked for once); closed turns repeat none.
            extra = sum(n - 1 for n in asked.values())
            assert extra <= (kills if resume else 0), f"{session_id}: {extra} model calls repeated"
            answers = sum(1 for m in history if m.role == "assistant" and m.text != INTERRUPTED_ANSWER)
            assert sum(asked.values()) <= answers + kills, session_id

        if resume:
            assert INTERRUPTED_ANSWER not in [m.text for m in history], session_id
            # Every turn, resumed or not, finished all its rounds.
            prompts = [i for i, m in enumerate(history) if m.role == "user"]
            for start, end in zip(prompts, [*prompts[1:], len(history)], strict=True):
                turn = history[start:end]
                assert sum(1 for m in turn if m.role == "tool") == ROUNDS, (session_id, turn[0].text)
                assert turn[-1].text == f"all {ROUNDS} recorded", (session_id, turn[0].text)
        else:
            assert last.text in (INTERRUPTED_ANSWER, f"all {ROUNDS} recorded"), session_id
    return closed, unknown


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True], ids=["closed", "resumed"])
def test_kill_9_in_the_middle_of_long_turns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, resume: bool
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    files = Files(tmp_path / "hive.db", workspace, tmp_path / "tools.jsonl", tmp_path / "model.jsonl")
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    print(f"kill moments drawn with seed {seed}")  # shown with a failure, to replay the same draw
    closed = unknown = recovered_turns = 0
    for kill in range(1, KILLS + 1):
        run_child_and_kill(files, resume, kill, rng)
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="sessionhive")
        with start_hive(files.db, files.workspace, files.ledger, files.model_ledger) as hive:
            for session_id in SYNC + BATCHED:
                hive.get_or_create_session(session_id, session_config(session_id, resume))

            def recovered(session_id: str) -> bool:
                word = "resuming it" if resume else "closing it"
                return any(
                    f"session {session_id}: turn" in r.getMessage() and word in r.getMessage()
                    for r in caplog.records
                )

            # The histories keep every earlier cycle's closings: the last check counts them all.
            closed, unknown = check_after_kill(hive, files, resume, kill, recovered)
            recovered_turns += sum(1 for s in SYNC + BATCHED if recovered(s))
    print(f"{recovered_turns} turns recovered, {closed} closed, {unknown} calls in flight at a kill")
    # The kills landed in the middle of turns: turns were found running and recovered.
    assert recovered_turns >= KILLS, f"seed {seed}"
    if not resume:
        assert closed >= KILLS, f"seed {seed}"


CONFIRMING_CHILD = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from sessionhive import Hive
    from tests.agent.test_fault_turns import confirming_config, make_model, make_tools
    db, workspace, ledger, model_ledger = map(Path, sys.argv[1:5])
    hive = Hive.start(store=f"sqlite:///{db}", llm=make_model(model_ledger, rounds=1), workspace=workspace,
                      tools=make_tools(workspace, ledger))
    hive.create_session("asker", confirming_config())

    def ask_a_human_who_never_answers(event):
        print("asked", event.tool_id, flush=True)
        threading.Event().wait()

    hive.generate("asker", "t0 asker", on_confirmation=ask_a_human_who_never_answers, timeout=None)
    """
)


def test_a_confirmation_pending_at_a_kill_is_asked_again_on_resume(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    files = Files(tmp_path / "hive.db", workspace, tmp_path / "tools.jsonl", tmp_path / "model.jsonl")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    args = [str(files.db), str(files.workspace), str(files.ledger), str(files.model_ledger)]
    errors = tmp_path / "child.log"
    with errors.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CONFIRMING_CHILD, *args], env=env, stdout=subprocess.PIPE, stderr=stderr
        )
    assert child.stdout is not None
    try:
        asked = child.stdout.readline().decode().split()
        assert asked[:1] == ["asked"], errors.read_text()[-3000:]
    finally:
        child.send_signal(signal.SIGKILL)  # the kill lands while the call waits for its answer
        child.wait()
        child.stdout.close()
    assert files.lines(files.ledger) == []

    with Hive.start(
        store=f"sqlite:///{files.db}",
        llm=make_model(files.model_ledger, rounds=1),
        workspace=workspace,
        tools=make_tools(workspace, files.ledger),
    ) as hive:
        with hive.subscribe("asker") as events:  # activates it: the turn resumes and asks again
            pending = hive.pending_confirmations("asker")
            while not pending:  # asked after we subscribed: the request reaches the subscription
                event = events.get(timeout=30)
                assert event is not None, "the resumed turn did not ask again"
                if isinstance(event, ConfirmationRequired):
                    pending = [event.tool_id]
        assert pending == [asked[1]]  # the same call, not a new model answer
        hive.confirm_tool("asker", pending[0], approved=True)
        assert hive.generate("asker", PROBE, timeout=30).text == PROBE_ANSWER  # behind the resumed turn
        history = [m for m in hive.history("asker") if m.text not in (PROBE, PROBE_ANSWER)]
    assert history_problems(history) == []
    assert [m.text for m in history] == ["t0 asker", "recording 1", "recorded 1", "all 1 recorded"]
    assert files.lines(files.ledger) == [("t0 asker", 1)]  # the tool ran once, after the approval
    # The answer that asked for the call was not asked for again.
    assert files.lines(files.model_ledger) == [("t0 asker", 0), ("t0 asker", 1)]
