"""Scale-out: hive shards on Ray, one owner per session, across processes and machines.

``AsyncClusterHive`` (``aio``) offers the Hive API over ``shards`` Ray
actors (:class:`HiveShard`, ``shard``), each hosting one Hive; ``ClusterHive``
(``hive``) runs it on a loop thread for synchronous callers. ``membership``
starts the shards, places sessions and detects silent shards; ``transport``
carries the typed calls (``messages``) to them in batches under one
deadline/retry rule. Sessions are placed by
rendezvous hashing of their tree's root id; each live session is owned by one
shard through a lease in the shared SQL store, and every write is fenced by
that lease. Install with ``pip install 'sessionhive[ray]'``.
"""

from __future__ import annotations

from sessionhive.cluster.aio import (
    AsyncClusterHive,
    AsyncClusterSubscription,
    AsyncClusterTurnStream,
    cluster_hive_factory,
)
from sessionhive.cluster.hive import ClusterHive, ClusterSubscription, ClusterTurnStream
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
