"""Structured output: a turn's answer validated against a schema, repaired once, or failed cleanly."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from sessionhive import (
    AgentEvent,
    AsyncHive,
    ConfirmationPolicy,
    ConfirmationRequired,
    Hive,
    InvalidConfig,
    Message,
    OutputInvalid,
    Reply,
    ScriptedLlm,
    ToolCall,
    ToolExecutor,
    TurnFailed,
)
from sessionhive.agent.loop import Decision, TurnOutcome, TurnSpec, resume_turn
from sessionhive.agent.recovery import history_problems
from sessionhive.llm.base import LlmRequest
from sessionhive.model.output import output_spec, repair_prompt
from tests.runs.test_runs_restart import run_child_and_kill_it


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int


POINT = {
    "title": "point",
    "type": "object",
    "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
    "required": ["x", "y"],
    "additionalProperties": False,
}


class Answers:
    """A scripted model answering each request with the next of ``texts``, recording what it was asked."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.requests: list[LlmRequest] = []

    def __call__(self, messages: list[Message], request: LlmRequest) -> Reply:
        self.requests.append(request)
        return Reply(self.texts.pop(0) if self.texts else "plain text")


def test_a_pydantic_model_class_gives_a_validated_instance(workspace: Path) -> None:
    model = Answers('{"city": "Oslo", "celsius": -3}')
    with Hive.start(store="memory", llm=ScriptedLlm(model), workspace=workspace) as hive:
        hive.create_session("s")
        result = hive.generate("s", "weather in Oslo?", output_schema=Forecast)
    assert result.output == Forecast(city="Oslo", celsius=-3)
    assert isinstance(result.output, Forecast)
    asked = model.requests[0].output
    assert asked is not None and asked.name == "Forecast"
    assert asked.schema["properties"]["celsius"]["type"] == "integer"
    assert result.to_dict()["output"] == {"city": "Oslo", "celsius": -3}


def test_an_invalid_answer_is_repaired_once(workspace: Path) -> None:
    model = Answers('{"city": "Oslo", "celsius": "cold"}', '```json\n{"city": "Oslo", "celsius": -3}\n```')
    with Hive.start(store="memory", llm=ScriptedLlm(model), workspace=workspace) as hive:
        hive.create_session("s")
        result = hive.generate("s", "weather?", output_schema=Forecast)
        history = hive.history("s")
    assert result.output == Forecast(city="Oslo", celsius=-3)
    assert result.rounds == 2
    repair = model.requests[1].messages[-1]
    assert repair.role == "user" and "does not match the required JSON schema" in repair.text
    assert "celsius" in repair.text  # the model is told what was wrong
    assert not history_problems(history)


def test_twice_invalid_fails_with_output_invalid_and_the_session_goes_on(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    model = Answers("not json", '{"x": 1}', "after the failure")
    with Hive.start(store=store, llm=ScriptedLlm(model), workspace=tmp_path) as hive:
        hive.create_session("s")
        with pytest.raises(OutputInvalid, match="point") as failed:
            hive.generate("s", "where?", output_schema=POINT)
        assert isinstance(failed.value, TurnFailed)  # callers catching TurnFailed still catch it
        assert "'y' is a required property" in str(failed.value)
        assert len(model.requests) == 2  # one repair round, not more
        assert hive.generate("s", "and now?").text == "after the failure"
        run = hive.list_runs("s")[0]
        assert run.status == "failed" and run.output is None
    with Hive.start(store=store, llm=ScriptedLlm([Reply("again")]), workspace=tmp_path) as reopened:
        history = reopened.history("s")
        assert not history_problems(history)
        assert next(m.text for m in history if m.role == "user") == "where?"
        assert reopened.generate("s", "still there?").text == "again"


def test_a_json_schema_gives_the_json_value_and_the_run_carries_it(workspace: Path) -> None:
    model = Answers('{"x": 1.5, "y": -2}', '{"x": 0, "y": 0}')
    with Hive.start(store="memory", llm=ScriptedLlm(model), workspace=workspace) as hive:
        hive.create_session("s")
        assert hive.generate("s", "a point", output_schema=POINT).output == {"x": 1.5, "y": -2}
        run = hive.start_run("s", "another point", output_schema=POINT)
        finished = hive.wait_run(run.run_id, timeout=10)
    assert finished.status == "completed" and finished.output == {"x": 0, "y": 0}
    assert json.loads(json.dumps(finished.to_dict()))["output"] == {"x": 0, "y": 0}


def test_a_turn_without_a_schema_has_no_output(workspace: Path) -> None:
    with Hive.start(store="memory", llm=ScriptedLlm([Reply('{"x": 1}')]), workspace=workspace) as hive:
        hive.create_session("s")
        assert hive.generate("s", "hi").output is None


@pytest.mark.parametrize("schema", [{"type": "no such type"}, "an object", int])
def test_what_is_not_a_schema_is_refused_before_the_turn(workspace: Path, schema: object) -> None:
    model = Answers('{"x": 1}')
    with Hive.start(store="memory", llm=ScriptedLlm(model), workspace=workspace) as hive:
        hive.create_session("s")
        with pytest.raises(InvalidConfig, match="output_schema"):
            hive.generate("s", "hi", output_schema=schema)  # type: ignore[arg-type]
    assert model.requests == []


def test_async_hive_and_streaming_give_the_instance(workspace: Path) -> None:
    async def main() -> None:
        model = Answers('{"city": "Rome", "celsius": 20}', '{"city": "Rome", "celsius": 21}')
        async with AsyncHive.start(store="memory", llm=ScriptedLlm(model), workspace=workspace) as hive:
            await hive.create_session("s")
            result = await hive.generate("s", "weather?", output_schema=Forecast)
            assert result.output == Forecast(city="Rome", celsius=20)
            stream = await hive.generate_streaming("s", "weather?", output_schema=Forecast)
            async for _event in stream:
                pass
            assert (await stream.result()).output == Forecast(city="Rome", celsius=21)

    asyncio.run(main())


STRUCTURED_CHILD = textwrap.dedent(
    """
    import json, sys, threading
    from sessionhive import ConfirmationRequired, Hive, ScriptedLlm, SessionConfig
    from tests.conftest import tool_loop_script
    store, workspace = sys.argv[1], sys.argv[2]
    hive = Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace)
    hive.create_session("s", SessionConfig(durability="durable", resume_interrupted=True))
    schema = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
    run = hive.start_run("s", "write it", output_schema=schema)
    for event in hive.run_events(run.run_id):
        if isinstance(event, ConfirmationRequired):
            break
    print(json.dumps({"run": run.run_id}), flush=True)
    threading.Event().wait()
    """
)


def test_a_turn_resumed_after_kill_9_still_checks_its_schema(tmp_path: Path, workspace: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    run_id = run_child_and_kill_it(store, workspace, "resume", STRUCTURED_CHILD)["run"]
    model = Answers("done, no JSON", '{"x": 7}')
    with Hive.start(store, llm=ScriptedLlm(model), workspace=workspace) as hive:
        hive.restore_session_by_id("s")
        asked = next(e for e in hive.run_events(run_id) if isinstance(e, ConfirmationRequired))
        hive.confirm_tool("s", asked.tool_id, True)
        finished = hive.wait_run(run_id, timeout=30)
        assert finished.status == "completed" and finished.output == {"x": 7}
        assert [r.output for r in model.requests] == [model.requests[0].output] * 2
        assert model.requests[0].output is not None and model.requests[0].output.schema["required"] == ["x"]
        assert not history_problems(hive.history("s"))


class SilentHooks:
    """The turn's line to a session that is not there: events dropped, no confirmation expected."""

    def emit(self, event: AgentEvent) -> None:
        pass

    def confirm(self, call: ToolCall, arguments: dict[str, Any], timeout_s: float) -> Awaitable[Decision]:
        raise AssertionError("no tool call in these turns")


def resume_with(workspace: Path, model: Answers, *journaled: Message) -> TurnOutcome:
    spec = TurnSpec(
        session_id="s",
        prompt="where?",
        history=(),
        system=None,
        llm=ScriptedLlm(model),
        tools=ToolExecutor(workspace),
        workspace=workspace,
        confirmation_policy=ConfirmationPolicy(enabled=False),
        permission_policy=None,
        output=output_spec(POINT),
    )
    return asyncio.run(resume_turn(spec, SilentHooks(), journaled))


@pytest.mark.parametrize(
    ("journaled_answers", "model_answers", "status", "output", "calls"),
    [
        (['{"x": 1, "y": 2}'], [], "ok", {"x": 1, "y": 2}, 0),  # a stored final answer is checked
        (["not json"], ['{"x": 3, "y": 4}'], "ok", {"x": 3, "y": 4}, 1),  # and repaired if it misses
        (["not json", "still not"], [], "error", None, 0),  # its repair round was used before the stop
    ],
)
def test_a_resumed_turn_checks_a_final_answer_the_journal_kept(
    workspace: Path,
    journaled_answers: list[str],
    model_answers: list[str],
    status: str,
    output: object,
    calls: int,
) -> None:
    journaled = [Message.user("where?")]
    for position, text in enumerate(journaled_answers):
        if position:
            journaled.append(Message.user(repair_prompt("not JSON")))
        journaled.append(Message.assistant(text))
    model = Answers(*model_answers)
    outcome = resume_with(workspace, model, *journaled)
    assert (outcome.status, outcome.output, len(model.requests)) == (status, output, calls)
    if status == "error":
        assert outcome.error_kind == "output_invalid"
    assert not history_problems(outcome.new_messages)
