"""The load test's driver: one asyncio loop that creates sessions, drives their turns and checks the store.

The driver talks to any object with the :class:`~sessionhive.AsyncHive`
interface; :func:`start_local_hive` is the one place that builds the hive
(a remote client or a cluster plugs in through ``run_loadtest(hive_factory=...)``).
A turn in flight costs the driver a coroutine, not an OS thread, so a
thousand concurrent sessions add no thread switching under the GIL on the
driver's side, and the figures measure the Hive rather than the load
generator.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sessionhive import (
    AgentResult,
    AsyncHive,
    AsyncHiveAPI,
    ConfirmationPolicy,
    ConfirmationRequired,
    HiveStopped,
    LlmClient,
    LlmConfig,
    Message,
    MetricsConfig,
    ScriptedLlm,
    SessionConfig,
    SessionhiveError,
    ToolEnd,
)

from .options import LoadtestOptions
from .probe import ControlProber, ControlTarget, LoopBoundTarget
from .report import (
    MAX_MISMATCHES,
    NOT_DONE,
    HiveFigures,
    LatencyStats,
    LoadtestReport,
    Verification,
    percentile,
)
from .script import LoadtestScript, prompt_for

__all__ = ["DriveProgress", "HiveFactory", "ProgressListener", "run_loadtest", "start_local_hive"]

#: Sessions created, or verified, per batch of concurrent calls.
_BATCH = 500
#: Seconds between two progress updates.
_PROGRESS_INTERVAL = 0.25
#: The progress display's latency is the median of this many most recent turns.
_RECENT_TURNS = 500
#: Seconds to wait for one shard's ``/metrics``.
_SCRAPE_TIMEOUT = 30.0


class HiveFactory(Protocol):
    """Builds the hive a load test drives: any :class:`~sessionhive.AsyncHiveAPI` (local, remote, cluster).

    ``llm`` is ``None`` for the verification hive (it runs no turn);
    ``metrics`` says whether to serve ``/metrics`` as the options ask.
    """

    def __call__(
        self,
        options: LoadtestOptions,
        *,
        store: str,
        workspace: Path,
        llm: LlmConfig | LlmClient | None,
        metrics: bool,
    ) -> Awaitable[AsyncHiveAPI]: ...


async def start_local_hive(
    options: LoadtestOptions,
    *,
    store: str,
    workspace: Path,
    llm: LlmConfig | LlmClient | None,
    metrics: bool,
) -> AsyncHive:
    """An :class:`~sessionhive.AsyncHive` in this process: the default hive of a load test."""
    kwargs: dict[str, Any] = dict(options.hive_options)
    kwargs.update(store=store, llm=llm, workspace=workspace)
    if options.actor_backend is not None:
        kwargs["actor_backend"] = options.actor_backend
    if metrics and options.metrics_port is not None:
        kwargs["metrics"] = MetricsConfig(port=options.metrics_port, addr=options.metrics_addr)
    return await AsyncHive.start(**kwargs)


@dataclass(frozen=True)
class DriveProgress:
    """Where the drive stands, for a progress display."""

    total: int
    done: int
    failed: int
    in_flight: int
    elapsed: float
    recent_p50_ms: float  # median latency of the most recent turns (nan before the first)
    finished: bool = False

    @property
    def turns_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


ProgressListener = Callable[[DriveProgress], None]


@dataclass
class _SessionLog:
    """What the driver saw of one session (written by the driver loop only)."""

    tool_outputs: dict[str, tuple[str, bool]] = field(default_factory=dict)
    last_result: AgentResult | None = None
    failed: bool = False


def _rss_now_mb() -> float:
    """Resident set size now (Linux /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _rss_peak_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


async def _dispatch_cost_us(hive: AsyncHiveAPI, session_ids: Sequence[str]) -> float:
    """Ask every session for its context usage at once; the wall time per answer, in microseconds."""
    if not session_ids:
        return 0.0
    started = time.perf_counter()
    for batch in _batches(session_ids):
        await asyncio.gather(*(hive.context_usage(s) for s in batch))
    return (time.perf_counter() - started) * 1e6 / len(session_ids)


class _Metrics:
    """The hive's metrics, summed over its registries: its own, or one scrape of each shard's ``/metrics``.

    ``None`` for a figure of a hive that exposes no metrics: "not measured", never a made-up 0.
    """

    def __init__(self, samples: list[Sample] | None) -> None:
        self._samples = samples

    @classmethod
    async def of(cls, hive: AsyncHiveAPI, targets: list[str]) -> _Metrics:
        registry = getattr(getattr(hive, "metrics", None), "registry", None)
        if registry is not None:
            return cls([sample for metric in registry.collect() for sample in metric.samples])
        if not targets:
            return cls(None)
        scrapes = await asyncio.gather(*(asyncio.to_thread(_scrape, url) for url in targets))
        return cls([sample for scrape in scrapes for sample in scrape])

    def sample(self, name: str, labels: dict[str, str] | None = None) -> int | None:
        """The sum of ``name`` over the series carrying ``labels`` (a shard label may come on top)."""
        if self._samples is None:
            return None
        wanted = (labels or {}).items()
        return int(sum(s.value for s in self._samples if s.name == name and wanted <= s.labels.items()))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """:meth:`sample` as a float; ``None`` also when no series of ``name`` is exposed."""
        if self._samples is None:
            return None
        wanted = (labels or {}).items()
        found = [s.value for s in self._samples if s.name == name and wanted <= s.labels.items()]
        return float(sum(found)) if found else None

    def figures(self) -> dict[str, float | None]:
        """The hive's own figures of :data:`~sessionhive.loadtest.report.HIVE_FIGURES`."""
        memory = self.value("process_resident_memory_bytes")
        figures = {
            "turns": self.value("sessionhive_turns_total"),
            "llm_calls": self.value("sessionhive_llm_request_duration_seconds_count"),
            "llm_seconds": self.value("sessionhive_llm_request_duration_seconds_sum"),
            "rows_written_sessions": self.value(
                "sessionhive_persistence_rows_written_total", {"table": "sessions"}
            ),
            "rows_written_messages": self.value(
                "sessionhive_persistence_rows_written_total", {"table": "messages"}
            ),
            "resident_memory_mb": None if memory is None else memory / 1e6,
            "capacity_waits": self.value("sessionhive_llm_capacity_wait_seconds_count"),
            "capacity_wait_seconds": self.value("sessionhive_llm_capacity_wait_seconds_sum"),
            "rate_limited": self.value("sessionhive_llm_rate_limited_total"),
            "fallbacks": self.value("sessionhive_llm_fallbacks_total"),
            "cost_usd": self.value("sessionhive_llm_cost_usd_total"),
        }
        if self._samples is not None:  # a counter not incremented yet is 0, not "not exposed"
            for key in (
                "turns",
                "llm_calls",
                "llm_seconds",
                "rows_written_sessions",
                "rows_written_messages",
                "capacity_waits",
                "capacity_wait_seconds",
                "rate_limited",
                "fallbacks",
                "cost_usd",
            ):
                figures[key] = figures[key] or 0.0
        return figures


async def _metrics_targets(hive: AsyncHiveAPI) -> list[str]:
    """The ``/metrics`` URLs of a cluster's shards (its ``shard_info()``); [] for other hives."""
    shard_info = getattr(hive, "shard_info", None)
    if not callable(shard_info):
        return []
    infos: dict[str, dict[str, Any]] = await shard_info()
    return [f"http://{info['metrics']}/metrics" for _id, info in sorted(infos.items()) if info.get("metrics")]


def _scrape(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=_SCRAPE_TIMEOUT) as response:
        text = response.read().decode("utf-8")
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


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

    def __init__(self, options: LoadtestOptions, store: str, workspace: Path) -> None:
        self.options = options
        self.store = store
        self.workspace = workspace
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
        #: The errors that mean the hive itself is gone (a service stopped), not one turn failing.
        self.gone_errors: tuple[type[BaseException], ...] = (HiveStopped,)
        #: Why the hive went away mid-run; the driver then sends no more turns.
        self.gone: str | None = None

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

    async def create_sessions(self, hive: AsyncHiveAPI) -> None:
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

    async def one_turn(self, hive: AsyncHiveAPI, session_id: str, turn: int) -> None:
        log = self.logs[session_id]
        started = time.perf_counter()
        try:
            if self.options.stream:
                log.last_result = await self.streamed_turn(hive, session_id, turn)
            else:
                log.last_result = result = await hive.generate(session_id, prompt_for(session_id, turn))
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
            if isinstance(exc, self.gone_errors) and self.gone is None:
                self.gone = f"{type(exc).__name__}: {exc}"
            return
        self.turn_seconds.append(time.perf_counter() - started)
        self.turns_done += 1

    async def streamed_turn(self, hive: AsyncHiveAPI, session_id: str, turn: int) -> AgentResult:
        log = self.logs[session_id]
        stream = await hive.generate_streaming(session_id, prompt_for(session_id, turn))
        async for event in stream:
            if isinstance(event, ConfirmationRequired):
                asked = time.perf_counter()
                await hive.confirm_tool(session_id, event.tool_id, True)
                self.confirm_seconds.append(time.perf_counter() - asked)
                self.confirmations += 1
            elif isinstance(event, ToolEnd):
                log.tool_outputs[event.tool_id] = (event.output, event.is_error)
                self.tool_calls += 1
        result: AgentResult = await stream.result()
        return result

    def progress(self, started: float, finished: bool = False) -> DriveProgress:
        recent = sorted(self.turn_seconds[-_RECENT_TURNS:])
        return DriveProgress(
            total=len(self.all_sessions) * self.options.turns,
            done=self.turns_done,
            failed=self.turns_failed,
            in_flight=self.in_flight,
            elapsed=time.perf_counter() - started,
            recent_p50_ms=percentile(recent, 0.5) * 1000,
            finished=finished,
        )

    async def drive(self, hive: AsyncHiveAPI, listener: ProgressListener | None) -> None:
        slots = asyncio.Semaphore(self.options.concurrency or len(self.all_sessions))
        started = time.perf_counter()

        async def session_task(session_id: str) -> None:
            for turn in range(1, self.options.turns + 1):
                async with slots:
                    if self.gone is not None:
                        return  # the rest of its turns count as not run
                    self.in_flight += 1
                    try:
                        await self.one_turn(hive, session_id, turn)
                    finally:
                        self.in_flight -= 1

        async def report_progress() -> None:
            assert listener is not None
            while True:
                listener(self.progress(started))
                await asyncio.sleep(_PROGRESS_INTERVAL)

        reporter = asyncio.ensure_future(report_progress()) if listener is not None else None
        try:
            await asyncio.gather(*(session_task(s) for s in self.all_sessions))
        finally:
            if reporter is not None and listener is not None:
                reporter.cancel()
                listener(self.progress(started, finished=True))

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

    async def verify(self, hive: AsyncHiveAPI, method: str) -> Verification:
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


def _rows_written(figures: HiveFigures) -> dict[str, int] | None:
    """Rows the run wrote: the hive's counters after it, less before (a service counts since it started)."""
    rows = {table: figures.delta(f"rows_written_{table}") for table in ("sessions", "messages")}
    return (
        None if any(count is None for count in rows.values()) else {k: int(v or 0) for k, v in rows.items()}
    )


def _control_target(hive: AsyncHiveAPI) -> ControlTarget:
    """A blocking view of ``hive`` for the prober thread: its own blocking twin when it has one."""
    sync = getattr(hive, "sync", None)
    if sync is not None:
        return sync  # type: ignore[no-any-return]
    return LoopBoundTarget(hive, asyncio.get_running_loop())


async def _run_async(
    options: LoadtestOptions, run: _Run, factory: HiveFactory, listener: ProgressListener | None
) -> LoadtestReport:
    hive: AsyncHiveAPI = await factory(
        options, store=run.store, workspace=run.workspace, llm=run.llm(), metrics=True
    )
    run.gone_errors = (HiveStopped, *getattr(hive, "unavailable_errors", ()))
    # What the hive says it runs (a service's GET /v1/info), read by the factory that reached it.
    service: dict[str, Any] | None = getattr(hive, "service_info", None)
    try:
        figures = HiveFigures(before=(await _Metrics.of(hive, await _metrics_targets(hive))).figures())
        rss_before = _rss_now_mb()
        setup_started = time.perf_counter()
        try:
            await run.create_sessions(hive)
        except run.gone_errors as exc:
            run.gone = f"{type(exc).__name__}: {exc} (while creating the sessions)"
        setup_seconds = time.perf_counter() - setup_started
        created = len(run.all_sessions)
        memory_per_session_kb = (_rss_now_mb() - rss_before) * 1024 / created if created else 0.0
        busy = run.all_sessions
        target = _control_target(hive)
        prober = ControlProber(target, busy, run.probe_session, interval=options.probe_interval)
        drive_started = time.perf_counter()
        if run.gone is None:
            prober.start()
            try:
                await run.drive(hive, listener)
            finally:
                await asyncio.to_thread(prober.stop)
        drive_seconds = time.perf_counter() - drive_started
        peak_rss = _rss_peak_mb()
        # What is not measured once the hive is gone stays at these: nan or None, never a made-up 0.
        live, dispatch_us, flush_seconds = 0, math.nan, math.nan
        verification = Verification(method="skipped")
        targets: list[str] = []
        metrics = _Metrics(None)
        memory = run.store.strip() == "memory"
        try:
            if run.gone is not None:
                raise HiveStopped()
            # The prober's session is not one of the driven sessions: gone before they are counted.
            await hive.destroy_session(run.probe_session)
            live = await hive.live_session_count()
            dispatch_us = await _dispatch_cost_us(hive, busy)
            flush_started = time.perf_counter()
            await hive.flush()
            flush_seconds = time.perf_counter() - flush_started
            if options.verify and memory:
                # A memory store is gone with its Hive: read the histories back from this one.
                verification = await run.verify(hive, "same Hive after flush (memory store)")
            targets = await _metrics_targets(hive)
            metrics = await _Metrics.of(hive, targets)
            figures.after = metrics.figures()
        except run.gone_errors as exc:
            if run.gone is None:
                run.gone = f"{type(exc).__name__}: {exc}"
        except OSError as exc:  # a scrape of /metrics that found nobody
            run.gone = run.gone or f"{type(exc).__name__}: {exc}"
        control = prober.stats()
        control["confirm_driver"] = LatencyStats.of(run.confirm_seconds)
        report = LoadtestReport(
            options=options.to_dict(),
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
            persistence_batches=metrics.sample("sessionhive_persistence_batch_size_count"),
            rows_written=_rows_written(figures),
            persistence_retries=metrics.sample("sessionhive_persistence_retries_total"),
            persistence_failures=metrics.sample("sessionhive_persistence_failures_total"),
            llm_retries=metrics.sample("sessionhive_llm_retries_total"),
            store_bytes=None,
            metrics_url=getattr(hive, "metrics_url", None),
            metrics_targets=targets,
            verification=verification,
            failures=list(run.failures),
            probe_errors=list(prober.errors),
            service=service,
            hive_figures=figures,
            interrupted=None
            if run.gone is None
            else f"the {'service' if service else 'hive'} went away during the run: {run.gone}",
        )
    finally:
        await hive.stop()
    if service is None:
        report.store_bytes = _store_bytes(run.store)
    if run.gone is not None:
        report.verification = Verification(
            method=f"{NOT_DONE}: the hive went away, no stored history could be read back"
        )
    elif options.verify and not memory:
        # A fresh hive on the same store: what a restarted service would see (a remote one says
        # how it reads them back instead).
        fresh: AsyncHiveAPI = await factory(
            options, store=run.store, workspace=run.workspace, llm=None, metrics=False
        )
        method = getattr(fresh, "verification_method", "fresh Hive on the same store")
        try:
            report.verification = await run.verify(fresh, method)
        finally:
            await fresh.stop()
    return report


def run_loadtest(
    options: LoadtestOptions,
    *,
    progress: ProgressListener | None = None,
    hive_factory: HiveFactory = start_local_hive,
) -> LoadtestReport:
    """Run one load test and return its :class:`~sessionhive.loadtest.LoadtestReport`.

    Runs its own event loop on the calling thread (so it cannot be called
    from a running loop; use ``asyncio.to_thread`` there). ``progress`` is
    called on the driver loop every quarter second while the turns run, and
    once more at the end. ``hive_factory`` builds the hive to drive (default:
    :func:`start_local_hive`). Temporary stores and workspaces are removed
    afterwards.
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
    run = _Run(options, store, workspace)
    try:
        return asyncio.run(_run_async(options, run, hive_factory, progress))
    finally:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
