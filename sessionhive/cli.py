"""The sessionhive command: parses the command line, runs a subcommand, turns failures into short messages.

Subcommands: ``run`` (here), ``sessions`` (:mod:`sessionhive._cli_sessions`),
``loadtest`` (:mod:`sessionhive.loadtest`) and ``serve``. Every subcommand
stops quietly when its output is closed early (``| head -1``), says what to
type instead of what to call, and exits 2 on a usage error.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from sessionhive import (
    Hive,
    InvalidConfig,
    LlmClient,
    LlmConfig,
    LlmError,
    LlmNotConfigured,
    MetricsConfig,
    ScriptedLlm,
    SessionConfig,
    SessionExists,
    SessionhiveError,
    SessionNotFound,
    __version__,
    event_to_dict,
    tune_gc,
)
from sessionhive.hive import DEFAULT_STORE
from sessionhive.metrics import tracing
from sessionhive.model import events

__all__ = ["build_parser", "main"]

DESCRIPTION = (
    "Host LLM-agent sessions: run a turn of one, look at the stored ones, load-test many, or serve them."
)
EPILOG = "Run 'sessionhive COMMAND --help' for the options of a command."
#: Exit status of a process whose output reader went away (128 + SIGPIPE, as the shell reports it).
EXIT_CLOSED_OUTPUT = 141
#: Exit status of a usage error, as argparse uses.
EXIT_USAGE = 2
#: Help of options that several subcommands share, for those that do not say it themselves.
_SHARED_HELP = {
    "workspace": "directory the tools are confined to",
    "metrics_port": "serve Prometheus metrics on this port (0: any free port)",
    "metrics_addr": "address /metrics listens on",
}
#: What the library's error messages advise a Python caller, and what a command-line user types instead.
_CLI_ADVICE = (
    ("create it with create_session() first", "'sessionhive sessions list' shows the stored sessions"),
    ("destroy_session() the old one first", "delete it with 'sessionhive sessions delete ID'"),
    (
        "pass llm= to Hive.start() or call configure(session_id, model_config=LlmConfig(...))",
        "pass --provider and --model",
    ),
    ("environment variable or pass LlmConfig(api_key=...)", "environment variable"),
    ("LlmConfig.api_key or ", ""),
    ("LlmConfig.model", "--model"),
    ("LlmConfig.base_url", "--base-url"),
    ("MetricsConfig.port", "--metrics-port"),
)


class _UsageError(Exception):
    """A command line that cannot work as given: reported like argparse reports one, exit status 2."""


def cli_text(text: str) -> str:
    """``text`` with the library's advice to a Python caller replaced by what to type."""
    for python_advice, command_advice in _CLI_ADVICE:
        text = text.replace(python_advice, command_advice)
    return text


def cli_message(exc: SessionhiveError, args: argparse.Namespace | None = None) -> str:
    """The error as a command-line user reads it: what went wrong and what to type, not what to call."""
    store = getattr(args, "store", None)
    if isinstance(exc, SessionNotFound):
        where = f" in {store}" if store else ""
        hint = f" --store {store}" if store and store != DEFAULT_STORE else ""
        return (
            f"session {exc.session_id!r} does not exist{where}; "
            f"'sessionhive sessions list{hint}' shows the stored sessions"
        )
    if isinstance(exc, SessionExists):
        return f"session {exc.session_id!r} already exists; pick another id or delete it first"
    if isinstance(exc, LlmNotConfigured):
        if exc.detail is not None:  # a model is configured but cannot be used: say why
            return cli_text(str(exc))
        return f"no model for session {exc.session_id!r}: pass --provider and --model"
    text = cli_text(str(exc))
    if isinstance(exc, LlmError) and not text.startswith("LLM"):
        text = f"the model call failed: {text}"
    return text


class _CliAdviceFilter(logging.Filter):
    """Log lines (retries, warnings) in the command line's words, like the errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = cli_text(record.getMessage()), None
        return True


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sessionhive: %(message)s"))
    handler.addFilter(_CliAdviceFilter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def _resolve_provider(args: argparse.Namespace) -> str | None:
    """The provider the user asked for, or the one their API key and --model imply (else the demo)."""
    if not hasattr(args, "provider"):
        return None
    provider: str | None = args.provider
    if provider is None and args.model:
        if os.environ.get("OPENAI_API_KEY"):
            provider = "openai"
        elif os.environ.get("ANTHROPIC_API_KEY"):
            provider = "anthropic"
        else:
            # A named model never falls back to the demo in silence: the user asked for a real one.
            raise _UsageError(_missing_key_message(args.model))
    return provider or "scripted"


def _missing_key_message(model: str) -> str:
    variable = "ANTHROPIC_API_KEY" if model.lower().startswith("claude") else "OPENAI_API_KEY"
    return (
        f"--model {model} needs {variable} in the environment (or --provider openai|anthropic "
        "with a key); pass --provider scripted for the demo model"
    )


def _llm_from_args(args: argparse.Namespace) -> LlmConfig | LlmClient:
    provider = _resolve_provider(args)
    if provider in (None, "scripted"):
        return ScriptedLlm.demo(latency=getattr(args, "llm_latency", 0.0) or 0.0)
    if not args.model:  # main() refuses this as a usage error first
        raise InvalidConfig(f"--model is required with --provider {provider}")
    return LlmConfig(provider, args.model, base_url=args.base_url)


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--provider",
        choices=["openai", "anthropic", "scripted"],
        help="LLM provider (default: the scripted demo model; with --model, openai or anthropic by "
        "which of OPENAI_API_KEY or ANTHROPIC_API_KEY is set, and an error when neither is)",
    )
    parser.add_argument("--model", metavar="NAME", help="model name, e.g. gpt-4o-mini or claude-sonnet-4-5")
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="the provider's endpoint: an OpenAI-compatible server (vLLM, Ollama, llama.cpp: "
        "http://127.0.0.1:8000/v1) or an Anthropic-compatible one (without /v1); a local endpoint "
        "needs no API key",
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


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {text!r}")
    return port


def _turn_done(event: events.TurnEnd) -> str:
    result = event.result
    return (
        f"= turn done: {result.rounds} LLM call(s), {len(result.tool_calls)} tool call(s), "
        f"{result.usage.total_tokens} tokens"
    )


#: How the terminal shows each kind of event (text deltas and tool results are written apart).
_EVENT_LINES: dict[type, Callable[[Any], str]] = {
    events.TurnStart: lambda e: f"[{e.session_id}] > {e.prompt}",
    events.ConfirmationRequired: lambda e: f"? {e.tool_name} {json.dumps(e.arguments)} needs confirmation",
    events.ConfirmationResolved: lambda e: (
        f"  confirmation {e.outcome}" + (f" ({e.reason})" if e.reason else "")
    ),
    events.ToolStart: lambda e: f"> tool {e.tool_name} {json.dumps(e.arguments, default=str)}",
    events.TurnEnd: _turn_done,
    events.TurnError: lambda e: f"! turn failed ({e.kind}): {cli_text(e.error)}",
    events.TurnCancelled: lambda e: f"! turn cancelled: {e.reason}",
    events.ContextCompacted: lambda e: (
        f"~ context compacted: {e.before_messages} -> {e.after_messages} messages"
    ),
    events.PersistenceFailed: lambda e: f"! persistence failed: {e.error}",
}


class _Printer:
    """Renders a turn's events for a human, or as JSON lines."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self._in_text = False

    def _line(self, text: str) -> None:
        if self._in_text:
            self.out.write("\n")
            self._in_text = False
        self.out.write(text + "\n")

    def show(self, event: events.AgentEvent) -> None:
        if self.as_json:
            self.out.write(json.dumps(event_to_dict(event), default=str) + "\n")
        elif isinstance(event, events.TextDelta):
            self.out.write(event.text)
            self._in_text = True
        elif isinstance(event, events.ToolEnd):
            self._tool_end(event)
        else:
            describe = _EVENT_LINES.get(type(event))
            if describe is not None:
                self._line(describe(event))
        self.out.flush()

    def _tool_end(self, event: events.ToolEnd) -> None:
        output = event.output
        if event.is_error:
            # The model reads "error: ..."; the terminal says it once, in its own words.
            output = output.removeprefix("error:").strip()
        output = output if len(output) <= 200 else output[:200] + "..."
        if event.is_error:
            self._line(f"< tool {event.tool_name} failed: {output}")
        else:
            self._line(f"< tool {event.tool_name} [ok]: {output}")


def _ask(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _session_exists(hive: Hive, session_id: str) -> bool:
    try:
        hive.restore_session_by_id(session_id)
    except SessionNotFound:
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    """Run one turn of a session and print its events as they happen. Tool calls that need a
    confirmation are asked at the terminal (approved automatically when stdin is not a terminal,
    or with --yes)."""
    printer = _Printer(sys.stdout, args.json)
    interactive = sys.stdin.isatty() and not args.yes
    metrics = MetricsConfig(port=args.metrics_port) if args.metrics_port is not None else None
    llm = _llm_from_args(args)
    with Hive.start(store=args.store, llm=llm, workspace=args.workspace, metrics=metrics) as hive:
        if hive.metrics_url and not args.json:
            print(f"metrics: {hive.metrics_url}")
        session_id = args.session or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        if args.session is not None and _session_exists(hive, session_id):
            if args.system is not None:
                raise _UsageError(
                    f"session {session_id!r} already exists and keeps the system prompt it was created "
                    "with; --system only sets the prompt of a new session (drop --system to continue "
                    "it, or pick a new --session)"
                )
        else:
            hive.create_session(session_id, SessionConfig(system_prompt=args.system))
        if isinstance(llm, LlmConfig):
            # The session remembers its model (never the key): 'sessions list' shows it, and a later
            # 'run --session ID' without --provider continues on it.
            hive.configure(session_id, model_config=llm)
        stream = hive.generate_streaming(session_id, args.prompt)
        for event in stream:
            printer.show(event)
            if isinstance(event, events.ConfirmationRequired):
                if interactive:
                    approved = _ask(f"  allow {event.tool_name}? [y/N] ")
                    reason = None if approved else "declined at the terminal"
                else:
                    approved = True
                    reason = "--yes" if args.yes else "auto-approved: stdin is not a terminal"
                # The ConfirmationResolved event that follows prints the outcome.
                hive.confirm_tool(session_id, event.tool_id, approved, reason)
        try:
            stream.result()
        except SessionhiveError:
            return 1
        if not args.json:
            if args.store.strip() == "memory":
                print(
                    f"session {session_id!r} was not saved: --store memory keeps sessions only while "
                    "the command runs"
                )
            else:
                print(
                    f"session {session_id!r} saved in {args.store} (continue it with --session {session_id})"
                )
    return 0


def _loadtest_model(spec: str, latency: float) -> ScriptedLlm:
    """The load test's scripted model from ``TOOLS_PER_TURN[:CONFIRM_RATE]`` (for ``loadtest --target``)."""
    from sessionhive.loadtest.script import LoadtestScript

    tools, _, rate = spec.partition(":")
    try:
        script = LoadtestScript(int(tools), float(rate or 0.0))
    except ValueError:
        raise _UsageError(
            f"--loadtest-script takes TOOLS_PER_TURN[:CONFIRM_RATE], e.g. 2:0.2, not {spec!r}"
        ) from None
    return ScriptedLlm(script, latency, model="loadtest")  # GET /v1/info names it


def _require_serve_extra(command: str) -> None:
    """SystemExit naming the extra to install when ``sessionhive.serve``'s dependencies are missing."""
    try:
        import sessionhive.serve  # noqa: F401 - only whether it imports
    except ImportError as exc:
        raise SystemExit(
            f"sessionhive {command} needs the serve extra: pip install 'sessionhive[serve]' ({exc})"
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    _require_serve_extra("serve")
    from sessionhive.serve import ServeOptions, read_token, read_webhook_secret, run_service

    llm: LlmConfig | LlmClient = _llm_from_args(args)
    if args.loadtest_script:
        llm = _loadtest_model(args.loadtest_script, args.llm_latency)
    options = ServeOptions(
        store=args.store,
        llm=llm,
        workspace=args.workspace,
        host=args.host,
        port=args.port,
        # With --tokens, SESSIONHIVE_TOKEN in the environment is not a second way in.
        token=read_token(args.token_file, {} if args.tokens else dict(os.environ)),
        tokens_file=args.tokens,
        webhook_secret=read_webhook_secret(args.webhook_secret_file),
        drain_timeout=args.drain_timeout,
        max_body=args.max_body,
        cors_origins=tuple(args.cors_origin or ()),
        allow_base_urls=_allowed_base_urls(args, llm),
        allow_webhook_urls=tuple(args.allow_webhook_url or ()),
    )
    # The SDK belongs to this process, the application: the library only uses the API.
    flush_traces = tracing.configure_sdk(args.otlp_endpoint)
    try:
        return run_service(options)
    finally:
        if flush_traces is not None:
            flush_traces()


def _allowed_base_urls(args: argparse.Namespace, llm: LlmConfig | LlmClient) -> tuple[str, ...]:
    """``--allow-base-url``, plus ``--base-url`` when the Hive's model does not carry it (allowed too)."""
    allowed = tuple(args.allow_base_url or ())
    if args.base_url and not isinstance(llm, LlmConfig):
        allowed += (args.base_url,)
    return allowed


def cmd_token_new(args: argparse.Namespace) -> int:
    """Print the [[token]] table of a new bearer token on stdout (append it to the file 'serve --tokens'
    reads: it holds only the token's SHA-256) and the token itself on stderr, once (give it to its
    holder): sessionhive token new --name N --tenant T >> tokens.toml"""
    # The table to stdout, the token to stderr: ">> tokens.toml" appends no secret.
    _require_serve_extra("token")
    from sessionhive.serve import new_token

    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    token, table = new_token(args.name, args.tenant, scopes)
    print(f"token for {args.name} (shown once; the table below holds only its SHA-256):", file=sys.stderr)
    print(token, file=sys.stderr)
    print(table, end="", flush=True)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose options all say what they do and, when they have one, their default.

    ``commands`` maps each subcommand to its parser (for the usage line of an error).
    """

    commands: dict[str, argparse.ArgumentParser]

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.help != argparse.SUPPRESS:
            if action.help is None:
                action.help = _SHARED_HELP.get(action.dest, "")
            default = action.default
            if default not in (None, False, argparse.SUPPRESS) and "default" not in action.help:
                action.help += f" (default: {default})"
        return action


def _command(
    sub: Any, name: str, run: Callable[[argparse.Namespace], int], summary: str
) -> argparse.ArgumentParser:
    """A subcommand that runs ``run``; its ``--help`` description is ``run``'s docstring, said once."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=inspect.getdoc(run))
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sessionhive", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"sessionhive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(sub, "run", cmd_run, "run one turn of a session, streaming its events")
    run.add_argument("prompt", help="what to ask the agent")
    run.add_argument(
        "--session", metavar="ID", help="session id (continues it if it exists; default: a new id)"
    )
    run.add_argument(
        "--system", metavar="TEXT", help="system prompt of a new session (refused for an existing one)"
    )
    run.add_argument("--workspace", default=".", help="directory the tools are confined to (default: .)")
    run.add_argument("--yes", "-y", action="store_true", help="approve every tool call without asking")
    run.add_argument("--json", action="store_true", help="print events as JSON lines")
    run.add_argument(
        "--metrics-port", type=_port, help="serve Prometheus metrics on this port (0: any free port)"
    )
    _add_store_option(run)
    _add_llm_options(run)

    serve = _command(
        sub,
        "serve",
        cmd_serve,
        "serve the sessions over HTTP: the /v1 API, a live console at /, /metrics; SIGTERM drains",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    serve.add_argument(
        "--token-file",
        help="file whose first line is the bearer token (default: $SESSIONHIVE_TOKEN; without either, "
        "a token is generated and printed, and only a loopback --host is allowed)",
    )
    serve.add_argument(
        "--tokens",
        metavar="FILE",
        help="TOML file of [[token]] tables (name, tenant, scopes, sha256) and [tenant.NAME] quotas; "
        "make entries with 'sessionhive token new' (instead of --token-file)",
    )
    serve.add_argument(
        "--webhook-secret-file",
        metavar="PATH",
        help="file whose first line is the key that signs webhook deliveries (Sessionhive-Signature) of "
        "runs whose webhook has no secret of its own, or lost it in a restart (default: such deliveries "
        "are sent unsigned)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds running turns get after SIGTERM/SIGINT before they are cancelled (default: 30)",
    )
    serve.add_argument(
        "--max-body", type=int, default=1 << 20, help="largest request body in bytes (default: 1 MiB)"
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        help="allow browser calls from this origin (repeatable; default: none)",
    )
    serve.add_argument(
        "--workspace",
        default=".",
        help="directory the tools are confined to; sessions may pick one inside it",
    )
    serve.add_argument(
        "--allow-base-url",
        action="append",
        metavar="URL",
        help="let sessions configure a model at this endpoint: a prefix of scheme, host, port and path "
        "(repeatable; default: only --base-url, besides a model's default endpoint; link-local and "
        "cloud metadata addresses only when named here). The environment's API keys go only to "
        "--base-url and the provider's own endpoint",
    )
    serve.add_argument(
        "--allow-webhook-url",
        action="append",
        metavar="URL",
        help="let runs POST their outcome to webhooks under this prefix of scheme, host, port and path "
        "(repeatable; default: none, and a run with a webhook is refused with a 403)",
    )
    serve.add_argument(
        "--llm-latency", type=float, default=0.0, help="seconds the scripted demo model waits per answer"
    )
    serve.add_argument(
        "--loadtest-script",
        metavar="TOOLS[:RATE]",
        help="serve the load test's scripted model (TOOLS tool calls per turn, RATE of them confirmed) "
        "for 'sessionhive loadtest --target URL'",
    )
    serve.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="send OpenTelemetry traces over OTLP/HTTP to this collector (http://127.0.0.1:4318); "
        "without it, OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables decide",
    )
    _add_store_option(serve)
    _add_llm_options(serve)

    token = sub.add_parser("token", help="make bearer tokens for 'serve --tokens'")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    new = _command(
        token_sub, "new", cmd_token_new, "print a new token and the [[token]] table that admits it"
    )
    new.add_argument("--name", required=True, help="who holds it, as the audit log names them")
    new.add_argument("--tenant", required=True, help="the tenant whose sessions it sees")
    new.add_argument(
        "--scopes",
        default="read,write,confirm",
        help="comma-separated, any of read, write, confirm, admin (default: read,write,confirm)",
    )

    from sessionhive._cli_sessions import add_sessions_parser
    from sessionhive.loadtest import add_loadtest_parser

    add_sessions_parser(sub, _add_store_option)
    add_loadtest_parser(sub, _add_store_option, _add_llm_options)
    parser.commands = dict(sub.choices)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``command`` (for its usage line in an error), else the top-level one."""
    commands: dict[str, argparse.ArgumentParser] = getattr(parser, "commands", {})
    return commands.get(command or "", parser)


@contextmanager
def _quiet_when_output_closes() -> Iterator[None]:
    """Stop quietly, as Unix tools do, when the reader of stdout goes away (``| head -1``)."""
    try:
        try:
            yield
        finally:
            # What is still buffered is written here, inside the guard, not at interpreter exit.
            sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise SystemExit(EXIT_CLOSED_OUTPUT) from None
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _silence_stdout()
        raise SystemExit(EXIT_CLOSED_OUTPUT) from None


def _silence_stdout() -> None:
    # Python flushes stdout once more at exit; pointing it at /dev/null keeps that flush from
    # printing "Exception ignored ... BrokenPipeError".
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    with _quiet_when_output_closes():
        parser = build_parser()
        args = parser.parse_args(argv)
        command_parser = _subparser(parser, args.command)
        try:
            provider = _resolve_provider(args)
        except _UsageError as exc:
            command_parser.error(str(exc))
        if provider in ("openai", "anthropic") and not args.model:
            command_parser.error(f"--model is required with --provider {provider}")
        if provider is not None:
            args.provider = provider
        tune_gc()  # this process exists to host sessions
        _log_to_stderr()
        try:
            result: Any = args.func(args)
        except _UsageError as exc:
            command_parser.print_usage(sys.stderr)
            print(f"sessionhive {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except InvalidConfig as exc:
            print(f"sessionhive {args.command}: error: {cli_message(exc, args)}", file=sys.stderr)
            return EXIT_USAGE
        except SessionhiveError as exc:
            print(f"sessionhive {args.command}: {cli_message(exc, args)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
