"""Why a model stopped reaches the caller: providers' reasons in one vocabulary, AgentResult.stop_reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sessionhive import Hive, TurnEnd
from sessionhive.agent.loop import Decision, TurnOutcome, TurnSpec, run_turn
from sessionhive.llm.scripted import Reply, ScriptedLlm
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.events import AgentEvent
from sessionhive.model.messages import AgentResult, Message, ToolCall, Usage
from sessionhive.tools.executor import ToolExecutor
from tests.llm import test_llm_providers
from tests.llm.llm_servers import ReplySpec, ToolCallSpec
from tests.llm.test_llm_providers import Provider, ask, collect_stream, run

provider = test_llm_providers.provider


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ReplySpec("All done."), "stop"),
        (ReplySpec("Let me", tool_calls=[ToolCallSpec("read_file", {"path": "a"}, "c1")]), "tool_calls"),
        (ReplySpec("The answer is cut off mid", truncated=True), "length"),
    ],
    ids=["stop", "tool_calls", "length"],
)
def test_each_provider_reports_why_the_model_stopped_in_one_vocabulary(
    provider: Provider, streamed: bool, spec: ReplySpec, expected: str
) -> None:
    provider.server.script(spec)
    client = provider.client()
    request = ask("go")
    response = (
        collect_stream(client, request)[0] if streamed else run(client, lambda: client.complete(request))
    )
    assert response.stop_reason == expected
    assert response.text == spec.text


class Hooks:
    def __init__(self) -> None:
        self.events: list[AgentEvent] = []

    def emit(self, event: AgentEvent) -> None:
        self.events.append(event)

    async def confirm(self, call: ToolCall, arguments: dict[str, Any], timeout_s: float) -> Decision:
        return Decision(True, "approved")


def turn(replies: list[Reply], workspace: Path, **spec: Any) -> TurnOutcome:
    async def main() -> TurnOutcome:
        with ToolExecutor(workspace) as tools:
            return await run_turn(
                TurnSpec(
                    session_id="s",
                    prompt="go",
                    history=(),
                    system=None,
                    llm=ScriptedLlm(replies),
                    tools=tools,
                    workspace=workspace,
                    confirmation_policy=ConfirmationPolicy(enabled=False),
                    permission_policy=None,
                    **spec,
                ),
                Hooks(),
            )

    return asyncio.run(main())


def test_a_turn_cut_off_by_the_length_limit_says_so(tmp_path: Path) -> None:
    outcome = turn([Reply("half an answ", stop_reason="length")], tmp_path)
    assert outcome.status == "ok"
    result = outcome.result(tuple(outcome.new_messages))
    assert result.stop_reason == "length" and result.text == "half an answ"
    assert AgentResult.from_dict(result.to_dict()) == result


def test_a_turn_that_answers_stops_with_stop_and_one_out_of_rounds_with_max_rounds(tmp_path: Path) -> None:
    looping = [Reply("again", [ToolCall("list_dir", {})])]
    assert turn([Reply("done")], tmp_path).stop_reason == "stop"
    assert turn(looping, tmp_path, max_tool_rounds=2).stop_reason == "max_rounds"


def test_an_older_result_without_a_stop_reason_reads_as_stop() -> None:
    data = AgentResult("hi", [Message.user("q")], Usage(1, 1)).to_dict()
    del data["stop_reason"]
    assert AgentResult.from_dict(data).stop_reason == "stop"


def test_callers_of_generate_and_of_a_stream_see_a_length_stop(workspace: Path) -> None:
    llm = ScriptedLlm([Reply("cut off mid", stop_reason="length")])
    with Hive.start(store="memory", llm=llm, workspace=workspace) as hive:
        hive.create_session("s")
        assert hive.generate("s", "long story please").stop_reason == "length"
        stream = hive.generate_streaming("s", "again")
        ends = [event for event in stream if isinstance(event, TurnEnd)]
        assert stream.result(timeout=10).stop_reason == "length"
        assert [end.result.stop_reason for end in ends] == ["length"]
