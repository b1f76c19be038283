"""The package's shape: layers that follow the data flow, small modules, no import cycle.

The data flows models → tasks → engine → analysis → controls → report, with ``errors`` and
``catalogue`` below everything, ``options`` and ``pipeline`` above the library and ``plugin``
(pytest wiring) on top. Each rule below says which imports a layer may not make, and why. The
checks read the source with :mod:`ast` and import nothing, and every check runs its own search
on planted violations too, so a checker that silently finds nothing would fail here.

Imports under ``if TYPE_CHECKING:`` are annotations only (no import happens at run time), so
they are not dependencies. Imports inside functions are: they run whenever the function does.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import pytest_icl

PACKAGE = Path(pytest_icl.__file__).parent
MAX_LINES = 450  # a module past this has more than one job; split it


# ---------------------------------------------------------------------------- reading the source


def modules_of(root: Path, package: str = "pytest_icl") -> dict[str, Path]:
    """Every module below ``root`` by dotted name (a package is its ``__init__``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(node: ast.AST, known: set[str], *, top_level_only: bool) -> set[str]:
    """The package modules one node imports; ``from a import b`` is module ``a.b`` when that exists."""
    found: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
            for alias in child.names:
                submodule = f"{child.module}.{alias.name}"
                found.add(submodule if submodule in known else child.module)
        elif isinstance(child, ast.Import):
            found.update(alias.name for alias in child.names)
        if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        found |= _imports(child, known, top_level_only=top_level_only)
    return found


def import_graph(root: Path, *, top_level_only: bool, package: str = "pytest_icl") -> dict[str, set[str]]:
    """module -> the modules it imports (the package's own, plus third-party names such as ``pytest``)."""
    modules = modules_of(root, package)
    known = set(modules)
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), known, top_level_only=top_level_only) - {name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, a]``) among the graph's own modules, or None."""
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        if state.get(module) == "done":
            return None
        if state.get(module) == "open":
            return trail[trail.index(module) :] + [module]
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target in graph:
                cycle = visit(target, [*trail, module])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


# ---------------------------------------------------------------------------- the layer rules


@dataclass(frozen=True)
class Rule:
    name: str
    importers: tuple[str, ...]  # dotted prefixes (a module or a package) the rule applies to
    forbidden: tuple[str, ...]  # dotted prefixes they may not import
    why: str
    except_importers: tuple[str, ...] = ()

    def applies_to(self, module: str) -> bool:
        return _under(module, self.importers) and not _under(module, self.except_importers)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


P = "pytest_icl"
LIBRARY = tuple(f"{P}.{layer}" for layer in ("models", "tasks", "engine", "analysis", "controls", "report"))
RULES = (
    Rule(
        "plugin-on-top",
        (P,),
        (f"{P}.plugin",),
        "only pytest wiring lives in plugin/: nothing may depend on it",
        except_importers=(f"{P}.plugin",),
    ),
    Rule(
        "no-pytest-below-plugin",
        (P,),
        ("pytest", "_pytest"),
        "the pipeline runs without pytest (notebooks, tune, benchmarks)",
        except_importers=(f"{P}.plugin",),
    ),
    Rule("errors-at-the-bottom", (f"{P}.errors",), (P,), "every layer imports errors, so errors imports none"),
    Rule(
        "catalogue-reads-only-errors",
        (f"{P}.catalogue",),
        (*LIBRARY, f"{P}.options", f"{P}.pipeline", f"{P}.plugin"),
        "every layer reads the catalogue's tables; it must not pull in any layer",
    ),
    Rule(
        "analysis-is-pure",
        (f"{P}.analysis",),
        (*(m for m in LIBRARY if m != f"{P}.analysis"), f"{P}.options", f"{P}.pipeline"),
        "analysis is pure functions of records: no model, no task loading, no engine",
    ),
    Rule(
        "report-without-engine",
        (f"{P}.report",),
        (f"{P}.engine", f"{P}.controls", f"{P}.pipeline"),
        "a saved report folder is read, compared and rendered without running anything",
    ),
    Rule(
        "options-without-engine",
        (f"{P}.options",),
        (f"{P}.engine", f"{P}.controls", f"{P}.report", f"{P}.pipeline"),
        "options are configuration: checking a flag must not import the machinery it configures",
    ),
    Rule(
        "models-first",
        (f"{P}.models",),
        (*(m for m in LIBRARY if m != f"{P}.models"), f"{P}.options", f"{P}.pipeline"),
        "models are the first layer of the data flow",
    ),
    Rule(
        "tasks-after-models",
        (f"{P}.tasks",),
        (f"{P}.engine", f"{P}.analysis", f"{P}.controls", f"{P}.report", f"{P}.options", f"{P}.pipeline"),
        "tasks read YAML and data; they need at most the model layer (cache, hub)",
    ),
    Rule(
        "engine-below-controls",
        (f"{P}.engine",),
        (f"{P}.controls", f"{P}.report", f"{P}.pipeline"),
        "the engine runs one setting; controls and reports are built on it, not in it",
    ),
    Rule(
        "controls-below-report",
        (f"{P}.controls",),
        (f"{P}.report", f"{P}.pipeline"),
        "controls produce numbers; showing them is the report's job",
    ),
)


def violations(graph: dict[str, set[str]], rules=RULES) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        for rule in rules:
            if not rule.applies_to(module):
                continue
            for target in sorted(targets):
                if _under(target, rule.forbidden) and not _under(target, (module,)):
                    found.append(f"{rule.name}: {module} imports {target} ({rule.why})")
    return found


# ---------------------------------------------------------------------------- the package


def test_layer_rules_hold():
    assert violations(import_graph(PACKAGE, top_level_only=False)) == []


def test_no_import_cycle():
    assert find_cycle(import_graph(PACKAGE, top_level_only=True)) is None


MODULES = modules_of(PACKAGE)


@pytest.mark.parametrize("path", MODULES.values(), ids=list(MODULES))
def test_no_module_is_over_450_lines(path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; give its second concern a module of its own"


def test_public_api_and_version():
    assert pytest_icl.__version__
    for name in pytest_icl.__all__:
        assert getattr(pytest_icl, name) is not None
    from pytest_icl import IclResult, PropertyCheck  # what a test author holds

    assert IclResult.__name__ == "IclResult" and PropertyCheck.__name__ == "PropertyCheck"


# ---------------------------------------------------------------------------- the checks find what they look for


PLANTED = {
    "plugin-on-top": ("engine/runs.py", "from pytest_icl.plugin.session import IclSession\n"),
    "no-pytest-below-plugin": ("pipeline.py", "import pytest\n"),
    "errors-at-the-bottom": ("errors.py", "from pytest_icl.models import loading\n"),
    "catalogue-reads-only-errors": ("catalogue.py", "from pytest_icl.analysis import metrics\n"),
    "analysis-is-pure": ("analysis/aggregate.py", "def f():\n    from pytest_icl.engine.runs import Records\n"),
    "report-without-engine": ("report/html.py", "from pytest_icl.engine import capture\n"),
    "options-without-engine": ("options.py", "from pytest_icl.controls.base import CONTROLS\n"),
    "models-first": ("models/loading.py", "from pytest_icl.tasks import loading\n"),
    "tasks-after-models": ("tasks/loading.py", "from pytest_icl.engine.encoding import encode_task\n"),
    "engine-below-controls": ("engine/runs.py", "from pytest_icl.controls import pair\n"),
    "controls-below-report": ("controls/pair.py", "from pytest_icl.report.rows import format_table\n"),
}


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pytest_icl"
    for layer in ("models", "tasks", "engine", "analysis", "controls", "report", "plugin"):
        (root / layer).mkdir(parents=True, exist_ok=True)
        (root / layer / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_every_rule_has_a_planted_violation():
    assert set(PLANTED) == {rule.name for rule in RULES}


@pytest.mark.parametrize("rule", sorted(PLANTED))
def test_a_planted_violation_is_found(tmp_path: Path, rule: str):
    where, text = PLANTED[rule]
    root = _plant(tmp_path, {where: text, "engine/encoding.py": "", "tasks/loading.py": "" if where != "tasks/loading.py" else text})
    found = violations(import_graph(root, top_level_only=False))
    assert [line.split(":")[0] for line in found] == [rule], found


def test_type_only_imports_are_not_dependencies(tmp_path: Path):
    root = _plant(
        tmp_path,
        {"analysis/aggregate.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pytest_icl.engine.runs import Records\n"},
    )
    assert violations(import_graph(root, top_level_only=False)) == []


def test_a_planted_cycle_is_found_by_the_same_search(tmp_path: Path):
    root = _plant(
        tmp_path,
        {
            "engine/runs.py": "from pytest_icl.engine.capture import Capture\n",
            "engine/capture.py": "from pytest_icl.engine import finetune\n",
            "engine/finetune.py": "import pytest_icl.engine.runs\n",
        },
    )
    assert find_cycle(import_graph(root, top_level_only=True)) == [
        "pytest_icl.engine.capture",
        "pytest_icl.engine.finetune",
        "pytest_icl.engine.runs",
        "pytest_icl.engine.capture",
    ]


def test_an_import_inside_a_function_is_no_cycle_but_is_a_dependency(tmp_path: Path):
    root = _plant(
        tmp_path,
        {
            "engine/runs.py": "from pytest_icl.engine import capture\n",
            "engine/capture.py": "def f():\n    from pytest_icl.engine import runs\n",
        },
    )
    assert find_cycle(import_graph(root, top_level_only=True)) is None
    assert "pytest_icl.engine.runs" in import_graph(root, top_level_only=False)["pytest_icl.engine.capture"]
