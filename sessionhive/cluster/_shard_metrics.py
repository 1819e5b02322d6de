"""A shard's own ``/metrics`` endpoint: its current Hive's samples, each with a ``shard`` label.

A shard restarts its Hive (a "refresh"), so the endpoint reads whichever
Hive is current at each scrape rather than one registry fixed at start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import ray
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["serve_shard_metrics"]

#: Listen addresses that mean "every interface": not an address anyone can reach.
_ANY_ADDRESS = frozenset({"", "0.0.0.0"})


class _ShardLabel(Collector):
    """Every sample of the current Hive's registry, with a ``shard`` label added."""

    def __init__(self, shard_id: str, registry: Callable[[], CollectorRegistry | None]) -> None:
        self._shard_id = shard_id
        self._registry = registry

    def collect(self) -> Any:
        registry = self._registry()
        if registry is None:
            return
        for family in registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                labelled.add_sample(
                    sample.name,
                    {**sample.labels, "shard": self._shard_id},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )
            yield labelled


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_shard_metrics(
    shard_id: str, listen: str, registry: Callable[[], CollectorRegistry | None]
) -> tuple[WSGIServer, str]:
    """Serve the shard's metrics on ``listen`` (port chosen by the system); the server and its address."""
    labelled = CollectorRegistry(auto_describe=False)
    labelled.register(_ShardLabel(shard_id, registry))
    server = make_server(listen, 0, make_wsgi_app(labelled), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="sessionhive-shard-metrics", daemon=True).start()
    # Listening on every interface: the node's address is the one to reach it at.
    node_ip: Any = ray.util.get_node_ip_address  # untyped in Ray
    host = listen if listen not in _ANY_ADDRESS else node_ip()
    return server, f"{host}:{server.server_port}"
