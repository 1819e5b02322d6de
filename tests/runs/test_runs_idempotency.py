"""Idempotency keys: the same key and prompt name one run and one model call; another prompt is refused."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sessionhive import AsyncHive, Hive, IdempotencyConflict, ScriptedLlm, TurnEnd
from tests.runs.runs_helpers import CountingScript


def test_twenty_concurrent_start_runs_with_one_key_make_one_run_and_one_model_call(
    workspace: Path, actor_backend: str
) -> None:
    script = CountingScript()
    with Hive.start(
        "memory", llm=ScriptedLlm(script), workspace=workspace, actor_backend=actor_backend
    ) as hive:
        hive.create_session("s")
        with ThreadPoolExecutor(20) as pool:
            runs = list(pool.map(lambda _: hive.start_run("s", "look", idempotency_key="k"), range(20)))
        assert len({run.run_id for run in runs}) == 1
        finished = hive.wait_run(runs[0].run_id, timeout=30)
        assert finished.status == "completed" and finished.text is not None
        assert finished.text.startswith("done:")
        # One turn: the tool call and the answer after it, asked once each.
        assert script.calls[0] == "look" and len(script.calls) == 2
        assert len(hive.list_runs("s")) == 1
        assert [m.text for m in hive.history("s") if m.role == "user"] == ["look"]


def test_generate_with_a_known_key_returns_the_runs_result_without_a_model_call(workspace: Path) -> None:
    script = CountingScript()
    with Hive.start("memory", llm=ScriptedLlm(script), workspace=workspace) as hive:
        hive.create_session("s")
        first = hive.generate("s", "look", idempotency_key="k")
        calls = len(script.calls)
        again = hive.generate("s", "look", idempotency_key="k")
        assert again.text == first.text and again.usage == first.usage
        stream = hive.generate_streaming("s", "look", idempotency_key="k")
        events = list(stream)
        assert isinstance(events[-1], TurnEnd) and events[-1].result.text == first.text
        assert {event.run_id for event in events} == {stream.run_id}
        assert len(script.calls) == calls


def test_a_key_with_another_prompt_is_a_conflict(workspace: Path) -> None:
    with Hive.start("memory", llm=ScriptedLlm(CountingScript()), workspace=workspace) as hive:
        hive.create_session("s")
        run = hive.start_run("s", "look", idempotency_key="k")
        with pytest.raises(IdempotencyConflict) as refused:
            hive.start_run("s", "look elsewhere", idempotency_key="k")
        assert refused.value.run_id == run.run_id
        with pytest.raises(IdempotencyConflict):
            hive.generate("s", "look elsewhere", idempotency_key="k")


def test_a_repeated_key_joins_a_run_that_is_still_waiting(workspace: Path) -> None:
    """The retry of a turn that waits for approval gets that turn's outcome, never a second turn."""
    script = CountingScript()
    with Hive.start("memory", llm=ScriptedLlm(script), workspace=workspace) as hive:
        hive.create_session("s")
        stream = hive.generate_streaming("s", "write it", idempotency_key="k")
        with ThreadPoolExecutor(1) as pool:
            retried = pool.submit(hive.generate, "s", "write it", idempotency_key="k", on_busy="reject")
            asked = next(e for e in stream if e.type == "ConfirmationRequired")
            assert hive.get_run(stream.run_id).status == "waiting"
            assert hive.confirm_tool("s", asked.tool_id, True)  # type: ignore[attr-defined]
            assert retried.result(30).text == stream.result(30).text
        assert len(script.calls) == 2


def test_async_facade_twenty_concurrent_same_key(workspace: Path) -> None:
    script = CountingScript()

    async def main() -> None:
        async with AsyncHive.start("memory", llm=ScriptedLlm(script), workspace=workspace) as hive:
            await hive.create_session("s")
            runs = await asyncio.gather(
                *(hive.start_run("s", "look", idempotency_key="k") for _ in range(20))
            )
            assert len({run.run_id for run in runs}) == 1
            assert (await hive.wait_run(runs[0].run_id, timeout=30)).status == "completed"
            events = [event async for event in hive.run_events(runs[0].run_id)]
            assert events[-1].type == "TurnEnd"

    asyncio.run(main())
    assert len(script.calls) == 2
