"""What a turn with one MCP tool call costs against a turn with one built-in tool call.

    python bench/bench_mcp.py [--turns 200] [--repeat 5]

One process, one Hive (asyncio backend, memory store, a scripted model with
no latency) with the test suite's MCP server (``tests/tools/mcp_fixtures/server.py``,
the ``mcp`` package's MCPServer) over stdio, sandboxed as shipped. Each
round runs ``--turns`` turns of each kind, one after another, alternating
which kind goes first: a turn whose model calls ``fx__add`` (a JSON-RPC round
trip to the server process, through the hub's loop) and a turn whose model
calls the built-in ``list_dir``. Figures are medians over ``--repeat`` rounds
of the mean wall time of one turn; the ratio is MCP over built-in.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine_info, print_table
from sessionhive import (
    ConfirmationPolicy,
    Hive,
    McpServer,
    Message,
    Reply,
    ScriptedLlm,
    SessionConfig,
    ToolCall,
)

SERVER = Path(__file__).resolve().parent.parent / "tests" / "tools" / "mcp_fixtures" / "server.py"


def script(messages: list[Message]) -> Reply:
    last = messages[-1]
    if last.role == "tool":
        return Reply(text="done")
    if last.text == "mcp":
        return Reply("calling", [ToolCall("fx__add", {"a": 1, "b": 2})])
    return Reply("calling", [ToolCall("list_dir", {"path": "."})])


def mean_turn_s(hive: Hive, session: str, prompt: str, turns: int) -> float:
    started = time.perf_counter()
    for _ in range(turns):
        hive.generate(session, prompt)
    return (time.perf_counter() - started) / turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server = McpServer(
        "fx",
        command=[sys.executable, str(SERVER), "stdio"],
        readable=(sys.prefix, sys.base_prefix, str(SERVER.parent)),
    )
    config = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False), storage="memory")
    times: dict[str, list[float]] = {"mcp": [], "builtin": []}
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as scratch:
        llm = ScriptedLlm(script)
        with Hive.start(
            store="memory", llm=llm, workspace=scratch, mcp_servers=[server], actor_backend="asyncio"
        ) as hive:
            for kind in times:
                hive.create_session(kind, config)
                hive.generate(kind, kind)  # warm: the server process starts on first use
                hive.reset_session(kind)
            for round_no in range(args.repeat):
                order = list(times) if round_no % 2 == 0 else list(reversed(times))
                for kind in order:
                    times[kind].append(mean_turn_s(hive, kind, kind, args.turns))
                    hive.reset_session(kind)
    mcp_ms = statistics.median(times["mcp"]) * 1000
    builtin_ms = statistics.median(times["builtin"]) * 1000
    print(machine_info())
    print_table(
        ["turn with one tool call", "median ms/turn", "ratio"],
        [
            ["built-in list_dir (baseline)", f"{builtin_ms:.2f}", "1.00"],
            ["MCP fx__add (stdio)", f"{mcp_ms:.2f}", f"{mcp_ms / builtin_ms:.2f}"],
        ],
    )


if __name__ == "__main__":
    main()
