"""Membership and placement of a cluster's shards: who serves, where a session lives, who went silent.

:class:`Cluster` starts the shards (Ray actors, spread over the alive nodes),
keeps the numbered membership (the serving shards) and the placement (a
session's shard is the rendezvous-hash winner for its tree's root among
them), caches tree roots, and runs the failure detector: a shard silent for
``suspect_after`` seconds leaves the membership (its sessions move, once their
leases expire), and comes back once it answers again. It also keeps the
Prometheus ``file_sd`` targets file of the shards' ``/metrics``. Both facades
share one :class:`Cluster`; nothing here waits on a session call.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sessionhive import InvalidConfig, ToolDefinition, ToolExecutor
from sessionhive.api import DEFAULT_CALL_TIMEOUT
from sessionhive.cluster.placement import Membership
from sessionhive.cluster.shard import HiveShard

__all__ = ["SUSPECT_SHARE_OF_LEASE", "Cluster", "ClusterSettings", "start_cluster"]

log = logging.getLogger("sessionhive.cluster")

#: ``suspect_after`` as a share of ``lease_ttl``: a silent shard leaves the membership while its
#: leases still run, so that its sessions are placed elsewhere by the time the leases expire
#: (an 8 s pause with a 5 s lease: sessions answered again after about the lease, not after the pause).
SUSPECT_SHARE_OF_LEASE = 0.6


@dataclass(frozen=True)
class ClusterSettings:
    """How a cluster runs: the keyword arguments of ``AsyncClusterHive.start`` (and ``ClusterHive.start``)."""

    lease_ttl: float = 10.0
    suspect_after: float | None = None
    ping_interval: float = 0.5
    audit_writes: bool = False
    metrics_sd_file: str | os.PathLike[str] | None = None
    metrics_addr: str = "127.0.0.1"
    metrics_advertise_host: str | None = None
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    ray_options: dict[str, Any] | None = None
    hive_options: dict[str, Any] = field(default_factory=dict)

    def silence_limit(self) -> float:
        """Seconds of silence before a shard is suspected: ``suspect_after``, or its share of the lease."""
        return (
            self.suspect_after if self.suspect_after is not None else SUSPECT_SHARE_OF_LEASE * self.lease_ttl
        )


class Cluster:
    """Membership, placement, root cache and failure detection of one cluster's shards."""

    def __init__(
        self, store_url: str, llm: Any, shards: int, settings: ClusterSettings, *, owns_ray: bool, name: str
    ) -> None:
        self.call_timeout = settings.call_timeout
        self.lease_ttl = settings.lease_ttl
        self._store_url = store_url
        self._llm = llm
        self._hive_options = settings.hive_options
        self._audit = settings.audit_writes
        self._suspect_after = settings.silence_limit()
        self._ping_interval = settings.ping_interval
        self._sd_file = Path(settings.metrics_sd_file) if settings.metrics_sd_file is not None else None
        self._metrics_addr = settings.metrics_addr
        self._advertise_host = settings.metrics_advertise_host
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
        infos = ray.get([h.ping.remote() for _sid, h in handles], timeout=max(120.0, self.call_timeout))
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

    def membership_arg(self) -> tuple[int, tuple[str, ...]]:
        membership = self.membership
        return (membership.version, membership.shard_ids)

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
            refs = [self._handles[sid].set_membership.remote(new.version, new.shard_ids) for sid in reachable]
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

    def shard_info(self) -> dict[str, dict[str, Any]]:
        """Per shard: its process id, metrics address, leases held, fenced writes, Hive restarts."""
        out: dict[str, dict[str, Any]] = {}
        for shard_id in self.shard_ids():
            handle = self.handle(shard_id)
            info = dict(ray.get(handle.ping.remote(), timeout=self.call_timeout))
            info.update(ray.get(handle.stats.remote(), timeout=self.call_timeout))
            out[shard_id] = info
        return out

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


def start_cluster(
    store: str, llm: Any, ray_address: str | None, shards: int, settings: ClusterSettings
) -> Cluster:
    """Check the arguments, start (or join) Ray, start the shards: what both facades' ``start`` do."""
    if not isinstance(store, str) or "://" not in store or store.startswith("file:"):
        raise InvalidConfig(
            "a cluster needs a SQL store every shard can reach, as a URL "
            "(postgresql://user@host/db, or sqlite:///path.db on one machine)"
        )
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidConfig(f"shards must be a positive integer, got {shards!r}")
    if "metrics" in settings.hive_options:
        raise InvalidConfig("each shard serves its own /metrics; use metrics_sd_file= to find them")
    advertised = settings.metrics_advertise_host
    if advertised is not None and _is_loopback(settings.metrics_addr) and not _is_loopback(advertised):
        raise InvalidConfig(
            f"the shards' /metrics listen on {settings.metrics_addr}, which {advertised} cannot reach; "
            "set metrics_addr (--metrics-addr) to an address of this host, or 0.0.0.0, "
            "to advertise another host"
        )
    owns_ray = False
    if not ray.is_initialized():
        options = dict(settings.ray_options or {})
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
    return Cluster(store, llm, shards, settings, owns_ray=owns_ray, name=os.urandom(4).hex())


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (a host name other than localhost: not known)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
