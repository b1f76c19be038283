"""The controller's end of the run, registered as a plugin: results from reports, then the summary.

Reports carry their pair's row and each property's outcome as attributes (``report.icl``),
which pytest-xdist forwards from its workers, so the controller sees every result with and
without ``-n``. :class:`pytest_icl.report.results.ResultStore` stores each finished pair (with
``--icl-report``: into the folder's store, rebuilding results.json/csv from every pair it holds);
at the end come the baseline update, the HTML report (every pair of the folder) and the results
table, with how many pairs were resumed from the folder and which stored pairs were replaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_icl.plugin.collection import NEITHER
from pytest_icl.plugin.session import IclSession
from pytest_icl.report.results import ResultStore


def neither_of(report: pytest.TestReport) -> str | None:
    """``undecided`` or ``inconclusive`` for a generated item skipped as such, else None."""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        for outcome in NEITHER:
            if reason.startswith(f"{outcome}:"):
                return outcome
    return None


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
    def __init__(self, session: IclSession, store: ResultStore):
        self.session = session
        self.store = store
        self.comparisons: dict[str, dict] = {}  # pair -> Comparison.to_dict(), from the baseline items
        self.baseline_lines: list[tuple[str, bool]] = []  # (line, is_error) for the terminal summary
        self.html: Path | None = None

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
            self.store.add_outcome(prop["pair"], prop["name"], outcome_of(report))

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
