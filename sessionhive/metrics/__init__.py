"""Prometheus metrics: :class:`HiveMetrics` (definitions) and their exposure."""

from sessionhive.metrics.registry import HiveMetrics, MetricsConfig

__all__ = ["HiveMetrics", "MetricsConfig"]
