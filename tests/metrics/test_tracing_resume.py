"""A turn resumed after a crash links to the span of the turn the dead process started.

Issue 24. A child process (with the OpenTelemetry SDK) runs a durable turn
whose tool blocks, and gets SIGKILL while the tool runs: its journal holds
the turn's ``traceparent``. A new Hive on the same SQLite file resumes the
turn; its ``invoke_agent`` span is a new trace with a span link to the old one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessionhive import (
    ConfirmationPolicy,
    Hive,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
    ToolExecutor,
)
from tests.tracing_helpers import memory_exporter


def script(messages: list[Message]) -> Reply:
    if messages[-1].role == "tool" or messages[-1].text != "go":
        return Reply("carried on")
    return Reply("holding", [ToolCall("hold", {}, "call_hold")])


def make_tools(workspace: Path) -> ToolExecutor:
    def hold() -> str:
        print("holding", flush=True)
        threading.Event().wait()  # until the process is killed
        return "never"

    executor = ToolExecutor(workspace)
    executor.register("hold", hold, description="holds until the process dies")
    return executor


CONFIG = SessionConfig(
    durability="sync", resume_interrupted=True, confirmation_policy=ConfirmationPolicy(enabled=False)
)

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())  # recording spans, exported nowhere: the process dies
    from sessionhive import Hive, ScriptedLlm
    from tests.metrics.test_tracing_resume import CONFIG, make_tools, script
    db, workspace = sys.argv[1], Path(sys.argv[2])
    tools = make_tools(workspace)
    hive = Hive.start(store=f"sqlite:///{db}", llm=ScriptedLlm(script), workspace=workspace, tools=tools)
    hive.create_session("s", CONFIG)
    with trace.get_tracer("child").start_as_current_span("caller") as span:
        print(f"trace {span.get_span_context().trace_id:032x}", flush=True)
        hive.generate("s", "go", timeout=None)
    """
)


def test_a_resumed_turn_links_to_the_span_of_the_interrupted_one(workspace: Path, tmp_path: Path) -> None:
    exporter: InMemorySpanExporter = memory_exporter()
    db = tmp_path / "resume.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(workspace)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    first = child.stdout.readline().split()
    assert first[0] == "trace", first
    assert child.stdout.readline().strip() == "holding"  # the journal says the tool runs: committed (sync)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Hive.start(
        store=f"sqlite:///{db}", llm=ScriptedLlm(script), workspace=workspace, tools=make_tools(workspace)
    ) as hive:
        assert (
            hive.generate("s", "and now?", timeout=30).text == "carried on"
        )  # queued behind the resumed turn
    turns = [span for span in exporter.get_finished_spans() if span.name == "invoke_agent"]
    resumed = next(span for span in turns if (span.attributes or {}).get("sessionhive.turn.resumed"))
    assert [f"{link.context.trace_id:032x}" for link in resumed.links] == [first[1]]
    assert resumed.context.trace_id != int(
        first[1], 16
    )  # a new trace, linked: the old one ended with its process
    assert resumed.parent is None
