"""Scale-out: hive shards on Ray, one owner per session, across processes and machines.

``ClusterHive`` / ``AsyncClusterHive`` offer the Hive API over ``shards`` Ray
actors (:class:`HiveShard`), each hosting one Hive. Sessions are placed by
rendezvous hashing of their tree's root id; each live session is owned by one
shard through a lease in the shared SQL store, and every write is fenced by
that lease. Install with ``pip install 'sessionhive[ray]'``.
"""

from __future__ import annotations

from sessionhive.cluster.hive import (
    AsyncClusterHive,
    AsyncClusterSubscription,
    AsyncClusterTurnStream,
    ClusterHive,
    ClusterSubscription,
    ClusterTurnStream,
    cluster_hive_factory,
)
from sessionhive.cluster.placement import Membership, owner_of
from sessionhive.cluster.shard import HiveShard

__all__ = [
    "AsyncClusterHive",
    "AsyncClusterSubscription",
    "AsyncClusterTurnStream",
    "ClusterHive",
    "ClusterSubscription",
    "ClusterTurnStream",
    "HiveShard",
    "Membership",
    "cluster_hive_factory",
    "owner_of",
]
