"""``Budget``: how much a session tree, a Hive or a tenant may spend on model calls.

A budget caps tokens, US dollars (priced by :mod:`sessionhive.llm.prices`)
and model calls; each cap is optional. It is checked before every model
call: a call is made only when what was spent, plus the prompt about to be
sent (estimated), plus this one call, stays within every cap. The answer's
own output is not known in advance, so the last call may take the spend past
a cap by at most one answer; no call starts after that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.validate import check_int

__all__ = ["Budget"]


@dataclass(frozen=True)
class Budget:
    """Caps on model spending; ``None`` leaves a cap out.

    - ``max_tokens``: prompt plus completion tokens of every model call.
    - ``max_usd``: their cost from the price table, in US dollars.
    - ``max_model_calls``: the number of model calls.
    """

    max_tokens: int | None = None
    max_usd: float | None = None
    max_model_calls: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None:
            check_int("Budget.max_tokens", self.max_tokens, minimum=1)
        if self.max_model_calls is not None:
            check_int("Budget.max_model_calls", self.max_model_calls, minimum=1)
        usd = self.max_usd
        if usd is not None and (
            isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd) or usd <= 0
        ):
            raise InvalidConfig(f"Budget.max_usd must be a positive number of dollars or None, got {usd!r}")

    def refuses(self, tokens: int, usd: float, calls: int) -> str | None:
        """Why a spend of ``tokens``, ``usd`` and ``calls`` would exceed this budget, or ``None``."""
        if self.max_model_calls is not None and calls > self.max_model_calls:
            return f"max_model_calls={self.max_model_calls}"
        if self.max_tokens is not None and tokens > self.max_tokens:
            return f"max_tokens={self.max_tokens}"
        if self.max_usd is not None and usd > self.max_usd:
            return f"max_usd={self.max_usd:g}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "max_usd": self.max_usd,
            "max_model_calls": self.max_model_calls,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        return cls(data.get("max_tokens"), data.get("max_usd"), data.get("max_model_calls"))
