"""The package's layers, checked from its source: every import points downward, no package cycles.

Each module of ``sessionhive`` belongs to a unit (a subpackage such as
``llm``, or a top-level module such as ``hive``) and each unit to a layer of
:data:`LAYERS`, the one place the allowed order is written. The check reads
every ``import`` with :mod:`ast`, including those inside functions and
``if TYPE_CHECKING:`` blocks (a deferred import still couples the layers; it
only hides the cycle from the interpreter), so it needs no running code.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sessionhive"


@dataclass(frozen=True)
class Layer:
    """Units at one height; ``peers_independent`` forbids imports between them."""

    units: frozenset[str]
    peers_independent: bool = False


def _layer(*units: str, peers_independent: bool = False) -> Layer:
    return Layer(frozenset(units), peers_independent)


# The allowed order, bottom to top: a unit may import units of its own layer
# (unless they are independent) and of any layer below, never above.
LAYERS: tuple[Layer, ...] = (
    _layer("model", "_gc"),  # data, errors, ids; imports nothing else of sessionhive
    _layer("runtime"),  # the actor runtime: base class and backends
    _layer("metrics"),
    _layer("llm", "tools", peers_independent=True),
    _layer("persistence"),
    _layer("agent"),
    _layer("_channels"),
    _layer("actors"),
    # The facades, what they share, and the API they declare (api.py imports only model).
    _layer("api", "hive", "aio", "_core", "_startup", "core"),
    # The public API re-exports: below the applications, because they are told
    # to import ``from sessionhive import Hive`` rather than from the facades.
    _layer("__init__", "events"),
    _layer("cli", "_cli_sessions", "loadtest", "serve", "client", "cluster", "ops"),  # applications
    _layer("__main__"),
)

# Today's known violations, each "importer module -> imported module". The
# owners of these modules shrink this list; an entry that no longer occurs fails
# the test, so the list cannot outlive the violation it excuses.
KNOWN_UPWARD_IMPORTS: frozenset[str] = frozenset()
KNOWN_PRIVATE_MODULE_IMPORTS: frozenset[str] = frozenset()
# "importer module -> imported module:name"
KNOWN_PRIVATE_NAME_IMPORTS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    target: str  # dotted module name imported (a module, not a name inside it)
    names: tuple[str, ...]  # names taken with ``from target import ...``
    line: int


def package_root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module under ``root`` by dotted name (a package by its ``__init__``'s name)."""
    modules: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def read_imports(modules: dict[str, Path], package: str) -> list[Import]:
    """Every import of ``package`` by any of ``modules``, wherever in the file it is written."""
    found: list[Import] = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        found.append(Import(importer, alias.name, (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = _absolute_base(node, importer, _is_package(path))
                if base != package and not base.startswith(package + "."):
                    continue
                # ``from pkg import mod`` imports the module pkg.mod; a name is taken from base.
                names = tuple(alias.name for alias in node.names if f"{base}.{alias.name}" not in modules)
                if names:
                    found.append(Import(importer, base, names, node.lineno))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        found.append(Import(importer, f"{base}.{alias.name}", (), node.lineno))
    return found


def _absolute_base(node: ast.ImportFrom, importer: str, importer_is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = importer.split(".")
    if not importer_is_package:
        parts.pop()
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def unit_of(module: str) -> str:
    """``sessionhive.llm.base`` -> ``llm``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_index(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer.units:
            return index
    raise KeyError(unit)


def units_without_layer(modules: dict[str, Path]) -> set[str]:
    known = set().union(*(layer.units for layer in LAYERS))
    return {unit_of(module) for module in modules} - known


def upward_imports(imports: list[Import]) -> set[str]:
    """Imports that point to a higher layer, or between independent units of one layer."""
    bad: set[str] = set()
    for imp in imports:
        source, target = unit_of(imp.importer), unit_of(imp.target)
        if source == target:
            continue
        low, high = layer_index(target), layer_index(source)
        if low > high or (low == high and LAYERS[low].peers_independent):
            bad.add(f"{imp.importer} -> {imp.target}")
    return bad


def unit_graph(imports: list[Import]) -> dict[str, set[str]]:
    """Each unit and the other units it imports (a unit importing only itself is a node without edges)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        source, target = unit_of(imp.importer), unit_of(imp.target)
        graph.setdefault(source, set())
        graph.setdefault(target, set())
        if source != target:
            graph[source].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components (Tarjan), each sorted; nodes visited in sorted order."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                lowlink[node] = min(lowlink[node], lowlink[succ])
            elif succ in on_stack:
                lowlink[node] = min(lowlink[node], index[succ])
        if lowlink[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def unit_cycles(imports: list[Import]) -> list[list[str]]:
    """Groups of units that import each other, directly or around a loop."""
    return [component for component in strongly_connected(unit_graph(imports)) if len(component) > 1]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_module_imports(imports: list[Import]) -> set[str]:
    """Imports of a unit's private module (``llm._sdk_base``) from outside that unit."""
    bad: set[str] = set()
    for imp in imports:
        if unit_of(imp.importer) == unit_of(imp.target):
            continue
        inside_unit = imp.target.split(".")[2:]  # below sessionhive.<unit>
        if any(_is_private(part) for part in inside_unit):
            bad.add(f"{imp.importer} -> {imp.target}")
    return bad


def private_name_imports(imports: list[Import]) -> set[str]:
    """``from other_unit import _name``: a private name taken across units."""
    return {
        f"{imp.importer} -> {imp.target}:{name}"
        for imp in imports
        if unit_of(imp.importer) != unit_of(imp.target)
        for name in imp.names
        if _is_private(name)
    }


def _stale_and_new(found: set[str], known: frozenset[str]) -> tuple[set[str], set[str]]:
    return found - known, set(known) - found


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return module_names(package_root(), PACKAGE)


@pytest.fixture(scope="module")
def imports(modules: dict[str, Path]) -> list[Import]:
    return read_imports(modules, PACKAGE)


def test_every_module_belongs_to_a_layer(modules: dict[str, Path]) -> None:
    unknown = units_without_layer(modules)
    assert not unknown, (
        f"new top-level module(s) or package(s) {sorted(unknown)}: add each to LAYERS in "
        "tests/test_layers.py at the height it belongs (what it may import, what may import it)"
    )


def test_imports_point_downward(imports: list[Import], modules: dict[str, Path]) -> None:
    if units_without_layer(modules):
        pytest.skip("a unit has no layer yet (see test_every_module_belongs_to_a_layer)")
    new, fixed = _stale_and_new(upward_imports(imports), KNOWN_UPWARD_IMPORTS)
    assert not new, f"upward imports (allowed order in LAYERS): {sorted(new)}"
    assert not fixed, f"fixed, remove from KNOWN_UPWARD_IMPORTS: {sorted(fixed)}"


def test_no_cycle_between_packages(imports: list[Import]) -> None:
    assert unit_cycles(imports) == []


def test_no_private_module_imported_from_another_package(imports: list[Import]) -> None:
    new, fixed = _stale_and_new(private_module_imports(imports), KNOWN_PRIVATE_MODULE_IMPORTS)
    assert not new, f"private modules imported from another package; export the name publicly: {sorted(new)}"
    assert not fixed, f"fixed, remove from KNOWN_PRIVATE_MODULE_IMPORTS: {sorted(fixed)}"


def test_no_private_name_imported_from_another_package(imports: list[Import]) -> None:
    new, fixed = _stale_and_new(private_name_imports(imports), KNOWN_PRIVATE_NAME_IMPORTS)
    assert not new, f"private names imported from another package: {sorted(new)}"
    assert not fixed, f"fixed, remove from KNOWN_PRIVATE_NAME_IMPORTS: {sorted(fixed)}"


def test_the_checks_see_every_kind_of_import(tmp_path: Path) -> None:
    """The walker on a made-up package: deferred, TYPE_CHECKING and relative imports all count."""
    root = tmp_path / "pkg"
    for folder in ("model", "llm", "tools", "runtime"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "runtime" / "_base.py").write_text("")
    (root / "model" / "data.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.llm import Client\n"
    )
    (root / "llm" / "client.py").write_text("def make():\n    from ..tools import run\n    return run\n")
    (root / "tools" / "__init__.py").write_text(
        "from pkg.llm.client import make\nfrom pkg.runtime._base import _x\n"
    )
    modules = module_names(root, "pkg")
    imports = read_imports(modules, "pkg")

    assert upward_imports(imports) == {
        "pkg.model.data -> pkg.llm",  # up, from a TYPE_CHECKING block
        "pkg.llm.client -> pkg.tools",  # between independent peers, deferred and relative
        "pkg.tools -> pkg.llm.client",
    }
    assert unit_cycles(imports) == [["llm", "tools"]]
    assert private_module_imports(imports) == {"pkg.tools -> pkg.runtime._base"}
    assert private_name_imports(imports) == {"pkg.tools -> pkg.runtime._base:_x"}
