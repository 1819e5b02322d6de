"""Which endpoint a provider key belongs to: a key from the environment goes only where the operator sent it.

``OPENAI_API_KEY`` and ``ANTHROPIC_API_KEY`` are the operator's. They belong
to the provider's own endpoint, to the SDK's ``OPENAI_BASE_URL`` /
``ANTHROPIC_BASE_URL`` when the environment sets one, and to the base URL
the operator gave the Hive (``Hive.start(llm=LlmConfig(base_url=...))``,
``sessionhive serve --base-url``). A session whose ``base_url`` is another
endpoint gets the key it carries itself (``LlmConfig.api_key``), or none:

* with a key in the environment, building its client fails, saying the key
  is not sent there (the session's turns then raise
  :class:`~sessionhive.LlmNotConfigured` with that text);
* without one, or when the operator allowed that endpoint explicitly
  (``allow_base_urls``), the provider's placeholder goes instead, as a
  local server that wants no key expects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sessionhive.model.errors import InvalidConfig, LlmError
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.urls import BaseUrlPolicy, Endpoint, shown_url

__all__ = ["EndpointKeys", "ProviderEndpoint", "resolve_key"]


@dataclass(frozen=True)
class ProviderEndpoint:
    """A provider's key variable, its SDK's base-URL variable and its own endpoint."""

    name: str
    key_env_var: str
    base_url_env_var: str
    default_endpoint: str


@dataclass(frozen=True)
class EndpointKeys:
    """A Hive's pairing of keys with endpoints.

    ``operator_base_urls`` maps a provider to the base URL the operator
    configured for it (the Hive's own ``llm``); ``policy`` is the Hive's
    :class:`~sessionhive.model.urls.BaseUrlPolicy`, whose explicitly allowed
    endpoints are used without a key rather than refused.
    """

    operator_base_urls: tuple[tuple[str, str], ...] = ()
    policy: BaseUrlPolicy | None = field(default=None, compare=False)

    @classmethod
    def for_hive(cls, operator_llm: LlmConfig | None, policy: BaseUrlPolicy | None) -> EndpointKeys:
        if operator_llm is None or operator_llm.base_url is None:
            return cls((), policy)
        return cls(((operator_llm.provider, operator_llm.base_url),), policy)

    def homes(self, provider: ProviderEndpoint) -> tuple[str, ...]:
        """The base URLs the environment's key for ``provider`` belongs to."""
        homes = [provider.default_endpoint]
        from_env = os.environ.get(provider.base_url_env_var)
        if from_env:
            homes.append(from_env)
        homes.extend(url for name, url in self.operator_base_urls if name == provider.name)
        return tuple(homes)

    def is_home(self, provider: ProviderEndpoint, base_url: str) -> bool:
        homes = self.homes(provider)
        if base_url in homes:
            return True
        try:
            endpoint = Endpoint.parse(base_url)
        except InvalidConfig:
            return False
        for home in homes:
            try:
                if Endpoint.parse(home).covers(endpoint):
                    return True
            except InvalidConfig:
                continue
        return False


def resolve_key(
    config: LlmConfig, provider: ProviderEndpoint, placeholder: str | None, keys: EndpointKeys | None
) -> str:
    """The key a client for ``config`` sends, or :class:`~sessionhive.LlmError` saying why there is none.

    ``keys`` is ``None`` for a client built directly (``create_client``,
    ``OpenAiClient(...)``): its code is the operator's, so its config's
    endpoint is a home of the environment's key. ``placeholder`` is what a
    keyless endpoint gets (``None``: a key is required).
    """
    if config.api_key:
        return config.api_key
    env_key = os.environ.get(provider.key_env_var) or None
    foreign = keys is not None and config.base_url is not None and not keys.is_home(provider, config.base_url)
    if not foreign:
        key = env_key or placeholder
        if not key:
            raise LlmError(
                f"no API key for {provider.name} model {config.model!r}: set the {provider.key_env_var} "
                "environment variable or pass LlmConfig(api_key=...)"
            )
        return key
    assert keys is not None and config.base_url is not None
    allowed = keys.policy is not None and keys.policy.allows_explicitly(config.base_url)
    if placeholder and (env_key is None or allowed):
        return placeholder
    homes = ", ".join(shown_url(home) for home in keys.homes(provider))
    raise LlmError(
        f"{provider.key_env_var} belongs to {homes}, and is never sent to another endpoint; base_url "
        f"{shown_url(config.base_url)!r} is another one, so the model needs a key of its own: "
        "pass LlmConfig(api_key=...)"
    )
