"""``sessionhive loadtest --target URL``: the load test drives an AsyncRemoteHive on a running service.

The service must run the load test's scripted model with the same tools per
turn and confirm rate (``sessionhive serve --loadtest-script K:RATE``):
:func:`check_target` asks its ``GET /v1/info`` first and refuses, naming the
difference, when it does not. The stored histories are then verified by
reading each one back over HTTP from the service.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sessionhive import InvalidConfig, SessionConfig
from sessionhive.api import Timeout

from ._codec import ServiceUnavailable, error_from_problem
from ._remote import AsyncRemoteHive

__all__ = ["RemoteMetrics", "check_target", "remote_hive_factory"]


class _ScrapedRegistry:
    """The parts of a ``CollectorRegistry`` the load test reads, answered from the service's /metrics."""

    def __init__(self, url: str) -> None:
        self._url = url

    def _samples(self) -> list[Sample]:
        try:
            text = httpx.get(self._url, timeout=30).text
        except httpx.HTTPError as exc:  # the load test reads this as "the service went away"
            raise ServiceUnavailable(
                0, {"detail": f"cannot read {self._url}: {exc}", "error": "Unreachable"}
            ) from None
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

    #: The load test stops sending turns once one of these says the service is gone.
    unavailable_errors = (ServiceUnavailable,)

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        connections: int,
        local_workspace: Path,
        service_info: dict[str, Any],
    ) -> None:
        super().__init__(base_url, token=token, call_timeout=120.0, max_connections=connections)
        self.metrics = RemoteMetrics(base_url)
        self.service_info = service_info
        self.verification_method = f"each history re-read over HTTP from {self.base_url}"
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


def _script_text(tools_per_turn: int, confirm_rate: float) -> str:
    return f"{tools_per_turn}:{confirm_rate:g}"


def check_target(url: str, options: Any, *, token: str | None = None) -> dict[str, Any]:
    """The service's ``GET /v1/info``, once it is known to run the script ``options`` will verify.

    Raises :class:`~sessionhive.InvalidConfig` naming the difference (the
    service's script, or its model when it runs none, against the options'
    tools per turn and confirm rate) and how to fix it; a service that cannot
    be reached, or refuses the token, raises what the client raises.
    """
    token = token if token is not None else os.environ.get("SESSIONHIVE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    try:
        response = httpx.get(base + "/v1/info", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            0, {"detail": f"cannot reach the service at {base}: {exc}", "error": "Unreachable"}
        ) from None
    if response.status_code == 404:
        raise InvalidConfig(
            f"the service at {base} has no GET /v1/info (an older sessionhive?): it cannot say which "
            "script it runs, so its histories cannot be verified; upgrade it"
        )
    if response.status_code != 200:
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text}
        raise error_from_problem(response.status_code, problem if isinstance(problem, dict) else {})
    info: dict[str, Any] = response.json()
    if getattr(options, "llm", None) is not None:
        return info  # a real model: the histories are compared with what the turns returned
    wanted = _script_text(options.tools_per_turn, options.confirm_rate)
    script = info.get("loadtest_script")
    if script is None:
        model = info.get("model") or {}
        runs = f"model {model.get('provider')}/{model.get('model')}" if model else "no model"
        raise InvalidConfig(
            f"the service at {base} runs {runs}, not the load test's script, so no history it stores "
            f"could match; start it with 'sessionhive serve --loadtest-script {wanted}'"
        )
    served = _script_text(int(script["tools_per_turn"]), float(script["confirm_rate"]))
    if served != wanted:
        raise InvalidConfig(
            f"the service at {base} runs --loadtest-script {served}, but this run would verify {wanted} "
            f"(--tools-per-turn {options.tools_per_turn} --confirm-rate {options.confirm_rate:g}); "
            f"pass --tools-per-turn {script['tools_per_turn']} --confirm-rate {script['confirm_rate']:g}, "
            f"or restart the service with --loadtest-script {wanted}"
        )
    return info


def remote_hive_factory(
    url: str, *, token: str | None = None, connections: int = 200
) -> Callable[..., Awaitable[AsyncRemoteHive]]:
    """A ``hive_factory`` for :func:`sessionhive.loadtest.run_loadtest` that drives the service at ``url``.

    It refuses (:class:`~sessionhive.InvalidConfig`) a service whose script is
    not the one the options verify (see :func:`check_target`).
    """

    async def start(options: Any, *, store: str, workspace: Path, llm: Any, metrics: bool) -> AsyncRemoteHive:
        del store, llm, metrics  # the service has its own store, model and /metrics
        info = await asyncio.to_thread(check_target, url, options, token=token)
        hive = _LoadtestRemoteHive(
            url, token=token, connections=connections, local_workspace=workspace, service_info=info
        )
        await hive.session_count()  # fail now, clearly, when the service or the token is wrong
        return hive

    return start
