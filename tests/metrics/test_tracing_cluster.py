"""One trace through Ray: a ClusterHive call made inside a span is continued on the shard and its turn.

Issue 24. A real local Ray on 127.0.0.1 and PostgreSQL (as tests/cluster/test_cluster.py);
the shards are Ray worker processes that install the SDK from the standard
``OTEL_*`` variables and export over OTLP/HTTP to the receiver process of
tests/metrics/otlp_receiver.py. The caller's trace id must come back on the shard's
spans, through both the sync (direct Ray calls) and the async (batched) clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from opentelemetry import trace  # noqa: E402 - after the importorskip

from sessionhive import Reply, ScriptedLlm, ToolCall  # noqa: E402
from sessionhive.cluster import AsyncClusterHive, ClusterHive, owner_of  # noqa: E402
from tests.cluster.cluster_helpers import fresh_schema, postgres_unreachable  # noqa: E402
from tests.metrics.otlp_receiver import otlp_receiver, received_spans  # noqa: E402
from tests.tracing_helpers import memory_exporter  # noqa: E402

# One Ray per machine at a time: every test that starts Ray runs in one xdist worker, one after another.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("ray")]

TOOL_SCRIPT = [Reply("looking", [ToolCall("list_dir", {"path": "."})]), Reply("done")]


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    with otlp_receiver() as url:
        yield url


@pytest.fixture(scope="module")
def traced_ray(receiver: str) -> Iterator[None]:
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(f"!!! PostgreSQL is NOT REACHABLE, cluster tracing tests skipped: {reason}")
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        object_store_memory=100 * 1024 * 1024,
        namespace="sessionhive-tracing-tests",
        log_to_driver=False,
        # What an operator sets for the shard processes: the standard variables, nothing else.
        runtime_env={
            "env_vars": {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver}/v1/traces",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
        },
    )
    yield
    ray.shutdown()


@pytest.fixture
def pg_url(traced_ray: None) -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def _spans_of(receiver: str, trace_id: int, turns: int) -> dict[str, dict[str, Any]]:
    spans = received_spans(receiver, "invoke_agent", count=turns)
    return {span["span_id"]: span for span in spans if span["trace_id"] == f"{trace_id:032x}"}


def _check_chain(spans: dict[str, dict[str, Any]], caller_span_id: int, session_id: str, shard: str) -> None:
    """caller -> shard call (SERVER, on the session's shard) -> invoke_agent -> chat, tool, chat."""
    turn = next(span for span in spans.values() if span["name"] == "invoke_agent")
    assert turn["attributes"]["gen_ai.conversation.id"] == session_id
    assert turn["service"] == "sessionhive-shard"
    on_shard = spans[turn["parent_span_id"]]
    assert on_shard["name"] in ("shard call generate", "shard start_feed turn")
    assert on_shard["attributes"]["sessionhive.shard.id"] == shard
    assert on_shard["parent_span_id"] == f"{caller_span_id:016x}"
    children = sorted(s["name"] for s in spans.values() if s["parent_span_id"] == turn["span_id"])
    assert children == ["chat scripted", "chat scripted", "execute_tool list_dir"]


def test_a_cluster_call_inside_a_span_is_continued_on_the_shard(
    pg_url: str, receiver: str, tmp_path: Path
) -> None:
    memory_exporter()
    tracer = trace.get_tracer("test")
    with ClusterHive.start(
        shards=2, store=pg_url, llm=ScriptedLlm(TOOL_SCRIPT), workspace=str(tmp_path)
    ) as hive:
        hive.create_session("alice")
        with tracer.start_as_current_span("caller") as caller:
            assert hive.generate("alice", "what is here?").text == "done"
        shard = hive.shard_of("alice")
    context = caller.get_span_context()
    _check_chain(_spans_of(receiver, context.trace_id, 1), context.span_id, "alice", shard)


def test_an_async_cluster_call_carries_its_span_through_the_batches(
    pg_url: str, receiver: str, tmp_path: Path
) -> None:
    memory_exporter()
    tracer = trace.get_tracer("test")

    async def scenario() -> tuple[Any, str]:
        llm = ScriptedLlm(TOOL_SCRIPT)
        async with AsyncClusterHive.start(shards=2, store=pg_url, llm=llm, workspace=str(tmp_path)) as hive:
            await hive.create_session("bob")
            with tracer.start_as_current_span("async caller") as caller:
                assert (await hive.generate("bob", "what is here?")).text == "done"
            return caller.get_span_context(), owner_of("bob", hive.shards)

    context, shard = asyncio.run(scenario())
    _check_chain(_spans_of(receiver, context.trace_id, 2), context.span_id, "bob", shard)
