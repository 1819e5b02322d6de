"""``ClusterHive`` and ``AsyncClusterHive``: the Hive API over hive shards on Ray.

The facade owns the membership (which shards serve) and the placement (the
shard of a session is the rendezvous-hash winner for its tree's root, among
the serving shards). A session call is one Ray call to that shard, carrying
what is left of its client's timeout; one :class:`_CallRule` per call decides
what each answer means. "moved" (not run: the shard has a newer membership,
or lost the lease) is retried; "expired" (not run: the deadline passed before
it started) is a :class:`CallTimeout`; a call cut off after it was handed
over (its shard died, restarted, lost the lease, or went silent) is retried
when it can safely run twice, otherwise it is an :class:`OutcomeUnknown`: a
client is told "failed" only for work that did not and will not commit.
A failure detector pings every shard: a shard silent for ``suspect_after``
seconds leaves the membership (its sessions move, once their leases expire),
the calls waiting on it stop waiting, and it comes back once it answers again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import ray
from ray import exceptions as ray_errors
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sessionhive import (
    AgentEvent,
    AgentResult,
    CallTimeout,
    ConfirmationPolicy,
    ContextUsage,
    HiveStopped,
    InvalidConfig,
    LlmConfig,
    Message,
    OutcomeUnknown,
    SessionConfig,
    SessionhiveError,
    ToolDefinition,
    ToolExecutor,
    Usage,
)
from sessionhive.cluster._tracing import Timing, call_timing
from sessionhive.cluster.placement import Membership
from sessionhive.cluster.shard import HiveShard
from sessionhive.model.confirmation import check_confirm_arguments
from sessionhive.model.ids import check_id

__all__ = [
    "AsyncClusterHive",
    "ClusterHive",
    "ClusterSubscription",
    "ClusterTurnStream",
    "cluster_hive_factory",
]

log = logging.getLogger("sessionhive.cluster")

Timeout = float | None | Literal["default"]

DEFAULT_CALL_TIMEOUT = 60.0
#: ``suspect_after`` as a share of ``lease_ttl``: a silent shard leaves the membership while its
#: leases still run, so that its sessions are placed elsewhere by the time the leases expire
#: (an 8 s pause with a 5 s lease: sessions answered again after about the lease, not after the pause).
SUSPECT_SHARE_OF_LEASE = 0.6
#: How often a client waiting for a shard's answer checks whether that shard went silent.
_WAIT_SLICE = 0.2
#: The longest back-off between two attempts of a call that found no serving shard.
_MAX_PAUSE = 0.25
_RETRY = object()
# Calls that may run twice without changing the outcome: retried after an interruption.
_IDEMPOTENT = frozenset(
    {
        "history",
        "context_usage",
        "usage",
        "get_llm_for_session",
        "pending_confirmations",
        "get_confirmation_policy",
        "is_child_session",
        "restore_session_by_id",
        "get_child_sessions",
        "configure",
        "pause_session",
        "resume_session",
        "set_confirmation_policy",
        "cancel_operation",
        "subscribe",
    }
)
_SHARD_GONE = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.ObjectLostError)


class _CallRule:
    """One call's deadline, retries and back-off, and what each answer means to its client.

    The sync and async facades, their calls and their streams all ask this
    one rule; they differ only in how they wait.
    """

    def __init__(self, op: str, session_id: str, limit: float | None) -> None:
        self.op = op
        self.session_id = session_id
        self.limit = limit
        self.deadline = None if limit is None else time.monotonic() + limit
        # Names this attempt in the OutcomeUnknown a client may get (and in the logs).
        self.run_id = uuid.uuid4().hex[:16]
        self._pause = 0.01

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def timing(self) -> Timing:
        """(now, deadline) by ``time.time()``: a duration would start again if the call was delivered late."""
        return call_timing(self.remaining())

    def slice(self) -> float:
        """How long to wait for an answer before looking at the shard's health again."""
        remaining = self.remaining()
        return _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)

    def passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def judge(self, outcome: tuple[str, Any]) -> Any:
        """The call's value, ``_RETRY``, or the exception that tells the client what happened."""
        kind, value = outcome
        if kind == "ok":
            return value
        if kind == "err":
            raise value
        if kind == "expired":
            raise CallTimeout(f"{self.op}() on session {self.session_id!r} did not start in time: {value}")
        if kind == "moved":
            return _RETRY
        return self.cut_off(str(value))

    def cut_off(self, reason: str) -> Any:
        """The call reached a shard that then failed or went silent: retried if it may run twice."""
        if self.op in _IDEMPOTENT:
            return _RETRY
        raise OutcomeUnknown(self.session_id, self.op, self.run_id, reason)

    def unanswered(self) -> SessionhiveError:
        """The client's timeout ran out while a shard held the call."""
        if self.op in _IDEMPOTENT:
            return CallTimeout(
                f"{self.op}() on session {self.session_id!r} got no answer within {self.limit} s"
            )
        return OutcomeUnknown(
            self.session_id, self.op, self.run_id, f"its shard gave no answer within {self.limit} s"
        )

    def back_off(self) -> float:
        """Seconds to wait before the next attempt; CallTimeout once the deadline passed (nothing ran)."""
        if self.passed():
            raise CallTimeout(
                f"{self.op}() on session {self.session_id!r} found no serving shard within {self.limit} s"
            )
        pause, self._pause = self._pause, min(self._pause * 2, _MAX_PAUSE)
        remaining = self.remaining()
        return pause if remaining is None else min(pause, remaining)


def _unwrap(exc: BaseException) -> BaseException:
    """A shard's own exception (not Ray's wrapper around it)."""
    if isinstance(exc, ray_errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


class _Cluster:
    """Membership, placement, root cache and failure detection: what both facades share."""

    def __init__(
        self,
        *,
        store_url: str,
        llm: Any,
        hive_options: dict[str, Any],
        shards: int,
        lease_ttl: float,
        suspect_after: float,
        ping_interval: float,
        audit_writes: bool,
        metrics_sd_file: str | os.PathLike[str] | None,
        metrics_addr: str,
        metrics_advertise_host: str | None,
        call_timeout: float,
        owns_ray: bool,
        name: str,
    ) -> None:
        self.call_timeout = call_timeout
        self.lease_ttl = lease_ttl
        self._store_url = store_url
        self._llm = llm
        self._hive_options = hive_options
        self._audit = audit_writes
        self._suspect_after = suspect_after
        self._ping_interval = ping_interval
        self._sd_file = Path(metrics_sd_file) if metrics_sd_file is not None else None
        self._metrics_addr = metrics_addr
        self._advertise_host = metrics_advertise_host
        self._owns_ray = owns_ray
        self._name = name
        # Not session state: it serialises membership changes (a shard added,
        # removed or found dead), which the caller's thread and the health
        # pinger may start at once; each change is a round of Ray calls that
        # must not interleave with another. Session state stays with the actors.
        self._membership_lock = threading.Lock()
        self._handles: dict[str, Any] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._last_ok: dict[str, float] = {}
        self._ok_streak: dict[str, int] = {}
        self._pinging: dict[str, Any] = {}
        self._removed: set[str] = set()
        self._roots: dict[str, str] = {}
        self._next_index = 0
        self.membership = Membership(0, [])
        self.stopped = False
        self._detector_stop = threading.Event()
        handles = [self._spawn() for _ in range(shards)]
        infos = ray.get([h.ping.remote() for _sid, h in handles], timeout=max(120.0, call_timeout))
        now = time.monotonic()
        for (shard_id, _handle), info in zip(handles, infos, strict=True):
            self._info[shard_id] = info
            self._last_ok[shard_id] = now
        self._apply([sid for sid, _h in handles])
        self._detector = threading.Thread(
            target=self._detect, name="sessionhive-cluster-detector", daemon=True
        )
        self._detector.start()

    # ------------------------------------------------------------------ shards

    def _spawn(self) -> tuple[str, Any]:
        shard_id = f"shard-{self._next_index}"
        # Round-robin over the alive nodes: a cluster of machines spreads its shards, and its
        # CPUs, over them. The affinity is hard because Ray's soft affinity packed every
        # shard on one node here; a shard whose node is gone waits for that node.
        list_nodes: Any = ray.nodes  # untyped in Ray
        nodes = sorted(node["NodeID"] for node in list_nodes() if node.get("Alive"))
        placement: Any = "DEFAULT"
        if len(nodes) > 1:
            placement = NodeAffinitySchedulingStrategy(nodes[self._next_index % len(nodes)], soft=False)
        self._next_index += 1
        actor = ray.remote(HiveShard).options(
            name=f"sessionhive-{self._name}-{shard_id}",
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=10_000,
            num_cpus=0,
            scheduling_strategy=placement,
        )
        handle = actor.remote(
            shard_id,
            self._store_url,
            self._llm,
            self._hive_options,
            lease_ttl=self.lease_ttl,
            audit_writes=self._audit,
            metrics_addr=self._metrics_addr,
        )
        self._handles[shard_id] = handle
        return shard_id, handle

    def handle(self, shard_id: str) -> Any:
        return self._handles[shard_id]

    def silent(self, shard_id: str) -> bool:
        """Whether ``shard_id`` has not answered a ping for ``suspect_after`` s (paused, cut off, gone)."""
        return time.monotonic() - self._last_ok.get(shard_id, 0.0) >= self._suspect_after

    def shard_ids(self) -> list[str]:
        return sorted(self._handles)

    def membership_arg(self) -> tuple[int, list[str]]:
        membership = self.membership
        return (membership.version, list(membership.shard_ids))

    def _apply(self, shard_ids: list[str]) -> None:
        """Make ``shard_ids`` the serving set: tell every reachable shard, then route by it."""
        with self._membership_lock:
            if tuple(sorted(shard_ids)) == self.membership.shard_ids:
                return
            new = Membership(self.membership.version + 1, shard_ids)
            now = time.monotonic()
            reachable = [
                sid for sid in self._handles if now - self._last_ok.get(sid, 0.0) < self._suspect_after
            ]
            refs = [
                self._handles[sid].set_membership.remote(new.version, list(new.shard_ids))
                for sid in reachable
            ]
            ready: list[Any] = []
            if refs:  # Ray refuses to wait for nothing
                ready, _pending = ray.wait(refs, num_returns=len(refs), timeout=max(self.call_timeout, 30.0))
            for ref in ready:
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a shard that cannot hand over loses its leases by expiry
                    log.warning("sessionhive cluster: a shard failed to adopt %r: %s", new, exc)
            self.membership = new
            log.info("sessionhive cluster: serving %s", new)
        self._write_sd_file()

    def add_shard(self) -> str:
        shard_id, handle = self._spawn()
        info = ray.get(handle.ping.remote(), timeout=max(120.0, self.call_timeout))
        self._info[shard_id] = info
        self._last_ok[shard_id] = time.monotonic()
        self._apply([*self.membership.shard_ids, shard_id])
        return shard_id

    def remove_shard(self, shard_id: str) -> None:
        if shard_id not in self._handles:
            raise InvalidConfig(f"no shard {shard_id!r}; shards: {self.shard_ids()}")
        self._removed.add(shard_id)
        remaining = [sid for sid in self.membership.shard_ids if sid != shard_id]
        if not remaining:
            raise InvalidConfig("cannot remove the last shard")
        self._apply(remaining)
        handle = self._handles.pop(shard_id)
        try:
            ray.get(handle.shutdown.remote(), timeout=self.call_timeout)
        except Exception as exc:  # noqa: BLE001 - its leases expire anyway
            log.warning("sessionhive cluster: %s did not stop cleanly: %s", shard_id, exc)
        ray.kill(handle, no_restart=True)
        self._info.pop(shard_id, None)
        self._write_sd_file()

    # ------------------------------------------------------------------ failure detection

    def _detect(self) -> None:
        while not self._detector_stop.wait(self._ping_interval):
            try:
                self._probe()
            except Exception:
                log.exception("sessionhive cluster: failure detector")

    def _probe(self) -> None:
        for shard_id, handle in list(self._handles.items()):
            if shard_id not in self._pinging:
                self._pinging[shard_id] = handle.ping.remote()
        refs = list(self._pinging.values())
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self._ping_interval)
        done = set(ready)
        now = time.monotonic()
        for shard_id, ref in list(self._pinging.items()):
            if ref not in done:
                continue
            del self._pinging[shard_id]
            try:
                info = ray.get(ref)
            except Exception:  # noqa: BLE001 - dead or restarting: not ok
                self._ok_streak[shard_id] = 0
                continue
            changed = self._info.get(shard_id) != info
            self._info[shard_id] = info
            self._last_ok[shard_id] = now
            self._ok_streak[shard_id] = self._ok_streak.get(shard_id, 0) + 1
            if changed:
                self._write_sd_file()
        serving = set(self.membership.shard_ids)
        wanted = set(serving)
        for shard_id in list(self._handles):
            silent = now - self._last_ok.get(shard_id, 0.0) >= self._suspect_after
            if shard_id in serving and silent and len(wanted) > 1:
                log.warning("sessionhive cluster: %s is silent; its sessions move", shard_id)
                wanted.discard(shard_id)
            elif (
                shard_id not in serving
                and not silent
                and self._ok_streak.get(shard_id, 0) >= 2
                and shard_id not in self._removed
            ):
                wanted.add(shard_id)
        if wanted != serving:
            self._apply(sorted(wanted))

    def _write_sd_file(self) -> None:
        if self._sd_file is None:
            return
        # No `job` label: Prometheus gives the job its scrape config names, and a label here
        # would override it. The address is the one other hosts reach (metrics_advertise_host).
        targets = [
            {"targets": [self._advertised(info["metrics"])], "labels": {"shard": shard_id}}
            for shard_id, info in sorted(self._info.items())
            if info.get("metrics")
        ]
        self._sd_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._sd_file.parent, prefix=".sd-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(targets, handle, indent=1)
        os.replace(tmp, self._sd_file)

    def _advertised(self, address: str) -> str:
        if self._advertise_host is None:
            return address
        host = f"[{self._advertise_host}]" if ":" in self._advertise_host else self._advertise_host
        return f"{host}:{address.rsplit(':', 1)[1]}"

    # ------------------------------------------------------------------ placement

    def tool_definitions(self) -> list[ToolDefinition]:
        tools = self._hive_options.get("tools")
        if tools is None:
            tools = ToolExecutor(Path(self._hive_options.get("workspace", ".")).resolve())
        return list(tools.definitions())

    def cached_root(self, session_id: str) -> str | None:
        return self._roots.get(session_id)

    def remember_root(self, session_id: str, root_id: str) -> None:
        self._roots[session_id] = root_id

    def root_lookup(self, session_id: str) -> Any:
        """A Ray call answering the root of ``session_id`` (``None``: unknown, so its own root)."""
        return self._handles[self.membership.owner_of(session_id)].root_of.remote(session_id)

    def target(self, root_id: str) -> tuple[str, Any]:
        shard_id = self.membership.owner_of(root_id)
        return shard_id, self._handles[shard_id]

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float | None) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._detector_stop.set()
        self._detector.join(timeout=5)
        refs = [handle.shutdown.remote() for handle in self._handles.values()]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for handle in self._handles.values():
            ray.kill(handle, no_restart=True)
        self._handles.clear()
        if self._sd_file is not None:
            self._sd_file.unlink(missing_ok=True)
        if self._owns_ray:
            ray.shutdown()


def _start_cluster(
    store: str,
    llm: Any,
    ray_address: str | None,
    shards: int,
    *,
    lease_ttl: float,
    suspect_after: float | None,
    ping_interval: float,
    audit_writes: bool,
    metrics_sd_file: str | os.PathLike[str] | None,
    metrics_addr: str,
    metrics_advertise_host: str | None,
    call_timeout: float,
    ray_options: dict[str, Any] | None,
    hive_options: dict[str, Any],
) -> _Cluster:
    if not isinstance(store, str) or "://" not in store or store.startswith("file:"):
        raise InvalidConfig(
            "a cluster needs a SQL store every shard can reach, as a URL "
            "(postgresql://user@host/db, or sqlite:///path.db on one machine)"
        )
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidConfig(f"shards must be a positive integer, got {shards!r}")
    if "metrics" in hive_options:
        raise InvalidConfig("each shard serves its own /metrics; use metrics_sd_file= to find them")
    if (
        metrics_advertise_host is not None
        and _is_loopback(metrics_addr)
        and not _is_loopback(metrics_advertise_host)
    ):
        raise InvalidConfig(
            f"the shards' /metrics listen on {metrics_addr}, which {metrics_advertise_host} cannot reach; "
            "set metrics_addr (--metrics-addr) to an address of this host, or 0.0.0.0, "
            "to advertise another host"
        )
    owns_ray = False
    if not ray.is_initialized():
        options = dict(ray_options or {})
        options.setdefault("namespace", "sessionhive")
        options.setdefault("log_to_driver", False)
        if ray_address is None:
            # A local Ray for this process ("local": never one that another process
            # started on this machine): loopback only, no dashboard.
            options.setdefault("address", "local")
            options.setdefault("_node_ip_address", "127.0.0.1")
            options.setdefault("include_dashboard", False)
            ray.init(**options)
        else:
            ray.init(address=ray_address, **options)
        owns_ray = True
    return _Cluster(
        store_url=store,
        llm=llm,
        hive_options=hive_options,
        shards=shards,
        lease_ttl=lease_ttl,
        suspect_after=suspect_after if suspect_after is not None else SUSPECT_SHARE_OF_LEASE * lease_ttl,
        ping_interval=ping_interval,
        audit_writes=audit_writes,
        metrics_sd_file=metrics_sd_file,
        metrics_addr=metrics_addr,
        metrics_advertise_host=metrics_advertise_host,
        call_timeout=call_timeout,
        owns_ray=owns_ray,
        name=os.urandom(4).hex(),
    )


class ClusterTurnStream:
    """The events of one turn on a shard, fetched in batches; :meth:`result` for the outcome."""

    def __init__(self, hive: ClusterHive, session_id: str, handle: Any, feed_id: int) -> None:
        self.session_id = session_id
        self._hive = hive
        self._handle = handle
        self._feed_id = feed_id
        self._buffer: list[AgentEvent] = []
        self._outcome: tuple[str, Any] | None = None

    def _fetch(self, wait: float) -> None:
        try:
            events, done, outcome = ray.get(self._handle.next_events.remote(self._feed_id, wait))
        except _SHARD_GONE as exc:
            events, done, outcome = [], True, ("interrupted", f"the shard failed: {type(exc).__name__}")
        self._buffer.extend(events)
        if done:
            self._outcome = outcome or ("interrupted", "the stream ended without an outcome")

    def __iter__(self) -> Iterator[AgentEvent]:
        while True:
            while self._buffer:
                yield self._buffer.pop(0)
            if self._outcome is not None:
                return
            self._fetch(1.0)

    def result(self, timeout: float | None = None) -> AgentResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._outcome is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise CallTimeout(f"the turn of session {self.session_id!r} got no answer within {timeout} s")
            self._fetch(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
        result: AgentResult = _CallRule("generate", self.session_id, None).judge(self._outcome)
        return result

    def cancel(self) -> bool:
        return self._hive.cancel_operation(self.session_id)


class ClusterSubscription:
    """A session's events from its shard, fetched in batches, until :meth:`close`."""

    def __init__(self, session_id: str, handle: Any, feed_id: int) -> None:
        self.session_id = session_id
        self._handle = handle
        self._feed_id = feed_id
        self._buffer: list[AgentEvent] = []
        self._closed = False

    def get(self, timeout: float | None = None) -> AgentEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            if self._closed:
                return None
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"no event of session {self.session_id!r} within {timeout} s")
            try:
                events, done, _outcome = ray.get(
                    self._handle.next_events.remote(self._feed_id, min(wait, 1.0))
                )
            except _SHARD_GONE:
                events, done = [], True
            self._buffer.extend(events)
            self._closed = self._closed or done
        return self._buffer.pop(0)

    def __iter__(self) -> Iterator[AgentEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._handle.close_feed.remote(self._feed_id)
            except Exception:  # noqa: BLE001 - the shard is gone: nothing to close
                pass

    def __enter__(self) -> ClusterSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterHive:
    """The :class:`~sessionhive.Hive` API over ``shards`` hive shards on a Ray cluster.

    ``ClusterHive.start(shards=2, store="postgresql://...", llm=...)``; every
    session lives on one shard at a time (its tree with it), owned through
    a lease in the shared store. Extra keyword arguments are Hive options
    (``idle_timeout``, ``max_live_sessions``, ``workspace``...) for every shard.
    """

    def __init__(self, cluster: _Cluster) -> None:
        self._cluster = cluster
        self.call_timeout = cluster.call_timeout

    @property
    def core(self) -> _Cluster:
        """Membership, placement and shard handles, shared with :class:`AsyncClusterHive`."""
        return self._cluster

    def resolve_timeout(self, timeout: Timeout) -> float | None:
        """Seconds to wait for ``timeout`` (``"default"``: ``call_timeout``; ``None``: for ever)."""
        return self._t(timeout)

    @classmethod
    def start(
        cls,
        shards: int = 2,
        store: str = "sqlite:///sessionhive.db",
        llm: Any = None,
        ray_address: str | None = None,
        *,
        lease_ttl: float = 10.0,
        suspect_after: float | None = None,
        ping_interval: float = 0.5,
        audit_writes: bool = False,
        metrics_sd_file: str | os.PathLike[str] | None = None,
        metrics_addr: str = "127.0.0.1",
        metrics_advertise_host: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        ray_options: dict[str, Any] | None = None,
        **hive_options: Any,
    ) -> ClusterHive:
        """Start (or join, with ``ray_address="auto"`` or an address) Ray and ``shards`` shards.

        ``lease_ttl``: seconds a silent shard keeps its sessions; ``suspect_after``
        (default 0.6 x ``lease_ttl``): seconds of silence after which its sessions
        move to other shards. ``metrics_sd_file``: a Prometheus ``file_sd``
        targets file listing every shard's ``/metrics`` (with a ``shard``
        label; the job is the scrape config's). Each shard serves it on a free
        port of ``metrics_addr`` (``"0.0.0.0"``: every interface, listed at its
        node's address); ``metrics_advertise_host`` is the host the file lists
        instead, the one a Prometheus elsewhere reaches. ``audit_writes``
        records each write's owner and epoch in ``sessionhive_write_log``.
        """
        return cls(
            _start_cluster(
                store,
                llm,
                ray_address,
                shards,
                lease_ttl=lease_ttl,
                suspect_after=suspect_after,
                ping_interval=ping_interval,
                audit_writes=audit_writes,
                metrics_sd_file=metrics_sd_file,
                metrics_addr=metrics_addr,
                metrics_advertise_host=metrics_advertise_host,
                call_timeout=call_timeout,
                ray_options=ray_options,
                hive_options=hive_options,
            )
        )

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop every shard (each flushes and releases its leases); the local Ray too if this started it."""
        self._cluster.stop(timeout)

    def __enter__(self) -> ClusterHive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ cluster

    @property
    def shards(self) -> list[str]:
        """The serving shards."""
        return list(self._cluster.membership.shard_ids)

    def shard_of(self, session_id: str) -> str:
        """The shard that serves ``session_id`` now."""
        return self._cluster.membership.owner_of(self._root(session_id))

    def add_shard(self) -> str:
        """Start one more shard; the sessions it now places are handed over to it. Returns its id."""
        return self._cluster.add_shard()

    def remove_shard(self, shard_id: str) -> None:
        """Hand a shard's sessions over to the others, then stop it."""
        self._cluster.remove_shard(shard_id)

    def shard_info(self) -> dict[str, dict[str, Any]]:
        """Per shard: its process id, metrics address, leases held, fenced writes, Hive restarts."""
        out: dict[str, dict[str, Any]] = {}
        for shard_id in self._cluster.shard_ids():
            handle = self._cluster.handle(shard_id)
            info = dict(ray.get(handle.ping.remote(), timeout=self.call_timeout))
            info.update(ray.get(handle.stats.remote(), timeout=self.call_timeout))
            out[shard_id] = info
        return out

    # ------------------------------------------------------------------ plumbing

    def _t(self, timeout: Timeout) -> float | None:
        return self.call_timeout if timeout == "default" else timeout

    def _root(self, session_id: str) -> str:
        root = self._cluster.cached_root(session_id)
        if root is None:
            found = ray.get(self._cluster.root_lookup(session_id), timeout=self.call_timeout)
            root = found if found is not None else session_id
            if found is not None:
                self._cluster.remember_root(session_id, root)
        return root

    def _call(
        self,
        op: str,
        session_id: str,
        *args: Any,
        timeout: Timeout,
        root: str | None = None,
        keywords: dict[str, Any] | None = None,
    ) -> Any:
        if self._cluster.stopped:
            raise HiveStopped()
        check_id(session_id)
        rule = _CallRule(op, session_id, self._t(timeout))
        root_id = root if root is not None else self._root(session_id)
        while True:
            shard_id, handle = self._cluster.target(root_id)
            ref = handle.call.remote(
                op, session_id, root_id, args, keywords or {}, self._cluster.membership_arg(), rule.timing()
            )
            value = rule.judge(self._answer(rule, shard_id, ref))
            if value is not _RETRY:
                return value
            time.sleep(rule.back_off())

    def _answer(self, rule: _CallRule, shard_id: str, ref: Any) -> tuple[str, Any]:
        """The shard's answer to a call it was handed; a cut-off outcome if it died or went silent."""
        while True:
            ready, _ = ray.wait([ref], timeout=rule.slice())
            if ready:
                try:
                    outcome: tuple[str, Any] = ray.get(ref)
                except _SHARD_GONE as exc:
                    return ("interrupted", f"its shard failed ({type(exc).__name__})")
                except ray_errors.RayTaskError as exc:
                    raise _unwrap(exc) from None
                return outcome
            if rule.passed():
                raise rule.unanswered()
            if self._cluster.silent(shard_id):
                # Not waiting for a stopped shard: its leases run out, its sessions move on.
                return ("interrupted", f"{shard_id} stopped answering")

    def _feed(self, kind: str, session_id: str, arg: tuple[Any, ...], timeout: Timeout) -> tuple[Any, int]:
        if self._cluster.stopped:
            raise HiveStopped()
        check_id(session_id)
        rule = _CallRule("generate" if kind == "turn" else "subscribe", session_id, self._t(timeout))
        root_id = self._root(session_id)
        while True:
            shard_id, handle = self._cluster.target(root_id)
            ref = handle.start_feed.remote(
                kind, session_id, root_id, arg, self._cluster.membership_arg(), rule.timing()
            )
            value = rule.judge(self._answer(rule, shard_id, ref))
            if value is not _RETRY:
                return handle, int(value)
            time.sleep(rule.back_off())

    def _each_shard(self, method: str, *args: Any, timeout: Timeout) -> list[Any]:
        if self._cluster.stopped:
            raise HiveStopped()
        handles = [self._cluster.handle(sid) for sid in self._cluster.membership.shard_ids]
        refs = [getattr(h, method).remote(*args) for h in handles]
        try:
            return list(ray.get(refs, timeout=self._t(timeout)))
        except ray_errors.GetTimeoutError:
            raise CallTimeout(f"{method} got no answer from every shard in time") from None

    # ------------------------------------------------------------------ sessions

    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = "default"
    ) -> str:
        _check_config(config)
        created: str = self._call("create_session", session_id, config, timeout=timeout, root=session_id)
        self._cluster.remember_root(session_id, session_id)
        return created

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = "default"
    ) -> str:
        """The session ``session_id``, created with ``config`` if it does not exist (live or stored)."""
        _check_config(config)
        if self._cluster.cached_root(session_id) is None:
            self._root(session_id)  # an existing child is placed with its root
        root = self._cluster.cached_root(session_id) or session_id
        got: str = self._call("get_or_create_session", session_id, config, timeout=timeout, root=root)
        self._cluster.remember_root(session_id, root)
        return got

    def reset_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        """Let a session marked failed (it crashed too often) take work again; True if it was failed."""
        return bool(self._call("reset_session", session_id, timeout=timeout))

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> str:
        check_id(child_id)
        _check_config(config)
        root = self._root(parent_id)
        created: str = self._call(
            "create_child_session", parent_id, child_id, config, timeout=timeout, root=root
        )
        self._cluster.remember_root(child_id, root)
        return created

    def destroy_session(self, session_id: str, *, timeout: Timeout = "default") -> None:
        self._call("destroy_session", session_id, timeout=timeout)

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = "default") -> list[str]:
        children: list[str] = self._call("get_child_sessions", parent_id, timeout=timeout)
        return children

    def is_child_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(self._call("is_child_session", session_id, timeout=timeout))

    def session_count(self, *, timeout: Timeout = "default") -> int:
        return len(self.list_sessions(timeout=timeout))

    def live_session_count(self, *, timeout: Timeout = "default") -> int:
        """Live sessions summed over the serving shards."""
        return sum(self._each_shard("hive_call", "live_session_count", timeout=timeout))

    def list_sessions(self, *, timeout: Timeout = "default") -> list[str]:
        lists = self._each_shard("owned_ids", self._cluster.membership_arg(), timeout=timeout)
        return sorted({sid for ids in lists for sid in ids})

    def list_tools(self) -> list[ToolDefinition]:
        """The tools every shard offers (the ``tools=`` executor, or the built-ins)."""
        return self._cluster.tool_definitions()

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = "default") -> None:
        self._call("restore_session_by_id", session_id, timeout=timeout)

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return sum(self._each_shard("load_owned", self._cluster.membership_arg(), timeout=timeout))

    # ------------------------------------------------------------------ turns

    def generate(self, session_id: str, prompt: str, *, timeout: float | None = None) -> AgentResult:
        _check_prompt(prompt)
        result: AgentResult = self._call("generate", session_id, prompt, timeout=timeout)
        return result

    def generate_streaming(
        self, session_id: str, prompt: str, *, timeout: Timeout = "default"
    ) -> ClusterTurnStream:
        _check_prompt(prompt)
        handle, feed_id = self._feed("turn", session_id, (prompt,), timeout)
        return ClusterTurnStream(self, session_id, handle, feed_id)

    def history(self, session_id: str, *, timeout: Timeout = "default") -> list[Message]:
        messages: list[Message] = self._call("history", session_id, timeout=timeout)
        return messages

    def context_usage(self, session_id: str, *, timeout: Timeout = "default") -> ContextUsage:
        usage: ContextUsage = self._call("context_usage", session_id, timeout=timeout)
        return usage

    def usage(self, session_id: str, *, timeout: Timeout = "default") -> Usage:
        usage: Usage = self._call("usage", session_id, timeout=timeout)
        return usage

    def clear(self, session_id: str, *, timeout: Timeout = "default") -> None:
        self._call("clear", session_id, timeout=timeout)

    def compact(self, session_id: str, *, timeout: float | None = None) -> None:
        self._call("compact", session_id, timeout=timeout)

    def maybe_auto_compact(self, session_id: str, *, timeout: float | None = None) -> bool:
        return bool(self._call("maybe_auto_compact", session_id, timeout=timeout))

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> None:
        self._call("configure", session_id, thinking, budget, model_config, timeout=timeout)

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = "default") -> LlmConfig | None:
        config: LlmConfig | None = self._call("get_llm_for_session", session_id, timeout=timeout)
        return config

    def pause_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(self._call("pause_session", session_id, timeout=timeout))

    def resume_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(self._call("resume_session", session_id, timeout=timeout))

    def cancel_operation(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(self._call("cancel_operation", session_id, timeout=timeout))

    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        decided_by: str | None = None,
        timeout: Timeout = "default",
    ) -> bool:
        check_confirm_arguments(tool_id, approved, reason, decided_by)
        answered = self._call(
            "confirm_tool",
            session_id,
            tool_id,
            approved,
            reason,
            timeout=timeout,
            keywords={"decided_by": decided_by},
        )
        return bool(answered)

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = "default") -> list[str]:
        ids: list[str] = self._call("pending_confirmations", session_id, timeout=timeout)
        return ids

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = "default"
    ) -> ConfirmationPolicy:
        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("policy must be a ConfirmationPolicy")
        result: ConfirmationPolicy = self._call(
            "set_confirmation_policy", session_id, policy, timeout=timeout
        )
        return result

    def get_confirmation_policy(self, session_id: str, *, timeout: Timeout = "default") -> ConfirmationPolicy:
        policy: ConfirmationPolicy = self._call("get_confirmation_policy", session_id, timeout=timeout)
        return policy

    def subscribe(self, session_id: str, *, timeout: Timeout = "default") -> ClusterSubscription:
        handle, feed_id = self._feed("subscription", session_id, (), timeout)
        return ClusterSubscription(session_id, handle, feed_id)

    # ------------------------------------------------------------------ store

    def flush(self, timeout: float | None = None) -> None:
        """Durability barrier on every serving shard."""
        self._each_shard("hive_call", "flush", timeout=timeout)

    def store_health(self, *, timeout: Timeout = "default") -> list[tuple[str, str]]:
        """``[("shard-N: store", "ok" | "error: ...")]`` for every serving shard."""
        return [
            entry
            for entries in self._each_shard("hive_call", "store_health", timeout=timeout)
            for entry in entries
        ]


def _check_config(config: SessionConfig | None) -> None:
    if config is not None and not isinstance(config, SessionConfig):
        raise InvalidConfig(f"config must be a SessionConfig, got {type(config).__name__}")


def _check_prompt(prompt: object) -> None:
    if not isinstance(prompt, str):
        raise InvalidConfig(f"prompt must be a string, got {type(prompt).__name__}")


# ---------------------------------------------------------------------- asyncio


async def _await_ref(ref: Any, timeout: float | None) -> Any:
    future = asyncio.wrap_future(ref.future())
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if not done:
        raise ray_errors.GetTimeoutError("timed out")
    return future.result()


class _Pipe:
    """Batched calls to one shard from one event loop: one Ray call per batch each way.

    Calls made in the same loop iteration go out in one ``submit``; one
    ``collect`` long-poll at a time brings back every answer ready. When the
    shard restarts (its owner changes) the answers of the calls the old
    incarnation held are lost: those calls end as interrupted.
    """

    def __init__(self, handle: Any, caller: str) -> None:
        self._handle = handle
        self._caller = caller
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        # call id -> (its answer, the shard incarnation that took it once known)
        self._waiting: dict[int, tuple[asyncio.Future[tuple[str, Any]], str | None]] = {}
        self._queue: list[tuple[Any, ...]] = []
        self._poller: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Future[Any]] = set()

    def call(self, arguments: tuple[Any, ...]) -> tuple[int, asyncio.Future[tuple[str, Any]]]:
        call_id = next(self._ids)
        future: asyncio.Future[tuple[str, Any]] = self._loop.create_future()
        self._waiting[call_id] = (future, None)
        self._queue.append((call_id, *arguments))
        if len(self._queue) == 1:
            self._loop.call_soon(self._send)
        if self._poller is None:
            self._poller = self._loop.create_task(self._poll())
        return call_id, future

    def forget(self, call_id: int) -> None:
        self._waiting.pop(call_id, None)

    def _send(self) -> None:
        batch, self._queue = self._queue, []
        ids = [int(item[0]) for item in batch]
        sent = asyncio.wrap_future(self._handle.submit.remote(self._caller, batch).future())
        self._sending.add(sent)

        def submitted(done: asyncio.Future[Any]) -> None:
            self._sending.discard(done)
            error = done.exception()
            for call_id in ids:
                entry = self._waiting.get(call_id)
                if entry is None:
                    continue
                if error is not None:
                    self._finish(call_id, ("interrupted", f"its shard failed ({type(error).__name__})"))
                else:
                    self._waiting[call_id] = (entry[0], done.result())

        sent.add_done_callback(submitted)

    def _finish(self, call_id: int, outcome: tuple[str, Any]) -> None:
        entry = self._waiting.pop(call_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(outcome)

    async def _poll(self) -> None:
        try:
            while self._waiting:
                try:
                    owner, answers = await _await_ref(self._handle.collect.remote(self._caller, 1.0), None)
                except _SHARD_GONE as exc:
                    for call_id, (_future, held_by) in list(self._waiting.items()):
                        if held_by is not None:
                            self._finish(call_id, ("interrupted", f"its shard failed ({type(exc).__name__})"))
                    await asyncio.sleep(0.05)
                    continue
                for call_id, outcome in answers:
                    self._finish(call_id, outcome)
                for call_id, (_future, held_by) in list(self._waiting.items()):
                    if held_by is not None and held_by != owner:
                        self._finish(call_id, ("interrupted", "its shard restarted"))
        finally:
            self._poller = None


async def _next_events(pipe: _Pipe, feed_id: int, wait: float) -> tuple[list[Any], bool, Any]:
    """A batch of a feed's events through the pipe (its shard gone: the feed ends interrupted)."""
    _call_id, answer = pipe.call(("next_events", feed_id, wait))
    kind, value = await answer
    if kind == "ok":
        events, done, outcome = value
        return list(events), bool(done), outcome
    if kind == "err":
        raise value
    return [], True, ("interrupted", str(value))


class AsyncClusterTurnStream:
    """:class:`ClusterTurnStream` as an async iterator; ``await stream.result()``."""

    def __init__(self, hive: AsyncClusterHive, session_id: str, pipe: _Pipe, feed_id: int) -> None:
        self.session_id = session_id
        self._hive = hive
        self._pipe = pipe
        self._feed_id = feed_id
        self._buffer: list[AgentEvent] = []
        self._outcome: tuple[str, Any] | None = None

    async def _fetch(self, wait: float) -> None:
        events, done, outcome = await _next_events(self._pipe, self._feed_id, wait)
        self._buffer.extend(events)
        if done:
            self._outcome = outcome or ("interrupted", "the stream ended without an outcome")

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            while self._buffer:
                yield self._buffer.pop(0)
            if self._outcome is not None:
                return
            await self._fetch(1.0)

    async def result(self, timeout: float | None = None) -> AgentResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._outcome is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise CallTimeout(f"the turn of session {self.session_id!r} got no answer within {timeout} s")
            await self._fetch(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
        result: AgentResult = _CallRule("generate", self.session_id, None).judge(self._outcome)
        return result

    async def cancel(self) -> bool:
        return await self._hive.cancel_operation(self.session_id)


class AsyncClusterSubscription:
    """:class:`ClusterSubscription` as an async iterator."""

    def __init__(self, session_id: str, handle: Any, pipe: _Pipe, feed_id: int) -> None:
        self.session_id = session_id
        self._handle = handle
        self._pipe = pipe
        self._feed_id = feed_id
        self._buffer: list[AgentEvent] = []
        self._closed = False

    async def get(self, timeout: float | None = None) -> AgentEvent | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            if self._closed:
                return None
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"no event of session {self.session_id!r} within {timeout} s")
            events, done, _ = await _next_events(self._pipe, self._feed_id, min(wait, 1.0))
            self._buffer.extend(events)
            self._closed = self._closed or done
        return self._buffer.pop(0)

    def __aiter__(self) -> AsyncIterator[AgentEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._handle.close_feed.remote(self._feed_id)
            except Exception:  # noqa: BLE001 - the shard is gone: nothing to close
                pass

    async def __aenter__(self) -> AsyncClusterSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Starting:
    """What ``AsyncClusterHive.start()`` returns: await it, or use it with ``async with``."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._args = args
        self._kwargs = kwargs
        self._hive: AsyncClusterHive | None = None

    async def _start(self) -> AsyncClusterHive:
        sync = await asyncio.to_thread(lambda: ClusterHive.start(*self._args, **self._kwargs))
        self._hive = AsyncClusterHive(sync)
        return self._hive

    def __await__(self) -> Generator[Any, None, AsyncClusterHive]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncClusterHive:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        if self._hive is not None:
            await self._hive.stop()


class AsyncClusterHive:
    """The asyncio twin of :class:`ClusterHive` (awaiting never blocks the event loop).

    ``hive = await AsyncClusterHive.start(shards=2, store=..., llm=...)`` or ``async with``.
    ``sync`` is the underlying :class:`ClusterHive`.
    """

    def __init__(self, hive: ClusterHive) -> None:
        self.sync = hive
        self._caller = uuid.uuid4().hex
        self._pipes: dict[tuple[int, str], _Pipe] = {}

    def _pipe(self, shard_id: str) -> _Pipe:
        loop = asyncio.get_running_loop()
        key = (id(loop), shard_id)
        pipe = self._pipes.get(key)
        if pipe is None:
            pipe = self._pipes[key] = _Pipe(self.sync.core.handle(shard_id), self._caller)
        return pipe

    @staticmethod
    def start(*args: Any, **kwargs: Any) -> _Starting:
        """Start a cluster (same arguments as :meth:`ClusterHive.start`) off the event loop."""
        return _Starting(args, kwargs)

    async def stop(self, timeout: float | None = 60.0) -> None:
        await asyncio.to_thread(self.sync.stop, timeout)

    async def __aenter__(self) -> AsyncClusterHive:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def shards(self) -> list[str]:
        return self.sync.shards

    async def add_shard(self) -> str:
        return await asyncio.to_thread(self.sync.add_shard)

    async def remove_shard(self, shard_id: str) -> None:
        await asyncio.to_thread(self.sync.remove_shard, shard_id)

    async def _root(self, session_id: str) -> str:
        cluster = self.sync.core
        root = cluster.cached_root(session_id)
        if root is None:
            found = await _await_ref(cluster.root_lookup(session_id), self.sync.call_timeout)
            root = found if found is not None else session_id
            if found is not None:
                cluster.remember_root(session_id, root)
        return root

    async def _call(
        self,
        op: str,
        session_id: str,
        *args: Any,
        timeout: Timeout,
        root: str | None = None,
        keywords: dict[str, Any] | None = None,
    ) -> Any:
        cluster = self.sync.core
        if cluster.stopped:
            raise HiveStopped()
        check_id(session_id)
        rule = _CallRule(op, session_id, self.sync.resolve_timeout(timeout))
        root_id = root if root is not None else await self._root(session_id)
        while True:
            shard_id, _handle = cluster.target(root_id)
            arguments: tuple[Any, ...] = (
                "call",
                op,
                session_id,
                root_id,
                args,
                keywords or {},
                cluster.membership_arg(),
                rule.timing(),
            )
            value = rule.judge(await self._answer(rule, shard_id, arguments))
            if value is not _RETRY:
                return value
            await asyncio.sleep(rule.back_off())

    async def _answer(self, rule: _CallRule, shard_id: str, arguments: tuple[Any, ...]) -> tuple[str, Any]:
        """The answer of ``shard_id`` to a batched call; a cut-off outcome if it died or went silent."""
        pipe = self._pipe(shard_id)
        call_id, answer = pipe.call(arguments)
        while True:
            done, _ = await asyncio.wait({answer}, timeout=rule.slice())
            if done:
                outcome = answer.result()
                if outcome[0] == "err" and isinstance(outcome[1], ray_errors.RayTaskError):
                    raise _unwrap(outcome[1])
                return outcome
            if rule.passed() or self.sync.core.silent(shard_id):
                pipe.forget(call_id)
                if rule.passed():
                    raise rule.unanswered()
                return ("interrupted", f"{shard_id} stopped answering")

    async def _feed(
        self, kind: str, session_id: str, arg: tuple[Any, ...], timeout: Timeout
    ) -> tuple[Any, _Pipe, int]:
        cluster = self.sync.core
        if cluster.stopped:
            raise HiveStopped()
        check_id(session_id)
        rule = _CallRule(
            "generate" if kind == "turn" else "subscribe", session_id, self.sync.resolve_timeout(timeout)
        )
        root_id = await self._root(session_id)
        while True:
            shard_id, handle = cluster.target(root_id)
            arguments = (
                "start_feed",
                kind,
                session_id,
                root_id,
                arg,
                cluster.membership_arg(),
                rule.timing(),
            )
            value = rule.judge(await self._answer(rule, shard_id, arguments))
            if value is not _RETRY:
                return handle, self._pipe(shard_id), int(value)
            await asyncio.sleep(rule.back_off())

    async def _each_shard(self, method: str, *args: Any, timeout: Timeout) -> list[Any]:
        cluster = self.sync.core
        if cluster.stopped:
            raise HiveStopped()
        refs = [getattr(cluster.handle(sid), method).remote(*args) for sid in cluster.membership.shard_ids]
        limit = self.sync.resolve_timeout(timeout)
        try:
            return [await _await_ref(ref, limit) for ref in refs]
        except ray_errors.GetTimeoutError:
            raise CallTimeout(f"{method} got no answer from every shard in time") from None

    # sessions

    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = "default"
    ) -> str:
        _check_config(config)
        created: str = await self._call(
            "create_session", session_id, config, timeout=timeout, root=session_id
        )
        self.sync.core.remember_root(session_id, session_id)
        return created

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = "default"
    ) -> str:
        _check_config(config)
        root = await self._root(session_id)
        got: str = await self._call("get_or_create_session", session_id, config, timeout=timeout, root=root)
        self.sync.core.remember_root(session_id, root)
        return got

    async def reset_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call("reset_session", session_id, timeout=timeout))

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> str:
        check_id(child_id)
        _check_config(config)
        root = await self._root(parent_id)
        created: str = await self._call(
            "create_child_session", parent_id, child_id, config, timeout=timeout, root=root
        )
        self.sync.core.remember_root(child_id, root)
        return created

    async def destroy_session(self, session_id: str, *, timeout: Timeout = "default") -> None:
        await self._call("destroy_session", session_id, timeout=timeout)

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = "default") -> list[str]:
        children: list[str] = await self._call("get_child_sessions", parent_id, timeout=timeout)
        return children

    async def is_child_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call("is_child_session", session_id, timeout=timeout))

    async def session_count(self, *, timeout: Timeout = "default") -> int:
        return len(await self.list_sessions(timeout=timeout))

    async def live_session_count(self, *, timeout: Timeout = "default") -> int:
        return sum(await self._each_shard("hive_call", "live_session_count", timeout=timeout))

    async def list_sessions(self, *, timeout: Timeout = "default") -> list[str]:
        lists = await self._each_shard("owned_ids", self.sync.core.membership_arg(), timeout=timeout)
        return sorted({sid for ids in lists for sid in ids})

    def list_tools(self) -> list[ToolDefinition]:
        return self.sync.list_tools()

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = "default") -> None:
        await self._call("restore_session_by_id", session_id, timeout=timeout)

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return sum(await self._each_shard("load_owned", self.sync.core.membership_arg(), timeout=timeout))

    # turns

    async def generate(self, session_id: str, prompt: str, *, timeout: float | None = None) -> AgentResult:
        _check_prompt(prompt)
        result: AgentResult = await self._call("generate", session_id, prompt, timeout=timeout)
        return result

    async def generate_streaming(
        self, session_id: str, prompt: str, *, timeout: Timeout = "default"
    ) -> AsyncClusterTurnStream:
        _check_prompt(prompt)
        _handle, pipe, feed_id = await self._feed("turn", session_id, (prompt,), timeout)
        return AsyncClusterTurnStream(self, session_id, pipe, feed_id)

    async def history(self, session_id: str, *, timeout: Timeout = "default") -> list[Message]:
        messages: list[Message] = await self._call("history", session_id, timeout=timeout)
        return messages

    async def context_usage(self, session_id: str, *, timeout: Timeout = "default") -> ContextUsage:
        usage: ContextUsage = await self._call("context_usage", session_id, timeout=timeout)
        return usage

    async def usage(self, session_id: str, *, timeout: Timeout = "default") -> Usage:
        usage: Usage = await self._call("usage", session_id, timeout=timeout)
        return usage

    async def clear(self, session_id: str, *, timeout: Timeout = "default") -> None:
        await self._call("clear", session_id, timeout=timeout)

    async def compact(self, session_id: str, *, timeout: float | None = None) -> None:
        await self._call("compact", session_id, timeout=timeout)

    async def maybe_auto_compact(self, session_id: str, *, timeout: float | None = None) -> bool:
        return bool(await self._call("maybe_auto_compact", session_id, timeout=timeout))

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = "default",
    ) -> None:
        await self._call("configure", session_id, thinking, budget, model_config, timeout=timeout)

    async def get_llm_for_session(self, session_id: str, *, timeout: Timeout = "default") -> LlmConfig | None:
        config: LlmConfig | None = await self._call("get_llm_for_session", session_id, timeout=timeout)
        return config

    async def pause_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call("pause_session", session_id, timeout=timeout))

    async def resume_session(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call("resume_session", session_id, timeout=timeout))

    async def cancel_operation(self, session_id: str, *, timeout: Timeout = "default") -> bool:
        return bool(await self._call("cancel_operation", session_id, timeout=timeout))

    async def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        decided_by: str | None = None,
        timeout: Timeout = "default",
    ) -> bool:
        check_confirm_arguments(tool_id, approved, reason, decided_by)
        answered = await self._call(
            "confirm_tool",
            session_id,
            tool_id,
            approved,
            reason,
            timeout=timeout,
            keywords={"decided_by": decided_by},
        )
        return bool(answered)

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = "default") -> list[str]:
        ids: list[str] = await self._call("pending_confirmations", session_id, timeout=timeout)
        return ids

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = "default"
    ) -> ConfirmationPolicy:
        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("policy must be a ConfirmationPolicy")
        result: ConfirmationPolicy = await self._call(
            "set_confirmation_policy", session_id, policy, timeout=timeout
        )
        return result

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = "default"
    ) -> ConfirmationPolicy:
        policy: ConfirmationPolicy = await self._call("get_confirmation_policy", session_id, timeout=timeout)
        return policy

    async def subscribe(self, session_id: str, *, timeout: Timeout = "default") -> AsyncClusterSubscription:
        handle, pipe, feed_id = await self._feed("subscription", session_id, (), timeout)
        return AsyncClusterSubscription(session_id, handle, pipe, feed_id)

    # store

    async def flush(self, timeout: float | None = None) -> None:
        await self._each_shard("hive_call", "flush", timeout=timeout)

    async def store_health(self, *, timeout: Timeout = "default") -> list[tuple[str, str]]:
        return [
            e
            for entries in await self._each_shard("hive_call", "store_health", timeout=timeout)
            for e in entries
        ]


def cluster_hive_factory(
    shards: int, *, ray_address: str | None = None, **cluster_options: Any
) -> Callable[..., Awaitable[AsyncClusterHive]]:
    """A ``hive_factory`` for :func:`sessionhive.loadtest.run_loadtest`: the load test drives a cluster.

    The load test's store must be one every shard can open (its temporary
    SQLite file works on one machine; PostgreSQL anywhere); its scripted
    model is shipped to every shard.
    """

    async def start(
        options: Any, *, store: str, workspace: Path, llm: Any, metrics: bool
    ) -> AsyncClusterHive:
        # Every shard serves its own /metrics; only the driven cluster lists them in the
        # targets file, not the one that verifies the store afterwards.
        cluster = dict(cluster_options)
        if not metrics:
            cluster.pop("metrics_sd_file", None)
        hive_options: dict[str, Any] = dict(getattr(options, "hive_options", {}) or {})
        if getattr(options, "actor_backend", None) is not None:
            hive_options["actor_backend"] = options.actor_backend
        return await AsyncClusterHive.start(
            shards, store, llm, ray_address, workspace=str(workspace), **cluster, **hive_options
        )

    return start


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (a host name other than localhost: not known)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
