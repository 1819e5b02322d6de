"""``sessionhive loadtest --target URL``: the load test drives an AsyncRemoteHive on a running service.

The service must run the load test's scripted model with the same tools per
turn and confirm rate (``sessionhive serve --loadtest-script K:RATE``), or
the verification of the stored histories reports every session as wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sessionhive import SessionConfig
from sessionhive.api import Timeout

from ._remote import AsyncRemoteHive

__all__ = ["RemoteMetrics", "remote_hive_factory"]


class _ScrapedRegistry:
    """The parts of a ``CollectorRegistry`` the load test reads, answered from the service's /metrics."""

    def __init__(self, url: str) -> None:
        self._url = url

    def _samples(self) -> list[Sample]:
        text = httpx.get(self._url, timeout=30).text
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        wanted = labels or {}
        for sample in self._samples():
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
        return None

    def collect(self) -> list[Any]:
        return [_Family(self._samples())]


class _Family:
    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples


class RemoteMetrics:
    """``hive.metrics`` of a remote hive: ``registry`` reads the service's /metrics when asked."""

    def __init__(self, base_url: str) -> None:
        self.registry = _ScrapedRegistry(base_url.rstrip("/") + "/metrics")


class _LoadtestRemoteHive(AsyncRemoteHive):
    """An AsyncRemoteHive with ``metrics`` and ``metrics_url``, as the load test's report reads them.

    The load test gives each session a folder of its local workspace; the
    service gets the same folder relative to its own ``--workspace``.
    """

    def __init__(self, base_url: str, *, token: str | None, connections: int, local_workspace: Path) -> None:
        super().__init__(base_url, token=token, call_timeout=120.0, max_connections=connections)
        self.metrics = RemoteMetrics(base_url)
        self.metrics_url = self.base_url + "/metrics"
        self._local_workspace = local_workspace.resolve()

    def _relative(self, config: SessionConfig | None) -> SessionConfig | None:
        if config is None or config.workspace is None:
            return config
        folder = Path(config.workspace).resolve()
        if folder == self._local_workspace or self._local_workspace in folder.parents:
            return replace(config, workspace=str(folder.relative_to(self._local_workspace)) or ".")
        return config

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = "default"
    ) -> str:
        return await super().create_session(session_id, self._relative(config), timeout=timeout)

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> str:
        return await super().create_child_session(
            parent_id, child_id, self._relative(config), timeout=timeout
        )


def remote_hive_factory(
    url: str, *, token: str | None = None, connections: int = 200
) -> Callable[..., Awaitable[AsyncRemoteHive]]:
    """A ``hive_factory`` for :func:`sessionhive.loadtest.run_loadtest` that drives the service at ``url``."""

    async def start(options: Any, *, store: str, workspace: Path, llm: Any, metrics: bool) -> AsyncRemoteHive:
        del options, store, llm, metrics  # the service has its own store, model and /metrics
        hive = _LoadtestRemoteHive(url, token=token, connections=connections, local_workspace=workspace)
        await hive.session_count()  # fail now, clearly, when the service or the token is wrong
        return hive

    return start
