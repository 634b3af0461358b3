"""The package's architecture, checked from its source: which layer may import which, no import circles
(imports under TYPE_CHECKING and inside functions count too), Dagster's private modules behind one adapter,
and every folder's map (its `__init__.py` docstring) naming each module the folder holds.

Read from the source with `ast`, so a violation is reported even in code no other test executes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "v6_positions"
DAGSTER_ADAPTER = "v6_positions.dagster_internals"

# Layer -> the layers it may import (besides itself). A layer is a top-level module or folder of the package.
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "config": set(),  # the ground floor: every layer reads Settings, Settings reads no layer
    "lake": {"contracts", "config"},
    "simulator": {"contracts", "config"},
    "risk": {"contracts", "config", "lake"},
    "ib": {"contracts", "config", "lake"},
    "dagster_internals": set(),
    "instance": {"config", "dagster_internals"},
    "defs": {"contracts", "config", "lake", "ib", "risk", "instance", "dagster_internals"},
    "definitions": {"config", "defs"},
    "commands": {"contracts", "config", "lake", "ib", "simulator", "instance"},
    "cli": {"config", "commands"},
}
NO_DAGSTER = {"contracts", "config", "lake", "simulator", "risk", "ib", "commands", "cli"}
# Inside ib/, each concern builds only on those before it: the pure decisions (routing/) know nothing of
# connections, holdings, lines or where rows go; the streamer alone wires them all.
_IB_BASE = {"periodic", "ib_values"}
_IB_ORDER = ("connection", "routing", "account", "rows", "zero_line", "lines", "stream_status", "streamer")
IB_ALLOWED: dict[str, set[str]] = {
    "periodic": set(),
    "ib_values": set(),
    **{concern: _IB_BASE | set(_IB_ORDER[:rank]) for rank, concern in enumerate(_IB_ORDER)},
    "routing": _IB_BASE,  # pure: no connection either
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[str]:
    """Every absolute module name an import statement in `path` names (`from a import b` names a and a.b)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import of {node.module!r} (use absolute)"
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            # `from package import module` depends on the module; `from module import name` on the module.
            names.extend(name for name in submodules if name in MODULES)
            if not all(name in MODULES for name in submodules):
                names.append(str(node.module))
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    return {
        name: {target for target in _imports(path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def _layer(module: str, depth: int = 1) -> str:
    return ".".join(module.split(".")[depth : depth + 1])


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) != _layer(module) and _layer(target) not in ALLOWED[_layer(module)]
    ]
    assert not wrong, "layer rule broken:\n" + "\n".join(sorted(wrong))


def test_inside_ib_each_concern_imports_only_what_it_builds_on() -> None:
    ib = {module: targets for module, targets in _graph().items() if module.startswith("v6_positions.ib.")}
    wrong = [
        f"{module} imports {target}"
        for module, targets in ib.items()
        for target in targets
        if target.startswith("v6_positions.ib.")
        and _layer(target, 2) != _layer(module, 2)
        and _layer(target, 2) not in IB_ALLOWED[_layer(module, 2)]
    ]
    assert not wrong, "ib/ concern rule broken:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("layer", sorted(NO_DAGSTER))
def test_library_layers_never_import_dagster(layer: str) -> None:
    offenders = [
        f"{module}: {name}"
        for module, path in MODULES.items()
        if _layer(module) == layer
        for name in _imports(path)
        if name == "dagster" or name.startswith(("dagster.", "dagster_"))
    ]
    assert not offenders, f"{layer} imports Dagster:\n" + "\n".join(offenders)


def test_dagster_private_modules_only_behind_the_adapter() -> None:
    offenders = [
        f"{module}: {name}"
        for module, path in MODULES.items()
        if module != DAGSTER_ADAPTER
        for name in _imports(path)
        if name.startswith("dagster._")
    ]
    assert not offenders, f"Dagster's private modules go through {DAGSTER_ADAPTER}:\n" + "\n".join(offenders)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_no_import_circle_type_checking_included() -> None:
    circle = _cycle(_graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_folder_map_names_each_of_its_modules() -> None:
    """A folder's `__init__.py` docstring is its map: one line per module saying what it owns."""
    missing = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = init.parent
        if folder == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        entries = [p.name for p in folder.glob("*.py") if p.name != "__init__.py"]
        entries += [f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").exists()]
        where = folder.relative_to(PACKAGE)
        missing += [f"{where}: {entry}" for entry in sorted(entries) if entry not in doc]
    assert not missing, "modules missing from their folder's map:\n" + "\n".join(missing)


def test_no_folder_without_a_map() -> None:
    bare = [
        str(folder.relative_to(PACKAGE))
        for folder in sorted({p.parent for p in PACKAGE.rglob("*.py")})
        if not (folder / "__init__.py").exists()
    ]
    assert not bare, f"folders without an __init__.py map: {bare}"

