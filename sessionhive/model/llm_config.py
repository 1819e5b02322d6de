"""``LlmConfig``: which model a session talks to. The API key never leaves memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from sessionhive.model.errors import InvalidConfig

__all__ = ["PROVIDERS", "LlmConfig"]

PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "scripted")


@dataclass(frozen=True)
class LlmConfig:
    """A provider and model, with optional key, endpoint and limits.

    ``provider`` is ``"openai"`` (any OpenAI-compatible endpoint through
    ``base_url``: vLLM, Ollama, llama.cpp server, DeepSeek...), ``"anthropic"``
    or ``"scripted"``. Without ``api_key`` the provider's usual environment
    variable is read (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``) when the
    client is built. The key is left out of ``repr``, equality,
    :meth:`to_dict`, snapshots and ``get_llm_for_session``.
    """

    provider: str
    model: str
    api_key: str | None = field(default=None, repr=False, compare=False)
    base_url: str | None = None
    max_tokens: int = 4096
    temperature: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 4

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise InvalidConfig(f"LlmConfig.provider must be one of {PROVIDERS}, got {self.provider!r}")
        if not isinstance(self.model, str) or not self.model:
            raise InvalidConfig("LlmConfig.model must name a model, e.g. 'gpt-4o-mini'")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise InvalidConfig("LlmConfig.api_key must be a string or None")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidConfig(f"LlmConfig.max_tokens must be a positive integer, got {self.max_tokens!r}")
        if (
            not isinstance(self.timeout_s, int | float)
            or not math.isfinite(self.timeout_s)
            or self.timeout_s <= 0
        ):
            raise InvalidConfig(f"LlmConfig.timeout_s must be positive, got {self.timeout_s!r}")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise InvalidConfig(f"LlmConfig.max_retries must be an integer >= 0, got {self.max_retries!r}")

    def without_key(self) -> LlmConfig:
        """This config with the API key removed: what may be stored or returned."""
        return replace(self, api_key=None)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON, never including the API key."""
        return {
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlmConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "api_key"}
        return cls(**known)
