"""Fallback models: when a model is overloaded, the call goes to the next one of ``LlmConfig.fallbacks``.

An overloaded provider (503, Anthropic's 529, a timeout, or a 429 asking to
wait longer than ``LlmConfig.fallback_after_s``) would stall every turn for
as long as it lasts. A :class:`FallbackClient` sends the call to its first
model; on overload that model's client gives up at once (no retries, which
would only wait), and the call goes to the next model, and so on. Any other
error is the model's answer and ends the call as before. The answer says
which model gave it (:attr:`LlmResponse.model`), so the turn's usage and the
metrics name the fallback. A fallback call is an ordinary model call: the
turn journals it and applies the confirmation and tool rules as to any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from sessionhive.llm.base import LlmClient, LlmRequest, LlmResponse, TextCallback
from sessionhive.model.errors import LlmError

__all__ = ["FallbackClient", "Overloaded"]


class Overloaded(LlmError):
    """A model was overloaded, and its client gave up at once to let a fallback answer."""


class FallbackClient:
    """An :class:`~sessionhive.llm.LlmClient` trying ``clients`` in order, past those overloaded.

    ``on_fallback(provider, model, fallback_model)`` is told each time a call
    leaves a model for the next one (the Hive counts it in
    ``sessionhive_llm_fallbacks_total``).
    """

    def __init__(
        self,
        clients: Sequence[LlmClient],
        *,
        on_fallback: Callable[[str, str, str], None] | None = None,
    ) -> None:
        if len(clients) < 2:
            raise ValueError("a FallbackClient needs a model and at least one fallback")
        self._clients = tuple(clients)
        self._on_fallback = on_fallback
        for client in self._clients[:-1]:
            # The last model has nowhere to go: it keeps its usual retries.
            if hasattr(client, "fall_back_on_overload"):
                client.fall_back_on_overload = True

    @property
    def provider(self) -> str:
        return self._clients[0].provider

    @property
    def model(self) -> str:
        return self._clients[0].model

    @property
    def records_metrics(self) -> bool:
        return bool(getattr(self._clients[0], "records_metrics", False))

    @property
    def clients(self) -> tuple[LlmClient, ...]:
        return self._clients

    async def complete(self, request: LlmRequest) -> LlmResponse:
        return await self._call(request, None)

    async def stream(self, request: LlmRequest, on_text: TextCallback) -> LlmResponse:
        return await self._call(request, on_text)

    async def _call(self, request: LlmRequest, on_text: TextCallback | None) -> LlmResponse:
        last = len(self._clients) - 1
        for index, client in enumerate(self._clients):
            try:
                if on_text is None:
                    response = await client.complete(request)
                else:
                    response = await client.stream(request, on_text)
            except Overloaded:
                if index == last:
                    raise
                following = self._clients[index + 1]
                if self._on_fallback is not None:
                    self._on_fallback(client.provider, client.model, following.model)
                continue
            return response if response.model else replace(response, model=client.model)
        raise AssertionError("unreachable: the last client raises or answers")

    async def aclose(self) -> None:
        for client in self._clients:
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()
