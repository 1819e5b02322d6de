"""OTLP/HTTP export from a `sessionhive serve` process to a receiver process, read back.

Issue 24. Three processes: this test (the caller, with a span of its own),
``sessionhive serve --otlp-endpoint`` (the SDK with a batching OTLP/HTTP
exporter, configured by the serve command only) and the receiver of
tests/metrics/otlp_receiver.py, which decodes what arrives with ``opentelemetry-proto``.
The caller's trace id must come back on the service's spans.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import trace

from sessionhive.client import RemoteHive
from tests.metrics.otlp_receiver import otlp_receiver, received_spans
from tests.tracing_helpers import memory_exporter

TOKEN = "otlp-test-token-0123456789"
SERVE = "import sys; from sessionhive.cli import main; sys.exit(main())"


@contextmanager
def serving(workspace: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``sessionhive serve`` in a subprocess (loopback, a scripted model); its URL. SIGTERM at the end."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-c", SERVE, "serve", "--store", "memory", "--port", "0"),
            *("--workspace", str(workspace), "--loadtest-script", "2", *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SESSIONHIVE_TOKEN": TOKEN, **(env or {})},
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
        if found:
            break
    else:
        raise AssertionError("serve did not start:\n" + "".join(seen))
    try:
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_the_service_exports_its_spans_over_otlp_in_the_callers_trace(workspace: Path) -> None:
    memory_exporter()  # the caller's own spans need a recording provider to have a trace id
    with (
        otlp_receiver() as receiver,
        # The standard variables reach the SDK: a short batch delay makes the export prompt.
        serving(workspace, "--otlp-endpoint", receiver, env={"OTEL_BSP_SCHEDULE_DELAY": "100"}) as url,
    ):
        with RemoteHive(url, token=TOKEN) as remote:
            remote.create_session("s")
            with trace.get_tracer("test").start_as_current_span("caller") as caller:
                remote.generate("s", "s turn 1")  # the load-test script: two list_dir calls
        spans = received_spans(receiver, "invoke_agent")
    trace_id = f"{caller.get_span_context().trace_id:032x}"
    in_trace = {span["span_id"]: span for span in spans if span["trace_id"] == trace_id}
    turn = next(span for span in in_trace.values() if span["name"] == "invoke_agent")
    request = in_trace[turn["parent_span_id"]]
    assert request["name"] == "POST /v1/sessions/{session_id}/turns"
    assert request["parent_span_id"] == f"{caller.get_span_context().span_id:016x}"
    assert turn["service"] == "sessionhive"
    assert turn["attributes"]["gen_ai.conversation.id"] == "s"
    children = sorted(span["name"] for span in in_trace.values() if span["parent_span_id"] == turn["span_id"])
    assert children == ["chat loadtest"] * 3 + ["execute_tool list_dir"] * 2
