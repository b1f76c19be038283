"""What pytest collects: task files become one item per model × property (and per control).

Node ids read ``<task file>::test_icl[<model>-<task>-<property>]``; they are stable across runs,
so ``--lf``, ``--ff`` and ``-k`` select items as for ordinary tests. Tasks named with
``--icl-task`` that no collected file defines are looked up in the task folders, then among
lm-eval's built-ins, and collected under a ``lm-eval-tasks`` node.

The generated test functions live here too: each checks one property of the pair's shared
analysis, or the pair against the stored baseline.
"""

from __future__ import annotations

import pytest

from pytest_icl.analysis.properties import CONTROL_PROPERTIES, PROPERTIES
from pytest_icl.errors import IclError
from pytest_icl.pipeline import margins_of
from pytest_icl.plugin.session import IclCase, IclSession
from pytest_icl.tasks.files import TaskSettings, TaskSource

SESSION = pytest.StashKey[IclSession]()


class PropertyFailed(pytest.fail.Exception):
    """A generated test's property does not hold.

    The only failure a task's ``expected_failures`` excuses (``xfail(raises=...)``): a task
    that cannot be analysed at all still errors, instead of hiding behind an expected failure.
    """


def fail(message: str) -> None:
    """``pytest.fail`` that does not also print the exception being handled (one message, no chain)."""
    error = pytest.fail.Exception(message, pytrace=False)
    error.__suppress_context__ = True
    raise error


def skip(message: str) -> None:
    error = pytest.skip.Exception(message)
    error.__suppress_context__ = True
    raise error


INCONCLUSIVE = "inconclusive"
UNDECIDED = "undecided"
NEITHER = (UNDECIDED, INCONCLUSIVE)  # outcomes that are neither a pass nor a failure: reported as skips of their own kind


def _property_test(request: pytest.FixtureRequest, icl_analysis) -> None:
    """Generated test: one property of one task × model analysis, decided over its draws."""
    case = request.node.icl_case
    name = case.property_name
    if name in CONTROL_PROPERTIES:
        _control_test(request, icl_analysis, name)
        return
    verdict = icl_analysis.check(name)  # margins: defaults < task < CLI
    _record(request.node, verdict)
    message = f"[{case.pair}] {verdict.message}"
    if verdict.outcome == "failed":
        raise PropertyFailed(message, pytrace=False)
    if verdict.outcome in NEITHER:
        skip(f"{verdict.outcome}: {message}")
    print(message)  # a pass shows its evidence too (-rA, -rP)


def _control_test(request: pytest.FixtureRequest, icl_analysis, name: str) -> None:
    session = request.config.stash[SESSION]
    case = request.node.icl_case
    if getattr(icl_analysis, "stored", False) and not icl_analysis.has_control(name):
        icl_analysis = session.result(IclCase(case.model, case.task))  # the stored pair lacks this item's outcome
    gates = icl_analysis.analysis.gates
    closed = [g for key, g in gates.items() if key in ("icl_effect", "ft_learned") and not g.open]
    if closed and session.settings.accuracy_gate:
        # A control shows whether a resemblance is real; with nothing to resemble it shows nothing.
        skip(f"{INCONCLUSIVE}: [{case.pair}] control {name}: " + "; ".join(g.reason for g in closed))
    check = icl_analysis.check_control(name)  # decided over the draws, as the properties are
    if check.outcome == "failed":
        raise PropertyFailed(f"[{case.pair}] {check.message}", pytrace=False)
    if check.outcome in NEITHER:
        skip(f"{check.outcome}: [{case.pair}] {check.message}")
    print(f"[{case.pair}] {check.message}")


def _record(item: pytest.Item, verdict) -> None:
    """The verdict's numbers as JUnit properties of the item (estimate and interval of metric − control)."""
    low, high = verdict.interval
    for key, value in (("outcome", verdict.outcome), ("estimate", verdict.estimate), ("ci_low", low), ("ci_high", high),
                       ("margin", verdict.margin), ("draws", verdict.draws)):  # fmt: skip
        item.user_properties.append((f"icl.{key}", round(value, 6) if isinstance(value, float) else value))


def _baseline_test(request: pytest.FixtureRequest, icl_analysis) -> None:
    """Generated test: this task × model's metrics against the row stored in --icl-baseline."""
    from pytest_icl.report.baseline import tolerances_for
    from pytest_icl.report.comparison import compare

    session = request.config.stash[SESSION]
    try:
        tolerances = tolerances_for(icl_analysis.task.settings.tolerances, session.options.tolerances)
    except ValueError as error:
        fail(f"{icl_analysis.task.name}: {error}")
    comparison = compare(icl_analysis.row, session.baseline, tolerances, against=session.options.baseline_model)
    request.node.icl_payload["baseline"] = comparison.to_dict()
    if not comparison.passed:
        fail(comparison.message)


class IclItem(pytest.Function):
    """A generated property test; reported under its task file and its own name."""

    def __init__(self, *args, params: str, **kwargs):
        super().__init__(*args, name=f"test_icl[{params}]", **kwargs)
        # pytest 9.2 compares structured node ids: "test_icl" with params, as a parametrized test
        # has. Built from the bracketed name alone, the id would differ from the one --lf/--ff
        # read back from the cache, and they would rerun everything.
        if hasattr(self, "_id") and hasattr(self._id, "with_params"):
            self._id = self.parent.id.child("test_icl").with_params(params)

    def reportinfo(self):
        return self.path, 0, self.name  # a line is required by pytest's skip reporting


def items_for(parent: pytest.Collector, source: TaskSource, session: IclSession):
    settings = source.settings
    checks = [(name, _property_test) for name in PROPERTIES]
    checks += [(name, _property_test) for name in session.settings.controls if name in CONTROL_PROPERTIES]
    if session.baseline is not None:
        checks.append(("baseline", _baseline_test))
    for spec in session.model_specs():
        for name, test in checks:
            item = IclItem.from_parent(parent, params=f"{spec.id}-{source.name}-{name}", callobj=test)
            item.icl_case = IclCase(spec, source, name)
            item.icl_payload = {}
            item.add_marker("icl")
            reason = (settings.get("expected_failures") or {}).get(name)
            if reason:
                item.add_marker(pytest.mark.xfail(reason=f"known not to hold: {reason}", strict=False, raises=PropertyFailed))
            yield item


class TaskFile(pytest.File):
    """A task YAML: one item per model × property."""

    def collect(self):
        session = self.config.stash[SESSION]
        try:
            source = TaskSource.from_path(self.path)
            settings = TaskSettings.from_mapping(source.settings, origin=str(self.path))
            margins_of(settings.thresholds, session.settings, origin=str(self.path))
        except IclError as error:
            raise self.CollectError(str(error) if str(self.path) in str(error) else f"{self.path}: {error}") from None
        unknown = set(settings.expected_failures) - set(PROPERTIES) - set(CONTROL_PROPERTIES)
        if unknown:
            raise self.CollectError(
                f"{self.path}: expected_failures names unknown properties {sorted(unknown)}; known: {', '.join([*PROPERTIES, *CONTROL_PROPERTIES])}"
            )
        yield from items_for(self, source, session)


class NamedTasks(pytest.Collector):
    """Tasks named with --icl-task that no collected file defines: from the task folders, else lm-eval."""

    def __init__(self, *, sources: tuple[TaskSource, ...], **kwargs):
        super().__init__(**kwargs)
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from items_for(self, source, self.config.stash[SESSION])
