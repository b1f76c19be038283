"""The controller's summary: how each item's report becomes one outcome of its pair."""

from __future__ import annotations

import pytest

from pytest_icl.plugin.summary import neither_of, outcome_of


def _report(outcome: str, *, when: str = "call", reason: str | None = None, wasxfail: str | None = None) -> pytest.TestReport:
    longrepr = ("tasks/t.yaml", 0, f"Skipped: {reason}") if outcome == "skipped" else None
    report = pytest.TestReport("tasks/t.yaml::test_icl[m-t-simaou]", ("tasks/t.yaml", 0, "x"), {}, outcome, longrepr, when)
    if wasxfail is not None:
        report.wasxfail = wasxfail
    return report


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (_report("passed"), "passed"),
        (_report("failed"), "failed"),
        (_report("failed", when="setup"), "error"),  # the pair could not be analysed
        (_report("skipped", reason="undecided: [m-t] SimAOU ..."), "undecided"),
        (_report("skipped", reason="inconclusive: [m-t] ..."), "inconclusive"),
        (_report("skipped", reason="the dataset cannot be had offline"), "skipped"),
        (_report("skipped", reason="undecided"), "skipped"),  # only the outcome followed by ':' is ours
        (_report("skipped", wasxfail="known"), "xfailed"),
        (_report("passed", wasxfail="known"), "xpassed"),
    ],
    ids=["passed", "failed", "error", "undecided", "inconclusive", "plain-skip", "not-ours", "xfailed", "xpassed"],
)
def test_each_report_becomes_one_outcome(report, expected):
    assert outcome_of(report) == expected


def test_neither_is_only_for_skips():
    assert neither_of(_report("failed")) is None
    assert neither_of(_report("skipped", reason="inconclusive: no ICL effect")) == "inconclusive"
