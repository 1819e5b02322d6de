"""``GET /v1/info``: what a service runs, for a client that must know before it measures or verifies.

Only kinds and names: a store is told by its kind (``sqlite``, ``postgresql``,
``file``, ``memory``), never its path or URL (they may hold a password), and a
model by provider and name, never its key or endpoint.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from sessionhive import AsyncHive, LlmConfig, ScriptedLlm, __version__
from sessionhive.loadtest.script import LoadtestScript
from sessionhive.persistence.stores import FileStore, MemoryStore, SqlStore

__all__ = ["service_info", "store_kind"]


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
            if isinstance(llm.replies, LoadtestScript):
                script = {
                    "tools_per_turn": llm.replies.tools_per_turn,
                    "confirm_rate": llm.replies.confirm_rate,
                }
    return {
        "version": __version__,
        "store": {"kind": store_kind(options.store)},
        "model": model,
        "llm_latency_s": latency,
        "loadtest_script": script,
        "actor_backend": options.backend_name(),
    }
