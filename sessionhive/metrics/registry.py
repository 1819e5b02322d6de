"""Every sessionhive metric, defined once, on a per-Hive ``CollectorRegistry``.

Two Hives in one process each get their own registry, so their series never
collide; pass ``MetricsConfig(registry=prometheus_client.REGISTRY)`` to join
the process-wide one. No metric has a session-id label: label values come
from small fixed sets (outcomes, message kinds, tool names, provider/model),
so the number of series does not grow with the number of sessions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from sessionhive.model.errors import InvalidConfig

M = TypeVar("M", bound=MetricWrapperBase)

__all__ = ["HiveMetrics", "MetricsConfig"]

_PREFIX = "sessionhive_"

# Turns and LLM calls take from milliseconds (scripted) to minutes (long tool loops).
_TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LLM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
# Label values exposed at 0 from the start, so that a rule such as the turn error ratio
# has series on a service that never failed (Prometheus sees no series until a child exists).
# Only fixed sets: labels taken from tool names or models appear when first used.
_INITIAL_LABELS: dict[str, tuple[tuple[str, ...], ...]] = {
    "turns": (("completed",), ("error",), ("cancelled",)),
    "turn_duration": (("completed",), ("error",), ("cancelled",)),
    "session_lifecycle": tuple(
        (event,) for event in ("created", "destroyed", "activated", "passivated", "restarted", "failed")
    ),
    "calls_rejected": (("mailbox",), ("jobs",)),
    "confirmations": (("approved",), ("rejected",), ("timed_out",), ("cancelled",)),
    "compactions": (("manual",), ("auto",)),
    "persistence_rows": (("sessions",), ("messages",)),
    "budget_stops": (("session",), ("hive",), ("tenant",)),
    "webhook_deliveries": (("delivered",), ("refused",), ("unreachable",)),
}


class ProcessCount:
    """A count shared by the whole process, changed from any thread, read by gauges when scraped."""

    def __init__(self) -> None:
        # Not session state: a process-wide count changed by tool-pool threads and read on scrape;
        # += on an int is not atomic across threads.
        self._lock = threading.Lock()
        self._value = 0

    def add(self, delta: int) -> None:
        with self._lock:
            self._value += delta

    def get(self) -> int:
        return self._value


abandoned_tool_threads = ProcessCount()
"""Tool threads still running after their call was cancelled or timed out (every executor's)."""


@dataclass(frozen=True)
class MetricsConfig:
    """Where to expose metrics.

    ``port`` starts an HTTP ``/metrics`` endpoint on ``addr`` (``0`` picks a
    free port; ``Hive.metrics_url`` tells which). ``registry`` replaces the
    Hive's own registry, e.g. with ``prometheus_client.REGISTRY``.
    """

    port: int | None = None
    addr: str = "127.0.0.1"
    registry: CollectorRegistry | None = None


class HiveMetrics:
    """The metrics of one Hive. Attributes are prometheus_client metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.joined = registry is not None
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        try:
            self._define()
            self._expose_initial_labels()
        except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
            self.unregister()
            raise InvalidConfig(
                "this registry already holds sessionhive metrics (is another Hive using it?); stop that "
                "Hive first, or give each Hive its own registry (the default)"
            ) from exc

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, looked up once: hot paths call this per message."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children.setdefault(key, metric.labels(*labels))
        return found  # type: ignore[no-any-return]

    def _expose_initial_labels(self) -> None:
        for attribute, label_sets in _INITIAL_LABELS.items():
            metric = getattr(self, attribute)
            for labels in label_sets:
                self.child(metric, *labels)

    def unregister(self) -> None:
        """Take these metrics out of a registry that was joined (a Hive's own registry just goes)."""
        for value in list(vars(self).values()):
            if isinstance(value, MetricWrapperBase):
                try:
                    self.registry.unregister(value)
                except KeyError:
                    pass  # never registered (a duplicate refused at start)

    # One metric each: the prefix and this Hive's registry are added here, not at every definition.

    def _counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(_PREFIX + name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(_PREFIX + name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, labels: tuple[str, ...] = (), *, buckets: tuple[float, ...]
    ) -> Histogram:
        return Histogram(_PREFIX + name, documentation, labels, buckets=buckets, registry=self.registry)

    def _define(self) -> None:
        # Sessions
        self.live_sessions = self._gauge("live_sessions", "Session actors currently live.")
        self.session_lifecycle = self._counter(
            "session_lifecycle_total",
            "Session lifecycle transitions (created, destroyed, activated, passivated, restarted).",
            ("event",),
        )
        self.messages_handled = self._counter(
            "actor_messages_total",
            "Messages handled by actors, by actor and message kind.",
            ("actor", "kind"),
        )
        self.mailbox_depth = self._gauge(
            "mailbox_depth", "Messages waiting in actor mailboxes, by actor kind.", ("actor",)
        )
        self.calls_rejected = self._counter(
            "calls_rejected_total",
            "Calls refused with Overloaded because a session's mailbox or turn queue was full.",
            ("queue",),
        )
        self.session_failures = self._counter(
            "session_failures_total",
            "Sessions marked failed after crashing more often than the restart intensity allows.",
        )
        # Turns
        self.turns = self._counter("turns_total", "Turns finished, by outcome.", ("outcome",))
        self.turn_duration = self._histogram(
            "turn_duration_seconds",
            "Wall time of a turn, from start to its last event.",
            ("outcome",),
            buckets=_TURN_BUCKETS,
        )
        self.turn_queue_depth = self._gauge(
            "turn_queue_depth", "Turns and session jobs waiting behind a running one."
        )
        self.turns_in_flight = self._gauge("turns_in_flight", "Turns running now.")
        # LLM
        self.llm_request_duration = self._histogram(
            "llm_request_duration_seconds",
            "Duration of one LLM call.",
            ("provider", "model", "outcome"),
            buckets=_LLM_BUCKETS,
        )
        self.llm_tokens = self._counter(
            "llm_tokens_total", "Tokens reported by LLM calls.", ("provider", "model", "kind")
        )
        self.llm_retries = self._counter(
            "llm_retries_total", "LLM calls retried after a transient failure.", ("provider",)
        )
        # Provider accounts (issue 23): labelled by provider and endpoint, never by key or session.
        self.llm_capacity_wait = self._histogram(
            "llm_capacity_wait_seconds",
            "Time an LLM call waited for its provider account's capacity before it was sent.",
            ("provider", "endpoint"),
            buckets=_LLM_BUCKETS,
        )
        self.llm_capacity_queue = self._gauge(
            "llm_capacity_queue",
            "LLM calls waiting for their provider account's capacity now.",
            ("provider", "endpoint"),
        )
        self.llm_observed_limit = self._gauge(
            "llm_account_limit_per_minute",
            "Per-minute limit in force for a provider account (stated or learned from its headers).",
            ("provider", "endpoint", "kind"),
        )
        self.llm_rate_limited = self._counter(
            "llm_rate_limited_total", "LLM answers that were 429 (rate limited).", ("provider", "endpoint")
        )
        self.llm_fallbacks = self._counter(
            "llm_fallbacks_total",
            "LLM calls that went to a fallback model because the first was overloaded.",
            ("provider", "model", "fallback_model"),
        )
        # Budgets: cost labelled by model only (the price is the model's; no session, no account).
        self.llm_cost = self._counter(
            "llm_cost_usd_total",
            "Cost of LLM calls in USD, priced from the price table, by the model that answered.",
            ("model",),
        )
        self.budget_stops = self._counter(
            "budget_stops_total",
            "Turns stopped before a model call because a budget would be exceeded, by budget scope.",
            ("scope",),
        )
        # Tools and confirmations
        self.tool_calls = self._counter(
            "tool_calls_total", "Tool calls, by tool and outcome.", ("tool", "outcome")
        )
        self.tool_duration = self._histogram(
            "tool_duration_seconds",
            "Wall time of one tool call, from its decision to its result (a confirmation wait left out).",
            ("tool", "outcome"),
            buckets=_FAST_BUCKETS,
        )
        # MCP servers: labels are the server and tool names the operator configured, never a session.
        self.mcp_calls = self._counter(
            "mcp_calls_total", "MCP tool calls, by server and tool.", ("server", "tool")
        )
        self.mcp_errors = self._counter(
            "mcp_errors_total",
            "MCP tool calls that failed (an error result, or the server died mid-call), by server and tool.",
            ("server", "tool"),
        )
        self.mcp_restarts = self._counter(
            "mcp_restarts_total", "MCP server connections reopened after the first, by server.", ("server",)
        )
        self.mcp_call_duration = self._histogram(
            "mcp_call_duration_seconds",
            "Wall time of one MCP tool call, by server and tool.",
            ("server", "tool"),
            buckets=_FAST_BUCKETS,
        )
        # Threads belong to the process, not to one Hive: every Hive's registry shows the same count.
        self.tool_threads_abandoned = self._gauge(
            "tool_threads_abandoned",
            "Tool threads still running after their call was cancelled or timed out, in this process.",
        )
        self.tool_threads_abandoned.set_function(abandoned_tool_threads.get)
        self.confirmations_pending = self._gauge(
            "confirmations_pending", "Tool calls waiting for a human decision."
        )
        self.confirmations = self._counter(
            "confirmations_total",
            "Resolved confirmations (approved, rejected, timed_out, cancelled).",
            ("outcome",),
        )
        self.compactions = self._counter(
            "compactions_total", "Context compactions, by trigger (manual, auto).", ("trigger",)
        )
        # Persistence
        self.persistence_pending = self._gauge(
            "persistence_pending_snapshots", "Snapshots and deletes waiting to be written."
        )
        self.persistence_batch_size = self._histogram(
            "persistence_batch_size", "Sessions written per batch.", buckets=_BATCH_BUCKETS
        )
        self.store_commit_batch_size = self._histogram(
            "store_commit_batch_size",
            "Saves and deletes (steps, turns, calls) that one store transaction commits (group commit).",
            buckets=_BATCH_BUCKETS,
        )
        self.persistence_flush_duration = self._histogram(
            "persistence_flush_duration_seconds",
            "Duration of one batch write, retries included.",
            buckets=_FAST_BUCKETS,
        )
        self.persistence_retries = self._counter(
            "persistence_retries_total", "Batch writes retried after a transient error."
        )
        self.persistence_failures = self._counter(
            "persistence_failures_total", "Batch writes that failed after every retry."
        )
        self.persistence_coalesced = self._counter(
            "persistence_coalesced_snapshots_total", "Snapshots replaced by a newer one before being written."
        )
        self.persistence_rows = self._counter(
            "persistence_rows_written_total", "Rows written to the store, by table.", ("table",)
        )
        # Webhooks: counted by outcome only, never by session, run or URL.
        self.webhook_deliveries = self._counter(
            "webhook_deliveries_total",
            "Webhook delivery attempts by outcome: delivered (a 2xx), refused (another status, a redirect "
            "included), unreachable (no answer: connection failed or timed out).",
            ("outcome",),
        )
        self.webhook_attempts = self._counter(
            "webhook_attempts_total", "Webhook POSTs made, first attempts and retries."
        )
        self.webhook_pending = self._gauge(
            "webhook_pending", "Webhook deliveries in the outbox waiting for a 2xx answer."
        )
        # Events
        self.events_dropped = self._counter(
            "subscriber_events_dropped_total", "Events dropped for slow subscribers."
        )
