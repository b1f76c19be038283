"""The package's shape: one concern per module (none over ~450 lines) and no import cycle.

Anyone can run this (``pytest tests/unit/test_structure.py``); it reads the source, imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_icl

PACKAGE = Path(pytest_icl.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_LINES = 460  # "~450": a module past this has more than one job; split it


def _module_name(path: Path) -> str:
    return path.stem


def _top_level_imports(path: Path) -> set[str]:
    """pytest_icl modules imported at import time (not inside functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in [node] if not isinstance(node, (ast.Try, ast.If)) else ast.walk(node):
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.module == "pytest_icl":
                    found.update(alias.name for alias in child.names)
                elif child.module.startswith("pytest_icl."):
                    found.add(child.module.split(".")[1])
            elif isinstance(child, ast.Import):
                found.update(a.name.split(".")[1] for a in child.names if a.name.startswith("pytest_icl."))
    return found - {"__init__"}


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_module_is_over_450_lines(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; give its second concern a module of its own"


def test_no_import_cycle():
    graph = {_module_name(p): _top_level_imports(p) for p in MODULES}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            cycle = trail[trail.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_the_cycle_check_finds_a_cycle(tmp_path: Path):
    """The checker itself works: a two-module cycle is reported."""
    (tmp_path / "a.py").write_text("from pytest_icl.b import x\n")
    (tmp_path / "b.py").write_text("from pytest_icl import a\n")
    assert _top_level_imports(tmp_path / "a.py") == {"b"}
    assert _top_level_imports(tmp_path / "b.py") == {"a"}


def test_public_api_and_version():
    assert pytest_icl.__version__
    for name in pytest_icl.__all__:
        assert getattr(pytest_icl, name) is not None
