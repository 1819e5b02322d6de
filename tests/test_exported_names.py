"""The public names: what ``sessionhive`` and its public subpackages export, pinned as httpx pins its own.

A name a user imports is a promise: it must resolve, appear once, and a name
made public by accident (imported into ``sessionhive/__init__.py`` but left
out of ``__all__``) is caught here rather than by the user who starts to rely
on it.
"""

from __future__ import annotations

import importlib
import types

import pytest

import sessionhive

PUBLIC_SUBPACKAGES = (
    "sessionhive.model",
    "sessionhive.runtime",
    "sessionhive.llm",
    "sessionhive.tools",
    "sessionhive.persistence",
    "sessionhive.metrics",
)

# Public subpackages that have no ``__all__`` yet; their owners add one and
# remove the entry here (an entry whose package has gained ``__all__`` fails).
SUBPACKAGES_WITHOUT_ALL_YET: frozenset[str] = frozenset(
    {
        "sessionhive.model",  # its __init__ is only a docstring; the names live in its modules
    }
)


def _is_public_export(name: str, value: object) -> bool:
    """A public attribute of the package that is neither a submodule nor ``from __future__``."""
    if name.startswith("_"):
        return name == "__version__"
    return not isinstance(value, types.ModuleType) and type(value).__module__ != "__future__"


def test_all_names_are_exported_and_sorted() -> None:
    exported = sorted(name for name, value in vars(sessionhive).items() if _is_public_export(name, value))
    assert sessionhive.__all__ == exported


def test_all_has_no_duplicates() -> None:
    assert len(sessionhive.__all__) == len(set(sessionhive.__all__))


@pytest.mark.parametrize("name", sessionhive.__all__)
def test_every_name_resolves(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from sessionhive import {name}", namespace)
    assert namespace[name] is not None


@pytest.mark.parametrize("package_name", PUBLIC_SUBPACKAGES)
def test_public_subpackage_names_resolve(package_name: str) -> None:
    package = importlib.import_module(package_name)
    names: list[str] | None = getattr(package, "__all__", None)
    if package_name in SUBPACKAGES_WITHOUT_ALL_YET:
        assert names is None, f"{package_name} has __all__ now: remove it from SUBPACKAGES_WITHOUT_ALL_YET"
        return
    assert names is not None, f"{package_name} has no __all__"
    assert len(names) == len(set(names)), f"duplicates in {package_name}.__all__"
    missing = [name for name in names if getattr(package, name, None) is None]
    assert not missing, f"{package_name}.__all__ names what it does not define: {missing}"


def test_the_recommended_pooled_backend_is_public() -> None:
    from sessionhive.runtime import PooledBackend

    assert sessionhive.PooledBackend is PooledBackend
    assert "PooledBackend" in sessionhive.__all__
