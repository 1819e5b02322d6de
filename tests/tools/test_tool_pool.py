"""A blocked tool holds only its own session: per-session shares, a built-in lane, abandoned threads."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sessionhive import Hive, Message, Reply, ScriptedLlm, ToolCall, TurnCancelled
from sessionhive.metrics import HiveMetrics
from sessionhive.metrics.registry import abandoned_tool_threads
from sessionhive.model.messages import ToolResult
from sessionhive.tools import ToolExecutor


class Blocker:
    """A sync tool that blocks until released, counting the calls that started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.count += 1
        self.started.release()
        self.release.wait(60)
        return "released"

    def wait_started(self, calls: int = 1) -> None:
        for _ in range(calls):
            assert self.started.acquire(timeout=10), "the blocking tool did not start"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "seen.txt").write_text("here")
    return workspace


@pytest.fixture
def blocker() -> Iterator[Blocker]:
    tool = Blocker()
    yield tool
    tool.release.set()  # no thread of a failed test outlives it by a minute


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a cross-thread condition (an abandoned thread returning); not used for actors."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_session_holds_at_most_its_share_and_others_keep_theirs(ws: Path, blocker: Blocker) -> None:
    with ToolExecutor(ws, max_workers=8) as executor:  # a quarter each: 2
        executor.register("block", blocker)
        executor.register("quick", lambda: "quick")

        async def scenario() -> tuple[ToolResult, ToolResult, int, list[ToolResult]]:
            stuck = [asyncio.create_task(executor.execute("block", {}, session_id="stuck")) for _ in range(8)]
            await asyncio.to_thread(blocker.wait_started, 2)
            quick = await executor.execute("quick", {}, session_id="other")
            listed = await executor.execute("list_dir", {}, session_id="other")
            started_meanwhile = blocker.count
            blocker.release.set()
            return quick, listed, started_meanwhile, list(await asyncio.gather(*stuck))

        quick, listed, started_meanwhile, stuck = asyncio.run(scenario())
    assert quick == ToolResult("quick") and listed == ToolResult("seen.txt")
    assert started_meanwhile == 2  # the other six waited for the stuck session's own slots
    assert stuck == [ToolResult("released")] * 8


def test_a_freed_slot_goes_to_the_first_waiter_whose_session_is_under_its_share(ws: Path) -> None:
    gates = {name: threading.Event() for name in ("a1", "a2", "c")}
    started = {name: threading.Event() for name in gates}

    def gated(name: str) -> str:
        started[name].set()
        gates[name].wait(60)
        return name

    with ToolExecutor(ws, max_workers=2, max_workers_per_session=1) as executor:
        executor.register("gated", gated)

        async def scenario() -> tuple[str, bool, list[str]]:
            def gate(name: str, session: str) -> asyncio.Task[ToolResult]:
                return asyncio.create_task(executor.execute("gated", {"name": name}, session_id=session))

            a1, c = gate("a1", "a"), gate("c", "c")
            await asyncio.to_thread(lambda: started["a1"].wait(10) and started["c"].wait(10))
            a2 = gate("a2", "a")  # waits: session a is at its share (and the lane is full)
            await asyncio.sleep(0)  # one step, and a2 waits for a slot (nothing before that yields)
            waiting_b = gate("c", "b")  # waits too: the lane is full
            await asyncio.sleep(0)
            gates["c"].set()  # c's slot frees: a2, first in line, cannot take it (a holds one); b can
            b_result = await waiting_b
            a2_started = started["a2"].is_set()
            gates["a1"].set()
            gates["a2"].set()
            return b_result.output, a2_started, [r.output for r in await asyncio.gather(a1, c, a2)]

        b_output, a2_started, rest = asyncio.run(scenario())
    assert b_output == "c" and not a2_started
    assert rest == ["a1", "c", "a2"]


def test_built_in_tools_answer_while_every_user_tool_slot_is_taken(ws: Path, blocker: Blocker) -> None:
    with ToolExecutor(ws, max_workers=1) as executor:
        executor.register("block", blocker)
        executor.register("quick", lambda: "quick")

        async def scenario() -> tuple[ToolResult, bool, ToolResult]:
            stuck = asyncio.create_task(executor.execute("block", {}, session_id="stuck"))
            await asyncio.to_thread(blocker.wait_started)
            queued = asyncio.create_task(executor.execute("quick", {}, session_id="other"))
            listed = await executor.execute("list_dir", {}, session_id="other")
            queued_waited = not queued.done()
            blocker.release.set()
            await stuck
            return listed, queued_waited, await queued

        listed, queued_waited, queued = asyncio.run(scenario())
    assert listed == ToolResult("seen.txt")
    assert queued_waited and queued == ToolResult("quick")


def test_a_cancelled_call_frees_its_slot_at_once_and_its_thread_is_counted(
    ws: Path, blocker: Blocker, caplog: pytest.LogCaptureFixture
) -> None:
    before = abandoned_tool_threads.get()
    metrics = HiveMetrics()
    with ToolExecutor(ws, max_workers=1) as executor:
        executor.register("block", blocker)
        executor.register("quick", lambda: "quick")

        async def scenario() -> ToolResult:
            stuck = asyncio.create_task(executor.execute("block", {}, session_id="s-stuck"))
            await asyncio.to_thread(blocker.wait_started)
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            # The only slot is free again, for the very session whose call hangs.
            return await executor.execute("quick", {}, session_id="s-stuck")

        with caplog.at_level(logging.WARNING, logger="sessionhive.tools"):
            assert asyncio.run(scenario()) == ToolResult("quick")
        assert abandoned_tool_threads.get() == before + 1
        assert (
            f"sessionhive_tool_threads_abandoned {before + 1:.1f}"
            in generate_latest(metrics.registry).decode()
        )
        warning = next(r for r in caplog.records if "still running" in r.getMessage())
        assert "'block'" in warning.getMessage() and "'s-stuck'" in warning.getMessage()
        blocker.release.set()
        assert eventually(lambda: abandoned_tool_threads.get() == before)  # the thread returned


def test_a_user_tool_past_tool_timeout_s_fails_and_frees_its_slot(ws: Path, blocker: Blocker) -> None:
    with ToolExecutor(ws, max_workers=1, tool_timeout_s=0.2) as executor:
        executor.register("block", blocker)
        executor.register("quick", lambda: "quick")
        timed_out = asyncio.run(executor.execute("block", {}, session_id="s"))
        quick = asyncio.run(executor.execute("quick", {}, session_id="s"))
    blocker.release.set()
    assert timed_out.is_error and "did not return within 0.2 s" in timed_out.output
    assert quick == ToolResult("quick")


def script(messages: list[Message]) -> Reply:
    """Call the tool the prompt names, then answer once its result is in."""
    if messages[-1].role == "tool":
        return Reply("done")
    return Reply("", [ToolCall(messages[-1].text, {})])


def test_every_workers_worth_of_blocked_tools_in_one_session_leaves_others_answering(
    ws: Path, blocker: Blocker
) -> None:
    tools = ToolExecutor(ws)  # 16 user tool workers, the default
    tools.register("block", blocker)
    tools.register("quick", lambda: "quick")
    with Hive.start(store="memory", llm=ScriptedLlm(script), workspace=ws, tools=tools) as hive:
        hive.create_session("stuck")
        hive.create_session("bystander")
        for _ in range(16):  # each turn blocks a thread, then is cancelled: 16 threads stuck
            turn = hive.generate_streaming("stuck", "block")
            blocker.wait_started()
            assert hive.cancel_operation("stuck")
            with pytest.raises(TurnCancelled):
                turn.result()
        assert hive.generate("bystander", "list_dir", timeout=10).text == "done"
        assert hive.generate("bystander", "quick", timeout=10).text == "done"
        assert [m.text for m in hive.history("bystander") if m.role == "tool"] == ["seen.txt", "quick"]
        blocker.release.set()


CHILD = """
import sys, threading, time
from sessionhive import Hive, Reply, ScriptedLlm, ToolCall
from sessionhive.tools import ToolExecutor

started = threading.Event()

def block() -> str:
    started.set()
    time.sleep(60)
    return "woke"

tools = ToolExecutor(sys.argv[1])
tools.register("block", block)
llm = ScriptedLlm(lambda m: Reply("done") if m[-1].role == "tool" else Reply("", [ToolCall("block", {})]))
hive = Hive.start(store="memory", llm=llm, workspace=sys.argv[1], tools=tools)
hive.create_session("s")
turn = hive.generate_streaming("s", "block")
assert started.wait(10)
hive.stop()
print("stopped", flush=True)
"""


@pytest.mark.slow
def test_the_process_exits_promptly_after_stop_while_a_tool_blocks(ws: Path) -> None:
    env_path = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(ws)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"stopped\n", child.stderr.read() if child.stderr else ""
        stopped = time.monotonic()
        # The tool sleeps 60 s; a thread that kept the process alive would hold it that long.
        child.wait(timeout=20)
        waited = time.monotonic() - stopped
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0
    assert waited < 20
