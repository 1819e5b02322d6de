"""LLM clients: the :class:`LlmClient` protocol, :class:`ScriptedLlm`, and the OpenAI/Anthropic clients."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sessionhive.llm.base import LlmClient, LlmRequest, LlmResponse, TextCallback
from sessionhive.llm.scripted import Reply, ScriptedLlm
from sessionhive.model.llm_config import PROVIDERS, LlmConfig
from sessionhive.model.messages import ToolCall

__all__ = [
    "PROVIDERS",
    "ClientCache",
    "LlmClient",
    "LlmConfig",
    "LlmRequest",
    "LlmResponse",
    "Reply",
    "ScriptedLlm",
    "TextCallback",
    "ToolCall",
    "create_client",
]

if TYPE_CHECKING:
    from sessionhive.metrics.registry import HiveMetrics


def create_client(config: LlmConfig, *, metrics: HiveMetrics | None = None) -> LlmClient:
    """Build the client ``config`` names (imports the provider SDK only when needed).

    ``provider="scripted"`` gives the demo model (:meth:`ScriptedLlm.demo`).
    A missing key raises :class:`~sessionhive.LlmError` naming the variable to set.
    """
    if config.provider == "scripted":
        return ScriptedLlm.demo()
    if config.provider == "openai":
        from sessionhive.llm.openai import OpenAiClient

        return OpenAiClient(config, metrics=metrics)
    from sessionhive.llm.anthropic import AnthropicClient

    return AnthropicClient(config, metrics=metrics)


def _cache_key(config: LlmConfig) -> tuple[Any, ...]:
    return (config.api_key, *config.to_dict().values())


class ClientCache:
    """One client per distinct :class:`LlmConfig` in a Hive, shared by its sessions.

    Building an SDK client costs tens of milliseconds and a connection pool;
    sessions configured alike share one. Entries are only ever added
    (``dict.setdefault`` is atomic), never changed, so session actors may call
    :meth:`get` concurrently without a lock.
    """

    def __init__(self, metrics: HiveMetrics | None = None) -> None:
        self._metrics = metrics
        self._clients: dict[tuple[Any, ...], LlmClient] = {}

    def get(self, config: LlmConfig) -> LlmClient:
        key = _cache_key(config)
        client = self._clients.get(key)
        if client is None:
            client = self._clients.setdefault(key, create_client(config, metrics=self._metrics))
        return client

    async def aclose(self) -> None:
        """Close every client's connections opened on the running loop."""
        for client in list(self._clients.values()):
            close = getattr(client, "aclose", None)
            if close is not None:
                try:
                    await asyncio.wait_for(close(), 5)
                except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                    pass
