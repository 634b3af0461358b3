"""No hidden loop in any wiring: `PositionStreamer.__init__` (and every class of the package) builds each
owner after everything it is given, so no owner holds a lambda or a callback that reaches an owner built
after it, and the order of the lines in `__init__` is the order of the dependencies.

Read from the source with `ast` (the wiring is the code, not a behaviour a run would show): each statement
of `__init__` may use only the attributes assigned before it, and a bound method of the streamer handed to
an owner may use only those too (followed through the methods it calls).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

from v6_positions.ib.streamer import PositionStreamer


def _self_attributes(node: ast.AST) -> set[str]:
    """The `self.<name>` read anywhere under `node` (assignment targets excluded)."""
    return {
        sub.attr
        for sub in ast.walk(node)
        if isinstance(sub, ast.Attribute)
        and isinstance(sub.value, ast.Name)
        and sub.value.id == "self"
        and not isinstance(sub.ctx, ast.Store)
    }


def forward_references(class_source: str) -> list[str]:
    """Each use in `__init__` of an attribute assigned only later, directly or through a method."""
    cls = ast.parse(textwrap.dedent(class_source)).body[0]
    assert isinstance(cls, ast.ClassDef)
    methods = {
        node.name: node for node in cls.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }

    def reached(name: str, seen: set[str]) -> set[str]:
        """The attributes a method reads, through the methods it calls in turn."""
        if name in seen:
            return set()
        seen.add(name)
        found: set[str] = set()
        for attr in _self_attributes(methods[name]):
            found |= reached(attr, seen) if attr in methods else {attr}
        return found

    built: set[str] = set()
    wrong: list[str] = []
    for statement in methods["__init__"].body:
        assigned = {
            target.attr
            for target in ast.walk(statement)
            if isinstance(target, ast.Attribute) and isinstance(target.ctx, ast.Store)
            and isinstance(target.value, ast.Name) and target.value.id == "self"
        }
        for attr in sorted(_self_attributes(statement)):
            uses = reached(attr, set()) if attr in methods else {attr}
            late = sorted(uses - built - (assigned if attr not in methods else set()))
            if late:
                via = f" (through self.{attr})" if attr in methods else ""
                names = ", ".join(f"self.{name}" for name in late)
                wrong.append(f"line {statement.lineno}: uses {names} before it is built{via}")
        built |= assigned
    return wrong


def test_the_streamer_builds_each_owner_after_everything_it_is_given() -> None:
    wrong = forward_references(inspect.getsource(PositionStreamer))
    assert not wrong, "PositionStreamer.__init__ reaches owners built later:\n" + "\n".join(wrong)


def test_the_check_finds_a_lambda_or_a_callback_to_an_owner_built_later() -> None:
    lambda_loop = """
class Wiring:
    def __init__(self):
        self.legs = Legs(lambda conids: self.allocation.deactivated(conids))
        self.allocation = Allocation(self.legs)
"""
    callback_loop = """
class Wiring:
    def __init__(self):
        self.session = Session(on_connected=self._on_connected)
        self.allocation = Allocation(self.session)

    def _on_connected(self):
        self._route()

    def _route(self):
        self.allocation.reconcile()
"""
    in_order = """
class Wiring:
    def __init__(self):
        self.allocation = Allocation()
        self.legs = Legs(self.allocation.deactivated)
        self.session = Session(on_connected=self._on_connected)
        self.session.event += self._on_connected

    def _on_connected(self):
        self.allocation.reconcile()
"""
    assert forward_references(lambda_loop) == ["line 4: uses self.allocation before it is built"]
    assert forward_references(callback_loop) == [
        "line 4: uses self.allocation before it is built (through self._on_connected)"
    ]
    assert forward_references(in_order) == []


def _classes_with_init() -> list[tuple[str, str]]:
    """(where, source) of every class of the package that has an `__init__`."""
    package = Path(__file__).resolve().parents[1] / "v6_positions"
    found = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "__init__" for item in node.body
            ):
                where = f"{path.relative_to(package)}:{node.name}"
                found.append((where, ast.get_source_segment(source, node)))
    return found


def test_no_class_of_the_package_is_wired_with_a_reference_to_an_owner_built_later() -> None:
    """The same rule for every class (the simulator's server, the stream run's thread...), not only the
    streamer."""
    classes = _classes_with_init()
    assert len(classes) > 30  # the whole package is read, not a folder of it
    wrong = [f"{where}: {line}" for where, source in classes for line in forward_references(source or "")]
    assert not wrong, "\n".join(wrong)
