"""The controller's end of the run, registered as a plugin: what the terminal says around the run
(header lines, each collected task's notes, the tasks skipped and why), results from reports, then the summary.

Reports carry their pair's row and each property's outcome as attributes (``report.icl``),
which pytest-xdist forwards from its workers, so the controller sees every result with and
without ``-n``. :class:`pytest_icl.report.results.ResultStore` stores each finished pair (with
``--icl-report``: into the folder's store, rebuilding results.json/csv from every pair it holds);
at the end come the baseline update, the HTML report (every pair of the folder) and the results
table, with how many pairs were resumed from the folder and which stored pairs were replaced.

The header is printed before the collection, so each task's notes (where the run departs from lm-eval
run on the YAML: k overridden, a fixed set of demonstrations) come once the items are known: the
serial run's, or the node ids of the first xdist worker's collection (the controller collects nothing).
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from pathlib import Path

import pytest

from pytest_icl.errors import IclError, OptionError
from pytest_icl.plugin.collection import NEITHER
from pytest_icl.plugin.scheduling import USER_DIST, dist_header
from pytest_icl.plugin.session import IclSession
from pytest_icl.report.results import ResultStore
from pytest_icl.tasks.files import TaskSource, find_task, task_headers

_ORIGIN = re.compile(r"^.*?\.ya?ml: ")  # a message's leading "<task file>: "


def neither_of(report: pytest.TestReport) -> str | None:
    """``undecided`` or ``inconclusive`` for a generated item skipped as such, else None."""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        for outcome in NEITHER:
            if reason.startswith(f"{outcome}:"):
                return outcome
    return None


def skip_reason(report: pytest.TestReport) -> str | None:
    """The reason of a skip (with or without xdist, whose reports carry the tuple as a list)."""
    if report.skipped and isinstance(report.longrepr, (tuple, list)) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return None


def task_notes(sources: list[TaskSource], options) -> list[str]:
    """Each task's notes, once: where the run departs from lm-eval run on the YAML (k, the demonstrations)."""
    from pytest_icl.tasks.fewshot import header_notes

    lines = []
    for source in {source.name: source for source in sources}.values():
        lines += [f"icl: {source.name}: {note}" for note in header_notes(source, shots=options.shots, seed=options.seed)]
    return lines


def refuse_unknown_tasks(names: tuple[str, ...], roots: list[Path], in_roots: list[tuple[Path, dict]], *, named: list[Path]) -> None:
    """Each ``--icl-task`` name must be one task file's (in the task folders or named on the command line)
    or lm-eval's; else an OptionError (exit 4) naming the closest known names, before any model loads.

    Run on the controller at start: under xdist the workers collect, and a usage error raised there
    crashes them (INTERNALERROR) instead of ending the run with the message. ``in_roots``: the task
    files of ``roots`` and their headers (:func:`pytest_icl.tasks.files.task_headers`)."""
    named_files = [path for path in named if path.suffix in (".yaml", ".yml") and path.is_file()]
    local = {header["task"]: path for path, header in reversed([*in_roots, *task_headers(named_files)])}
    for name in names:
        try:
            find_task(name, roots, headers=in_roots)  # two task files of one name: said here too, before xdist's workers collect
        except IclError as error:
            raise OptionError(f"--icl-task: {error}") from None
    missing = [name for name in names if name not in local]
    if not missing:
        return
    from pytest_icl.tasks.loading import builtin_task_names

    builtins = set(builtin_task_names())
    unknown = [name for name in missing if name not in builtins]
    if unknown:
        known = [*sorted(local), *sorted(builtins)]  # the project's own names first
        hints = [
            f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if (close := get_close_matches(name, known, n=3)) else "")
            for name in unknown
        ]
        raise OptionError(
            f"--icl-task: no task named {'; '.join(hints)}: no task file in the task folders "
            f"({', '.join(map(str, roots))}) or named on the command line defines it, and lm-eval has no task of that name. "
            "Give the name a task YAML's task: key has (pytest --collect-only lists the collected ones), or an lm-eval task name."
        )


def outcome_of(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xpassed" if report.passed else "xfailed"
    neither = neither_of(report)
    if neither:
        return neither
    if report.failed and report.when != "call":
        return "error"
    return report.outcome


class Summary:
    def __init__(self, session: IclSession, store: ResultStore, roots: list[Path] = ()):
        self.session = session
        self.store = store
        self.roots = list(roots)  # the task folders
        self.comparisons: dict[str, dict] = {}  # pair -> Comparison.to_dict(), from the baseline items
        self.baseline_lines: list[tuple[str, bool]] = []  # (line, is_error) for the terminal summary
        self.html: Path | None = None
        self.notes: list[str] | None = None  # the tasks' notes, once known; [] once printed
        self.skipped: dict[str, str] = {}  # task -> why its generated items were skipped (the first, full, reason)

    # ---- around the run: the header, the tasks' notes

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """A user's --dist that turns the model grouping off; a task named with --icl-task that shadows lm-eval's."""
        lines = [dist_header(config.stash[USER_DIST])] if USER_DIST in config.stash else []
        names = self.session.options.tasks
        if names:
            from pytest_icl.tasks.loading import builtin_task_exists

            headers = self.session.task_headers(self.roots)
            for name in names:
                try:
                    found = find_task(name, self.roots, headers=headers)
                except IclError:
                    continue  # reported when the items are collected
                if found is not None and builtin_task_exists(name):
                    lines.append(f"icl: --icl-task {name} is the task file {found.path}; lm-eval's built-in task {name!r} is not used")
        return lines

    @pytest.hookimpl(trylast=True)  # after pytest's "collected N items"
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        sources = [item.icl_case.task for item in session.items if hasattr(item, "icl_case")]
        self.notes = task_notes(sources, self.session.options)
        self._write_notes(session.config)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.config = session.config

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        """Under xdist: the task files among the first worker's node ids (the controller collects nothing)."""
        if self.notes is None:
            files = dict.fromkeys(i.split("::")[0] for i in ids if i.split("::")[0].endswith((".yaml", ".yml")))
            sources = []
            for file in files:
                try:
                    sources.append(TaskSource.from_path(self.config.rootpath / file))
                except (IclError, OSError):
                    continue
            self.notes = task_notes(sources, self.session.options)

    @pytest.hookimpl(tryfirst=True)  # printed before the first test's line
    def pytest_runtest_logstart(self, nodeid, location) -> None:
        if self.notes:
            self._write_notes(self.config)

    def _write_notes(self, config: pytest.Config) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.notes and config.get_verbosity() >= 0 and not config.getoption("no_header", False):
            reporter.ensure_newline()
            for line in self.notes:
                reporter.write_line(line)
        self.notes = []

    # ---- results

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, "icl", None)
        if not payload:
            return
        prop = payload.get("property")
        if prop is not None:
            self.store.expect(prop["pair"], prop["items"])
        if "row" in payload:
            self.store.add_row(payload["row"], resumed=bool(payload.get("resumed")))
        if "baseline" in payload:
            self.comparisons[payload["baseline"]["pair"]] = payload["baseline"]
        # One outcome per item: its call, or the setup that stopped it (a skip, an error).
        decisive = report.when == "call" or (report.when == "setup" and report.outcome != "passed")
        if prop is not None and decisive:
            outcome = outcome_of(report)
            self.store.add_outcome(prop["pair"], prop["name"], outcome)
            reason = skip_reason(report) if outcome == "skipped" and "task" in prop else None
            if reason and prop["task"] not in self.skipped:  # once per task, whatever the model (-rs lists every item)
                task = prop["task"]
                self.skipped[task] = _ORIGIN.sub("", reason).replace("--icl-data TASK=", f"--icl-data {task}=")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write what is left, the baseline (--icl-baseline-update) and the HTML report."""
        self.store.close()
        options = self.session.options
        rows = self.store.finished_rows()
        if options.baseline_update:
            self._update_baseline(session, exitstatus, rows)
        elif self.comparisons:
            self._summarise_comparisons()
        store = self.session.store
        if store is not None:
            self.html = store.rebuild(
                html=True, model_order=options.models, comparisons=self.comparisons, baseline=options.baseline
            )  # fmt: skip

    def _update_baseline(self, session: pytest.Session, exitstatus: int, rows: list[dict]) -> None:
        from pytest_icl.report.baseline import BaselineError, update_baseline

        path = self.session.options.baseline
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.baseline_lines.append((f"baseline: run interrupted, {path} not updated (left as it was)", True))
        elif not rows:
            self.baseline_lines.append((f"baseline: no finished task × model rows, {path} not updated", True))
        else:
            try:
                self.baseline_lines.append(("baseline: " + update_baseline(path, rows).line, False))
            except (BaselineError, OSError) as error:
                self.baseline_lines.append((f"baseline: could not update, the previous file is unchanged: {error}", True))
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _summarise_comparisons(self) -> None:
        from pytest_icl.report.comparison import notable_changes

        counts: dict[str, int] = {}
        for comparison in self.comparisons.values():
            counts[comparison["status"]] = counts.get(comparison["status"], 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        failed = any(status != "passed" for status in counts)
        self.baseline_lines.append(
            (f"baseline: {len(self.comparisons)} pair(s) compared with {self.session.options.baseline}: {summary}", failed)
        )
        for comparison in self.comparisons.values():
            line = notable_changes(comparison)
            if line:
                self.baseline_lines.append((f"  {line}", False))

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        """The results table, one row per task × model."""
        rows = self.store.finished_rows()
        if rows:
            from pytest_icl.report.rows import format_controls, format_gates, format_table, format_verdicts

            terminalreporter.write_sep("=", "ICL vs finetuning")
            for line in format_table(rows):
                terminalreporter.write_line(line)
            verdicts = format_verdicts(rows)
            _section(
                terminalreporter,
                "verdicts: metric − control over the draws, 95% interval, margin",
                verdicts + format_gates(rows) if verdicts else [],
            )
            _section(terminalreporter, "controls (--icl-controls)", format_controls(rows))
            if self.session.options.report is not None:
                terminalreporter.write_line(f"results: {self.session.options.report / 'results.json'}, results.csv and samples_*.jsonl")
            if self.html is not None:
                terminalreporter.write_line(f"report: {self.html}")
        for line in self._store_lines():
            terminalreporter.write_line(line)
        for line, is_error in self.baseline_lines:
            terminalreporter.write_line(line, red=is_error, bold=is_error)
        _section(terminalreporter, "tasks skipped (-rs lists the items)", [f"{task}: {reason}" for task, reason in self.skipped.items()])

    def _store_lines(self) -> list[str]:
        """What the run did to the report folder beyond adding pairs: resumed, replaced, taken over."""
        store = self.session.store
        if store is None:
            return []
        lines = []
        if self.store.resumed:
            lines.append(
                f"resumed: {len(self.store.resumed)} pair(s) from {store.folder} (stored results, not computed again; "
                "--icl-rerun computes them)"
            )
        if store.replaced:
            lines.append(f"replaced: {len(store.replaced)} stored pair(s) with this run's result: " + "; ".join(store.replaced))
        if store.adopted:
            lines.append(f"adopted: {store.adopted} row(s) of the folder's earlier results.json into its store")
        return lines


def _section(terminalreporter, title: str, lines: list[str]) -> None:
    """A titled block of the summary; nothing at all when it has no line."""
    if lines:
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line)
