"""``GET /v1/info``: what a service runs, for a client that must know before it measures or verifies.

Only kinds and names: a store is told by its kind (``sqlite``, ``postgresql``,
``file``, ``memory``), never its path or URL (they may hold a password), and a
model by provider and name, never its key or endpoint.
"""

from __future__ import annotations

import posixpath
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sessionhive import AsyncHive, LlmConfig, ScriptedLlm, __version__
from sessionhive.persistence.stores import FileStore, MemoryStore, SqlStore

__all__ = ["public_health", "service_info", "store_kind"]


def store_kind(store: Any) -> str:
    """``sqlite``, ``postgresql`` (any SQL dialect by name), ``file`` or ``memory``; ``custom`` otherwise."""
    if isinstance(store, SqlStore):
        return str(store.engine.dialect.name)
    if isinstance(store, FileStore):
        return "file"
    if isinstance(store, MemoryStore):
        return "memory"
    if isinstance(store, str):
        text = store.strip()
        if text == "memory":
            return "memory"
        if text.startswith("file:"):
            return "file"
        if text.endswith((".db", ".sqlite", ".sqlite3")) and "://" not in text:
            return "sqlite"
        try:
            return make_url(text).get_backend_name()
        except ArgumentError:
            return "custom"
    return "custom"


def _loadtest_script(replies: object) -> dict[str, Any] | None:
    """The load test script's shape, if ``replies`` is one (``sessionhive.loadtest.LoadtestScript``).

    Known by its two fields, not its class: ``serve`` must not import ``loadtest``, whose
    command imports the client, which reads this package's route table (a cycle of packages).
    """
    tools, rate = getattr(replies, "tools_per_turn", None), getattr(replies, "confirm_rate", None)
    if isinstance(tools, int) and isinstance(rate, float | int):
        return {"tools_per_turn": tools, "confirm_rate": rate}
    return None


def service_info(hive: AsyncHive) -> dict[str, Any]:
    """The service's facts as JSON values (the ``GET /v1/info`` body)."""
    options = hive.core.options
    llm = options.llm
    model: dict[str, Any] | None = None
    latency: float | None = None
    script: dict[str, Any] | None = None
    if isinstance(llm, LlmConfig):
        model = {"provider": llm.provider, "model": llm.model}
    elif llm is not None:
        model = {"provider": llm.provider, "model": llm.model}
        if isinstance(llm, ScriptedLlm):
            latency = llm.latency
            script = _loadtest_script(llm.replies)
    return {
        "version": __version__,
        "store": {"kind": store_kind(options.store)},
        "model": model,
        "llm_latency_s": latency,
        "loadtest_script": script,
        "actor_backend": options.backend_name(),
    }


def _public_store_name(name: str) -> str:
    """A store's name as remote callers see it: its kind and file name, never a path on the server."""
    kind, sep, where = name.partition(":")
    if sep and where.startswith("/"):
        return f"{kind}:{posixpath.basename(where.rstrip('/')) or '/'}"
    return name


def public_health(health: list[tuple[str, str]]) -> list[dict[str, str]]:
    """``store_health()`` as remote callers see it: each store by kind and file name, with its status."""
    stores = []
    for name, status in health:
        shown = _public_store_name(name)
        stores.append({"name": shown, "status": status.replace(name, shown)})
    return stores
