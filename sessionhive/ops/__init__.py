"""The operations kit shipped with sessionhive: a Grafana dashboard and Prometheus recording and alert rules.

``path("prometheus-rules.yml")`` gives the file's location in the installed
package; copy it into Prometheus's ``rule_files`` and import
``grafana-dashboard.json`` into Grafana (it asks for the Prometheus data source).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["FILES", "path"]

FILES = ("grafana-dashboard.json", "prometheus-rules.yml", "prometheus-rules.test.yml")


def path(name: str) -> Path:
    """Where the kit's file ``name`` is installed."""
    if name not in FILES:
        raise ValueError(f"the operations kit has no file {name!r}; it has {FILES}")
    return Path(str(resources.files("sessionhive.ops").joinpath(name)))
