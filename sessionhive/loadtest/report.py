"""What a load test measured: latency statistics, the verification verdict and :class:`LoadtestReport`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "HIVE_FIGURES",
    "MAX_MISMATCHES",
    "NOT_DONE",
    "HiveFigures",
    "LatencyStats",
    "LoadtestReport",
    "Verification",
    "describe_service",
    "percentile",
]

#: How a verification that could not run begins its ``method`` ("not done: the service went away").
NOT_DONE = "not done"
#: At most this many mismatches (and failures, and probe errors) are kept and printed.
MAX_MISMATCHES = 10


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``nan`` when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class LatencyStats:
    """Latency percentiles of one kind of call, in milliseconds (``nan`` when nothing was measured)."""

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


#: The hive's own figures a load test reads from its metrics before and after, by key.
HIVE_FIGURES: tuple[str, ...] = (
    "turns",
    "llm_calls",
    "llm_seconds",
    "rows_written_sessions",
    "rows_written_messages",
    "resident_memory_mb",
    "capacity_waits",
    "capacity_wait_seconds",
    "rate_limited",
    "fallbacks",
    "cost_usd",
)


@dataclass
class HiveFigures:
    """The hive's own figures (from its /metrics) before the run and after it; ``None``: not read.

    Each of ``before`` and ``after`` maps a key of :data:`HIVE_FIGURES` to a
    number, or to ``None`` when that series is not exposed. ``after`` is
    ``None`` when the hive could not be asked any more (it went away).
    """

    before: dict[str, float | None]
    after: dict[str, float | None] | None = None

    def delta(self, key: str) -> float | None:
        if self.after is None:
            return None
        first, last = self.before.get(key), self.after.get(key)
        return None if first is None or last is None else last - first

    def model_latency_ms(self) -> float | None:
        """The mean model call of the run, as the hive timed it."""
        calls, seconds = self.delta("llm_calls"), self.delta("llm_seconds")
        return seconds / calls * 1000 if calls and seconds is not None else None

    def provider_rows(self) -> list[tuple[str, str]]:
        """The provider account's side of the run: waiting for capacity, 429s, fallbacks, cost."""
        if self.after is None:
            return []

        def shown(key: str, text: str) -> str:
            value = self.delta(key)
            return "not exposed" if value is None else text.format(value)

        waits = self.delta("capacity_waits")
        waited = self.delta("capacity_wait_seconds")
        mean = f", {waited / waits * 1000:.1f} ms mean" if waits and waited is not None else ""
        return [
            ("waiting for capacity", shown("capacity_wait_seconds", "{:.2f} s in total") + mean),
            ("429s received", shown("rate_limited", "{:.0f}")),
            ("fallbacks", shown("fallbacks", "{:.0f}")),
            ("cost (price table)", shown("cost_usd", "${:.4f}")),
        ]

    def rows(self, who: str) -> list[tuple[str, str]]:
        """The figures as report rows, each label starting with ``who`` ("service")."""
        labels = [f"{who} {what}" for what in ("turns (its /metrics)", "model latency", "store writes")]
        memory_label = f"{who} resident memory"
        memory_before = self.before.get("resident_memory_mb")
        if self.after is None:
            gone = "not read (it could not be asked after the run)"
            memory = gone if memory_before is None else f"{memory_before:.1f} MB before; after: {gone}"
            return [(label, gone) for label in labels] + [(memory_label, memory)]

        def count(key: str) -> str:
            value = self.delta(key)
            return "not exposed" if value is None else f"{value:.0f}"

        latency = self.model_latency_ms()
        memory_after = self.after.get("resident_memory_mb")
        return [
            (labels[0], count("turns")),
            (
                labels[1],
                "no model call"
                if latency is None
                else f"{latency:.1f} ms mean over {count('llm_calls')} calls",
            ),
            (
                labels[2],
                f"sessions {count('rows_written_sessions')}, messages {count('rows_written_messages')}",
            ),
            (
                memory_label,
                "not exposed"
                if memory_before is None or memory_after is None
                else f"{memory_before:.1f} MB before, {memory_after:.1f} MB after",
            ),
        ]


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

    @property
    def verdict(self) -> str:
        if self.method == "skipped":
            return "skipped"
        if self.method.startswith(NOT_DONE):
            return "NOT DONE" + self.method[len(NOT_DONE) :]
        if self.ok:
            return f"OK ({self.matched}/{self.checked} histories, {self.method})"
        return f"MISMATCH ({self.matched}/{self.checked} match, {self.method})"


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


_NOT_MEASURED = "not measured (the hive exposes no metrics to read)"


_GONE = "not read (the hive went away)"


def _measured(value: int | None, missing: str = _NOT_MEASURED) -> str:
    return missing if value is None else f"{value}"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} ms"


_CONTROL_LABELS = {
    "history": "history() under load",
    "confirm": "confirm_tool() under load",
    "pause_resume": "pause+resume under load",
    "confirm_driver": "confirm_tool() approvals",
}


@dataclass
class LoadtestReport:
    """Every figure of one load test run (:meth:`to_json` is the ``--json`` output).

    Latencies are milliseconds. ``control`` holds the prober's figures by
    call kind (``history``, ``confirm``, ``pause_resume``) plus
    ``confirm_driver``, the driver's real approvals. Persistence figures come
    from the Hive's metrics registry, or for a cluster from one scrape of
    each shard's ``/metrics`` (``metrics_targets``), summed; ``None`` (not
    measured) for a hive that exposes neither.
    ``live_sessions`` counts the driven sessions still live at the end (the
    prober's own session is not one of them).
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
    persistence_batches: int | None
    rows_written: dict[str, int] | None
    persistence_retries: int | None
    persistence_failures: int | None
    llm_retries: int | None
    store_bytes: int | None
    metrics_url: str | None
    verification: Verification
    failures: list[str]
    probe_errors: list[str]
    metrics_targets: list[str] = field(default_factory=list)
    #: What the driven service says it runs (``GET /v1/info``); ``None`` for a hive in this process.
    service: dict[str, Any] | None = None
    #: The hive's own figures before and after the run (for a service: from its /metrics).
    hive_figures: HiveFigures | None = None
    #: Why the run stopped early (the hive went away); ``None`` when it ran to the end.
    interrupted: str | None = None

    @property
    def turns_not_run(self) -> int:
        return self.turns_expected - self.turns_completed - self.turns_failed

    @property
    def ok(self) -> bool:
        """No failed turn, every expected turn done, and (when verified) every history matched."""
        verified = self.verification.ok or self.verification.method == "skipped"
        return (
            self.interrupted is None
            and self.turns_failed == 0
            and self.turns_completed == self.turns_expected
            and verified
        )

    def to_dict(self) -> dict[str, Any]:
        """Every figure as JSON values; a figure that was not measured is ``None``, never NaN."""
        data = asdict(self)
        data["ok"] = self.ok
        data["turns_not_run"] = self.turns_not_run
        data["partial_run"] = self.unverified()  # what an interrupted run checked and what it did not
        if self.hive_figures is not None:
            data["hive_figures"]["model_latency_ms"] = self.hive_figures.model_latency_ms()
        data["verification"]["ok"] = self.verification.ok
        safe: dict[str, Any] = _json_safe(data)
        return safe

    def to_json(self) -> str:
        """:meth:`to_dict` as strict JSON (what ``jq`` and ``JSON.parse`` accept)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (label, value) rows, in the order a reader wants them."""
        turn = self.turn_latency
        remote = self.service is not None
        client = " (this client)" if remote else ""
        rows: list[tuple[str, str]] = []
        if self.interrupted is not None:
            rows.append(("INTERRUPTED", self.interrupted))
        if self.service is not None:
            rows.append(("service", describe_service(self.service)))
        rows += [
            ("sessions", f"{self.sessions}"),
            (
                "turns completed",
                f"{self.turns_completed} / {self.turns_expected}  (failed: {self.turns_failed}"
                + (f", not run: {self.turns_not_run})" if self.turns_not_run else ")"),
            ),
            ("tool calls / confirmations", f"{self.tool_calls} / {self.confirmations}"),
            ("setup (create sessions)", f"{self.setup_seconds:.2f} s"),
            ("drive time", f"{self.drive_seconds:.2f} s"),
            ("throughput", f"{self.turns_per_second:.1f} turns/s"),
            (
                f"turn latency p50/p95/p99{client}",
                " / ".join(_ms(v) for v in (turn.p50_ms, turn.p95_ms, turn.p99_ms)),
            ),
        ]
        if self.hive_figures is not None and remote:
            rows += self.hive_figures.rows("service")
        if self.hive_figures is not None:
            rows += self.hive_figures.provider_rows()
        for kind, label in _CONTROL_LABELS.items():
            stats = self.control.get(kind)
            if stats is not None and stats.count:
                rows.append(
                    (f"{label} p50/p99", f"{_ms(stats.p50_ms)} / {_ms(stats.p99_ms)}  (n={stats.count})")
                )
        missing = _GONE if self.interrupted is not None else _NOT_MEASURED
        rows += [
            (f"peak RSS{client}", f"{self.peak_rss_mb:.1f} MB"),
            ("live sessions at end", _GONE if self.interrupted is not None else f"{self.live_sessions}"),
            (
                f"memory per live session{client}",
                f"{self.memory_per_session_kb:.1f} KB (RSS growth while creating them)",
            ),
            (
                "dispatch cost per message",
                _GONE
                if math.isnan(self.dispatch_cost_us)
                else f"{self.dispatch_cost_us:.1f} us (context_usage of every session at once)",
            ),
            ("flush", _GONE if math.isnan(self.flush_seconds) else f"{self.flush_seconds * 1000:.1f} ms"),
            ("persistence batches", _measured(self.persistence_batches, missing)),
            (
                "rows written",
                missing
                if self.rows_written is None
                else ", ".join(f"{k}: {v}" for k, v in sorted(self.rows_written.items())),
            ),
            (
                "retries (store / llm)",
                f"{_measured(self.persistence_retries, missing)} / {_measured(self.llm_retries, missing)}",
            ),
            ("persistence failures", _measured(self.persistence_failures, missing)),
        ]
        kept = self.options.get("keep_store", False)
        where = (
            f"{self.store} (temporary, {'kept' if kept else 'deleted'})"
            if self.store_is_temporary
            else self.store
        )
        if self.service is not None:
            where = f"the service's: {self.service.get('store', {}).get('kind', 'unknown')}"
        rows.append(("store", where))
        if self.store_bytes is not None:
            rows.append(("store size", f"{self.store_bytes / 1e6:.2f} MB"))
        if self.metrics_url:
            rows.append(("metrics", self.metrics_url))
        if self.metrics_targets:
            rows.append(("metrics (per shard)", ", ".join(self.metrics_targets)))
        rows.append(("verification", self.verification.verdict))
        return rows

    def unverified(self) -> list[str]:
        """What an interrupted run checked and what it could not, one line each."""
        if self.interrupted is None:
            return []
        lines = [
            f"{self.turns_completed} turns ended with the hive's result (seen by this client)",
            f"{self.sessions - self.verification.checked} stored histories were not read back",
        ]
        if self.turns_failed:
            lines.append(f"{self.turns_failed} turns failed (the first ones are listed as failures)")
        if self.turns_not_run:
            lines.append(f"{self.turns_not_run} turns were never sent")
        return lines

    def notes(self) -> list[str]:
        """What went wrong, one line each: mismatches, failed turns, failed probes."""
        return (
            [f"partial run: {line}" for line in self.unverified()]
            + [f"mismatch: {m}" for m in self.verification.mismatches]
            + [f"failure: {f}" for f in self.failures]
            + [f"probe error: {e}" for e in self.probe_errors]
        )

    def format_table(self) -> str:
        """The plain-text summary (what the CLI prints when stdout is not a terminal)."""
        rows = self.rows()
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label:<{width}}  {value}" for label, value in rows]
        lines += [f"    {note}" for note in self.notes()]
        return "\n".join(lines)


def describe_service(info: dict[str, Any]) -> str:
    """One line from a service's ``GET /v1/info``: version, store kind, model, script, latency, backend."""
    model = info.get("model") or {}
    script = info.get("loadtest_script")
    latency = info.get("llm_latency_s")
    parts = [
        f"sessionhive {info.get('version', '?')}",
        f"store {(info.get('store') or {}).get('kind', '?')}",
        f"model {model.get('provider', 'none')}/{model.get('model', '-')}"
        + (f" (latency {latency * 1000:g} ms)" if isinstance(latency, int | float) else ""),
        "loadtest script " + (f"{script['tools_per_turn']}:{script['confirm_rate']:g}" if script else "none"),
        f"{info.get('actor_backend', '?')} actors",
    ]
    return ", ".join(parts)
