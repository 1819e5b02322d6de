"""The turn journal and the recovery of interrupted turns, at the agent and store level.

A session actor's part is played by :class:`JournalingSession`: it writes
each journal entry to a real SQLite store before the turn goes on (sync
durability). A "crash" is a ``BaseException`` raised at a chosen step, which
unwinds the turn without another write, as ``kill -9`` would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sessionhive.agent.loop import (
    INTERRUPTED_WHILE_RUNNING,
    Decision,
    TurnJournal,
    TurnOutcome,
    TurnSpec,
    resume_turn,
    run_turn,
)
from sessionhive.agent.recovery import (
    INTERRUPTED_ANSWER,
    INTERRUPTED_BEFORE_RUNNING,
    close_interrupted,
    history_problems,
    journaled_turn,
)
from sessionhive.llm.scripted import Reply, ScriptedLlm
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.events import AgentEvent, TurnInterrupted, event_to_dict
from sessionhive.model.messages import Message, RunningTurn, ToolCall, ToolResult
from sessionhive.persistence import SessionSnapshot, SqlStore
from sessionhive.tools.executor import ToolExecutor
from tests.persistence.conftest_persistence import make_snapshot

ROUNDS = 6  # tool rounds in the scripted turn; a final answer follows
SID = "s"


class Crash(BaseException):
    """The process stops here (nothing after it is written)."""


class JournalingSession:
    """The session actor's side of the journal, reduced to one synchronous store write per entry."""

    def __init__(self, store: SqlStore, history: tuple[Message, ...] = (), *, crash_at: int | None = None):
        self.store = store
        self.history = history
        self.version = 1
        self.entries: list[TurnJournal] = []
        self.crash_at = crash_at  # crash right after writing this entry (1-based)
        self.running: RunningTurn | None = None
        store.write_batch([self._snapshot(history, None)], [])

    def _snapshot(self, messages: tuple[Message, ...], running: RunningTurn | None) -> SessionSnapshot:
        snapshot: SessionSnapshot = make_snapshot(SID, self.version, messages)
        return replace(snapshot, running_turn=running)

    def start(self, prompt: str) -> None:
        self.running = RunningTurn(1, prompt, started_at=100.0, first_message=len(self.history))

    def on_round(self, journal: TurnJournal) -> None:
        assert self.running is not None
        self.entries.append(journal)
        self.version += 1
        running = replace(self.running, running_call=journal.running_call)
        self.store.write_batch([self._snapshot(self.history + journal.messages, running)], [])
        if len(self.entries) == self.crash_at:
            raise Crash(f"stopped after journal entry {self.crash_at}")

    def finish(self, outcome: TurnOutcome) -> None:
        self.version += 1
        self.store.write_batch([self._snapshot(self.history + tuple(outcome.new_messages), None)], [])


class Hooks:
    def __init__(self, *, approve: bool = True, crash_on_confirm: bool = False) -> None:
        self.events: list[AgentEvent] = []
        self.asked: list[str] = []
        self.approve = approve
        self.crash_on_confirm = crash_on_confirm

    def emit(self, event: AgentEvent) -> None:
        self.events.append(event)

    async def confirm(self, call: ToolCall, arguments: dict[str, Any], timeout_s: float) -> Decision:
        self.asked.append(call.id)
        if self.crash_on_confirm:
            raise Crash("stopped while waiting for a human")
        return Decision(self.approve, "approved" if self.approve else "rejected")


class Model:
    """Asks for ``ROUNDS`` ledger entries, one per round, then answers; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[Message]) -> Reply:
        self.calls += 1
        done = sum(1 for m in messages if m.role == "tool")
        if done >= ROUNDS:
            return Reply(f"all {done} recorded")
        return Reply(f"recording {done + 1}", [ToolCall("record", {"entry": done + 1})])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'hive.db'}")
    yield opened
    opened.close()


class Ledger:
    """A tool with a side effect: each run appends a line to a file (and may crash the process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.crash_on: int | None = None

    def record(self, entry: int) -> str:
        with self.path.open("a") as ledger:
            ledger.write(f"{entry}\n")
        if entry == self.crash_on:
            raise Crash(f"stopped while entry {entry} ran")
        return f"recorded {entry}"

    def entries(self) -> list[int]:
        return [int(line) for line in self.path.read_text().split()] if self.path.exists() else []


def spec(
    session: JournalingSession, model: Model, tools: ToolExecutor, workspace: Path, *, confirm: bool = False
) -> TurnSpec:
    policy = (
        ConfirmationPolicy(require_confirmation=("record",)) if confirm else ConfirmationPolicy(enabled=False)
    )
    return TurnSpec(
        session_id=SID,
        prompt="record the entries",
        history=session.history,
        system=None,
        llm=ScriptedLlm(model),
        tools=tools,
        workspace=workspace,
        confirmation_policy=policy,
        permission_policy=None,
        on_round=session.on_round,
    )


def executor(workspace: Path, ledger: Ledger) -> ToolExecutor:
    tools = ToolExecutor(workspace)
    tools.register("record", ledger.record)
    return tools


def crash_turn(session: JournalingSession, turn_spec: TurnSpec, hooks: Hooks) -> None:
    session.start(turn_spec.prompt)
    with pytest.raises(Crash):
        asyncio.run(run_turn(turn_spec, hooks))


def stored(store: SqlStore) -> SessionSnapshot:
    snapshot = store.load(SID)
    assert snapshot is not None
    return snapshot


# --------------------------------------------------------------------------- (a) the journal


def test_every_step_is_journaled_as_it_completes_and_a_tool_runs_only_once_journaled(
    store: SqlStore, workspace: Path, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    session = JournalingSession(store, (Message.user("earlier"), Message.assistant("hello")))
    seen_before_run: list[str | None] = []
    original = ledger.record

    def record(entry: int) -> str:
        # What a crash right now would leave: the store already names this call as running.
        running = stored(store).running_turn
        seen_before_run.append(running.running_call if running else None)
        return original(entry)

    ledger.record = record  # type: ignore[method-assign]
    model = Model()
    with executor(workspace, ledger) as tools:
        turn_spec = spec(session, model, tools, workspace)
        session.start(turn_spec.prompt)
        outcome = asyncio.run(run_turn(turn_spec, Hooks()))
    session.finish(outcome)

    # Prompt; then per round: the answer, the running call, its result; then the final answer.
    assert len(session.entries) == 1 + 3 * ROUNDS + 1
    for before, after in zip(session.entries, session.entries[1:], strict=False):
        assert after.messages[: len(before.messages)] == before.messages
    assert session.entries[-1].messages == tuple(outcome.new_messages)
    calls = [c.id for m in outcome.new_messages for c in m.tool_calls]
    assert seen_before_run == calls and len(calls) == ROUNDS
    assert [e.running_call for e in session.entries if e.running_call] == calls
    final = stored(store)
    assert final.running_turn is None and final.messages == session.history + tuple(outcome.new_messages)
    assert history_problems(final.messages) == []


# --------------------------------------------------------------------------- (c) closing


def test_a_turn_stopped_while_a_tool_ran_is_closed_with_its_effects_unknown(
    store: SqlStore, workspace: Path, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    ledger.crash_on = 3
    session = JournalingSession(store)
    with executor(workspace, ledger) as tools:
        crash_turn(session, spec(session, Model(), tools, workspace), Hooks())

    snapshot = stored(store)
    running = snapshot.running_turn
    assert running is not None and running.status == "running" and running.prompt == "record the entries"
    history, turn = journaled_turn(snapshot.messages, running)
    assert history == () and turn[0] == Message.user("record the entries")
    # Every completed round survived: 2 answers with their results, the 3rd answer, no 3rd result.
    assert [m.role for m in turn] == ["user"] + ["assistant", "tool"] * 2 + ["assistant"]
    assert history_problems(snapshot.messages) != []

    closing = close_interrupted(snapshot.messages, running)
    closed = snapshot.messages + closing
    assert history_problems(closed) == []
    assert closing[0].tool_call_id == running.running_call == turn[-1].tool_calls[0].id
    assert closing[0].text == INTERRUPTED_WHILE_RUNNING and closing[0].is_error
    assert closing[-1] == Message.assistant(INTERRUPTED_ANSWER)
    assert ledger.entries() == [1, 2, 3]  # the 3rd ran (its effect is there), as the history now says


def test_a_call_waiting_for_confirmation_is_closed_as_not_run(
    store: SqlStore, workspace: Path, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    session = JournalingSession(store)
    with executor(workspace, ledger) as tools:
        crash_turn(
            session, spec(session, Model(), tools, workspace, confirm=True), Hooks(crash_on_confirm=True)
        )

    snapshot = stored(store)
    assert snapshot.running_turn is not None and snapshot.running_turn.running_call is None
    closing = close_interrupted(snapshot.messages, snapshot.running_turn)
    assert [m.text for m in closing] == [INTERRUPTED_BEFORE_RUNNING, INTERRUPTED_ANSWER]
    assert history_problems(snapshot.messages + closing) == [] and ledger.entries() == []


def test_a_turn_stopped_before_the_first_answer_keeps_its_prompt(store: SqlStore, workspace: Path) -> None:
    session = JournalingSession(store, (Message.user("hi"), Message.assistant("hello")), crash_at=1)
    with ToolExecutor(workspace) as tools:
        crash_turn(session, spec(session, Model(), tools, workspace), Hooks())
    snapshot = stored(store)
    assert snapshot.running_turn is not None
    closing = close_interrupted(snapshot.messages, snapshot.running_turn)
    assert snapshot.messages[-1] == Message.user("record the entries")
    assert closing == (Message.assistant(INTERRUPTED_ANSWER),)
    assert (
        close_interrupted(snapshot.messages + closing, snapshot.running_turn) == ()
    )  # idempotent once closed


def test_turn_interrupted_is_an_event_like_the_others() -> None:
    event = TurnInterrupted(SID, turn_id=1, prompt="go", unfinished_calls=["c3"])
    assert event_to_dict(event) == {
        "type": "TurnInterrupted",
        "session_id": SID,
        "event_id": 0,  # set by the session that emits it
        "run_id": None,
        "turn_id": 1,
        "prompt": "go",
        "resumed": False,
        "unfinished_calls": ["c3"],
    }
    json.dumps(event_to_dict(event))


# --------------------------------------------------------------------------- (d) resuming


def resume(
    store: SqlStore, workspace: Path, ledger: Ledger, model: Model, hooks: Hooks, *, confirm: bool = False
) -> TurnOutcome:
    """Restart: load the snapshot, continue its running turn from the journal, store the end."""
    snapshot = stored(store)
    running = snapshot.running_turn
    assert running is not None
    history, journaled = journaled_turn(snapshot.messages, running)
    session = JournalingSession(store, history)
    session.version = snapshot.version
    session.running = running
    with executor(workspace, ledger) as tools:
        turn_spec = spec(session, model, tools, workspace, confirm=confirm)
        outcome = asyncio.run(resume_turn(turn_spec, hooks, journaled, running.running_call))
    session.finish(outcome)
    return outcome


@pytest.mark.parametrize("crash", ["in_tool", "before_tool", "after_answer", "after_result"])
def test_resume_repeats_no_model_call_and_no_tool_with_a_stored_result(
    store: SqlStore, workspace: Path, tmp_path: Path, crash: str
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    session = JournalingSession(store)
    if crash == "in_tool":
        ledger.crash_on = 4  # entry 4 ran (its line is in the ledger), its result never stored
    else:
        # Journal entries: 1 prompt, then per round answer / running call / result.
        session.crash_at = {
            "after_answer": 1 + 3 * 3 + 1,  # round 4's answer stored, its call not yet started
            "before_tool": 1 + 3 * 3 + 2,  # round 4's call journaled as running, then the stop
            "after_result": 1 + 3 * 4,  # round 4's result stored
        }[crash]
    first_model = Model()
    with executor(workspace, ledger) as tools:
        crash_turn(session, spec(session, first_model, tools, workspace), Hooks())
    stored_answers = sum(1 for m in stored(store).messages if m.role == "assistant")

    second_model = Model()
    outcome = resume(store, workspace, ledger, second_model, Hooks())

    final = stored(store)
    assert final.running_turn is None and history_problems(final.messages) == []
    assert outcome.status == "ok" and outcome.text.startswith("all ")
    # No model call was made twice: every call of the first run was stored, the rest were new.
    assert first_model.calls == stored_answers
    answers = [m for m in final.messages if m.role == "assistant"]
    assert first_model.calls + second_model.calls == len(answers) == ROUNDS + 1 == outcome.rounds
    # No tool ran twice; every result in the history is a run in the ledger, and the ledger
    # holds nothing else but, at most, the one call in flight at the stop (effects unknown).
    results = {str(m.tool_call_id): m.text for m in final.messages if m.role == "tool"}
    entries = {c.id: c.decoded_arguments()["entry"] for m in answers for c in m.tool_calls}
    ran = sorted(entries[cid] for cid, text in results.items() if text != INTERRUPTED_WHILE_RUNNING)
    unknown = [entries[cid] for cid, text in results.items() if text == INTERRUPTED_WHILE_RUNNING]
    assert len(ledger.entries()) == len(set(ledger.entries()))
    assert set(ran) <= set(ledger.entries()) <= set(ran) | set(unknown)
    assert unknown == ([4] if crash in ("in_tool", "before_tool") else [])
    assert ledger.entries() == (list(range(1, ROUNDS + 1)) if crash != "before_tool" else [1, 2, 3, 5, 6])


def test_resume_asks_again_for_a_confirmation_the_crash_left_pending(
    store: SqlStore, workspace: Path, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    session = JournalingSession(store)
    with executor(workspace, ledger) as tools:
        crash_turn(
            session, spec(session, Model(), tools, workspace, confirm=True), Hooks(crash_on_confirm=True)
        )
    pending = stored(store).messages[-1].tool_calls[0].id

    hooks = Hooks()
    outcome = resume(store, workspace, ledger, Model(), hooks, confirm=True)
    assert hooks.asked[0] == pending and len(hooks.asked) == ROUNDS
    assert ledger.entries() == list(range(1, ROUNDS + 1))
    assert outcome.status == "ok" and history_problems(stored(store).messages) == []


def test_resuming_a_turn_whose_answer_was_stored_calls_nothing(store: SqlStore, workspace: Path) -> None:
    final_answer = 1 + 3 * ROUNDS + 1
    ledger = Ledger(workspace / "ledger")
    session = JournalingSession(store, crash_at=final_answer)
    with executor(workspace, ledger) as tools:
        crash_turn(session, spec(session, Model(), tools, workspace), Hooks())
    model = Model()
    outcome = resume(store, workspace, ledger, model, Hooks())
    assert model.calls == 0 and outcome.text == f"all {ROUNDS} recorded" and outcome.rounds == ROUNDS + 1
    assert ledger.entries() == list(range(1, ROUNDS + 1))


class CrashingTasks:
    """The ``task`` tool's runner, whose child is still at work when the process stops."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, call_id: str, prompt: str, description: str, relay: Any) -> ToolResult:
        self.runs += 1
        raise Crash(f"stopped while task {description!r} ({call_id}) ran")


def _delegating(messages: list[Message]) -> Reply:
    if messages[-1].role == "tool":
        return Reply(f"told: {messages[-1].text[:20]}")
    return Reply("delegating", [ToolCall("task", {"prompt": "count", "description": "counting"})])


def test_a_task_call_is_journaled_like_a_tool_and_a_crash_leaves_its_effects_unknown(
    store: SqlStore, workspace: Path
) -> None:
    session = JournalingSession(store)
    tasks = CrashingTasks()
    with ToolExecutor(workspace) as tools:
        turn_spec = replace(
            spec(session, Model(), tools, workspace), llm=ScriptedLlm(_delegating), task=tasks
        )
        crash_turn(session, turn_spec, Hooks())
        snapshot = stored(store)
        running = snapshot.running_turn
        assert running is not None
        task_call = snapshot.messages[-1].tool_calls[0]
        assert (task_call.name, running.running_call) == ("task", task_call.id)  # journaled before it ran

        history, journaled = journaled_turn(snapshot.messages, running)
        resumed = replace(turn_spec, history=history, on_round=None)
        outcome = asyncio.run(resume_turn(resumed, Hooks(), journaled, running.running_call))

    assert tasks.runs == 1  # at most once: the resumed turn does not start the task again
    result = next(m for m in outcome.new_messages if m.role == "tool")
    assert result.text == INTERRUPTED_WHILE_RUNNING and result.is_error
    assert outcome.status == "ok" and outcome.text.startswith("told: error")
