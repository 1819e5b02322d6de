"""Containment: no exception of any kind from a model or a tool leaves its session.

``SystemExit`` (a library calling ``sys.exit``) and other ``BaseException``
subclasses raised by one session's model or tool fail that turn with
``TurnFailed`` naming the exception; every other session, a second Hive and
the application's own pykka actor in the same process keep answering, and
``stop()`` returns.
"""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import pykka
import pytest

from sessionhive import Hive, Message, Reply, ScriptedLlm, ToolCall, ToolExecutor, TurnFailed
from sessionhive.agent.recovery import history_problems

#: Sessions per backend. "threads" runs one OS thread per actor: 10,000
#: sessions would be 10,000 threads (about 80 MB of stacks and minutes of
#: start-up on the 2-core CI machine), so it gets a few hundred; the escape
#: being tested is the same with 300 neighbours as with 10,000.
SESSIONS = {"asyncio": 10_000, "pooled": 10_000, "threads": 300}
SAMPLE = 50  # sessions that run a whole turn (tool included) after the faults


class Meltdown(BaseException):
    """An application's own BaseException subclass (not an Exception)."""


def script(messages: list[Message]) -> Reply:
    """The prompt says how the turn goes: a model or tool that exits or melts down, or a good turn."""
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text}")
    if last.text == "model exits":
        raise SystemExit(3)
    if last.text == "model melts down":
        raise Meltdown("the model client melted down")
    if last.text == "tool exits":
        return Reply("calling", [ToolCall("fragile", {"how": "exit"})])
    if last.text == "tool melts down":
        return Reply("calling", [ToolCall("fragile", {"how": "meltdown"})])
    return Reply("calling", [ToolCall("echo", {"text": last.text})])


def fragile(how: str) -> str:
    if how == "exit":
        raise SystemExit("a library called sys.exit()")
    raise Meltdown("the tool melted down")


def echo(text: str) -> str:
    return f"echo {text}"


def tools(workspace: Path) -> ToolExecutor:
    executor = ToolExecutor(workspace)
    executor.register("fragile", fragile, description="fails the hard way")
    executor.register("echo", echo, description="says it back")
    return executor


class Bookkeeper(pykka.ThreadingActor):
    """The embedding application's own actor, which must never be stopped by sessionhive."""

    def on_receive(self, message: object) -> object:
        return ("booked", message)


FAULTS = {
    "model-exits": ("model exits", "SystemExit: 3"),
    "model-melts": ("model melts down", "Meltdown: the model client melted down"),
    "tool-exits": ("tool exits", r"SystemExit: a library called sys\.exit\(\)"),
    "tool-melts": ("tool melts down", "Meltdown: the tool melted down"),
}


@pytest.mark.parametrize("backend", ["asyncio", "pooled", "threads"])
def test_a_session_raising_base_exceptions_takes_nothing_else_down(workspace: Path, backend: str) -> None:
    count = SESSIONS[backend] - len(FAULTS)  # the faulty sessions are among the total
    bookkeeper = Bookkeeper.start()
    other = Hive.start(store="memory", llm=ScriptedLlm(script), workspace=workspace, tools=tools(workspace))
    hive = Hive.start(
        store="memory",
        llm=ScriptedLlm(script),
        workspace=workspace,
        tools=tools(workspace),
        actor_backend=backend,
    )
    try:
        other.create_session("neighbour")
        ids = [f"s{n}" for n in range(count)]
        for session_id in ids:
            hive.create_session(session_id)
        for session_id in FAULTS:
            hive.create_session(session_id)

        for session_id, (prompt, exception) in FAULTS.items():
            with pytest.raises(TurnFailed, match=exception):
                hive.generate(session_id, prompt, timeout=30)
            # The session itself keeps working, on a valid history.
            assert hive.generate(session_id, "good turn", timeout=30).text == "done: echo good turn"
            assert history_problems(hive.history(session_id)) == []

        sample = random.Random(11).sample(ids, SAMPLE)
        for session_id in sample:
            assert (
                hive.generate(session_id, f"hi {session_id}", timeout=30).text
                == f"done: echo hi {session_id}"
            )
        chosen = set(sample)
        for session_id in ids:
            assert len(hive.history(session_id)) == (4 if session_id in chosen else 0), session_id
        assert other.generate("neighbour", "still there?").text == "done: echo still there?"
        assert bookkeeper.ask("ledger", timeout=10) == ("booked", "ledger")
    finally:
        stopper = threading.Thread(target=hive.stop, name="stop-under-test", daemon=True)
        stopper.start()
        stopper.join(timeout=60)
        stopped = not stopper.is_alive()
        other.stop()
    assert stopped, "Hive.stop() hung"
    # Stopping one Hive left the application's actor alone.
    assert bookkeeper.is_alive()
    assert bookkeeper.ask("after stop", timeout=10) == ("booked", "after stop")
    bookkeeper.stop()


@pytest.mark.parametrize("raised", [SystemExit, Meltdown], ids=["SystemExit", "Meltdown"])
def test_an_on_confirmation_callback_raising_a_base_exception_only_rejects_its_call(
    workspace: Path, raised: type[BaseException]
) -> None:
    def write_then_answer(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply(f"done: {messages[-1].text}")
        return Reply("writing", [ToolCall("write_file", {"path": "note.txt", "content": "x"})])

    def callback(event: object) -> bool:
        raise raised("the reviewer's code gave up")

    with Hive.start(store="memory", llm=ScriptedLlm(write_then_answer), workspace=workspace) as hive:
        hive.create_session("s")
        result = hive.generate("s", "write", on_confirmation=callback, timeout=30)
        assert "rejected" in result.text and "the reviewer's code gave up" in result.text
        assert not (workspace / "note.txt").exists()
        assert hive.generate("s", "write again", on_confirmation=lambda event: True).text.startswith("done:")
        assert (workspace / "note.txt").exists()


def cancels_itself() -> str:
    raise asyncio.CancelledError("a library's own cancel scope leaked out")


def model_or_tool_cancelling(messages: list[Message]) -> Reply:
    last = messages[-1]
    if last.role == "tool":
        return Reply(f"done: {last.text}")
    if last.text == "model cancels":
        raise asyncio.CancelledError("a library's own cancel scope leaked out")
    return Reply("calling", [ToolCall("cancels_itself", {})])


@pytest.mark.parametrize("prompt", ["model cancels", "tool cancels"])
def test_a_cancelled_error_nobody_asked_for_fails_the_turn(workspace: Path, prompt: str) -> None:
    executor = ToolExecutor(workspace)
    executor.register("cancels_itself", cancels_itself, description="raises CancelledError")
    with Hive.start(
        store="memory", llm=ScriptedLlm(model_or_tool_cancelling), workspace=workspace, tools=executor
    ) as hive:
        hive.create_session("s")
        with pytest.raises(TurnFailed, match="CancelledError"):
            hive.generate("s", prompt, timeout=30)
        history = hive.history("s")
        assert history_problems(history) == []
        assert not [m for m in history if m.role == "tool" and "before this tool call ran" in m.text]
