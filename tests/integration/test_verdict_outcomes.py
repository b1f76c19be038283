"""The four outcomes as a user sees them: the summary line, the verdict table, JUnit and results.json."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

OUTCOMES = {"passed", "failed", "undecided", "inconclusive"}


@pytest.fixture
def gated_run(project):
    """A random tiny model shows no ICL effect: the gated items are inconclusive, with the reason."""
    project.task()
    defaults = ("--icl-accuracy-gate=on", "--icl-shuffled=on")  # the project's ini opens them for the wiring tests
    result = project.run(*defaults, "--icl-seeds", "2", "--icl-report", "out", "--junitxml", "junit.xml", "-rA")
    row = json.loads((project.path / "out" / "results.json").read_text())["rows"][0]
    return project, result, row


def test_the_summary_line_counts_inconclusive_apart_from_skipped(gated_run):
    _, result, row = gated_run
    outcomes = result.parseoutcomes()
    assert outcomes.get("inconclusive", 0) == 4, result.stdout.str()[-3000:]
    assert outcomes.get("skipped", 0) == 0  # an inconclusive item is not a plain skip
    assert {row["properties"][name] for name in ("rec2ftp", "simaou", "simam", "kendall")} == {"inconclusive"}


def test_the_terminal_shows_each_estimate_interval_margin_and_outcome(gated_run):
    _, result, row = gated_run
    result.stdout.fnmatch_lines([
        "*verdicts: metric − control over the draws, 95% interval, margin*",
        "model*task*property*metric−control*95% CI*margin*outcome*",
        "tiny-gpt2*antonyms*simaou*inconclusive*",
    ])  # fmt: skip
    result.stdout.fnmatch_lines(["tiny-gpt2-antonyms: icl_effect closed: *"])
    assert row["draws"] == 2 and row["gates"]["icl_effect"]["open"] is False


def test_results_json_has_every_verdict_with_its_interval(gated_run):
    _, _, row = gated_run
    assert set(row["verdicts"]) == {"accuracy", "rec2ftp", "simaou", "simam", "kendall"}
    for name, verdict in row["verdicts"].items():
        assert verdict["outcome"] in OUTCOMES
        assert verdict["draws"] == 2 and "margin" in verdict
        if verdict["estimate"] is not None:
            assert verdict["low"] <= verdict["estimate"] <= verdict["high"], name
        assert row["properties"][name] == verdict["outcome"], name  # the item's outcome is the verdict's
    assert len(row["verdicts"]["simaou"]["comparisons"]) == 2  # random control and shuffled-label FT


def test_junit_carries_the_outcome_and_interval_of_each_item(gated_run):
    project, _, row = gated_run
    tree = ET.parse(project.path / "junit.xml")
    found = {}
    for case in tree.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "icl.outcome" in props:
            found[case.get("name")] = props
    simaou = next(props for name, props in found.items() if name.endswith("-simaou]"))
    assert simaou["icl.outcome"] == "inconclusive" and simaou["icl.draws"] == "2"
    assert {"icl.estimate", "icl.ci_low", "icl.ci_high", "icl.margin"} <= set(simaou)


def test_a_single_draw_is_marked_as_such(project):
    project.task()
    result = project.run("--icl-seeds", "1", "--icl-report", "out")
    row = json.loads((project.path / "out" / "results.json").read_text())["rows"][0]
    assert row["draws"] == 1
    result.stdout.fnmatch_lines(["tiny-gpt2*antonyms*1 single*"])


def test_with_the_gates_open_a_straddling_interval_is_undecided_not_passed(project):
    project.task()
    result = project.run(
        "--icl-accuracy-gate", "off", "--icl-shuffled=on", "--icl-seeds=2", "--icl-threshold", "simaou=0", "--icl-report", "out"
    )
    row = json.loads((project.path / "out" / "results.json").read_text())["rows"][0]
    for name, verdict in row["verdicts"].items():
        low, high, margin = verdict["low"], verdict["high"], verdict["margin"]
        if verdict["outcome"] == "passed":
            assert low > margin, name
        if verdict["outcome"] == "undecided" and low is not None:
            assert low <= margin <= high or len(verdict["comparisons"]) > 1, name
        if verdict["outcome"] == "inconclusive":  # the gates are open: only a comparison that cannot be made
            assert "shuffled-label control of" in verdict["reason"] and "is undefined" in verdict["reason"], name
    counts = result.parseoutcomes()
    assert sum(counts.get(k, 0) for k in ("passed", "failed", "undecided", "inconclusive")) == 5, counts
