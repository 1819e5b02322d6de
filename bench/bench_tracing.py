"""Tracing overhead: turn throughput with tracing off, with the API's no-op provider, and with the SDK.

Run from the repository root::

    python bench/bench_tracing.py
    python bench/bench_tracing.py --sessions 1000 --turns 3 --repeat 5 --store sqlite

What it measures: ``sessions`` sessions (a zero-latency ScriptedLlm,
confirmations off) each run ``turns`` turns; every round starts one
streaming turn in each session at once and waits for all of them. A turn is
a model call asking for ``list_dir``, the tool, then a final model call: four
spans (``invoke_agent``, two ``chat``, one ``execute_tool``), plus the store's
commit spans with ``--store sqlite``. Only the turns are timed. Throughput is
turns per second of wall time and turns per CPU second of the measuring
process (all its threads, the exporter's included).

- ``off``: ``opentelemetry`` cannot be imported (blocked in ``sys.modules``
  before sessionhive is), as when the ``tracing`` extra is not installed:
  every span helper returns at once.
- ``noop``: ``opentelemetry-api`` without an SDK: the API's no-op spans.
- ``sdk``: the SDK's ``TracerProvider`` (sampling everything) with a
  ``BatchSpanProcessor`` and the OTLP/HTTP exporter, sending to a receiver
  process that reads and discards each request (a collector's place).
- ``sdk10``: the same with ``ParentBased(TraceIdRatioBased(0.1))``: one turn
  in ten traced (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``_ARG=0.1``).

``--llm-latency S`` gives each model call S seconds: with the default 0 the
turns are pure CPU (the worst case for any per-span cost); with a latency
like a real model's the run is bound by the model, as a service is.

Each run is a fresh child process (a process sets its tracer provider once);
the modes alternate in a rotating order after a discarded warm-up of each, and
the medians of ``--repeat`` runs are compared with ``off`` in the same run of
this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, median, print_table, run_child

MODES = ("off", "noop", "sdk", "sdk10")

_SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def child(mode: str, sessions: int, turns: int, store: str, sink: str, latency: float) -> dict[str, Any]:
    """One measured run in this (fresh) process."""
    if mode == "off":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # an import now fails
    elif mode.startswith("sdk"):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(0.1)) if mode == "sdk10" else ALWAYS_ON
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces")))
        trace.set_tracer_provider(provider)

    from sessionhive import ConfirmationPolicy, Hive, Message, Reply, ScriptedLlm, SessionConfig, ToolCall
    from sessionhive.metrics import tracing

    assert (tracing.current_context() is None) == (mode == "off")  # off: the API is not importable

    def tool_then_answer(messages: list[Message]) -> Reply:
        if messages[-1].role == "tool":
            return Reply("done: the workspace has what we need")
        return Reply("let me look", [ToolCall("list_dir", {"path": "."})])

    config = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False), durability="batched")
    with tempfile.TemporaryDirectory() as workspace:
        url = "memory" if store == "memory" else f"sqlite:///{workspace}/bench.db"
        llm = ScriptedLlm(tool_then_answer, latency)
        with Hive.start(store=url, llm=llm, workspace=workspace) as hive:
            ids = [f"bench-{n:05d}" for n in range(sessions)]
            for session_id in ids:
                hive.create_session(session_id, config)
            started, cpu_started = time.perf_counter(), time.process_time()
            for turn in range(turns):
                streams = [hive.generate_streaming(session_id, f"turn {turn}") for session_id in ids]
                for stream in streams:
                    stream.result(timeout=300)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
    if mode.startswith("sdk"):
        provider.shutdown()  # the last batch goes out (not timed)
    return {"turns_per_s": sessions * turns / elapsed, "turns_per_cpu_s": sessions * turns / cpu}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=3, help="turns per session per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per mode; the medians are compared")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--llm-latency", type=float, default=0.0, help="seconds per model call")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child, args.sessions, args.turns, args.store, args.sink, args.llm_latency)
        print(json.dumps(result))
        return 0

    sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    sink_url = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
    script = Path(__file__).resolve()

    def run(mode: str, sessions: int, turns: int) -> dict[str, Any]:
        common = ["--sessions", str(sessions), "--turns", str(turns), "--store", args.store]
        common += ["--llm-latency", str(args.llm_latency)]
        return run_child(script, ["--child", mode, "--sink", sink_url, *common])

    print(
        f"tracing overhead: {args.sessions} sessions x {args.turns} turns (tool workload), "
        f"store={args.store}, model latency {args.llm_latency:g} s, {args.repeat} runs per mode, "
        f"Python {platform.python_version()}"
    )
    try:
        for mode in MODES:
            run(mode, max(1, args.sessions // 5), 1)  # warm-up, discarded
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeat):
            order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
            for mode in order:
                result = run(mode, args.sessions, args.turns)
                runs[mode].append(result)
                print(
                    f"  run {repeat + 1} {mode:>4}: {result['turns_per_s']:7.0f} turns/s  "
                    f"{result['turns_per_cpu_s']:7.0f} turns/CPU-s"
                )
    finally:
        sink.kill()
        sink.wait()

    medians = {
        mode: {key: median(r[key] for r in runs[mode]) for key in ("turns_per_s", "turns_per_cpu_s")}
        for mode in MODES
    }
    rows = []
    for mode in MODES:
        rate, per_cpu = medians[mode]["turns_per_s"], medians[mode]["turns_per_cpu_s"]
        rows.append(
            [
                mode,
                f"{rate:.0f}",
                f"{rate / medians['off']['turns_per_s']:.3f}",
                f"{per_cpu:.0f}",
                f"{per_cpu / medians['off']['turns_per_cpu_s']:.3f}",
            ]
        )
    print_table(["mode", "turns/s", "vs off", "turns/CPU-s", "vs off"], rows)
    for mode in ("noop", "sdk", "sdk10"):
        drop = 1 - medians[mode]["turns_per_s"] / medians["off"]["turns_per_s"]
        cpu_drop = 1 - medians[mode]["turns_per_cpu_s"] / medians["off"]["turns_per_cpu_s"]
        print(
            f"{mode}: throughput drop vs off {drop:+.1%} (turns per CPU-second {cpu_drop:+.1%}); target < 5%"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_info(),
                    "args": vars(args) | {"json": str(args.json)},
                    "runs": runs,
                    "medians": medians,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
