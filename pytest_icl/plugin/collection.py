"""What pytest collects: task files become one item per model × property (and per control).

Node ids read ``<task file>::test_icl[<model>-<task>-<property>]``; they are stable across runs,
so ``--lf``, ``--ff`` and ``-k`` select items as for ordinary tests. Tasks named with
``--icl-task`` that no collected file defines are looked up in the task folders, then among
lm-eval's built-ins, and collected under a ``lm-eval-tasks`` node.

The generated test functions live here too: each checks one property of the pair's shared
analysis, or the pair against the stored baseline.

What collection can check, it checks once, here: a task file's name and settings, two files with
one ``task:`` name (an error naming both), and every ``--icl-data TASK`` name against the tasks
the run collected (a usage error with the closest names, :func:`check_data_names`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from pytest_icl import catalogue
from pytest_icl.analysis.properties import CONTROL_PROPERTIES, PROPERTIES
from pytest_icl.errors import IclError
from pytest_icl.pipeline import margins_of, task_source
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
    session.task_names.add(source.name)
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
            session.claim_task(source.name, self.path)
            settings = TaskSettings.from_mapping(source.settings, origin=str(self.path))
            margins_of(settings.thresholds, session.settings, origin=str(self.path))
        except IclError as error:
            raise self.CollectError(str(error) if str(self.path) in str(error) else f"{self.path}: {error}") from None
        unknown = set(settings.expected_failures) - set(PROPERTIES) - set(CONTROL_PROPERTIES)
        if unknown:
            raise self.CollectError(
                f"{self.path}: expected_failures names unknown properties {sorted(unknown)}; known: {', '.join([*PROPERTIES, *CONTROL_PROPERTIES])}"
            )
        compared = [m.name for m in catalogue.compared_metrics()]  # --icl-tolerance's names, checked at start
        unknown = set(settings.tolerances) - set(compared)
        if unknown:
            raise self.CollectError(
                f"{self.path}: tolerances names metrics not compared with the baseline {sorted(unknown)}; compared: {', '.join(compared)}"
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


# ---- --icl-data names, checked once every task of the run is known


def check_data_names(run: pytest.Session, items: list[pytest.Item]) -> None:
    """Every ``--icl-data TASK`` names a task of this run; else a usage error (exit 4) with the closest names.

    The tasks are those collection made items for (task files, ``--icl-task`` names) and those
    that ``@pytest.mark.icl_task`` tests name, before ``-k`` or a shard deselects any.
    """
    config = run.config
    session = config.stash[SESSION]
    if not session.options.data:
        return
    known = set(session.task_names)
    for item in items:
        marker = item.get_closest_marker("icl_task") if not hasattr(item, "icl_case") else None
        if marker is not None and len(marker.args) == 1:
            try:
                known.add(task_source(marker.args[0], roots=[], base=Path(item.path).parent).name)
            except IclError:
                pass  # the test reports it when it runs
    unknown = [name for name in session.options.data if name not in known]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        listed = ", ".join(sorted(known)[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        message = (
            f"--icl-data {name}={session.options.data[name]}: no task of this run is named {name!r}, so the files would "
            f"never be read; {hint}The run's tasks: {listed}. Give the task: name of a collected task (or one named "
            "with --icl-task)."
        )
        if hasattr(config, "workerinput"):  # an xdist worker that raises here crashes: stopping ends the run with the message
            items[:] = []
            run.shouldstop = message
            return
        raise pytest.UsageError(message)
