"""``sessionhive loadtest``: its options, a live progress display on a terminal, and the report table."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sessionhive import InvalidConfig, LlmConfig
from sessionhive.hive import DEFAULT_ACTOR_BACKEND

from .driver import DriveProgress, HiveFactory, run_loadtest, start_local_hive
from .options import ACTOR_BACKENDS, LoadtestOptions, parse_duration
from .report import LoadtestReport, describe_service

__all__ = ["add_loadtest_parser", "cmd_loadtest"]

DESCRIPTION = """\
Create SESSIONS sessions (and CHILDREN_PER_SESSION child sessions of each),
run TURNS turns on every one with at most CONCURRENCY turns in flight, and
report throughput, turn latency, the latency of control calls made meanwhile,
memory and persistence figures. By default the model is scripted: each turn
makes TOOLS_PER_TURN tool calls after LLM_LATENCY each, a CONFIRM_RATE
fraction of them waiting for a confirmation that the driver approves. At the
end every session's history is read back from the store and compared with
what was driven; the exit status is 0 only when everything matched."""


class LiveProgress:
    """The progress display on a terminal: turns done, turns/s, failures, in flight, median latency."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("turns"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.1f} turns/s"),
            TextColumn("failed {task.fields[failed]}"),
            TextColumn("in flight {task.fields[in_flight]}"),
            TextColumn("p50 {task.fields[p50]}"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        )
        self._task: Any = None

    def __call__(self, state: DriveProgress) -> None:
        p50 = "-" if math.isnan(state.recent_p50_ms) else f"{state.recent_p50_ms:.1f} ms"
        fields: dict[str, Any] = {
            "rate": state.turns_per_second,
            "failed": state.failed,
            "in_flight": state.in_flight,
            "p50": p50,
        }
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("turns", total=state.total, **fields)
        self._progress.update(self._task, completed=state.done + state.failed, **fields)
        if state.finished:
            self._progress.stop()


def report_table(report: LoadtestReport) -> Table:
    """The report as a rich table (what a terminal shows)."""
    table = Table(title="sessionhive loadtest", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    for label, value in report.rows():
        style = None
        if label == "verification":
            style = "green" if report.verification.ok else "red"
        elif label == "INTERRUPTED":
            style = "bold red"
        table.add_row(label, value, style=style)
    for note in report.notes():
        table.add_row("", note, style="red")
    return table


def _llm_from_args(args: argparse.Namespace) -> LlmConfig | None:
    provider = args.provider
    if provider in (None, "scripted"):
        return None
    return LlmConfig(provider, args.model, base_url=args.base_url)


def hive_factory_from_args(args: argparse.Namespace) -> HiveFactory:
    """Which hive the command drives: the one place an option such as ``--target URL`` (a remote
    service) or ``--shards N`` (a cluster) plugs in its own factory. Default: a Hive in this process."""
    if args.target:
        # A running `sessionhive serve --loadtest-script K:RATE`: the same turns and checks, over HTTP.
        from sessionhive.client import remote_hive_factory

        return remote_hive_factory(args.target)
    if getattr(args, "shards", None):
        # A cluster of hive shards on Ray (pip install 'sessionhive[ray]'): the same turns and checks.
        from sessionhive.cluster import cluster_hive_factory

        return cluster_hive_factory(
            args.shards,
            ray_address=args.ray_address,
            metrics_sd_file=args.file_sd,
            metrics_addr=args.metrics_addr,
            metrics_advertise_host=args.advertise_host,
        )
    return start_local_hive


def check_cluster_args(args: argparse.Namespace) -> None:
    """Refuse, naming the fix, the options a cluster cannot honour and the cluster options without one."""
    if args.shards:
        if args.metrics_port not in (None, 0):
            raise InvalidConfig(
                f"--metrics-port {args.metrics_port} cannot be honoured with --shards: each shard serves "
                "/metrics on a free port of its own; pass --metrics-port 0 (the report lists them) and "
                "--file-sd PATH to hand them to Prometheus"
            )
        return
    for option, value in (("--file-sd", args.file_sd), ("--advertise-host", args.advertise_host)):
        if value is not None:
            raise InvalidConfig(f"{option} lists the shards of a cluster; it needs --shards N")


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except InvalidConfig as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Run, show progress on a terminal, print the summary, write ``--json``; 0 when all checked out."""
    check_cluster_args(args)
    hive_options: dict[str, Any] = {}
    if args.max_live_sessions is not None:
        hive_options["max_live_sessions"] = args.max_live_sessions
    if args.idle_timeout is not None:
        hive_options["idle_timeout"] = args.idle_timeout
    options = LoadtestOptions(
        sessions=args.sessions,
        turns=args.turns,
        tools_per_turn=args.tools_per_turn,
        llm_latency=args.llm_latency,
        concurrency=args.concurrency,
        store=args.store,
        children_per_session=args.children_per_session,
        confirm_rate=args.confirm_rate,
        actor_backend=args.actor_backend,
        llm=_llm_from_args(args),
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        verify=not args.no_verify,
        stream=not args.no_stream,
        keep_store=args.keep_store,
        hive_options=hive_options,
        rpm=args.rpm,
        tpm=args.tpm,
    )
    json_to_stdout = args.json == "-"
    # With the figures on stdout, the human lines go to stderr so stdout stays one JSON document.
    out = Console(file=sys.stderr if json_to_stdout else sys.stdout, highlight=False, soft_wrap=True)
    where = (
        "a fresh temporary SQLite file"
        + (" (kept)" if options.keep_store else " (deleted afterwards; --store to choose)")
        if options.store is None
        else options.store
    )
    model = "scripted" if options.llm is None else f"{options.llm.provider}/{options.llm.model}"
    children = options.sessions * options.children_per_session
    concurrency = options.concurrency or options.total_sessions
    if args.target:
        # The service's facts, not this client's: its script must be the one verified (else exit 2).
        from sessionhive.client import check_target

        service = check_target(args.target, options)
        out.print(
            f"sessionhive loadtest --target {args.target}: {options.sessions} sessions + {children} "
            f"children x {options.turns} turns, concurrency {concurrency}",
            markup=False,
        )
        out.print(f"service: {describe_service(service)}", markup=False)
        out.print(
            "the model, its latency, the store and the actors are the service's; its figures come from "
            "its /metrics before and after the run; every history is verified by re-reading it over HTTP",
            markup=False,
        )
        served_latency = service.get("llm_latency_s")
        if args.llm_latency and served_latency is not None and args.llm_latency != served_latency:
            out.print(
                f"note: --llm-latency {args.llm_latency * 1000:g} ms is ignored: the service's model "
                f"waits {served_latency * 1000:g} ms (serve --llm-latency)",
                markup=False,
            )
    else:
        out.print(
            f"sessionhive loadtest: {options.sessions} sessions + {children} children x {options.turns} "
            f"turns x {options.tools_per_turn} tools, model {model} (latency "
            f"{options.llm_latency * 1000:g} ms), concurrency {concurrency}, confirm rate "
            f"{options.confirm_rate:g}, {options.backend_name} actors",
            markup=False,
        )
        out.print(f"store: {where}", markup=False)
    out.file.flush()
    errors = Console(stderr=True)
    progress = LiveProgress(errors) if errors.is_terminal and not args.quiet else None
    report = run_loadtest(options, progress=progress, hive_factory=hive_factory_from_args(args))
    if out.is_terminal and not args.json:
        out.print(report_table(report))
    else:
        out.print(report.format_table(), markup=False, highlight=False)
    if json_to_stdout:
        sys.stdout.write(report.to_json() + "\n")
    elif args.json:
        Path(args.json).write_text(report.to_json() + "\n", encoding="utf-8")
        out.print(f"figures written to {args.json}", markup=False)
    return 0 if report.ok else 1


def add_loadtest_parser(
    sub: Any,
    add_store_option: Callable[..., None],
    add_llm_options: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    """Add the ``loadtest`` subcommand to the ``sessionhive`` parser (called by :mod:`sessionhive.cli`)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "loadtest",
        help="drive many concurrent sessions and report throughput, latency and persistence",
        description=DESCRIPTION,
    )
    parser.add_argument("--sessions", type=int, default=100, help="top-level sessions (default: 100)")
    parser.add_argument("--turns", type=int, default=3, help="turns per session (default: 3)")
    parser.add_argument("--tools-per-turn", type=int, default=2, help="tool calls per turn (default: 2)")
    parser.add_argument(
        "--llm-latency",
        type=_duration_arg,
        default=0.0,
        help="scripted model latency, e.g. 500ms or 2s (default: 0)",
    )
    parser.add_argument(
        "--concurrency", type=int, help="most turns in flight (default: every session at once)"
    )
    parser.add_argument(
        "--children-per-session", type=int, default=0, help="child sessions of each session (default: 0)"
    )
    parser.add_argument(
        "--confirm-rate",
        type=float,
        default=0.0,
        help="fraction of tool calls that need a confirmation (default: 0)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write every figure to FILE as strict JSON (- for stdout)"
    )
    parser.add_argument(
        "--actor-backend",
        choices=list(ACTOR_BACKENDS),
        help=f"how actors run (default: $SESSIONHIVE_ACTOR_BACKEND, else {DEFAULT_ACTOR_BACKEND})",
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve /metrics on this port while running (0: any free port)"
    )
    parser.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        help="address /metrics listens on, the shards' too (default: 127.0.0.1; 0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--max-live-sessions", type=int, help="passivate least recently used sessions beyond this"
    )
    parser.add_argument(
        "--idle-timeout", type=_duration_arg, help="passivate sessions idle this long, e.g. 30s or 5m"
    )
    parser.add_argument(
        "--rpm", type=int, help="the provider account's requests per minute: the limiter keeps to it"
    )
    parser.add_argument(
        "--tpm", type=int, help="the provider account's tokens per minute: the limiter keeps to it"
    )
    parser.add_argument("--keep-store", action="store_true", help="keep the temporary SQLite file")
    parser.add_argument("--no-verify", action="store_true", help="skip reading every history back")
    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="run turns with generate() instead of reading their event streams",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    parser.add_argument(
        "--target",
        metavar="URL",
        help="drive a running `sessionhive serve --loadtest-script K:RATE` at URL over HTTP "
        "(token from $SESSIONHIVE_TOKEN) instead of a Hive in this process; refused (exit 2) when its "
        "script is not K:RATE = --tools-per-turn:--confirm-rate; reports the service's own figures",
    )
    parser.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="drive a cluster of N hive shards on Ray (sessionhive[ray]) instead of a Hive in this process",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --shards: join this Ray cluster ('auto' or host:port) instead of starting a local Ray",
    )
    parser.add_argument(
        "--file-sd",
        metavar="PATH",
        help="with --shards: write a Prometheus file_sd targets file listing every shard's /metrics "
        "(label shard; the job is your scrape config's) while the test runs",
    )
    parser.add_argument(
        "--advertise-host",
        metavar="HOST",
        help="with --file-sd: the host the file lists, the one a Prometheus elsewhere reaches "
        "(needs --metrics-addr the shards can be reached on, e.g. 0.0.0.0)",
    )
    add_store_option(parser, None, "a fresh temporary SQLite file")
    add_llm_options(parser)
    parser.set_defaults(func=cmd_loadtest)
    return parser
