"""LLM clients: the :class:`LlmClient` protocol, :class:`ScriptedLlm`, and the OpenAI/Anthropic clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sessionhive.llm.base import LlmClient, LlmRequest, LlmResponse, TextCallback
from sessionhive.llm.fallback import FallbackClient
from sessionhive.llm.keys import EndpointKeys
from sessionhive.llm.scripted import Reply, ScriptedLlm
from sessionhive.model.llm_config import PROVIDERS, LlmConfig, RateLimit
from sessionhive.model.messages import ToolCall
from sessionhive.model.urls import BaseUrlPolicy

__all__ = [
    "PROVIDERS",
    "ClientCache",
    "FallbackClient",
    "LlmClient",
    "LlmConfig",
    "LlmRequest",
    "LlmResponse",
    "RateLimit",
    "Reply",
    "ScriptedLlm",
    "TextCallback",
    "ToolCall",
    "create_client",
]

if TYPE_CHECKING:
    from sessionhive.metrics.registry import HiveMetrics


def create_client(
    config: LlmConfig, *, metrics: HiveMetrics | None = None, keys: EndpointKeys | None = None
) -> LlmClient:
    """Build the client ``config`` names (imports the provider SDK only when needed).

    ``provider="scripted"`` gives the demo model (:meth:`ScriptedLlm.demo`).
    A missing key raises :class:`~sessionhive.LlmError` naming the variable to set.
    ``keys`` pairs the environment's keys with their endpoints (a Hive passes
    its own; ``None`` trusts the config's endpoint, as code that builds a
    client itself is the operator's): see :mod:`sessionhive.llm.keys`.
    """
    if config.fallbacks:
        chain = [_single_client(replace(config, fallbacks=()), metrics, keys)]
        chain.extend(create_client(fallback, metrics=metrics, keys=keys) for fallback in config.fallbacks)
        return FallbackClient(chain, on_fallback=_fallback_counter(metrics))
    return _single_client(config, metrics, keys)


def _fallback_counter(metrics: HiveMetrics | None) -> Callable[[str, str, str], None] | None:
    if metrics is None:
        return None
    counter = metrics.llm_fallbacks

    def count(provider: str, model: str, fallback_model: str) -> None:
        counter.labels(provider, model, fallback_model).inc()

    return count


def _single_client(config: LlmConfig, metrics: HiveMetrics | None, keys: EndpointKeys | None) -> LlmClient:
    if config.provider == "scripted":
        return ScriptedLlm.demo()
    if config.provider == "openai":
        from sessionhive.llm.openai import OpenAiClient

        return OpenAiClient(config, metrics=metrics, keys=keys)
    from sessionhive.llm.anthropic import AnthropicClient

    return AnthropicClient(config, metrics=metrics, keys=keys)


def _cache_key(config: LlmConfig) -> tuple[Any, ...]:
    # Fallbacks' keys count too: the same models with another key are another client.
    keys = (config.api_key, *(fallback.api_key for fallback in config.fallbacks))
    return (keys, json.dumps(config.to_dict(), sort_keys=True))


class ClientCache:
    """One client per distinct :class:`LlmConfig` in a Hive, shared by its sessions.

    Building an SDK client costs tens of milliseconds and a connection pool;
    sessions configured alike share one. Entries are only ever added
    (``dict.setdefault`` is atomic), never changed, so session actors may call
    :meth:`get` concurrently without a lock.

    Every client of a Hive is built here, so this is where its endpoint rules
    hold: ``policy`` refuses a ``base_url`` the operator did not allow (before
    any client exists, so nothing is sent), and ``keys`` keeps each
    environment key to its own endpoints. Both are fixed for the Hive's life,
    so a config found in the cache has passed them already.
    """

    def __init__(
        self,
        metrics: HiveMetrics | None = None,
        *,
        policy: BaseUrlPolicy | None = None,
        keys: EndpointKeys | None = None,
    ) -> None:
        self._metrics = metrics
        self._policy = policy if policy is not None else BaseUrlPolicy()
        self._keys = keys if keys is not None else EndpointKeys(policy=self._policy)
        self._clients: dict[tuple[Any, ...], LlmClient] = {}

    @property
    def policy(self) -> BaseUrlPolicy:
        """The base URLs this Hive accepts."""
        return self._policy

    def get(self, config: LlmConfig) -> LlmClient:
        """The shared client for ``config``; raises :class:`~sessionhive.BaseUrlNotAllowed` or
        :class:`~sessionhive.LlmError` (no key for its endpoint) before anything is sent."""
        key = _cache_key(config)
        client = self._clients.get(key)
        if client is None:
            for model in (config, *config.fallbacks):
                if model.provider != "scripted":
                    self._policy.check(model.base_url)
            built = create_client(config, metrics=self._metrics, keys=self._keys)
            client = self._clients.setdefault(key, built)
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
