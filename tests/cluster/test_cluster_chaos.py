"""The cluster across two Ray nodes on this machine (``ray.cluster_utils.Cluster``), and the chaos test.

The cluster is joined by address, as a deployment would. The chaos test
kills (SIGKILL) or pauses (SIGSTOP past the lease, then SIGCONT) a shard every
few seconds, until it made at least three faults of each kind (about half a
minute), under 25 client threads with 4 s timeouts,
then proves from the store and the write log that each session's turns are
stored in the order its client sent them, no acknowledged turn was lost or
torn, none stored twice, none its client was told failed stored (only an
``OutcomeUnknown`` one may be), and no two shards ever wrote one session at
the same time.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from sessionhive import Reply, ScriptedLlm, SessionNotFound  # noqa: E402 - after the importorskip
from sessionhive.cluster import ClusterHive  # noqa: E402
from tests.cluster.cluster_helpers import (  # noqa: E402
    SYNC,
    Load,
    fresh_schema,
    postgres_unreachable,
    verify_histories,
    verify_single_writer,
    wait_until,
)

# One Ray per machine at a time: every test that starts Ray runs in one xdist worker, one after another.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("ray")]

#: Kills and pauses the chaos test makes at least (each round is one of them, chosen at random).
FAULTS_OF_EACH_KIND = 3
NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 100 * 1024 * 1024}


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Any]:
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(f"!!! PostgreSQL is NOT REACHABLE, cluster tests skipped: {reason}")
    with pytest.MonkeyPatch.context() as patch:
        # Ray rewrites a loopback address to the machine's address when a driver joins;
        # Ray's own switch for single-machine clusters keeps every connection on 127.0.0.1.
        patch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        cluster = cluster_utils.Cluster(
            initialize_head=True, head_node_args={**NODE, "include_dashboard": False}
        )
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        yield cluster
        cluster.shutdown()


@pytest.fixture
def pg_url(two_nodes: Any) -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def faults_of(faults: list[str], kind: str) -> int:
    return sum(fault.startswith(kind) for fault in faults)


def _pid(hive: ClusterHive, shard_id: str) -> int | None:
    try:
        info = ray.get(hive.cluster.handle(shard_id).ping.remote(), timeout=5)
    except Exception:  # restarting, or paused by the previous round: skip this round
        return None
    return int(info["pid"])


def test_shards_on_two_nodes_serve_one_api_and_survive_a_killed_shard(two_nodes: Any, pg_url: str) -> None:
    with ClusterHive.start(
        shards=2, store=pg_url, llm=ScriptedLlm([Reply("ok")]), ray_address=two_nodes.address, lease_ttl=2.0
    ) as hive:
        info = hive.shard_info()
        assert len({entry["node"] for entry in info.values()}) == 2  # one shard per node
        hive.create_session("root", SYNC)
        hive.create_child_session("root", "root/kid", SYNC)
        assert hive.generate("root/kid", "root/kid#1").text == "ok"
        shard = hive.shard_of("root")
        os.kill(info[shard]["pid"], signal.SIGKILL)
        wait_until(
            lambda: hive.shard_info()[shard]["pid"] != info[shard]["pid"], 60, "Ray restarts the shard"
        )
        # Its sessions come back from the store, on whichever shard owns them now.
        assert hive.generate("root/kid", "root/kid#2", timeout=30).text == "ok"
        assert [m.text for m in hive.history("root/kid") if m.role == "user"] == ["root/kid#1", "root/kid#2"]
        with pytest.raises(SessionNotFound):
            hive.history("ghost")
    assert not ray.is_initialized()  # the cluster joined Ray by address, and let go of it


@pytest.mark.slow
def test_chaos_kill_or_pause_a_shard_every_few_seconds(two_nodes: Any, pg_url: str) -> None:
    lease_ttl = 1.5  # suspect_after defaults to 0.6 of it
    rng = random.Random(13)
    faults: list[str] = []
    with ClusterHive.start(
        shards=3,
        store=pg_url,
        llm=ScriptedLlm([Reply("ok")]),
        ray_address=two_nodes.address,
        lease_ttl=lease_ttl,
        ping_interval=0.25,
        audit_writes=True,
    ) as hive:
        sessions = [f"c{i}" for i in range(50)]
        for sid in sessions:
            hive.create_session(sid)  # default settings: "durable" is the default
        with Load(hive, sessions, workers=25, timeout=4) as load:
            load.wait_for_turns(50)
            # Faults every few seconds until each kind happened FAULTS_OF_EACH_KIND times: the
            # proofs below need faults of both kinds, not a fixed length of chaos.
            deadline = time.monotonic() + 90
            while min(faults_of(faults, "kill"), faults_of(faults, "pause")) < FAULTS_OF_EACH_KIND:
                assert time.monotonic() < deadline, f"too few faults in 90 s: {faults}"
                shard_id = rng.choice(hive.cluster.shard_ids())
                pid = _pid(hive, shard_id)
                if pid is not None:
                    if rng.random() < 0.5:
                        os.kill(pid, signal.SIGKILL)
                        faults.append(f"kill {shard_id}")
                        time.sleep(3.0)  # the fault schedule, not a wait for an actor
                    else:
                        os.kill(pid, signal.SIGSTOP)
                        faults.append(f"pause {shard_id}")
                        try:
                            time.sleep(lease_ttl + 1.0)  # paused past its lease
                        finally:
                            os.kill(pid, signal.SIGCONT)
                        time.sleep(1.5)
                else:
                    time.sleep(0.5)
            during = load.acked_count()
            load.wait_for_turns(during + 30)  # and the cluster still serves every worker afterwards
        assert not load.unexpected, load.unexpected[:3]
    verify_histories(pg_url, load)
    verify_single_writer(pg_url)
