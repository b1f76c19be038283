"""pytest wiring: options, collection of task × model × property items, fixtures, the summary.

Everything else lives in the library modules (models → tasks → capture → finetune → runs →
analysis/metrics → report); this module only connects pytest to them and must stay cheap to
import (no torch, transformers or lm-eval here: ``pytest --collect-only`` stays fast).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_icl.models import DEFAULT_MODEL, ModelError
from pytest_icl.properties import PROPERTIES, margins_for, parse_margin
from pytest_icl.session import IclCase, IclOptions, IclSession
from pytest_icl.tasks import TaskError, TaskSettings, TaskSource, TaskUnavailable, is_task_file

SESSION = pytest.StashKey[IclSession]()

# (flag, ini name, kind, help). The ini name is also the argparse dest; CLI beats ini.
_OPTIONS = (
    ("--icl-model", "icl_models", "list", f"model to test: alias, hub id[@revision], local folder or .gguf file (repeatable; default {DEFAULT_MODEL})"),
    ("--icl-task", "icl_task_filter", "list", "only these tasks (name, repeatable); a named task that cannot load fails instead of skipping"),
    ("--icl-shots", "icl_shots", "int", "number of demonstrations k (= FT steps); default: the task's icl.shots"),
    ("--icl-seed", "icl_seed", "int", "demonstration shuffle seed; default: the task's icl.seed"),
    ("--icl-lr", "icl_lr", "float", "FT learning rate; default: the task's icl.lr"),
    ("--icl-position", "icl_position", "str", "analysed position: label (official code) or prompt"),
    ("--icl-limit", "icl_limit", "int", "eval examples per task (first N after a seed-1 shuffle)"),
    ("--icl-device", "icl_device", "str", "auto, cpu or cuda (default auto)"),
    ("--icl-dtype", "icl_dtype", "str", "float32 (default), bfloat16, float16 or auto; FT updates stay fp32"),
    ("--icl-batch-size", "icl_batch_size", "int", "eval examples per forward pass (default 16)"),
    ("--icl-report", "icl_report", "str", "write results.json and results.csv to this folder"),
    ("--icl-data", "icl_data", "list", "TASK=DIR or TASK=TRAIN_FILE,EVAL_FILE: run TASK on local jsonl/csv/parquet files"),
    ("--icl-threshold", "icl_thresholds", "list", "PROPERTY=MARGIN: required margin of a property over its control"),
    ("--icl-baseline", "icl_baseline", "str", "compare each task × model with its row in this JSON file: test_icl[model-task-baseline] fails on a regression"),
    ("--icl-baseline-update", "icl_baseline_update", "flag", "write/refresh the --icl-baseline file with this run's rows instead of comparing"),
    ("--icl-baseline-model", "icl_baseline_model", "str", "compare with the stored rows of this model (NAME or NAME:DTYPE) instead of the same model's"),
    ("--icl-tolerance", "icl_tolerances", "list", "METRIC=VALUE: absolute tolerance of a metric in baseline comparisons"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("icl", "in-context learning vs finetuning (pytest-icl)")
    for flag, dest, kind, help_text in _OPTIONS:
        if kind == "list":
            group.addoption(flag, action="append", dest=dest, default=None, metavar="VALUE", help=help_text)
            parser.addini(dest, help_text, type="linelist", default=[])
        elif kind == "flag":
            group.addoption(flag, action="store_true", dest=dest, default=None, help=help_text)
            parser.addini(dest, help_text, type="bool", default=False)
        else:
            group.addoption(flag, dest=dest, default=None, metavar=kind.upper(), help=help_text)
            parser.addini(dest, help_text, default="")
    parser.addini("icl_tasks", "folders whose task YAML files become ICL test items", type="paths", default=[])


def _value(config: pytest.Config, dest: str):
    value = config.getoption(dest)
    if value is None or value == []:
        value = config.getini(dest)
    return value if value not in ("", []) else None


def _named_numbers(config: pytest.Config, dest: str, parse) -> dict[str, float]:
    """Repeated ``NAME=VALUE`` options (``--icl-threshold``, ``--icl-tolerance``)."""
    flag = next(f for f, d, *_ in _OPTIONS if d == dest)
    found = {}
    for entry in _value(config, dest) or []:
        try:
            name, number = parse(entry)
        except ValueError as error:
            raise pytest.UsageError(f"{flag}: {error}") from None
        found[name] = number
    return found


def _parse_options(config: pytest.Config) -> IclOptions:
    def number(dest, kind):
        value = _value(config, dest)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            raise pytest.UsageError(f"--{dest.replace('_', '-')}: {value!r} is not a{'n integer' if kind is int else ' number'}") from None

    data = {}
    for entry in _value(config, "icl_data") or []:
        task, sep, path = entry.partition("=")
        if not sep or not task or not path:
            raise pytest.UsageError(f"--icl-data expects TASK=PATH, got {entry!r}")
        data[task] = path
    thresholds = _named_numbers(config, "icl_thresholds", parse_margin)
    device = _value(config, "icl_device") or "auto"
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise pytest.UsageError(f"--icl-device must be auto, cpu or cuda, got {device!r}")
    dtype = _value(config, "icl_dtype") or "float32"
    if dtype not in ("float32", "bfloat16", "float16", "auto"):
        raise pytest.UsageError(f"--icl-dtype must be float32, bfloat16, float16 or auto, got {dtype!r}")
    position = _value(config, "icl_position")
    if position not in (None, "label", "prompt"):
        raise pytest.UsageError(f"--icl-position must be label or prompt, got {position!r}")
    report = _value(config, "icl_report")
    baseline = _value(config, "icl_baseline")
    baseline_update = bool(_value(config, "icl_baseline_update"))
    baseline_model = _value(config, "icl_baseline_model")
    if (baseline_update or baseline_model) and not baseline:
        raise pytest.UsageError(f"--icl-baseline-{'update' if baseline_update else 'model'} needs --icl-baseline FILE")
    if baseline_update and baseline_model:
        raise pytest.UsageError("--icl-baseline-model compares with stored rows; it cannot be combined with --icl-baseline-update")
    from pytest_icl.baseline import parse_tolerance

    tolerances = _named_numbers(config, "icl_tolerances", parse_tolerance)
    return IclOptions(
        models=tuple(_value(config, "icl_models") or [DEFAULT_MODEL]),
        tasks=tuple(_value(config, "icl_task_filter") or []),
        shots=number("icl_shots", int),
        seed=number("icl_seed", int),
        lr=number("icl_lr", float),
        position=position,
        limit=number("icl_limit", int),
        device=device,
        dtype=dtype,
        report=Path(report).resolve() if report else None,
        data=data,
        thresholds=thresholds,
        batch_size=number("icl_batch_size", int) or 16,
        baseline=Path(baseline).resolve() if baseline else None,
        baseline_update=baseline_update,
        baseline_model=baseline_model,
        tolerances=tolerances,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Build the run's session object and register the markers."""
    config.addinivalue_line("markers", "icl: a generated ICL-vs-finetuning property test")
    config.addinivalue_line(
        "markers",
        "icl_task(task): the task for the icl_analysis fixture: an lm-eval name, a YAML path, or an inline config dict",
    )
    options = _parse_options(config)
    session = IclSession(options, is_worker=hasattr(config, "workerinput"))
    try:
        specs = session.model_specs()
    except ModelError as error:
        raise pytest.UsageError(str(error)) from None
    ids = [spec.id for spec in specs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise pytest.UsageError(
            f"--icl-model: more than one model has the test id {', '.join(repeated)}; each model must be named once, "
            "and two folders of the same name must be renamed (the id is the folder or file name)"
        )
    if options.baseline is not None:
        from pytest_icl.baseline import BaselineError, read_baseline

        try:  # fail fast on a missing, corrupt or foreign file; with --icl-baseline-update it is read again at the end
            baseline = read_baseline(options.baseline, missing_ok=options.baseline_update)
        except BaselineError as error:
            raise pytest.UsageError(str(error)) from None
        session.baseline = None if options.baseline_update else baseline
    config.stash[SESSION] = session
    config.pluginmanager.register(ResultCollector(session), "icl-results")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is not None:
        session.close()


def _fail(message: str) -> None:
    """``pytest.fail`` that does not also print the exception being handled (one message, no chain)."""
    error = pytest.fail.Exception(message, pytrace=False)
    error.__suppress_context__ = True
    raise error


class PropertyFailed(pytest.fail.Exception):
    """A generated test's property does not hold.

    The only failure a task's ``icl.expected_failures`` excuses (``xfail(raises=...)``): a task
    that cannot be analysed at all still errors, instead of hiding behind an expected failure.
    """


def _skip(message: str) -> None:
    error = pytest.skip.Exception(message)
    error.__suppress_context__ = True
    raise error


# ---- collection


def _task_roots(config: pytest.Config) -> list[Path]:
    roots = config.getini("icl_tasks") or [config.rootpath / "tasks"]
    return [Path(root).resolve() for root in roots]


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """Task YAML files inside the ``icl_tasks`` folders become test files."""
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    if not any(root == file_path or root in file_path.parents for root in _task_roots(parent.config)):
        return None
    if is_task_file(file_path):
        return TaskFile.from_parent(parent, path=file_path)
    return None


def _property_test(request: pytest.FixtureRequest, icl_analysis) -> None:
    """Generated test: one property of one task × model analysis."""
    check = icl_analysis.check(request.node.icl_case.property_name)  # margins: defaults < task < CLI
    if not check.passed:
        raise PropertyFailed(f"[{request.node.icl_case.pair}] {check.message}", pytrace=False)


def _baseline_test(request: pytest.FixtureRequest, icl_analysis) -> None:
    """Generated test: this task × model's metrics against the row stored in --icl-baseline."""
    from pytest_icl.baseline import compare, tolerances_for

    session = request.config.stash[SESSION]
    try:
        tolerances = tolerances_for(icl_analysis.task.settings.tolerances, session.options.tolerances)
    except ValueError as error:
        _fail(f"{icl_analysis.task.name}: {error}")
    comparison = compare(icl_analysis.row, session.baseline, tolerances, against=session.options.baseline_model)
    request.node.user_properties.append(("icl_baseline", comparison.to_dict()))
    if not comparison.passed:
        _fail(comparison.message)


class IclItem(pytest.Function):
    """A generated property test; reported under its task file and its own name."""

    def reportinfo(self):
        return self.path, 0, self.name  # a line is required by pytest's skip reporting


def _items_for(parent: pytest.Collector, source: TaskSource, session: IclSession):
    for spec in session.model_specs():
        checks = [(name, _property_test) for name in PROPERTIES]
        if session.baseline is not None:
            checks.append(("baseline", _baseline_test))
        for name, test in checks:
            item = IclItem.from_parent(parent, name=f"test_icl[{spec.id}-{source.name}-{name}]", callobj=test)
            item.icl_case = IclCase(spec, source, name)
            item.add_marker("icl")
            reason = (source.settings.get("expected_failures") or {}).get(name)
            if reason:
                item.add_marker(pytest.mark.xfail(reason=f"known not to hold: {reason}", strict=False, raises=PropertyFailed))
            item.user_properties.append(("icl_property", {"pair": item.icl_case.pair, "property": name}))
            yield item


class TaskFile(pytest.File):
    """A task YAML: one item per model × property."""

    def collect(self):
        try:
            source = TaskSource.from_path(self.path)
        except TaskError as error:
            raise self.CollectError(str(error)) from None
        try:
            settings = TaskSettings.from_mapping(source.settings, origin=str(self.path))
            margins_for(settings.thresholds, {})
        except (TaskError, ValueError) as error:
            raise self.CollectError(f"{self.path}: {error}" if str(self.path) not in str(error) else str(error)) from None
        unknown = set(settings.expected_failures) - set(PROPERTIES)
        if unknown:
            raise self.CollectError(f"{self.path}: icl.expected_failures names unknown properties {sorted(unknown)}; known: {', '.join(PROPERTIES)}")
        yield from _items_for(self, source, self.config.stash[SESSION])


class BuiltinTasks(pytest.Collector):
    """lm-eval built-in tasks named with --icl-task that no task file defines."""

    def __init__(self, *, names: tuple[str, ...], **kwargs):
        super().__init__(**kwargs)
        self.names = names

    def collect(self):
        for name in self.names:
            yield from _items_for(self, TaskSource.builtin(name), self.config.stash[SESSION])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``icl_task`` that use ``icl_analysis`` run once per model."""
    if "icl_model_spec" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("icl_task") is None:
        return
    specs = metafunc.config.stash[SESSION].model_specs()
    metafunc.parametrize("icl_model_spec", specs, ids=[s.id for s in specs], indirect=True)


def _model_id(item: pytest.Item) -> str | None:
    case = getattr(item, "icl_case", None)
    if case is not None:
        return case.model.id
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "icl_model_spec" in callspec.params:
        return callspec.params["icl_model_spec"].id
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply --icl-task, add named built-in tasks, and order items so each model loads once."""
    icl = config.stash[SESSION]
    wanted = icl.options.tasks
    if wanted:
        found = {i.icl_case.task.name for i in items if hasattr(i, "icl_case")}
        items[:] = [i for i in items if not hasattr(i, "icl_case") or i.icl_case.task.name in wanted]
        missing = tuple(name for name in wanted if name not in found)
        if missing:
            items.extend(BuiltinTasks.from_parent(session, name="lm-eval-tasks", names=missing).collect())
    order = {spec.id: index for index, spec in enumerate(icl.model_specs())}
    items.sort(key=lambda item: order.get(_model_id(item), -1))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Send every item of one model to the same worker, so each worker loads a model once.

    (xdist's own ``--dist loadgroup`` does not group on pytest 9.2: pytest-xdist #1386.)
    """
    from xdist.scheduler import LoadScopeScheduling

    model_ids = sorted((spec.id for spec in config.stash[SESSION].model_specs()), key=len, reverse=True)

    class ModelScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            params = nodeid.rpartition("[")[2].rstrip("]") if nodeid.endswith("]") else ""
            for model_id in model_ids:
                if params == model_id or params.startswith(model_id + "-"):
                    return model_id
            return super()._split_scope(nodeid)

    return ModelScheduling(config, log)


# ---- fixtures


@pytest.fixture(scope="session")
def icl_session(request: pytest.FixtureRequest) -> IclSession:
    """The run's :class:`pytest_icl.session.IclSession` (options, loaded model, results)."""
    return request.config.stash[SESSION]


@pytest.fixture
def icl_model_spec(request: pytest.FixtureRequest):
    """The model under test (a :class:`pytest_icl.models.ModelSpec`)."""
    if hasattr(request, "param"):
        return request.param
    case = getattr(request.node, "icl_case", None)
    if case is None:
        _fail(_NEEDS_TASK)
    return case.model


@pytest.fixture
def icl_model(icl_session: IclSession, icl_model_spec):
    """The loaded model (:class:`pytest_icl.models.LoadedModel`); one model is resident at a time."""
    try:
        return icl_session.pool.get(icl_model_spec)
    except ModelError as error:
        _fail(str(error))


_NEEDS_TASK = "icl_analysis needs @pytest.mark.icl_task(TASK): an lm-eval name, a YAML path or a config dict"


def _task_of(request: pytest.FixtureRequest) -> TaskSource:
    case = getattr(request.node, "icl_case", None)
    if case is not None:
        return case.task
    marker = request.node.get_closest_marker("icl_task")
    if marker is None or len(marker.args) != 1:
        _fail(_NEEDS_TASK)
    task = marker.args[0]
    if isinstance(task, dict):
        return TaskSource.inline(task)
    if isinstance(task, (str, os.PathLike)) and str(task).endswith((".yaml", ".yml")):
        path = Path(task)
        if not path.is_absolute():
            path = Path(request.node.path).parent / path
        return TaskSource.from_path(path)
    return TaskSource.builtin(str(task))


@pytest.fixture
def icl_analysis(request: pytest.FixtureRequest, icl_session: IclSession, icl_model_spec):
    """The ZSL/ICL/FT analysis of the test's task on the model under test (an ``IclResult``).

    Shared by every test of the same task × model: the runs happen once.
    """
    try:
        case = IclCase(icl_model_spec, _task_of(request))
        result = icl_session.result(case)
    except TaskUnavailable as error:
        named = getattr(request.node, "icl_case", None) is None or case.task.name in icl_session.options.tasks
        if named:
            _fail(str(error))
        _skip(str(error))
    except (TaskError, ModelError) as error:
        _fail(str(error))
    request.node.user_properties.append(("icl_row", result.row))
    return result


# ---- results


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xpassed" if report.passed else "xfailed"
    return report.outcome


class ResultCollector:
    """Registered as a plugin: gathers result rows and property outcomes from test reports.

    Reports carry the rows in ``user_properties``, which pytest-xdist forwards from its workers,
    so the controller sees every row with and without ``-n``.
    """

    def __init__(self, session: IclSession):
        self.session = session
        self.comparisons: dict[str, dict] = {}  # pair -> Comparison.to_dict(), from the baseline items
        self.baseline_lines: list[tuple[str, bool]] = []  # (line, is_error) for the terminal summary
        self.html: Path | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and report.outcome == "passed":
            return
        for name, value in report.user_properties:
            if name == "icl_row":
                self.session.add_row(value)
            elif name == "icl_property":
                self.session.add_property_outcome(value["pair"], value["property"], _outcome(report))
            elif name == "icl_baseline":
                self.comparisons[value["pair"]] = value

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """On the controller: write the baseline (--icl-baseline-update) and the HTML report."""
        if self.session.is_worker:
            return
        options = self.session.options
        rows = self.session.finished_rows()
        if options.baseline_update:
            from pytest_icl.baseline import BaselineError, update_baseline

            if exitstatus == pytest.ExitCode.INTERRUPTED:
                self.baseline_lines.append((f"baseline: run interrupted, {options.baseline} not updated (left as it was)", True))
            elif not rows:
                self.baseline_lines.append((f"baseline: no finished task × model rows, {options.baseline} not updated", True))
            else:
                try:
                    self.baseline_lines.append(("baseline: " + update_baseline(options.baseline, rows).line, False))
                except (BaselineError, OSError) as error:
                    self.baseline_lines.append((f"baseline: could not update, the previous file is unchanged: {error}", True))
                    if session.exitstatus == pytest.ExitCode.OK:
                        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif self.comparisons:
            counts = {}
            for comparison in self.comparisons.values():
                counts[comparison["status"]] = counts.get(comparison["status"], 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            failed = any(status != "passed" for status in counts)
            self.baseline_lines.append((f"baseline: {len(self.comparisons)} pair(s) compared with {options.baseline}: {summary}", failed))
            from pytest_icl.baseline import notable_changes

            for comparison in self.comparisons.values():
                line = notable_changes(comparison)
                if line:
                    self.baseline_lines.append((f"  {line}", False))
        if options.report is not None and rows:
            from pytest_icl.html import write_html_report

            self.html = write_html_report(options.report, rows, comparisons=self.comparisons, baseline=options.baseline)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        """The results table, one row per task × model."""
        if self.session.is_worker:
            return
        rows = self.session.finished_rows()
        if not rows:
            for line, is_error in self.baseline_lines:
                terminalreporter.write_line(line, red=is_error, bold=is_error)
            return
        from pytest_icl.report import format_table

        terminalreporter.write_sep("=", "ICL vs finetuning")
        for line in format_table(rows):
            terminalreporter.write_line(line)
        if self.session.options.report is not None:
            terminalreporter.write_line(f"results: {self.session.options.report / 'results.json'} and results.csv")
        if self.html is not None:
            terminalreporter.write_line(f"report: {self.html}")
        for line, is_error in self.baseline_lines:
            terminalreporter.write_line(line, red=is_error, bold=is_error)
