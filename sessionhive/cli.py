"""The ``sessionhive`` command: ``run``, ``loadtest``, ``sessions``, ``serve``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

from sessionhive._gc import tune_gc
from sessionhive.hive import DEFAULT_STORE, Hive
from sessionhive.llm import LlmClient, LlmConfig, ScriptedLlm
from sessionhive.metrics.registry import MetricsConfig
from sessionhive.model.config import SessionConfig
from sessionhive.model.errors import SessionhiveError, SessionNotFound
from sessionhive.model.events import (
    AgentEvent,
    ConfirmationRequired,
    ConfirmationResolved,
    ContextCompacted,
    PersistenceFailed,
    TextDelta,
    ToolEnd,
    ToolStart,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnStart,
    event_to_dict,
)

__all__ = ["main"]


def _llm_from_args(args: argparse.Namespace) -> LlmConfig | LlmClient:
    provider = args.provider
    if provider is None:
        if os.environ.get("OPENAI_API_KEY") and args.model:
            provider = "openai"
        elif os.environ.get("ANTHROPIC_API_KEY") and args.model:
            provider = "anthropic"
        else:
            provider = "scripted"
    if provider == "scripted":
        return ScriptedLlm.demo(latency=getattr(args, "llm_latency", 0.0) or 0.0)
    if not args.model:
        raise SystemExit(f"sessionhive: --model is required with --provider {provider}")
    return LlmConfig(provider, args.model, base_url=args.base_url)


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=["openai", "anthropic", "scripted"],
        help="LLM provider (default: scripted demo model when no key is configured)",
    )
    parser.add_argument("--model", help="model name, e.g. gpt-4o-mini or claude-sonnet-4-5")
    parser.add_argument(
        "--base-url", help="endpoint of an OpenAI-compatible server (vLLM, Ollama, llama.cpp...)"
    )


def _add_store_option(
    parser: argparse.ArgumentParser, default: str | None = DEFAULT_STORE, default_text: str | None = None
) -> None:
    parser.add_argument(
        "--store",
        default=default,
        metavar="URL",
        help="where sessions live: sqlite:///FILE, postgresql+psycopg://..., file:DIR or memory "
        f"(default: {default_text or default})",
    )


class _Printer:
    """Renders a turn's events for a human."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self._in_text = False

    def _line(self, text: str) -> None:
        if self._in_text:
            self.out.write("\n")
            self._in_text = False
        self.out.write(text + "\n")

    def show(self, event: AgentEvent) -> None:
        if self.as_json:
            self.out.write(json.dumps(event_to_dict(event), default=str) + "\n")
        elif isinstance(event, TurnStart):
            self._line(f"[{event.session_id}] > {event.prompt}")
        elif isinstance(event, TextDelta):
            self.out.write(event.text)
            self._in_text = True
        elif isinstance(event, ConfirmationRequired):
            self._line(f"? {event.tool_name} {json.dumps(event.arguments)} needs confirmation")
        elif isinstance(event, ConfirmationResolved):
            self._line(f"  confirmation {event.outcome}" + (f" ({event.reason})" if event.reason else ""))
        elif isinstance(event, ToolStart):
            self._line(f"> tool {event.tool_name} {json.dumps(event.arguments, default=str)}")
        elif isinstance(event, ToolEnd):
            status = "error" if event.is_error else "ok"
            output = event.output if len(event.output) <= 200 else event.output[:200] + "..."
            self._line(f"< tool {event.tool_name} [{status}]: {output}")
        elif isinstance(event, TurnEnd):
            usage = event.result.usage
            self._line(
                f"= turn done: {event.result.rounds} LLM call(s), "
                f"{len(event.result.tool_calls)} tool call(s), {usage.total_tokens} tokens"
            )
        elif isinstance(event, TurnError):
            self._line(f"! turn failed ({event.kind}): {event.error}")
        elif isinstance(event, TurnCancelled):
            self._line(f"! turn cancelled: {event.reason}")
        elif isinstance(event, ContextCompacted):
            self._line(f"~ context compacted: {event.before_messages} -> {event.after_messages} messages")
        elif isinstance(event, PersistenceFailed):
            self._line(f"! persistence failed: {event.error}")
        self.out.flush()


def _ask(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_run(args: argparse.Namespace) -> int:
    printer = _Printer(sys.stdout, args.json)
    interactive = sys.stdin.isatty() and not args.yes
    metrics = MetricsConfig(port=args.metrics_port) if args.metrics_port is not None else None
    with Hive.start(
        store=args.store, llm=_llm_from_args(args), workspace=args.workspace, metrics=metrics
    ) as hive:
        if hive.metrics_url and not args.json:
            print(f"metrics: {hive.metrics_url}")
        session_id = args.session or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        try:
            hive.restore_session_by_id(session_id)
        except SessionNotFound:
            hive.create_session(session_id, SessionConfig(system_prompt=args.system))
        stream = hive.generate_streaming(session_id, args.prompt)
        for event in stream:
            printer.show(event)
            if isinstance(event, ConfirmationRequired):
                if interactive:
                    approved = _ask(f"  allow {event.tool_name}? [y/N] ")
                    reason = None if approved else "declined at the terminal"
                else:
                    approved, reason = True, "auto-approved: stdin is not a terminal"
                    if not args.json:
                        print(f"  {reason}")
                hive.confirm_tool(session_id, event.tool_id, approved, reason)
        try:
            stream.result()
        except SessionhiveError:
            return 1
        if not args.json:
            print(f"session {session_id!r} saved in {args.store} (continue it with --session {session_id})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    metrics = MetricsConfig(port=args.metrics_port, addr=args.metrics_addr)
    with Hive.start(
        store=args.store, llm=_llm_from_args(args), workspace=args.workspace, metrics=metrics
    ) as hive:
        count = hive.session_count()
        print(f"sessionhive serving {count} stored session(s); metrics at {hive.metrics_url}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping: flushing every session")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessionhive", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one turn of a session, streaming its events")
    run.add_argument("prompt")
    run.add_argument("--session", help="session id (continues it if it exists; default: a new id)")
    run.add_argument("--system", help="system prompt of a new session")
    run.add_argument("--workspace", default=".", help="directory the tools are confined to (default: .)")
    run.add_argument("--yes", "-y", action="store_true", help="approve every tool call without asking")
    run.add_argument("--json", action="store_true", help="print events as JSON lines")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    _add_store_option(run)
    _add_llm_options(run)
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser("serve", help="host the stored sessions and serve /metrics until Ctrl-C")
    serve.add_argument("--workspace", default=".")
    serve.add_argument("--metrics-port", type=int, default=9464)
    serve.add_argument("--metrics-addr", default="127.0.0.1")
    _add_store_option(serve)
    _add_llm_options(serve)
    serve.set_defaults(func=cmd_serve)

    try:
        from sessionhive._cli_sessions import add_sessions_parser
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        add_sessions_parser(sub, _add_store_option)
    try:
        from sessionhive.loadtest import add_loadtest_parser
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        add_loadtest_parser(sub, _add_store_option, _add_llm_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_gc()  # this process exists to host sessions
    try:
        result: Any = args.func(args)
    except SessionhiveError as exc:
        print(f"sessionhive: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
