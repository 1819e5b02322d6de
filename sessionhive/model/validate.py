"""Numeric argument checks written once: an int that is not a bool, a finite real number, in range.

Every constructor that takes a count or a duration from a user checks it
here, so that ``True`` is never accepted as ``1``, ``nan`` never as a
timeout, and the error always names the argument and the value given.
"""

from __future__ import annotations

import math
from typing import Any

from sessionhive.model.errors import InvalidConfig

__all__ = ["check_int", "check_number", "check_positive_int", "check_positive_number"]


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) within ``[minimum, maximum]``; else InvalidConfig.

    ``name`` is how the caller spells the argument (``"SessionConfig.max_tool_rounds"``).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidConfig(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is an ``int`` >= 1 (not a ``bool``); else InvalidConfig."""
    return check_int(name, value, minimum=1)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float = 0.0,
    exclusive_minimum: bool = False,
    maximum: float | None = None,
    unit: str = "",
) -> float:
    """``value`` as a float if it is a finite real number (not a ``bool``) in range; else InvalidConfig.

    The range is ``[minimum, maximum]``, or ``(minimum, maximum]`` with
    ``exclusive_minimum``. ``unit`` (``"seconds"``) only words the error.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > minimum if exclusive_minimum else value >= minimum) and (
            maximum is None or value <= maximum
        )
    if not ok:
        low = f"> {minimum:g}" if exclusive_minimum else f">= {minimum:g}"
        bound = low if maximum is None else f"{low} and <= {maximum:g}"
        suffix = f" {unit}" if unit else ""
        raise InvalidConfig(f"{name} must be a finite number {bound}{suffix}, got {value!r}")
    return float(value)


def check_positive_number(name: str, value: Any, *, unit: str = "") -> float:
    """``value`` as a float if it is a finite real number > 0 (not a ``bool``); else InvalidConfig."""
    return check_number(name, value, minimum=0.0, exclusive_minimum=True, unit=unit)
