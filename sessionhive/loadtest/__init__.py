"""``sessionhive loadtest``: drive many concurrent sessions and report what the Hive did.

The load test creates ``sessions`` sessions (and ``children_per_session``
child sessions of each), then runs ``turns`` turns on every one of them with
at most ``concurrency`` turns in flight. By default the model is a
``ScriptedLlm`` running :class:`LoadtestScript`, which makes
``tools_per_turn`` tool calls per turn, one per LLM round, after
``llm_latency`` seconds each: ``list_dir`` of the session's own workspace
folder, or, for a ``confirm_rate`` fraction of the calls, ``write_file`` of a
small file there, which waits for a confirmation the driver approves.

The package: :mod:`~sessionhive.loadtest.options` (what to run),
:mod:`~sessionhive.loadtest.script` (the scripted agent),
:mod:`~sessionhive.loadtest.driver` (the asyncio driver and the one function
that builds the hive, :func:`start_local_hive`),
:mod:`~sessionhive.loadtest.probe` (control-call latency under load),
:mod:`~sessionhive.loadtest.report` (the figures) and
:mod:`~sessionhive.loadtest.command` (the CLI subcommand).

From Python (tests, benchmarks)::

    report = run_loadtest(LoadtestOptions(sessions=100, turns=3))
    assert report.ok, report.verification.mismatches
    print(report.format_table())
"""

from __future__ import annotations

from .command import add_loadtest_parser, cmd_loadtest
from .driver import DriveProgress, HiveFactory, ProgressListener, run_loadtest, start_local_hive
from .options import LoadtestOptions, parse_duration
from .probe import PROBE_KINDS, ControlProber, ControlTarget, LoopBoundTarget
from .report import MAX_MISMATCHES, LatencyStats, LoadtestReport, Verification, percentile
from .script import LoadtestScript

__all__ = [
    "MAX_MISMATCHES",
    "PROBE_KINDS",
    "ControlProber",
    "ControlTarget",
    "DriveProgress",
    "HiveFactory",
    "LatencyStats",
    "LoadtestOptions",
    "LoadtestReport",
    "LoadtestScript",
    "LoopBoundTarget",
    "ProgressListener",
    "Verification",
    "add_loadtest_parser",
    "cmd_loadtest",
    "parse_duration",
    "percentile",
    "run_loadtest",
    "start_local_hive",
]
