"""The suite on a tiny GPT-Neo folder (alternating global and local attention), beside GPT-2."""

from __future__ import annotations

import json
import math

from tests.integration.icl_project import SUITE_TASKS, reported


def test_suite_runs_on_gpt_neo(serial_run):
    lines = [line for line in reported(serial_run.result) if "[tiny-gpt-neo-" in line.node]
    rows = [row for row in json.loads((serial_run.report / "results.json").read_text())["rows"] if row["model_id"] == "tiny-gpt-neo"]

    assert len(lines) == 10 and {line.outcome for line in lines} <= {"PASSED", "FAILED", "UNDECIDED"}  # no errors
    assert sorted(row["task"] for row in rows) == sorted(SUITE_TASKS)
    for row in rows:
        assert all(math.isfinite(row["values"][name]) for name in ("simaou", "simam_after", "kendall", "acc_ft"))
        assert len(row["layers"]["simaou"]) == 2  # one global and one local layer
