"""LLM clients: the :class:`LlmClient` protocol, :class:`ScriptedLlm`, and the OpenAI/Anthropic clients."""

from __future__ import annotations

from sessionhive.llm.base import LlmClient, LlmRequest, LlmResponse, TextCallback
from sessionhive.llm.config import PROVIDERS, LlmConfig
from sessionhive.llm.scripted import Reply, ScriptedLlm

__all__ = [
    "PROVIDERS",
    "LlmClient",
    "LlmConfig",
    "LlmRequest",
    "LlmResponse",
    "Reply",
    "ScriptedLlm",
    "TextCallback",
    "create_client",
]


def create_client(config: LlmConfig) -> LlmClient:
    """Build the client ``config`` names (imports the provider SDK only when needed)."""
    if config.provider == "scripted":
        return ScriptedLlm.demo()
    if config.provider == "openai":
        from sessionhive.llm.openai import OpenAiClient

        return OpenAiClient(config)
    from sessionhive.llm.anthropic import AnthropicClient

    return AnthropicClient(config)
