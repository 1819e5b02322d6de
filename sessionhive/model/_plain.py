"""``fields_dict``: a model dataclass as the plain dict its ``to_dict`` returns, written once.

Each ``to_dict`` that is "every field by its name" says so with one call and
names only the fields it writes differently (a nested policy as its own
dict). ``LlmConfig.to_dict`` keeps its explicit list on purpose: it is an
allowlist, so a secret field added later is never written by accident.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["fields_dict"]


def fields_dict(instance: DataclassInstance, **written_differently: Any) -> dict[str, Any]:
    """Every field of ``instance`` by name, in declaration order (not recursing, unlike ``asdict``).

    >>> from sessionhive.model.messages import Usage
    >>> fields_dict(Usage(3, 4), total_tokens=7)["total_tokens"]
    7
    """
    values = {field.name: getattr(instance, field.name) for field in fields(instance)}
    values.update(written_differently)
    return values
