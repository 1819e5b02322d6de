"""Traces of a turn: the GenAI span tree, what its attributes hold, and the store's linked commits.

Issue 24. A real Hive on a SQLite file runs a scripted model that calls two
tools, one of which waits for a human; the OpenTelemetry SDK's in-memory
exporter receives the spans (tests/tracing_helpers.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessionhive import (
    ConfirmationRequired,
    Hive,
    LlmConfig,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
)
from tests.llm.llm_servers import FaultSpec, OpenAiServer, ReplySpec
from tests.tracing_helpers import memory_exporter, tree

PROMPT = "please note the secret plan"
ANSWER = "the plan is noted"
FILE_TEXT = "contents nobody should see in a trace"


def _two_tools(messages: list[Message]) -> Reply:
    """First a listing and a write (the write waits for a human), then the answer."""
    if messages[-1].role == "tool":
        return Reply(ANSWER)
    return Reply(
        "working",
        [
            ToolCall("list_dir", {"path": "."}, "call_list"),
            ToolCall("write_file", {"path": "plan.txt", "content": FILE_TEXT}, "call_write"),
        ],
    )


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return memory_exporter()


def _run_turn(
    exporter: InMemorySpanExporter, workspace: Path, *, trace_content: bool = False
) -> tuple[list[ReadableSpan], int]:
    """One traced turn inside a caller's span; the spans (after a flush) and the caller's trace id."""
    with Hive.start(
        store=f"sqlite:///{workspace.parent / 'traced.db'}",
        llm=ScriptedLlm(_two_tools),
        workspace=workspace,
        trace_content=trace_content,
    ) as hive:
        hive.create_session("s1", SessionConfig())
        tracer = trace.get_tracer("test")
        with tracer.start_as_current_span("caller") as caller:
            result = hive.generate("s1", PROMPT, on_confirmation=lambda _event: True, timeout=30)
        assert result.text == ANSWER
        hive.flush()
    return (
        list(exporter.get_finished_spans()),
        caller.get_span_context().trace_id,
    )


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def test_a_turn_with_two_tools_and_a_confirmation_is_one_span_tree(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    spans, trace_id = _run_turn(exporter, workspace)
    caller = tree(spans, "caller")
    assert caller.shape() == (
        "caller",
        (
            (
                "invoke_agent",
                (
                    ("chat scripted", ()),
                    ("execute_tool list_dir", ()),
                    ("execute_tool write_file", (("await_confirmation write_file", ()),)),
                    ("chat scripted", ()),
                ),
            ),
        ),
    )
    turn = caller.children[0]
    assert turn.span.context.trace_id == trace_id
    assert _attrs(turn.span) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted",
        "gen_ai.conversation.id": "s1",
        "sessionhive.turn.id": 1,
        "sessionhive.turn.outcome": "completed",
        "sessionhive.turn.stop_reason": "stop",
        "sessionhive.turn.rounds": 2,
        "gen_ai.usage.input_tokens": turn.span.attributes["gen_ai.usage.input_tokens"],  # type: ignore[index]
        "gen_ai.usage.output_tokens": turn.span.attributes["gen_ai.usage.output_tokens"],  # type: ignore[index]
    }
    assert int(turn.span.attributes["gen_ai.usage.input_tokens"]) > 0  # type: ignore[arg-type,index]
    by_name = {node.name: node for node in sorted(turn.children, key=lambda n: n.span.start_time or 0)}
    chat = _attrs(sorted(turn.children, key=lambda n: n.span.start_time or 0)[0].span)
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.provider.name"] == "scripted"
    assert chat["gen_ai.request.model"] == chat["gen_ai.response.model"] == "scripted"
    assert chat["gen_ai.conversation.id"] == "s1"
    assert chat["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert int(chat["gen_ai.usage.input_tokens"]) > 0  # type: ignore[call-overload]
    assert int(chat["gen_ai.usage.output_tokens"]) > 0  # type: ignore[call-overload]
    listing = _attrs(by_name["execute_tool list_dir"].span)
    assert listing == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "list_dir",
        "gen_ai.tool.call.id": "call_list",
        "gen_ai.tool.type": "function",
        "sessionhive.tool.sandboxed": False,
        "sessionhive.tool.outcome": "ok",
    }
    writing = by_name["execute_tool write_file"]
    assert _attrs(writing.span)["sessionhive.tool.outcome"] == "ok"
    wait = _attrs(writing.children[0].span)
    assert wait["sessionhive.confirmation.decision"] == "approved"
    assert wait["sessionhive.confirmation.approved"] is True
    assert float(wait["sessionhive.confirmation.wait_s"]) >= 0  # type: ignore[arg-type]
    assert (workspace / "plan.txt").read_text() == FILE_TEXT


def test_the_store_commits_link_to_the_turn_whose_steps_they_carry(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    spans, _trace_id = _run_turn(exporter, workspace)
    turn = next(span for span in spans if span.name == "invoke_agent")
    commits = [span for span in spans if span.name == "store commit"]
    linked = [c for c in commits if any(link.context.span_id == turn.context.span_id for link in c.links)]
    assert linked, [(c.name, c.links) for c in commits]
    for commit in linked:
        assert commit.parent is None  # a commit serves many turns: its own trace, linked to each
        assert _attrs(commit)["sessionhive.store"]
        assert int(_attrs(commit)["sessionhive.store.sessions"]) >= 1  # type: ignore[call-overload]


def _all_text(spans: list[ReadableSpan]) -> str:
    parts: list[str] = []
    for span in spans:
        parts.extend(str(value) for value in (span.attributes or {}).values())
        for event in span.events:
            parts.extend(str(value) for value in (event.attributes or {}).values())
    return "\n".join(parts)


def test_no_span_holds_prompt_answer_or_tool_text_by_default(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    spans, _trace_id = _run_turn(exporter, workspace)
    text = _all_text(spans)
    for secret in (PROMPT, ANSWER, FILE_TEXT, "working"):
        assert secret not in text


def test_trace_content_puts_prompt_answer_and_tool_text_in_the_spans(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    spans, _trace_id = _run_turn(exporter, workspace, trace_content=True)
    by_name = {span.name: _attrs(span) for span in spans}
    assert PROMPT in str(by_name["invoke_agent"]["gen_ai.input.messages"])
    assert ANSWER in str(by_name["invoke_agent"]["gen_ai.output.messages"])
    assert FILE_TEXT in str(by_name["execute_tool write_file"]["gen_ai.tool.call.arguments"])
    assert "plan.txt" in str(by_name["execute_tool write_file"]["gen_ai.tool.call.result"])
    chats = [_attrs(span) for span in spans if span.name == "chat scripted"]
    assert any(PROMPT in str(chat["gen_ai.input.messages"]) for chat in chats)
    assert any(ANSWER in str(chat["gen_ai.output.messages"]) for chat in chats)


def test_a_turn_without_a_caller_span_starts_its_own_trace(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    with Hive.start(store="memory", llm=ScriptedLlm(_two_tools), workspace=workspace) as hive:
        hive.create_session("s1")
        stream = hive.generate_streaming("s1", PROMPT)
        for event in stream:
            if isinstance(event, ConfirmationRequired):
                hive.confirm_tool("s1", event.tool_id, False, "not now")
        stream.result(timeout=30)
    spans = exporter.get_finished_spans()
    turn = next(span for span in spans if span.name == "invoke_agent")
    assert turn.parent is None
    writing = next(span for span in spans if span.name == "execute_tool write_file")
    assert _attrs(writing)["sessionhive.tool.outcome"] == "rejected"
    assert _attrs(writing)["error.type"] == "rejected"
    wait = next(span for span in spans if span.name == "await_confirmation write_file")
    assert _attrs(wait)["sessionhive.confirmation.decision"] == "rejected"


def test_a_retried_model_call_is_one_span_with_the_retry_as_an_event_and_no_key(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    key = "sk-tracing-test-3b1e-SECRET"
    with OpenAiServer() as server:
        server.script(FaultSpec(429, retry_after="0.05"), ReplySpec("fine"))
        llm = LlmConfig("openai", "gpt-4o-mini", api_key=key, base_url=server.url, max_retries=2)
        with Hive.start(store="memory", llm=llm, workspace=workspace, trace_content=True) as hive:
            hive.create_session("s1")
            assert hive.generate("s1", PROMPT, timeout=30).text == "fine"
    spans = exporter.get_finished_spans()
    chat = next(span for span in spans if span.name == "chat gpt-4o-mini")
    assert _attrs(chat)["gen_ai.provider.name"] == "openai"
    assert _attrs(chat)["gen_ai.response.finish_reasons"] == ("stop",)
    assert "sessionhive.llm.retry" in [event.name for event in chat.events]
    assert key not in _all_text(list(spans))  # not even with trace_content=True


def test_passivation_and_activation_are_spans(exporter: InMemorySpanExporter, workspace: Path) -> None:
    with Hive.start(
        store=f"sqlite:///{workspace.parent / 'lifecycle.db'}",
        llm=ScriptedLlm(_two_tools),
        workspace=workspace,
        max_live_sessions=1,
    ) as hive:
        hive.create_session("first")
        hive.create_session("second")  # one live session at most: the first is passivated
        assert hive.history("first") == []  # and activated again to answer
    lifecycle = [
        (span.name, _attrs(span)["gen_ai.conversation.id"], _attrs(span).get("sessionhive.session.loaded"))
        for span in exporter.get_finished_spans()
        if span.name in ("passivate_session", "activate_session")
    ]
    assert ("passivate_session", "first", None) in lifecycle
    assert [entry for entry in lifecycle if entry[0] == "activate_session"] == [
        ("activate_session", "first", True)
    ]
