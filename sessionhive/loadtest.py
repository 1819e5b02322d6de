"""``sessionhive loadtest``: drive many concurrent sessions and report what the Hive did.

The load test creates ``sessions`` sessions (and ``children_per_session``
child sessions of each), then runs ``turns`` turns on every one of them with
at most ``concurrency`` turns in flight. By default the model is a
:class:`~sessionhive.ScriptedLlm` whose script makes ``tools_per_turn`` tool
calls per turn, one per LLM round, after ``llm_latency`` seconds each:

- ``list_dir`` of the session's own workspace folder (read-only, never asks);
- for a ``confirm_rate`` fraction of the calls, ``write_file`` of a small file
  in that folder, which the session's :class:`~sessionhive.ConfirmationPolicy`
  makes wait for a human. The driver approves every
  :class:`~sessionhive.ConfirmationRequired` it sees on the turn's stream.

While the turns run, a :class:`ControlProber` thread measures the latency of
control calls, the ones a user interface makes while an agent works:
``history`` and ``confirm_tool`` on sessions that are busy running turns, and
``pause_session`` + ``resume_session`` on an idle session (pausing a driven
session would refuse its next turn).

At the end the Hive is flushed and stopped, and every session's history is
read back through a fresh Hive on the same store and compared, message by
message, with the sequence the script implies (tool outputs as the driver saw
them on the stream). With a real provider (``llm=LlmConfig(...)``) the
expectation is the history returned by each session's last turn.

Why one asyncio driver
----------------------
The driver is one event loop on the calling thread talking to an
:class:`~sessionhive.AsyncHive`: a turn in flight costs the driver a coroutine,
not an OS thread, so a thousand concurrent sessions add no thread switching
under the GIL on the driver's side, and the figures measure the Hive rather
than the load generator. (A thread-per-turn driver is what the lock-based
baseline in ``bench/`` needs, since its API blocks the calling thread.)

Use it from the command line::

    sessionhive loadtest --sessions 1000 --turns 5 --tools-per-turn 2 --llm-latency 50ms \\
        --concurrency 1000 --confirm-rate 0.2 --json out.json

or from Python (tests, benchmarks)::

    report = run_loadtest(LoadtestOptions(sessions=100, turns=3))
    assert report.ok, report.verification.mismatches
    print(report.format_table())
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TextIO

from sessionhive.aio import AsyncHive
from sessionhive.hive import DEFAULT_ACTOR_BACKEND, Hive
from sessionhive.llm import LlmClient, LlmConfig, Reply, ScriptedLlm
from sessionhive.metrics.registry import MetricsConfig
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.errors import ConfirmationNotFound, InvalidConfig, SessionhiveError
from sessionhive.model.events import ConfirmationRequired, ToolEnd
from sessionhive.model.messages import AgentResult, Message, ToolCall

__all__ = [
    "ControlProber",
    "ControlTarget",
    "LatencyStats",
    "LoadtestOptions",
    "LoadtestReport",
    "LoadtestScript",
    "Verification",
    "add_loadtest_parser",
    "cmd_loadtest",
    "parse_duration",
    "percentile",
    "run_loadtest",
]

#: Control calls the prober makes, in the order it makes them.
PROBE_KINDS: tuple[str, ...] = ("history", "confirm", "pause_resume")
#: At most this many mismatches are kept (and printed) by the verification.
MAX_MISMATCHES = 10
#: Sessions created, or verified, per batch of concurrent calls.
_BATCH = 500

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m|min)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "m": 60.0, "min": 60.0}


def parse_duration(text: str | float) -> float:
    """Seconds from ``"50ms"``, ``"0.05"``, ``"1s"``, ``"250us"`` or ``"2m"`` (a bare number is seconds).

    Raises :class:`~sessionhive.InvalidConfig` for anything else, negative values included.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise InvalidConfig(f"a duration must be a finite number of seconds >= 0, got {text!r}")
        return value
    match = _DURATION.match(str(text))
    if match is None:
        raise InvalidConfig(f"cannot read duration {text!r}; write e.g. 50ms, 0.05, 1s, 250us or 2m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``nan`` when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class LatencyStats:
    """Latency percentiles of one kind of call, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencyStats:
        values = sorted(seconds)
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(values),
            p50_ms=percentile(values, 0.50) * 1000,
            p95_ms=percentile(values, 0.95) * 1000,
            p99_ms=percentile(values, 0.99) * 1000,
            max_ms=values[-1] * 1000,
            mean_ms=sum(values) / len(values) * 1000,
        )


# --------------------------------------------------------------------------- the script


def _prompt(session_id: str, turn: int) -> str:
    return f"{session_id} turn {turn}"


_PROMPT = re.compile(r"^(?P<sid>.+) turn (?P<turn>\d+)$")


class LoadtestScript:
    """The scripted agent of the load test: ``tools_per_turn`` tool calls per turn, one per LLM round.

    It is a pure function of the message list (the prompt names the session
    and the turn), so the expected history of every session can be rebuilt
    afterwards by :meth:`expected_history`. Tool call ``k`` (1-based) of
    turn ``t`` has id ``t{t}k{k}``; it is a ``write_file`` that needs
    confirmation for a ``confirm_rate`` fraction of the calls (spread
    evenly over each session's calls, from a per-session phase), and a
    ``list_dir`` otherwise.
    """

    def __init__(self, tools_per_turn: int, confirm_rate: float) -> None:
        self.tools_per_turn = tools_per_turn
        self.confirm_rate = confirm_rate

    def needs_confirmation(self, session_id: str, turn: int, k: int) -> bool:
        if self.confirm_rate <= 0:
            return False
        n = (turn - 1) * self.tools_per_turn + (k - 1)
        phase = (zlib.crc32(session_id.encode("utf-8")) % 1000) / 1000
        return math.floor((n + 1) * self.confirm_rate + phase) > math.floor(n * self.confirm_rate + phase)

    def tool_call(self, session_id: str, turn: int, k: int) -> ToolCall:
        call_id = f"t{turn}k{k}"
        if self.needs_confirmation(session_id, turn, k):
            return ToolCall(
                "write_file", {"path": f"t{turn}-{k}.txt", "content": f"{session_id} {turn} {k}\n"}, call_id
            )
        return ToolCall("list_dir", {"path": "."}, call_id)

    def __call__(self, messages: list[Message]) -> Reply:
        # From the end: the scan must not grow with the history, or long runs would measure the script.
        start = next(i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user")
        match = _PROMPT.match(messages[start].text)
        if match is None:  # not a load-test prompt: answer without tools
            return Reply(text="ok")
        session_id, turn = match.group("sid"), int(match.group("turn"))
        done = sum(1 for m in messages[start + 1 :] if m.role == "tool")
        if done >= self.tools_per_turn:
            return Reply(text=f"done {turn}")
        k = done + 1
        return Reply(text=f"step {k}", tool_calls=[self.tool_call(session_id, turn, k)])

    def expected_history(
        self, session_id: str, turns: int, tool_outputs: Mapping[str, tuple[str, bool]]
    ) -> list[Message]:
        """The messages ``turns`` turns of ``session_id`` leave, with tool outputs as observed."""
        messages: list[Message] = []
        for turn in range(1, turns + 1):
            messages.append(Message.user(_prompt(session_id, turn)))
            for k in range(1, self.tools_per_turn + 1):
                call = self.tool_call(session_id, turn, k)
                messages.append(Message.assistant(f"step {k}", (call,)))
                output, is_error = tool_outputs.get(call.id, ("<no ToolEnd event was seen>", False))
                messages.append(Message.tool(call.id, output, is_error=is_error))
            messages.append(Message.assistant(f"done {turn}"))
        return messages


# --------------------------------------------------------------------------- the prober


# What confirm_tool raises for a tool id that does not wait (a baseline may raise a LookupError).
_NOT_WAITING: tuple[type[BaseException], ...] = (ConfirmationNotFound, LookupError)


class ControlTarget(Protocol):
    """What :class:`ControlProber` calls: :class:`~sessionhive.Hive` or a baseline with the same names."""

    def history(self, session_id: str) -> Any: ...

    def confirm_tool(self, session_id: str, tool_id: str, approved: bool) -> Any: ...

    def pause_session(self, session_id: str) -> Any: ...

    def resume_session(self, session_id: str) -> Any: ...


class ControlProber:
    """A thread that times control calls while a load runs.

    Every ``interval`` seconds it makes one round: ``history`` of a random
    busy session, ``confirm_tool`` of a tool id that does not wait (a full
    round trip through the session's mailbox, answered with
    :class:`~sessionhive.ConfirmationNotFound`), and ``pause_session`` then
    ``resume_session`` of ``idle_session``. Latencies are in
    :attr:`samples` (seconds, by kind); calls that failed otherwise are
    counted in :attr:`errors`. The target may be a
    :class:`~sessionhive.Hive` or the lock-based baseline of the benchmarks.
    """

    def __init__(
        self,
        target: ControlTarget,
        busy_sessions: Sequence[str],
        idle_session: str,
        *,
        interval: float = 0.005,
        seed: int = 0,
    ) -> None:
        self._target = target
        self._busy = list(busy_sessions)
        self._idle = idle_session
        self._interval = interval
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sessionhive-loadtest-prober", daemon=True)
        # Written by the prober thread only; read after stop() joined it.
        self.samples: dict[str, list[float]] = {kind: [] for kind in PROBE_KINDS}
        self.errors: list[str] = []

    def start(self) -> ControlProber:
        if self._busy:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def stats(self) -> dict[str, LatencyStats]:
        return {kind: LatencyStats.of(values) for kind, values in self.samples.items()}

    def _timed(
        self, kind: str, call: Callable[[], object], expected: tuple[type[BaseException], ...] = ()
    ) -> None:
        started = time.perf_counter()
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - recorded; the probe goes on
            if not isinstance(exc, expected):
                if len(self.errors) < MAX_MISMATCHES:
                    self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                return
        self.samples[kind].append(time.perf_counter() - started)

    def _run(self) -> None:
        target = self._target
        idle = self._idle

        def pause_resume() -> None:
            target.pause_session(idle)
            target.resume_session(idle)

        while not self._stop.wait(self._interval):
            busy = self._random.choice(self._busy)
            self._timed("history", partial(target.history, busy))
            self._timed("confirm", partial(target.confirm_tool, busy, "loadtest-probe", True), _NOT_WAITING)
            self._timed("pause_resume", pause_resume)


# --------------------------------------------------------------------------- options and report


@dataclass(frozen=True)
class LoadtestOptions:
    """What :func:`run_loadtest` does; every field has the CLI option of the same name.

    - ``sessions``: top-level sessions; each gets ``children_per_session``
      child sessions, and every one of them (children too) runs ``turns`` turns.
    - ``tools_per_turn``: tool calls per turn (scripted model only).
    - ``llm_latency``: seconds the scripted model waits before each answer.
    - ``concurrency``: most turns in flight at once (``None``: all sessions).
    - ``store``: where sessions live (``None``: a fresh temporary SQLite file,
      deleted afterwards unless ``keep_store``).
    - ``confirm_rate``: the fraction of tool calls that need a confirmation.
    - ``actor_backend``: ``"pooled"`` or ``"threads"`` (``None``: the Hive's default).
    - ``llm``: a real provider instead of the scripted model.
    - ``metrics_port``: serve ``/metrics`` there while the test runs (0: a free port).
    - ``probe_interval``: seconds between two rounds of control-call probes.
    - ``stream``: run turns with ``generate_streaming`` and read every event
      (the default, as a user interface does); ``False`` uses ``generate``,
      which emits no text deltas (no confirmations then: they arrive as events).
    - ``hive_options``: more keyword arguments for :meth:`Hive.start`
      (``idle_timeout``, ``max_live_sessions``, ``batch_size``...).
    """

    sessions: int = 100
    turns: int = 3
    tools_per_turn: int = 2
    llm_latency: float = 0.0
    concurrency: int | None = None
    store: str | None = None
    children_per_session: int = 0
    confirm_rate: float = 0.0
    actor_backend: str | None = None
    llm: LlmConfig | LlmClient | None = None
    metrics_port: int | None = None
    workspace: str | None = None
    probe_interval: float = 0.005
    stream: bool = True
    verify: bool = True
    keep_store: bool = False
    progress: bool = False
    hive_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sessions", "turns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfig(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("tools_per_turn", "children_per_session"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidConfig(f"{name} must be an integer >= 0, got {value!r}")
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool)
            or not isinstance(self.concurrency, int)
            or self.concurrency < 1
        ):
            raise InvalidConfig(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if not isinstance(self.confirm_rate, int | float) or not 0 <= self.confirm_rate <= 1:
            raise InvalidConfig(f"confirm_rate must be a fraction in [0, 1], got {self.confirm_rate!r}")
        if self.confirm_rate > 0 and not self.stream:
            raise InvalidConfig("confirmations are seen on the turn's stream; confirm_rate needs stream=True")
        if self.confirm_rate > 0 and self.tools_per_turn == 0:
            raise InvalidConfig("confirm_rate needs tool calls to confirm; set tools_per_turn >= 1")
        object.__setattr__(self, "llm_latency", parse_duration(self.llm_latency))
        if not self.probe_interval > 0:
            raise InvalidConfig(
                f"probe_interval must be a positive number of seconds, got {self.probe_interval!r}"
            )
        if self.actor_backend not in (None, "threads", "pooled"):
            raise InvalidConfig(f"actor_backend must be 'threads' or 'pooled', got {self.actor_backend!r}")

    @property
    def backend_name(self) -> str:
        """The backend the Hive runs: this option, else the Hive's default (the environment may set it)."""
        return self.actor_backend or os.environ.get("SESSIONHIVE_ACTOR_BACKEND") or DEFAULT_ACTOR_BACKEND

    @property
    def total_sessions(self) -> int:
        return self.sessions * (1 + self.children_per_session)

    @property
    def scripted(self) -> bool:
        return self.llm is None


@dataclass
class Verification:
    """How the stored histories compare with what was driven."""

    checked: int = 0
    matched: int = 0
    method: str = ""
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and self.matched == self.checked


@dataclass
class LoadtestReport:
    """Every figure of one load test run (:meth:`to_dict` is the ``--json`` output).

    Latencies are milliseconds. ``control`` holds the prober's figures by
    call kind (``history``, ``confirm``, ``pause_resume``) plus
    ``confirm_driver``, the driver's real approvals. Persistence figures come
    from the Hive's metrics registry.
    """

    options: dict[str, Any]
    store: str
    store_is_temporary: bool
    sessions: int
    turns_expected: int
    turns_completed: int
    turns_failed: int
    tool_calls: int
    confirmations: int
    setup_seconds: float
    drive_seconds: float
    flush_seconds: float
    turns_per_second: float
    turn_latency: LatencyStats
    control: dict[str, LatencyStats]
    peak_rss_mb: float
    live_sessions: int
    memory_per_session_kb: float
    dispatch_cost_us: float
    persistence_batches: int
    rows_written: dict[str, int]
    persistence_retries: int
    persistence_failures: int
    llm_retries: int
    store_bytes: int | None
    metrics_url: str | None
    verification: Verification
    failures: list[str]
    probe_errors: list[str]

    @property
    def ok(self) -> bool:
        """No failed turn, every expected turn done, and (when verified) every history matched."""
        verified = self.verification.ok or self.verification.method == "skipped"
        return self.turns_failed == 0 and self.turns_completed == self.turns_expected and verified

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["verification"]["ok"] = self.verification.ok
        return data

    def format_table(self) -> str:
        """The human summary the CLI prints."""

        def ms(value: float) -> str:
            return "-" if math.isnan(value) else f"{value:.2f} ms"

        turn = self.turn_latency
        rows: list[tuple[str, str]] = [
            ("sessions", f"{self.sessions}"),
            (
                "turns completed",
                f"{self.turns_completed} / {self.turns_expected}  (failed: {self.turns_failed})",
            ),
            ("tool calls / confirmations", f"{self.tool_calls} / {self.confirmations}"),
            ("setup (create sessions)", f"{self.setup_seconds:.2f} s"),
            ("drive time", f"{self.drive_seconds:.2f} s"),
            ("throughput", f"{self.turns_per_second:.1f} turns/s"),
            ("turn latency p50/p95/p99", " / ".join(ms(v) for v in (turn.p50_ms, turn.p95_ms, turn.p99_ms))),
        ]
        labels = {
            "history": "history() under load",
            "confirm": "confirm_tool() under load",
            "pause_resume": "pause+resume under load",
            "confirm_driver": "confirm_tool() approvals",
        }
        for kind, label in labels.items():
            stats = self.control.get(kind)
            if stats is not None and stats.count:
                rows.append(
                    (f"{label} p50/p99", f"{ms(stats.p50_ms)} / {ms(stats.p99_ms)}  (n={stats.count})")
                )
        rows += [
            ("peak RSS", f"{self.peak_rss_mb:.1f} MB"),
            ("live sessions at end", f"{self.live_sessions}"),
            (
                "memory per live session",
                f"{self.memory_per_session_kb:.1f} KB (RSS growth while creating them)",
            ),
            (
                "dispatch cost per message",
                f"{self.dispatch_cost_us:.1f} us (context_usage of every session at once)",
            ),
            ("flush", f"{self.flush_seconds * 1000:.1f} ms"),
            ("persistence batches", f"{self.persistence_batches}"),
            ("rows written", ", ".join(f"{k}: {v}" for k, v in sorted(self.rows_written.items())) or "0"),
            ("retries (store / llm)", f"{self.persistence_retries} / {self.llm_retries}"),
            ("persistence failures", f"{self.persistence_failures}"),
        ]
        kept = self.options.get("keep_store", False)
        where = (
            f"{self.store} (temporary, {'kept' if kept else 'deleted'})"
            if self.store_is_temporary
            else self.store
        )
        rows.append(("store", where))
        if self.store_bytes is not None:
            rows.append(("store size", f"{self.store_bytes / 1e6:.2f} MB"))
        if self.metrics_url:
            rows.append(("metrics", self.metrics_url))
        verification = self.verification
        if verification.method == "skipped":
            verdict = "skipped"
        elif verification.ok:
            verdict = f"OK ({verification.matched}/{verification.checked} histories, {verification.method})"
        else:
            verdict = f"MISMATCH ({verification.matched}/{verification.checked} match, {verification.method})"
        rows.append(("verification", verdict))
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label:<{width}}  {value}" for label, value in rows]
        for mismatch in verification.mismatches:
            lines.append(f"    mismatch: {mismatch}")
        for failure in self.failures:
            lines.append(f"    failure: {failure}")
        for error in self.probe_errors:
            lines.append(f"    probe error: {error}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the run


@dataclass
class _SessionLog:
    """What the driver saw of one session (written by the driver loop only)."""

    tool_outputs: dict[str, tuple[str, bool]] = field(default_factory=dict)
    last_result: AgentResult | None = None
    failed: bool = False


class _Progress:
    """A one-line progress bar on a terminal, redrawn with ``\\r``."""

    def __init__(self, out: TextIO, total: int) -> None:
        self._out = out
        self._total = total
        self._started = time.perf_counter()

    def draw(self, done: int, in_flight: int, final: bool = False) -> None:
        elapsed = time.perf_counter() - self._started
        width = 30
        filled = int(width * done / self._total) if self._total else width
        rate = done / elapsed if elapsed > 0 else 0.0
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self._total} turns "
            f"{rate:8.1f}/s  in flight {in_flight:5d}  {elapsed:6.1f}s"
        )
        self._out.write(line + ("\n" if final else ""))
        self._out.flush()


def _rss_now_mb() -> float:
    """Resident set size now (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _dispatch_cost_us(hive: Hive, session_ids: Sequence[str]) -> float:
    """Ask every session for its context usage at once; the wall time per answer, in microseconds."""
    if not session_ids:
        return 0.0
    started = time.perf_counter()
    futures = [hive._call_future(session_id, "context_usage") for session_id in session_ids]
    for future in futures:
        future.result(timeout=120)
    return (time.perf_counter() - started) * 1e6 / len(session_ids)


def _rss_peak_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _sample(hive: Hive, name: str, labels: Mapping[str, str] | None = None) -> float:
    value = hive.metrics.registry.get_sample_value(name, dict(labels) if labels else None)
    return float(value or 0.0)


def _sqlite_path(store: str) -> Path | None:
    if not store.startswith("sqlite:///"):
        return None
    path = store[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _store_bytes(store: str) -> int | None:
    path = _sqlite_path(store)
    if path is None:
        return None
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _batches(items: Sequence[str], size: int = _BATCH) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Run:
    """One load test: the driver loop's state. Only the driver loop thread touches it."""

    def __init__(
        self, options: LoadtestOptions, store: str, workspace: Path, progress_out: TextIO | None
    ) -> None:
        self.options = options
        self.store = store
        self.workspace = workspace
        self.progress_out = progress_out
        self.script = LoadtestScript(options.tools_per_turn, options.confirm_rate)
        run_id = uuid.uuid4().hex[:6]
        self.parents = [f"lt{run_id}-{i:06d}" for i in range(options.sessions)]
        self.children = {
            parent: [f"{parent}.c{j}" for j in range(options.children_per_session)] for parent in self.parents
        }
        self.all_sessions = [s for parent in self.parents for s in (parent, *self.children[parent])]
        self.probe_session = f"lt{run_id}-probe"
        self.logs = {session_id: _SessionLog() for session_id in self.all_sessions}
        self.turn_seconds: list[float] = []
        self.confirm_seconds: list[float] = []
        self.failures: list[str] = []
        self.turns_done = 0
        self.turns_failed = 0
        self.in_flight = 0
        self.tool_calls = 0
        self.confirmations = 0

    def llm(self) -> LlmConfig | LlmClient:
        if self.options.llm is not None:
            return self.options.llm
        return ScriptedLlm(self.script, self.options.llm_latency, model="loadtest")

    def session_config(self, session_id: str) -> SessionConfig:
        folder = self.workspace / session_id
        folder.mkdir(parents=True, exist_ok=True)
        policy = ConfirmationPolicy(require_confirmation=("write_file",), timeout_s=600.0)
        return SessionConfig(workspace=str(folder), confirmation_policy=policy)

    def _fail(self, text: str) -> None:
        if len(self.failures) < MAX_MISMATCHES:
            self.failures.append(text)

    async def create_sessions(self, hive: AsyncHive) -> None:
        for batch in _batches(self.parents):
            await asyncio.gather(*(hive.create_session(s, self.session_config(s)) for s in batch))
        children = [(parent, child) for parent in self.parents for child in self.children[parent]]
        for start in range(0, len(children), _BATCH):
            await asyncio.gather(
                *(
                    hive.create_child_session(parent, child, self.session_config(child))
                    for parent, child in children[start : start + _BATCH]
                )
            )
        await hive.create_session(self.probe_session, SessionConfig(storage="memory"))

    async def one_turn(self, hive: AsyncHive, session_id: str, turn: int) -> None:
        log = self.logs[session_id]
        started = time.perf_counter()
        try:
            if self.options.stream:
                log.last_result = await self.streamed_turn(hive, session_id, turn)
            else:
                log.last_result = result = await hive.generate(session_id, _prompt(session_id, turn))
                # The tool results of this turn are the tool messages after its prompt.
                start = len(result.messages) - next(
                    i for i, m in enumerate(reversed(result.messages), 1) if m.role == "user"
                )
                for message in result.messages[start:]:
                    if message.role == "tool" and message.tool_call_id is not None:
                        log.tool_outputs[message.tool_call_id] = (message.text, message.is_error)
                        self.tool_calls += 1
        except SessionhiveError as exc:
            log.failed = True
            self.turns_failed += 1
            self._fail(f"{session_id} turn {turn}: {type(exc).__name__}: {exc}")
            return
        self.turn_seconds.append(time.perf_counter() - started)
        self.turns_done += 1

    async def streamed_turn(self, hive: AsyncHive, session_id: str, turn: int) -> AgentResult:
        log = self.logs[session_id]
        stream = await hive.generate_streaming(session_id, _prompt(session_id, turn))
        async for event in stream:
            if isinstance(event, ConfirmationRequired):
                asked = time.perf_counter()
                await hive.confirm_tool(session_id, event.tool_id, True)
                self.confirm_seconds.append(time.perf_counter() - asked)
                self.confirmations += 1
            elif isinstance(event, ToolEnd):
                log.tool_outputs[event.tool_id] = (event.output, event.is_error)
                self.tool_calls += 1
        return await stream.result()

    async def drive(self, hive: AsyncHive) -> None:
        slots = asyncio.Semaphore(self.options.concurrency or len(self.all_sessions))

        async def session_task(session_id: str) -> None:
            for turn in range(1, self.options.turns + 1):
                async with slots:
                    self.in_flight += 1
                    try:
                        await self.one_turn(hive, session_id, turn)
                    finally:
                        self.in_flight -= 1

        progress = None
        if self.progress_out is not None:
            progress = _Progress(self.progress_out, len(self.all_sessions) * self.options.turns)

        async def redraw() -> None:
            assert progress is not None
            while True:
                progress.draw(self.turns_done + self.turns_failed, self.in_flight)
                await asyncio.sleep(0.25)

        drawer = asyncio.ensure_future(redraw()) if progress is not None else None
        try:
            await asyncio.gather(*(session_task(s) for s in self.all_sessions))
        finally:
            if drawer is not None and progress is not None:
                drawer.cancel()
                progress.draw(self.turns_done + self.turns_failed, 0, final=True)

    def expected(self, session_id: str) -> list[Message] | None:
        log = self.logs[session_id]
        if self.options.scripted:
            return self.script.expected_history(session_id, self.options.turns, log.tool_outputs)
        if log.failed or log.last_result is None:
            return None  # a real model's failed turn leaves a history nobody can predict
        return list(log.last_result.messages)

    def compare(self, session_id: str, stored: list[Message], verification: Verification) -> None:
        expected = self.expected(session_id)
        if expected is None:
            return
        verification.checked += 1
        if stored == expected:
            verification.matched += 1
            return
        if len(verification.mismatches) >= MAX_MISMATCHES:
            return
        if len(stored) != len(expected):
            detail = f"{len(stored)} messages stored, {len(expected)} expected"
        else:
            index = next(i for i, (a, b) in enumerate(zip(stored, expected, strict=True)) if a != b)
            detail = f"message {index}: stored {stored[index]!r}, expected {expected[index]!r}"
        verification.mismatches.append(f"{session_id}: {detail}")

    async def verify(self, hive: AsyncHive, method: str) -> Verification:
        verification = Verification(method=method)
        for batch in _batches(self.all_sessions):
            histories = await asyncio.gather(*(hive.history(s) for s in batch), return_exceptions=True)
            for session_id, history in zip(batch, histories, strict=True):
                if isinstance(history, BaseException):
                    verification.checked += 1
                    if len(verification.mismatches) < MAX_MISMATCHES:
                        verification.mismatches.append(f"{session_id}: {type(history).__name__}: {history}")
                    continue
                self.compare(session_id, history, verification)
        return verification


def _start_kwargs(options: LoadtestOptions, store: str, workspace: Path, llm: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(options.hive_options)
    kwargs.update(store=store, llm=llm, workspace=workspace)
    if options.actor_backend is not None:
        kwargs["actor_backend"] = options.actor_backend
    if options.metrics_port is not None:
        kwargs["metrics"] = MetricsConfig(port=options.metrics_port)
    return kwargs


async def _run_async(options: LoadtestOptions, run: _Run) -> LoadtestReport:
    hive = await AsyncHive.start(**_start_kwargs(options, run.store, run.workspace, run.llm()))
    try:
        rss_before = _rss_now_mb()
        setup_started = time.perf_counter()
        await run.create_sessions(hive)
        setup_seconds = time.perf_counter() - setup_started
        created = len(run.all_sessions)
        memory_per_session_kb = (_rss_now_mb() - rss_before) * 1024 / created if created else 0.0
        busy = run.all_sessions
        prober = ControlProber(hive.sync, busy, run.probe_session, interval=options.probe_interval).start()
        drive_started = time.perf_counter()
        try:
            await run.drive(hive)
        finally:
            drive_seconds = time.perf_counter() - drive_started
            await asyncio.to_thread(prober.stop)
        peak_rss = _rss_peak_mb()
        live = await hive.live_session_count()
        dispatch_us = await asyncio.to_thread(_dispatch_cost_us, hive.sync, busy)
        flush_started = time.perf_counter()
        await hive.flush()
        flush_seconds = time.perf_counter() - flush_started
        memory = run.store.strip() == "memory"
        if options.verify and memory:
            # A memory store is gone with its Hive: read the histories back from this one.
            verification = await run.verify(hive, "same Hive after flush (memory store)")
        else:
            verification = Verification(method="skipped")
        sync = hive.sync
        control = prober.stats()
        control["confirm_driver"] = LatencyStats.of(run.confirm_seconds)
        rows = {
            table: int(_sample(sync, "sessionhive_persistence_rows_written_total", {"table": table}))
            for table in ("sessions", "messages")
        }
        report = LoadtestReport(
            options=_options_dict(options),
            store=run.store,
            store_is_temporary=options.store is None,
            sessions=len(run.all_sessions),
            turns_expected=len(run.all_sessions) * options.turns,
            turns_completed=run.turns_done,
            turns_failed=run.turns_failed,
            tool_calls=run.tool_calls,
            confirmations=run.confirmations,
            setup_seconds=setup_seconds,
            drive_seconds=drive_seconds,
            flush_seconds=flush_seconds,
            turns_per_second=run.turns_done / drive_seconds if drive_seconds > 0 else 0.0,
            turn_latency=LatencyStats.of(run.turn_seconds),
            control=control,
            peak_rss_mb=peak_rss,
            live_sessions=live,
            memory_per_session_kb=memory_per_session_kb,
            dispatch_cost_us=dispatch_us,
            persistence_batches=int(_sample(sync, "sessionhive_persistence_batch_size_count")),
            rows_written=rows,
            persistence_retries=int(_sample(sync, "sessionhive_persistence_retries_total")),
            persistence_failures=int(_sample(sync, "sessionhive_persistence_failures_total")),
            llm_retries=int(
                sum(
                    sample.value
                    for metric in sync.metrics.llm_retries.collect()
                    for sample in metric.samples
                    if sample.name.endswith("_total")
                )
            ),
            store_bytes=None,
            metrics_url=sync.metrics_url,
            verification=verification,
            failures=list(run.failures),
            probe_errors=list(prober.errors),
        )
    finally:
        await hive.stop()
    report.store_bytes = _store_bytes(run.store)
    if options.verify and not memory:
        # A fresh Hive on the same store: what a restarted service would see.
        fresh = await AsyncHive.start(
            **_start_kwargs(options, run.store, run.workspace, None) | {"metrics": None}
        )
        try:
            report.verification = await run.verify(fresh, "fresh Hive on the same store")
        finally:
            await fresh.stop()
    return report


def _options_dict(options: LoadtestOptions) -> dict[str, Any]:
    data = {
        name: getattr(options, name)
        for name in options.__dataclass_fields__
        if name not in ("llm", "hive_options")
    }
    data["llm"] = "scripted" if options.llm is None else repr(options.llm)  # LlmConfig's repr hides the key
    data["hive_options"] = {
        k: repr(v) if not isinstance(v, int | float | str | bool | None) else v
        for k, v in options.hive_options.items()
    }
    data["total_sessions"] = options.total_sessions
    data["actor_backend"] = options.backend_name
    return data


def run_loadtest(options: LoadtestOptions, *, progress_out: TextIO | None = None) -> LoadtestReport:
    """Run one load test and return its :class:`LoadtestReport`.

    Runs its own event loop on the calling thread (so it cannot be called
    from a running loop; use ``asyncio.to_thread`` there). ``progress_out``
    gets the progress bar when ``options.progress`` is set (default: stderr).
    Temporary stores and workspaces are removed afterwards.
    """
    cleanup: list[Path] = []
    store = options.store
    if store is None:
        directory = Path(tempfile.mkdtemp(prefix="sessionhive-loadtest-"))
        if not options.keep_store:
            cleanup.append(directory)
        store = f"sqlite:///{directory / 'loadtest.db'}"
    if options.workspace is not None:
        workspace = Path(options.workspace).resolve()
        workspace.mkdir(parents=True, exist_ok=True)
    else:
        workspace = Path(tempfile.mkdtemp(prefix="sessionhive-loadtest-ws-"))
        cleanup.append(workspace)
    out = (progress_out or sys.stderr) if options.progress else None
    run = _Run(options, store, workspace, out)
    try:
        return asyncio.run(_run_async(options, run))
    finally:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the command


def _llm_from_args(args: argparse.Namespace) -> LlmConfig | None:
    provider = args.provider
    if provider is None and args.model:
        if os.environ.get("OPENAI_API_KEY"):
            provider = "openai"
        elif os.environ.get("ANTHROPIC_API_KEY"):
            provider = "anthropic"
    if provider in (None, "scripted"):
        return None
    if not args.model:
        raise InvalidConfig(f"--model is required with --provider {provider}")
    return LlmConfig(provider, args.model, base_url=args.base_url)


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except InvalidConfig as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_loadtest(args: argparse.Namespace) -> int:
    """The ``loadtest`` command: run, print the summary, write ``--json``; 0 when everything checked out."""
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
        verify=not args.no_verify,
        stream=not args.no_stream,
        keep_store=args.keep_store,
        progress=not args.quiet and sys.stderr.isatty(),
        hive_options=hive_options,
    )
    where = (
        "a fresh temporary SQLite file"
        + (" (kept)" if options.keep_store else " (deleted afterwards; --store to choose)")
        if options.store is None
        else options.store
    )
    model = "scripted" if options.llm is None else f"{options.llm.provider}/{options.llm.model}"
    children = options.sessions * options.children_per_session
    concurrency = options.concurrency or options.total_sessions
    print(
        f"sessionhive loadtest: {options.sessions} sessions + {children} children x {options.turns} turns "
        f"x {options.tools_per_turn} tools, model {model} (latency {options.llm_latency * 1000:g} ms), "
        f"concurrency {concurrency}, confirm rate {options.confirm_rate:g}, {options.backend_name} actors"
    )
    print(f"store: {where}")
    sys.stdout.flush()
    report = run_loadtest(options)
    print(report.format_table())
    if args.json:
        Path(args.json).write_text(
            json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8"
        )
        print(f"figures written to {args.json}")
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
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--sessions", type=int, default=100, help="top-level sessions (default: 100)")
    parser.add_argument("--turns", type=int, default=3, help="turns per session (default: 3)")
    parser.add_argument("--tools-per-turn", type=int, default=2, help="tool calls per turn (default: 2)")
    parser.add_argument(
        "--llm-latency",
        type=_duration_arg,
        default=0.0,
        help="scripted model latency, e.g. 50ms (default: 0)",
    )
    parser.add_argument(
        "--concurrency", type=int, help="most turns in flight (default: every session at once)"
    )
    parser.add_argument("--children-per-session", type=int, default=0, help="child sessions of each session")
    parser.add_argument(
        "--confirm-rate", type=float, default=0.0, help="fraction of tool calls that need a confirmation"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument(
        "--actor-backend",
        choices=["threads", "pooled"],
        help=f"how actors run (default: the Hive's, {DEFAULT_ACTOR_BACKEND}, or $SESSIONHIVE_ACTOR_BACKEND)",
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve /metrics on this port while running (0: any free port)"
    )
    parser.add_argument(
        "--max-live-sessions", type=int, help="passivate least recently used sessions beyond this"
    )
    parser.add_argument("--idle-timeout", type=_duration_arg, help="passivate sessions idle this long")
    parser.add_argument("--keep-store", action="store_true", help="keep the temporary SQLite file")
    parser.add_argument("--no-verify", action="store_true", help="skip reading every history back")
    parser.add_argument(
        "--no-stream",
        action="store_true",
        help="run turns with generate() instead of reading their event streams",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_store_option(parser, None)
    # The shared option prints its default; ours is a fresh file, not a fixed URL.
    for action in parser._actions:
        if "--store" in action.option_strings:
            action.help = (action.help or "").split(" (default")[
                0
            ] + " (default: a fresh temporary SQLite file)"
    add_llm_options(parser)
    parser.set_defaults(func=cmd_loadtest)
    return parser
