"""One trace across HTTP: a RemoteHive call made inside a span is continued by the service and its turn.

Issue 24. The service runs on a real uvicorn server on 127.0.0.1 and the
client is the real RemoteHive/AsyncRemoteHive over httpx: the only thing
carrying the trace is the W3C ``traceparent`` header. Also: ``decided_by``
reaches the confirmation span, and ``/metrics`` in OpenMetrics format shows
the duration histograms' exemplars with the turn's trace id.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessionhive import ConfirmationRequired, Hive, ScriptedLlm
from sessionhive.client import AsyncRemoteHive, RemoteHive
from sessionhive.serve import ServerThread, serve_app
from tests.conftest import tool_loop_script
from tests.tracing_helpers import memory_exporter, tree

TOKEN = "tracing-test-token-0123456789"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return memory_exporter()


def test_a_remote_call_inside_a_span_is_continued_by_the_service_and_the_turn(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    with (
        Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
        RemoteHive(server.url, token=TOKEN) as remote,
    ):
        remote.create_session("s")
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            remote.generate("s", "look around")
    trace_id = caller.get_span_context().trace_id
    spans = exporter.get_finished_spans()
    root = tree(spans, "caller")
    requests = [node for node in root.children if node.span.kind == trace.SpanKind.SERVER]
    assert [node.name for node in requests] == ["POST /v1/sessions/{session_id}/turns"]
    served = requests[0]
    assert dict(served.span.attributes or {})["http.response.status_code"] == 200
    assert served.shape() == (
        "POST /v1/sessions/{session_id}/turns",
        (("invoke_agent", (("chat scripted", ()), ("execute_tool list_dir", ()), ("chat scripted", ()))),),
    )
    assert served.span.context.trace_id == served.children[0].span.context.trace_id == trace_id


def test_an_async_remote_call_carries_its_span_too(exporter: InMemorySpanExporter, workspace: Path) -> None:
    async def call(url: str) -> int:
        async with AsyncRemoteHive(url, token=TOKEN) as remote:
            await remote.create_session("s")
            with trace.get_tracer("test").start_as_current_span("async caller") as caller:
                await remote.generate("s", "look around")
            return caller.get_span_context().trace_id

    with (
        Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
    ):
        trace_id = asyncio.run(call(server.url))
    turn = next(span for span in exporter.get_finished_spans() if span.name == "invoke_agent")
    assert turn.context.trace_id == trace_id


def test_who_decided_a_confirmation_is_on_its_span(exporter: InMemorySpanExporter, workspace: Path) -> None:
    with Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("s")
        stream = hive.generate_streaming("s", "write it")
        for event in stream:
            if isinstance(event, ConfirmationRequired):
                hive.confirm_tool("s", event.tool_id, True, "fine", decided_by="alice")
        stream.result(timeout=30)
    wait = next(s for s in exporter.get_finished_spans() if s.name == "await_confirmation write_file")
    attributes = dict(wait.attributes or {})
    assert (
        attributes["sessionhive.confirmation.decided_by"],
        attributes["sessionhive.confirmation.decision"],
    ) == (
        "alice",
        "approved",
    )


def _exemplar_trace_ids(body: str, metric: str) -> set[str]:
    """Trace ids of the exemplars on ``metric``'s bucket lines (OpenMetrics: ``... # {trace_id="..."} v``)."""
    pattern = re.compile(rf'^{metric}_bucket\{{[^}}]*\}} \S+ # \{{[^}}]*trace_id="([0-9a-f]{{32}})"', re.M)
    return set(pattern.findall(body))


def test_metrics_in_openmetrics_format_carry_the_turns_trace_id_as_exemplars(
    exporter: InMemorySpanExporter, workspace: Path
) -> None:
    with (
        Hive.start(store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
    ):
        hive.create_session("s")
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            hive.generate("s", "look around")
        openmetrics = httpx.get(
            f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        classic = httpx.get(f"{server.url}/metrics")
    trace_id = f"{caller.get_span_context().trace_id:032x}"
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    body = openmetrics.text
    assert body.rstrip().endswith("# EOF") and body.count("# EOF") == 1
    for metric in (
        "sessionhive_turn_duration_seconds",
        "sessionhive_llm_request_duration_seconds",
        "sessionhive_tool_duration_seconds",
    ):
        assert _exemplar_trace_ids(body, metric) == {trace_id}, metric
    assert "sessionhive_serve_open_streams" in body  # the service's own registry is in the same exposition
    assert classic.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in classic.text
