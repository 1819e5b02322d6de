"""Every facade serves the one declared API: ``HiveAPI`` / ``AsyncHiveAPI`` in ``sessionhive/api.py``.

The typed functions below are the check that matters: ``mypy --strict``
(one of the gates) fails when a facade drops a method of its protocol or
changes its arguments or result. mypy does not compare default values, so
the tests compare them at run time, and run one piece of code written
against the protocol on a real Hive.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sessionhive import (
    AsyncHive,
    AsyncHiveAPI,
    AsyncRunsAPI,
    Hive,
    HiveAPI,
    InvalidConfig,
    Reply,
    RunsAPI,
    ScriptedLlm,
    SessionConfig,
)
from sessionhive.api import DEFAULT, resolve_timeout
from sessionhive.client import AsyncRemoteHive, RemoteHive

if TYPE_CHECKING:  # Ray is an extra: the cluster's check is mypy's, and the run-time one skips without it
    from sessionhive.cluster import AsyncClusterHive, ClusterHive

# ---------------------------------------------------------------------- checked by mypy


def hive_serves_the_api(hive: Hive) -> HiveAPI:
    return hive


def async_hive_serves_the_api(hive: AsyncHive) -> AsyncHiveAPI:
    return hive


# Runs (issue 21) are declared apart until the HTTP and cluster facades have them.
def hive_serves_the_runs_api(hive: Hive) -> RunsAPI:
    return hive


def async_hive_serves_the_runs_api(hive: AsyncHive) -> AsyncRunsAPI:
    return hive


def remote_hive_serves_the_api(hive: RemoteHive) -> HiveAPI:
    return hive


def async_remote_hive_serves_the_api(hive: AsyncRemoteHive) -> AsyncHiveAPI:
    return hive


def cluster_hive_serves_the_api(hive: ClusterHive) -> HiveAPI:
    return hive


def async_cluster_hive_serves_the_api(hive: AsyncClusterHive) -> AsyncHiveAPI:
    return hive


# ---------------------------------------------------------------------- checked here

FACADES = [
    (Hive, HiveAPI),
    (RemoteHive, HiveAPI),
    (AsyncHive, AsyncHiveAPI),
    (AsyncRemoteHive, AsyncHiveAPI),
    (Hive, RunsAPI),
    (AsyncHive, AsyncRunsAPI),
]


def _declared_methods(protocol: type) -> list[str]:
    return sorted(
        name
        for name, value in vars(protocol).items()
        if callable(value) and (not name.startswith("_") or name in ("__enter__", "__aenter__"))
    )


@pytest.mark.parametrize(("facade", "protocol"), FACADES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_declared_default_is_the_facades_default(facade: type, protocol: type) -> None:
    """A caller who leaves out an argument gets the same behaviour on every facade."""
    drifts = []
    for name in _declared_methods(protocol):
        declared = inspect.signature(getattr(protocol, name)).parameters
        actual = inspect.signature(getattr(facade, name)).parameters
        for parameter in declared.values():
            if parameter.default is not inspect.Parameter.empty and (
                parameter.name not in actual or actual[parameter.name].default != parameter.default
            ):
                got = actual[parameter.name].default if parameter.name in actual else "missing"
                drifts.append(f"{name}({parameter.name}=): declared {parameter.default!r}, got {got!r}")
    assert drifts == []


@pytest.mark.parametrize(("name", "protocol"), [("ClusterHive", HiveAPI), ("AsyncClusterHive", AsyncHiveAPI)])
def test_every_declared_default_is_the_cluster_facades_default(name: str, protocol: type) -> None:
    cluster = pytest.importorskip("sessionhive.cluster", exc_type=ImportError)
    test_every_declared_default_is_the_facades_default(getattr(cluster, name), protocol)


@pytest.mark.parametrize("value", ["defualt", -1, float("nan"), True, "60"])
def test_a_timeout_that_means_nothing_is_refused_not_guessed(value: object) -> None:
    with pytest.raises(InvalidConfig, match="timeout"):
        resolve_timeout(value, 60.0)  # type: ignore[arg-type]  # the point: a caller without mypy


def test_the_default_timeout_is_the_facades_call_timeout() -> None:
    assert resolve_timeout(DEFAULT, 7.5) == 7.5
    assert resolve_timeout("default", 7.5) == 7.5  # the same sentinel, as the service and CLI spell it
    assert resolve_timeout(None, 7.5) is None
    assert resolve_timeout(0, 7.5) == 0.0


def _one_turn(hive: HiveAPI) -> tuple[str, list[str]]:
    """Code a user writes once, against the protocol, and runs on whichever facade it is given."""
    hive.create_session("s", SessionConfig(system_prompt="be brief"), timeout=DEFAULT)
    result = hive.generate("s", "hello", timeout=30)
    roles: list[str] = [message.role for message in hive.history("s")]
    hive.flush(30)
    return result.text, roles


def test_code_written_against_the_protocol_runs_on_a_hive(tmp_path: Path) -> None:
    with Hive.start("memory", llm=ScriptedLlm([Reply("hi there")]), workspace=tmp_path) as hive:
        text, roles = _one_turn(hive)
        with pytest.raises(InvalidConfig, match="policy must be a ConfirmationPolicy"):
            hive.set_confirmation_policy("s", "ask")  # type: ignore[arg-type]  # the check under test
    assert text == "hi there"
    assert roles == ["user", "assistant"]
