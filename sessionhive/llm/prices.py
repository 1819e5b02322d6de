"""The price table: what a model call costs, in US dollars per million tokens.

Shipped for the common OpenAI and Anthropic models at their public list
prices (:data:`PRICES_AS_OF`, from :data:`PRICES_SOURCES`); prices change, so
the table is overridable: from a JSON file named by the environment variable
``SESSIONHIVE_PRICES`` (read once, at the first model call priced), or from
code with :func:`set_prices`. A model is found by its exact name, else by
the longest table name it starts with followed by ``-`` (a dated snapshot
such as ``gpt-4o-2024-08-06`` takes ``gpt-4o``'s price). A model missing
from the table costs nothing: ``Budget.max_usd`` cannot cap it, so price it.

The JSON file maps model names to ``{"input": ..., "output": ...,
"cached_input": ...}`` (USD per million tokens; ``cached_input`` defaults to
``input``), laid over the shipped table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import Usage

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_AS_OF",
    "PRICES_ENV",
    "PRICES_SOURCES",
    "Price",
    "PriceTable",
    "current_prices",
    "set_prices",
]

#: The environment variable naming a JSON price file laid over the shipped table.
PRICES_ENV = "SESSIONHIVE_PRICES"

# The date and pages the shipped list prices were taken from. They were copied from the
# providers' published list prices as of that date (standard tier, no batch discount, prompts
# under Anthropic's long-context threshold), without network access to re-check them here:
# override them (SESSIONHIVE_PRICES or set_prices) when your contract or the lists differ.
PRICES_AS_OF = "2025-11-24"
PRICES_SOURCES = (
    "https://openai.com/api/pricing/",
    "https://docs.anthropic.com/en/docs/about-claude/pricing",
)


@dataclass(frozen=True)
class Price:
    """USD per million tokens: prompt (``input``), completion (``output``), cached prompt."""

    input: float
    output: float
    cached_input: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input"):
            value = getattr(self, name)
            if value is None and name == "cached_input":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
                raise InvalidConfig(f"Price.{name} must be a number of USD per million tokens, got {value!r}")

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs at this price (cached prompt tokens at the cached rate)."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (
            (usage.prompt_tokens - cached) * self.input
            + cached * cached_rate
            + usage.completion_tokens * self.output
        ) / 1_000_000

    def to_dict(self) -> dict[str, float]:
        cached = self.input if self.cached_input is None else self.cached_input
        return {"input": self.input, "output": self.output, "cached_input": cached}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Price:
        if not isinstance(data, Mapping) or "input" not in data or "output" not in data:
            raise InvalidConfig(f"a price needs 'input' and 'output' USD per million tokens, got {data!r}")
        return cls(data["input"], data["output"], data.get("cached_input"))


class PriceTable:
    """Prices by model name (see the module docstring for how a name is found)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)
        # Longest first: "gpt-4o-mini-2024-07-18" must find "gpt-4o-mini" before "gpt-4o".
        self._by_length = sorted(self._prices, key=len, reverse=True)

    def price(self, model: str) -> Price | None:
        """The price of ``model``, or ``None`` when the table has none."""
        found = self._prices.get(model)
        if found is not None:
            return found
        for name in self._by_length:
            if model.startswith(name + "-"):
                return self._prices[name]
        return None

    def cost(self, model: str, usage: Usage) -> float:
        """What ``usage`` of ``model`` costs in USD (0 for a model the table does not price)."""
        price = self.price(model)
        return 0.0 if price is None else price.cost(usage)

    def with_prices(self, prices: Mapping[str, Price | Mapping[str, Any]]) -> PriceTable:
        """This table with ``prices`` added or replaced (values: :class:`Price` or its dict)."""
        merged = dict(self._prices)
        for model, price in prices.items():
            merged[model] = price if isinstance(price, Price) else Price.from_dict(price)
        return PriceTable(merged)

    def with_file(self, path: str | os.PathLike[str]) -> PriceTable:
        """This table with the prices of a JSON file laid over it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidConfig(f"cannot read the price file {os.fspath(path)!r}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidConfig(f"the price file {os.fspath(path)!r} must map model names to prices")
        return self.with_prices(data)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {model: price.to_dict() for model, price in sorted(self._prices.items())}


def _p(input_usd: float, output_usd: float, cached_usd: float) -> Price:
    return Price(input_usd, output_usd, cached_usd)


#: The shipped table: list prices as of :data:`PRICES_AS_OF` (USD per million tokens).
DEFAULT_PRICES = PriceTable(
    {
        # OpenAI (https://openai.com/api/pricing/), input / output / cached input
        "gpt-5": _p(1.25, 10.00, 0.125),
        "gpt-5-mini": _p(0.25, 2.00, 0.025),
        "gpt-5-nano": _p(0.05, 0.40, 0.005),
        "gpt-4.1": _p(2.00, 8.00, 0.50),
        "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
        "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
        "gpt-4o": _p(2.50, 10.00, 1.25),
        "gpt-4o-mini": _p(0.15, 0.60, 0.075),
        "o1": _p(15.00, 60.00, 7.50),
        "o3": _p(2.00, 8.00, 0.50),
        "o3-pro": _p(20.00, 80.00, 20.00),
        "o3-mini": _p(1.10, 4.40, 0.55),
        "o4-mini": _p(1.10, 4.40, 0.275),
        "gpt-4-turbo": _p(10.00, 30.00, 10.00),
        "gpt-3.5-turbo": _p(0.50, 1.50, 0.50),
        # Anthropic (https://docs.anthropic.com/en/docs/about-claude/pricing): cache reads at
        # 0.1x input; cache writes are counted as input (they cost 1.25x: a small under-count).
        "claude-opus-4-5": _p(5.00, 25.00, 0.50),
        "claude-opus-4-1": _p(15.00, 75.00, 1.50),
        "claude-opus-4": _p(15.00, 75.00, 1.50),
        "claude-sonnet-4-5": _p(3.00, 15.00, 0.30),
        "claude-sonnet-4": _p(3.00, 15.00, 0.30),
        "claude-haiku-4-5": _p(1.00, 5.00, 0.10),
        "claude-3-7-sonnet": _p(3.00, 15.00, 0.30),
        "claude-3-5-sonnet": _p(3.00, 15.00, 0.30),
        "claude-3-5-haiku": _p(0.80, 4.00, 0.08),
        "claude-3-opus": _p(15.00, 75.00, 1.50),
        "claude-3-haiku": _p(0.25, 1.25, 0.03),
    }
)

_override: PriceTable | None = None
_from_env: tuple[str, PriceTable] | None = None


def set_prices(table: PriceTable | Mapping[str, Price | Mapping[str, Any]] | None) -> None:
    """Price model calls from now on with ``table`` (a mapping is laid over the shipped table).

    ``None`` goes back to the shipped table (with ``SESSIONHIVE_PRICES``, if set).
    The table is process-wide: every Hive of the process prices with it.
    """
    # One table per process, replaced whole (no lock: a rebinding is atomic).
    global _override
    _override = table if table is None or isinstance(table, PriceTable) else DEFAULT_PRICES.with_prices(table)


def current_prices() -> PriceTable:
    """The table model calls are priced with: :func:`set_prices`'s, else the shipped one + the file."""
    # The file's table is cached, replaced whole when the variable names another file.
    global _from_env
    if _override is not None:
        return _override
    path = os.environ.get(PRICES_ENV)
    if not path:
        return DEFAULT_PRICES
    cached = _from_env
    if cached is None or cached[0] != path:
        cached = _from_env = (path, DEFAULT_PRICES.with_file(path))
    return cached[1]
