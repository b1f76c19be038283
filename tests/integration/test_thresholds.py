"""Property margins: ``--icl-threshold`` beats the task's ``icl.thresholds``, which beats the defaults.

One run (module-scoped, ~15 s) with four tasks on the tiny GPT-2 and ``--icl-threshold accuracy=-1``:

* alpha: ``icl.thresholds: {accuracy: 2}``, beaten by the command line, so accuracy passes;
* beta: ``{simam: 2}``, so simam fails (no similarity difference reaches 2);
* delta: every property at 2: all fail except accuracy (the command line wins again).
"""

from __future__ import annotations

import pytest

from tests.integration.icl_project import SUITE_PROPERTIES, reported, run_pytest, write_task

SELECTED = "alpha and accuracy or beta and simam or delta"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_gpt2) -> pytest.RunResult:
    folder = tmp_path_factory.mktemp("thresholds")
    write_task(folder / "tasks", "alpha", icl={"thresholds": {"accuracy": 2}})
    write_task(folder / "tasks", "beta", icl={"thresholds": {"simam": 2}})
    write_task(folder / "tasks", "delta", icl={"thresholds": dict.fromkeys(SUITE_PROPERTIES, 2)})
    return run_pytest(folder, f"--icl-model={tiny_gpt2}", "--icl-limit", "6", "--icl-threshold", "accuracy=-1", "-k", SELECTED, "-v")


@pytest.fixture(scope="module")
def outcomes(run) -> dict[str, str]:
    """``<task>-<property>`` -> PASSED / FAILED / ..."""
    return {line.node.split("[tiny-gpt2-")[1].rstrip("]"): line.outcome for line in reported(run)}


def test_selected_items_ran(run, outcomes):
    # delta's Rec2FTP is undefined on a random model (FT fixes no zero-shot error): undecided, not failed
    counts = run.parseoutcomes()
    assert (counts.get("passed"), counts.get("failed"), counts.get("undecided"), counts.get("deselected")) == (2, 4, 1, 8), counts
    assert sorted(outcomes) == sorted(["alpha-accuracy", "beta-simam", *(f"delta-{name}" for name in SUITE_PROPERTIES)])


def test_command_line_beats_the_task_file(outcomes):
    assert outcomes["alpha-accuracy"] == outcomes["delta-accuracy"] == "PASSED"


def test_task_thresholds_apply_where_the_command_line_is_silent(run, outcomes):
    assert {outcomes["beta-simam"], *(outcomes[f"delta-{name}"] for name in ("simaou", "simam", "kendall"))} == {"FAILED"}
    assert outcomes["delta-rec2ftp"] == "UNDECIDED"
    run.stdout.fnmatch_lines_random(
        [
            "[[]tiny-gpt2-beta] SimAM after FT above SimAM before FT: failed; simam_after − simam_before = * (95% CI *, margin +2.0000: failed)*",
            "[[]tiny-gpt2-delta] SimAOU above the fair random-update SimAOU: failed; *margin +2.0000: failed*",
            "[[]tiny-gpt2-delta] Kendall(ICL, FT) above Kendall(ICL, random): failed; *margin +2.0000: failed*",
            "*tiny-gpt2*delta*rec2ftp*n/a*n/a*+2*undecided*",
        ]
    )
    run.stdout.no_fnmatch_line("*Traceback*")


def test_unknown_threshold_name_is_a_collection_error_listing_the_known_ones(tmp_path, tiny_gpt2):
    """Caught while collecting the task file: before any model or data is loaded."""
    write_task(tmp_path / "tasks", "gamma", icl={"thresholds": {"acuracy": 0.1}})
    result = run_pytest(tmp_path, f"--icl-model={tiny_gpt2}", "--collect-only", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*gamma.yaml: unknown threshold name(s) [[]'acuracy'] in the task's icl.thresholds; known: accuracy, rec2ftp, simaou, simam, kendall"
        ]
    )
