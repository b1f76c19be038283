"""``icl.expected_failures``: properties measured not to hold are xfail (non-strict), with the reason.

One run (module-scoped) of two tasks on the tiny GPT-2, each listing ``simam`` and ``accuracy``
as expected failures, with ``--icl-threshold simam=2`` (never holds) and ``accuracy=-1`` (always
holds):

* known: simam is XFAIL with its reason, accuracy XPASS (the property holds after all, which a
  non-strict xfail reports without failing the run);
* too_long: its prompt does not fit the model, so the analysis cannot run. Its expected failures
  must not hide that: every item is an ERROR, not XFAIL.
"""

from __future__ import annotations

import pytest

from tests.integration.icl_project import reported, run_pytest, write_task

EXPECTED = {"simam": "measured: after 0.40 < before 0.45", "accuracy": "measured: ICL at chance"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_gpt2) -> pytest.RunResult:
    folder = tmp_path_factory.mktemp("expected-failures")
    write_task(folder / "tasks", "known", icl={"expected_failures": EXPECTED})
    # The tiny models take 256 positions; this description alone is longer.
    write_task(folder / "tasks", "too_long", icl={"expected_failures": EXPECTED}, description="word " * 300)
    return run_pytest(
        folder, f"--icl-model={tiny_gpt2}", "--icl-limit", "6", "--icl-threshold", "simam=2",
        "--icl-threshold", "accuracy=-1", "-k", "simam or accuracy", "-v", "-rxX",
    )  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(run) -> dict[str, str]:
    """``<task>-<property>`` -> PASSED / XFAIL / XPASS / ERROR ..."""
    return {line.node.split("[tiny-gpt2-")[1].rstrip("]"): line.outcome for line in reported(run)}


def test_a_property_known_not_to_hold_is_xfail_with_its_reason(run, outcomes):
    assert outcomes["known-simam"] == "XFAIL"
    run.stdout.fnmatch_lines(["XFAIL *test_icl[[]tiny-gpt2-known-simam] - known not to hold: measured: after 0.40 < before 0.45"])


def test_a_property_that_holds_after_all_is_xpass_and_does_not_fail_the_run(run, outcomes):
    assert outcomes["known-accuracy"] == "XPASS"
    run.stdout.fnmatch_lines(["XPASS *test_icl[[]tiny-gpt2-known-accuracy] - known not to hold: measured: ICL at chance"])


def test_an_analysis_that_cannot_run_errors_despite_expected_failures(run, outcomes):
    assert outcomes["too_long-simam"] == outcomes["too_long-accuracy"] == "ERROR"
    run.stdout.fnmatch_lines(["*too_long: the 4-shot prompt needs * tokens, but the model takes at most 256. Lower --icl-shots*"])
    run.assert_outcomes(xfailed=1, xpassed=1, errors=2, deselected=6)


def test_an_unknown_property_is_a_collection_error(tmp_path, tiny_gpt2):
    write_task(tmp_path / "tasks", "typo", icl={"expected_failures": {"simaoo": "why"}})
    result = run_pytest(tmp_path, f"--icl-model={tiny_gpt2}", "--collect-only", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*typo.yaml: expected_failures names unknown properties [[]'simaoo'*; known: accuracy, *"])
