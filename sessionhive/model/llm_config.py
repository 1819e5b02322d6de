"""``LlmConfig``: which model a session talks to. The API key never leaves memory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from sessionhive.model._plain import fields_dict
from sessionhive.model.errors import InvalidConfig

__all__ = ["PROVIDERS", "LlmConfig", "RateLimit"]

PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "scripted")


def _positive_or_none(owner: str, name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfig(f"{owner}.{name} must be a positive integer or None, got {value!r}")


@dataclass(frozen=True)
class RateLimit:
    """The limits of a provider account, as its dashboard states them; each one is optional.

    ``requests_per_minute`` and ``tokens_per_minute`` are the account's
    quotas (buckets that refill continuously, as providers enforce them);
    ``max_concurrent`` caps the calls in flight at once. Calls to one account
    (provider, base URL and key) share one limiter whatever the model; the
    limiter also learns the limits and what is left of them from the
    provider's rate-limit headers, so a limit left out here is found on the
    first answers.
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "max_concurrent"):
            _positive_or_none("RateLimit", name, getattr(self, name))

    def to_dict(self) -> dict[str, int | None]:
        return fields_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateLimit:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class LlmConfig:
    """A provider and model, with optional key, endpoint and limits.

    ``provider`` is ``"openai"`` (any OpenAI-compatible endpoint through
    ``base_url``: vLLM, Ollama, llama.cpp server, DeepSeek...), ``"anthropic"``
    or ``"scripted"``. Without ``api_key`` the provider's usual environment
    variable is read (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``) when the
    client is built. The key is left out of ``repr``, equality,
    :meth:`to_dict`, snapshots and ``get_llm_for_session``.

    ``rate_limit`` states the account's limits (see :class:`RateLimit`).
    ``fallbacks`` are the models tried in order when this one is overloaded
    (503, 529, a timeout, or a 429 asking to wait more than
    ``fallback_after_s`` seconds).
    """

    provider: str
    model: str
    api_key: str | None = field(default=None, repr=False, compare=False)
    base_url: str | None = None
    max_tokens: int = 4096
    temperature: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 4
    rate_limit: RateLimit | None = None
    fallbacks: tuple[LlmConfig, ...] = ()
    fallback_after_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.fallbacks, tuple):
            object.__setattr__(self, "fallbacks", tuple(self.fallbacks))
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise InvalidConfig("LlmConfig.rate_limit must be a RateLimit or None")
        if not all(isinstance(fallback, LlmConfig) for fallback in self.fallbacks):
            raise InvalidConfig("LlmConfig.fallbacks must be LlmConfig objects")
        if (
            isinstance(self.fallback_after_s, bool)
            or not isinstance(self.fallback_after_s, int | float)
            or not math.isfinite(self.fallback_after_s)
            or self.fallback_after_s < 0
        ):
            raise InvalidConfig(f"LlmConfig.fallback_after_s must be >= 0, got {self.fallback_after_s!r}")
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
        return replace(self, api_key=None, fallbacks=tuple(f.without_key() for f in self.fallbacks))

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
            "rate_limit": self.rate_limit.to_dict() if self.rate_limit is not None else None,
            "fallbacks": [fallback.to_dict() for fallback in self.fallbacks],
            "fallback_after_s": self.fallback_after_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlmConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "api_key"}
        if isinstance(known.get("rate_limit"), dict):
            known["rate_limit"] = RateLimit.from_dict(known["rate_limit"])
        known["fallbacks"] = tuple(cls.from_dict(item) for item in known.get("fallbacks") or ())
        return cls(**known)
