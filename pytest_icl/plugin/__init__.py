"""pytest wiring only: options, configuration, collection hooks, fixtures, the summary.

The library does the work, composed by :func:`pytest_icl.pipeline.run_pipeline` (models → tasks →
engine → analysis → controls → report); :mod:`pytest_icl.options` owns every option,
:mod:`pytest_icl.plugin.collection` the items, :mod:`pytest_icl.plugin.session` the model pool and
the memo, and :mod:`pytest_icl.report.results` the controller's results. This module must stay
cheap to import (no torch, transformers or lm-eval here: ``pytest --collect-only`` stays fast).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from pytest_icl import catalogue
from pytest_icl.errors import IclError, OptionError, TaskUnavailable
from pytest_icl.options import BY_DEST, OPTIONS, check_device, check_report_folder, parse_options
from pytest_icl.pipeline import task_source
from pytest_icl.plugin.collection import SESSION, NamedTasks, TaskFile, check_data_names, fail, skip
from pytest_icl.plugin.scheduling import USER_DIST, pin_worker, user_dist
from pytest_icl.plugin.session import IclCase, IclSession
from pytest_icl.report.results import ResultStore
from pytest_icl.sharding import fingerprint, resolve_shard, select
from pytest_icl.tasks.files import TaskSource, find_task, is_task_file

# A value option's ini type. pytest 9's native TOML ([tool.pytest]) keeps TOML's types and checks
# them against the registered type: "string" would refuse ``icl_shots = 8``. pytest 9.2 takes a
# union, and an INI file or ``-o`` still gives the string (the first member). Either way the value
# reaches parse_options, which parses str(value): 8 -> "8", 0.01 -> "0.01", false -> "False".
# A flag's ini key takes a TOML boolean or "on"/"off" the same way.
_SCALAR = (str | int | float | bool) if pytest.version_tuple >= (9, 2) else "string"
_FLAG = (bool | str) if pytest.version_tuple >= (9, 2) else "bool"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("icl", "in-context learning vs finetuning (pytest-icl)")
    for option in OPTIONS:
        if option.kind == "list":
            group.addoption(option.flag, action="append", dest=option.dest, default=None, metavar=option.metavar, help=option.help)
            parser.addini(option.dest, option.help, type="linelist", default=[])
        elif option.kind == "flag":
            group.addoption(option.flag, action="store_true", dest=option.dest, default=None, help=option.help)
            parser.addini(option.dest, option.help, type=_FLAG, default=False)
        else:
            group.addoption(option.flag, dest=option.dest, default=None, metavar=option.metavar, help=option.help)
            parser.addini(option.dest, option.help, type=_SCALAR, default=None)
        if option.old_ini:
            parser.addini(option.old_ini, f"deprecated: use {option.dest}", type="linelist", default=[])
    parser.addini("icl_tasks", "folders whose task YAML files become ICL test items", type="paths", default=[])


def _raw_value(config: pytest.Config):
    """Each option's value and where it came from: the command line, else the ini file."""

    def raw(dest: str):
        option = BY_DEST[dest]
        value = config.getoption(dest)
        if value not in (None, []):
            return value, option.flag
        value = config.getini(dest)
        if _unset(value, option.kind) and option.old_ini and config.getini(option.old_ini):
            value = config.getini(option.old_ini)
            warnings.warn(pytest.PytestConfigWarning(f"ini key {option.old_ini} is deprecated: rename it {dest}"), stacklevel=1)
        if _unset(value, option.kind):
            return None
        return value, f"{dest} (ini)"

    return raw


def _unset(value, kind: str) -> bool:
    """An ini value that was not given; a value option's TOML ``0`` or ``false`` was (0 == False in Python)."""
    if kind == "value":
        return value is None or value == ""  # 0 == "" is False: a TOML 0 is a value (and a bad one)
    return value in ("", [], False)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Check every option, pin an xdist worker's GPUs, and build the run's session object."""
    config.addinivalue_line("markers", "icl: a generated ICL-vs-finetuning property test")
    config.addinivalue_line(
        "markers",
        "icl_task(task): the task for the icl_analysis fixture: an lm-eval name, a YAML path, or an inline config dict",
    )
    is_worker = hasattr(config, "workerinput")
    try:  # whatever is wrong at start is the user's to fix: exit 4 with the message
        session = _start(config, is_worker)
    except IclError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[SESSION] = session
    _progress_stream(config)
    if not is_worker:
        from pytest_icl.plugin.summary import Summary

        results = ResultStore(session.options.report, model_order=session.options.models, store=session.store)
        config.pluginmanager.register(Summary(session, results, roots=_task_roots(config)[0]), "icl-summary")


def _progress_stream(config: pytest.Config) -> None:
    """Progress lines to the stderr that pytest's fd capture replaced (its saved descriptor), so a CI log shows them."""
    from pytest_icl.plugin.session import use_stderr

    capture = getattr(config.pluginmanager.getplugin("capturemanager"), "_global_capturing", None)
    saved = getattr(getattr(capture, "err", None), "targetfd_save", None)
    if isinstance(saved, int):
        try:
            use_stderr(os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="replace", buffering=1))
        except OSError:
            pass


def _start(config: pytest.Config, is_worker: bool) -> IclSession:
    """The session, once the options, the GPUs, the models and the baseline file are known to be usable."""
    options = parse_options(_raw_value(config), ini_dir=config.inipath.parent if config.inipath else None)
    if is_worker and options.device != "cpu":  # before anything initialises CUDA: the worker sees only its own GPUs
        pin_worker(os.environ, config.workerinput, options.gpus_per_worker)
    check_device(options.device)
    if options.report is not None and not is_worker:
        check_report_folder(options.report)
    session = IclSession(options, is_worker=is_worker)
    ids = [spec.id for spec in session.model_specs()]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise OptionError(
            f"--icl-model: more than one model has the test id {', '.join(repeated)}; each model must be named once, "
            "and two folders of the same name must be renamed (the id is the folder or file name)"
        )
    if options.baseline is not None:
        from pytest_icl.report.baseline import read_baseline

        # Fail fast on a missing, corrupt or foreign file; with --icl-baseline-update it is read again at the end.
        baseline = read_baseline(options.baseline, missing_ok=options.baseline_update)
        session.baseline = None if options.baseline_update else baseline
    session.shard = resolve_shard(options.shard, os.environ)
    if options.tasks and not is_worker:  # before the collection, which xdist's workers do: a name no task has
        from pytest_icl.plugin.summary import refuse_unknown_tasks

        named = [config.invocation_params.dir / arg.split("::")[0] for arg in config.args]
        roots = _task_roots(config)[0]
        refuse_unknown_tasks(options.tasks, roots, session.task_headers(roots), named=named)
    if not is_worker and (given := user_dist(config, _raw_value(config)("icl_dist"))):
        config.stash[USER_DIST] = given  # xdist's own scheduler then runs, and the header says so
    if options.report is not None:  # last: a run refused above leaves the folder as it was
        session.store = open_store(options.report, session.settings, options.dtype)
    return session


def open_store(folder: Path, settings, dtype: str, **run):
    """The report folder as a store; its manifest keeps the run-level settings that decide a stored verdict."""
    from pytest_icl.report.rows import library_versions
    from pytest_icl.report.store import Store

    kept = {name: getattr(settings, name) for name in STORE_SETTINGS}
    kept["dtype"] = dtype
    return Store.open(folder, versions=library_versions(), settings=kept, record=bool(run), **run)


# Settings a folder's pairs share (the manifest refuses a run with others). The key has the rest;
# data paths, the device and the batch size change no result beyond float rounding.
STORE_SETTINGS = ("shots", "seed", "lr", "position", "limit", "thresholds", "accuracy_gate", "controls", "seeds", "shuffled")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is not None:
        session.close()


# ---- collection


def _task_roots(config: pytest.Config) -> tuple[list[Path], bool]:
    """The task folders, and whether they were configured (then malformed files there are errors)."""
    configured = config.getini("icl_tasks")
    roots = configured or [config.rootpath / "tasks"]
    return [Path(root).resolve() for root in roots], bool(configured)


def _named_on_command_line(config: pytest.Config, path: Path) -> bool:
    """Whether ``path`` itself was given on the command line (``pytest my/task.yaml``)."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    for arg in config.args:
        target = Path(arg.split("::")[0])
        target = (config.invocation_params.dir / target) if not target.is_absolute() else target
        if target.resolve() == path:
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    """lm-eval multiple_choice task YAMLs become test files; any other YAML is left alone.

    Ours are the task files inside the task folders (the ``icl_tasks`` ini folders, else
    ``<rootdir>/tasks``) and task files named on the command line. A YAML elsewhere, e.g. one
    next to a test file that uses it through ``@pytest.mark.icl_task``, is not collected.
    Where the folders were configured, or the file was named, a malformed task file is a
    collection error; in the default folder only files that declare a ``task:`` are (a foreign
    project's ``tasks/main.yml`` is left alone).
    """
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    roots, configured = _task_roots(parent.config)
    in_roots = any(root == file_path or root in file_path.parents for root in roots)
    named = _named_on_command_line(parent.config, file_path)
    if not (in_roots or named):
        return None
    if is_task_file(file_path, strict=(in_roots and configured) or named or _declares_task(file_path)):
        return TaskFile.from_parent(parent, path=file_path)
    return None


_TASK_KEY = re.compile(r"^(task|icl)\s*:", re.MULTILINE)


def _declares_task(path: Path) -> bool:
    """A top-level ``task:`` (or the old ``icl:``) line: meant as a task file, so a broken one is reported."""
    try:
        return bool(_TASK_KEY.search(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


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
    """Apply --icl-task, add tasks named but not collected, and order items so each model loads once."""
    icl = config.stash[SESSION]
    wanted = icl.options.tasks
    if wanted:
        found = {i.icl_case.task.name for i in items if hasattr(i, "icl_case")}
        missing, sources = [name for name in wanted if name not in found], {}
        if missing:
            roots, _ = _task_roots(config)
            try:
                # A task file in the task folders wins over an lm-eval built-in of the same name.
                headers = icl.task_headers(roots)  # read once per run: the start-up check read them on the controller
                sources = {name: find_task(name, roots, headers=headers) for name in missing}
            except IclError as error:
                raise pytest.UsageError(f"--icl-task: {error}") from None
        kept, dropped = [], []
        for item in items:
            (dropped if hasattr(item, "icl_case") and item.icl_case.task.name not in wanted else kept).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)  # pytest's summary counts them: "N deselected"
        items[:] = kept
        for source in sources.values():
            if source is not None:  # collected as if named on the command line: its own ids, expected failures
                items.extend(TaskFile.from_parent(session, path=source.path).collect())
        builtins = tuple(TaskSource.builtin(name) for name, source in sources.items() if source is None)
        if builtins:
            items.extend(NamedTasks.from_parent(session, name="lm-eval-tasks", sources=builtins).collect())
    check_data_names(session, items)  # every task of the run is known now, before -k or a shard deselects any
    _select_shard(config, items)
    order = {spec.id: index for index, spec in enumerate(icl.model_specs())}
    items.sort(key=lambda item: order.get(_model_id(item), -1))


def _select_shard(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this shard's pairs (--icl-shard, Slurm array, indexed Job) and record the run in the store."""
    icl = config.stash[SESSION]
    pairs = list(dict.fromkeys((i.icl_case.model.id, i.icl_case.task.name) for i in items if hasattr(i, "icl_case")))
    if icl.shard is not None:
        mine = set(select(pairs, icl.shard))
        kept, deselected = [], []
        for item in items:
            theirs = hasattr(item, "icl_case") and (item.icl_case.model.id, item.icl_case.task.name) not in mine
            (deselected if theirs else kept).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    if icl.store is not None and pairs:
        try:
            open_store(icl.options.report, icl.settings, icl.options.dtype, shard=str(icl.shard) if icl.shard else None,
                       pairs=fingerprint(pairs))  # fmt: skip
        except IclError as error:
            raise pytest.UsageError(str(error)) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Tell each generated item how many items its pair has: the controller writes a pair's files once, when all reported."""
    per_pair: dict[str, int] = {}
    for item in session.items:
        case = getattr(item, "icl_case", None)
        if case is not None:
            per_pair[case.pair] = per_pair.get(case.pair, 0) + 1
    for item in session.items:
        case = getattr(item, "icl_case", None)
        if case is not None:
            prop = {"pair": case.pair, "task": case.task.name, "name": case.property_name, "items": per_pair[case.pair]}
            item.icl_payload["property"] = prop


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """Undecided and inconclusive items are counted apart from passes, failures and plain skips."""
    if report.when != "call" and not (report.when == "setup" and report.skipped):
        return None
    if getattr(report, "icl", None) is None:
        return None
    from pytest_icl.plugin.summary import neither_of

    outcome = neither_of(report)
    if outcome is not None:
        return outcome, outcome[0], outcome.upper()
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """Results travel on the report (pytest-xdist forwards its attributes), not in user_properties (JUnit)."""
    report = yield
    payload = getattr(item, "icl_payload", None)
    if payload:
        report.icl = dict(payload)
    return report


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: a run without xdist installed never calls it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Each model's items on one worker (``--icl-dist model``), or model × task groups spread (``pair``);
    None (xdist's own scheduler) where the user gave ``--dist``."""
    if USER_DIST in config.stash:
        return None
    from pytest_icl.plugin.scheduling import make_scheduler

    icl = config.stash[SESSION]
    return make_scheduler(config, log, [spec.id for spec in icl.model_specs()], icl.options.dist)


# ---- fixtures


@pytest.fixture(scope="session")
def icl_session(request: pytest.FixtureRequest) -> IclSession:
    """The run's :class:`pytest_icl.plugin.session.IclSession` (options, loaded model, analyses)."""
    return request.config.stash[SESSION]


@pytest.fixture
def icl_model_spec(request: pytest.FixtureRequest):
    """The model under test (a :class:`pytest_icl.models.loading.ModelSpec`)."""
    if hasattr(request, "param"):
        return request.param
    case = getattr(request.node, "icl_case", None)
    if case is None:
        fail(_NEEDS_TASK)
    return case.model


@pytest.fixture
def icl_model(icl_session: IclSession, icl_model_spec):
    """The loaded model (:class:`pytest_icl.models.loading.LoadedModel`); one model is resident at a time."""
    try:
        return icl_session.pool.get(icl_model_spec)
    except IclError as error:
        fail(str(error))


_NEEDS_TASK = "icl_analysis needs @pytest.mark.icl_task(TASK): an lm-eval name, a YAML path or a config dict"


def _task_of(request: pytest.FixtureRequest) -> TaskSource:
    case = getattr(request.node, "icl_case", None)
    if case is not None:
        return case.task
    marker = request.node.get_closest_marker("icl_task")
    if marker is None or len(marker.args) != 1:
        fail(_NEEDS_TASK)
    roots, _ = _task_roots(request.config)
    try:
        return task_source(marker.args[0], roots=roots, base=Path(request.node.path).parent)
    except IclError as error:
        fail(str(error))


@pytest.fixture
def icl_analysis(request: pytest.FixtureRequest, icl_session: IclSession, icl_model_spec):
    """The ZSL/ICL/FT analysis of the test's task on the model under test (an ``IclResult``).

    Shared by every test of the same task × model: the runs happen once.
    """
    source = _task_of(request)
    generated = getattr(request.node, "icl_case", None) is not None  # only these resume from a stored pair
    try:
        case = getattr(request.node, "icl_case", None)  # a generated item's property names it in a pointer to a shown error
        result = icl_session.result(IclCase(icl_model_spec, source, case.property_name if case else None), resume=generated)
    except IclError as error:
        # Hub data that cannot be had here skips a task found in the folders; a task the user named fails.
        named = getattr(request.node, "icl_case", None) is None or source.name in icl_session.options.tasks
        if isinstance(error, TaskUnavailable) and not named:
            skip(str(error))
        fail(str(error))
    payload = getattr(request.node, "icl_payload", None)
    if payload is None:
        payload = request.node.icl_payload = {}
    if result.row.get("_reported_by") in (None, request.node.nodeid):
        # The row travels once per pair, on the first item that used it; JUnit gets its headline scalars.
        result.row["_reported_by"] = request.node.nodeid
        payload["row"] = {k: v for k, v in result.row.items() if k != "_reported_by"}
        if getattr(result, "stored", False):
            payload["resumed"] = True
        for name in catalogue.headline_metrics():
            value = result.row["values"].get(name)  # a stored NaN reads back as None
            request.node.user_properties.append((f"icl.{name}", round(float("nan") if value is None else value, 6)))
    return result
