"""pytest_icl.report.diff and ``python -m pytest_icl diff OLD NEW``: per pair and metric, both intervals, the exit code."""

from __future__ import annotations

import json
import math

import pytest

from pytest_icl.errors import UsageError
from pytest_icl.report.diff import diff, read_rows, where
from tests.unit.test_store import make_row, open_store, run_cli


def _report(folder, rows, *, as_store=True):
    if as_store:
        store = open_store(folder)
        for row in rows:
            store.put(row)
        store.rebuild()
    else:
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"schema": 1, "rows": rows}))
    return folder


def _planted(row: dict, metric: str, value: float, half_width: float = 0.02) -> dict:
    row["values"][metric] = value
    row["intervals"][metric] = [value - half_width, value + half_width]
    return row


def test_unchanged_reports_have_no_regression(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t"), make_row("b", "t")])
    new = _report(tmp_path / "new", [make_row("b", "t"), make_row("a", "t")], as_store=False)
    result = diff(old, new)
    assert result.exit_code == 0 and len(result.pairs) == 2 and not result.missing
    assert {where(d) for pair in result.pairs for d in pair.metrics} == {"inside"}


def test_a_planted_regression_is_found_with_both_intervals(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    new = _report(tmp_path / "new", [_planted(make_row("a", "t"), "simaou", 0.3)])
    result = diff(old, new)
    assert result.exit_code == 1 and result.regressions == 1
    (simaou,) = [d for d in result.pairs[0].metrics if d.metric == "simaou"]
    assert (simaou.stored, simaou.new) == (0.5, 0.3)
    assert simaou.stored_interval == (0.45, 0.55) and simaou.new_interval == pytest.approx((0.28, 0.32))
    assert where(simaou) == "outside both" and simaou.verdict == "regressed"
    text = "\n".join(result.lines())
    assert "1 REGRESSED (simaou)" in text and "outside both" in text and "REGRESSED" in text and text.endswith("— FAIL")


def test_a_drop_inside_the_intervals_or_the_tolerance_is_no_regression(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t", half_width=0.2)])
    new = _report(tmp_path / "new", [_planted(make_row("a", "t"), "acc_icl", 0.4, half_width=0.2)])
    result = diff(old, new)
    (acc,) = [d for d in result.pairs[0].metrics if d.metric == "acc_icl"]
    assert where(acc) == "inside" and acc.verdict == "ok" and result.exit_code == 0


def test_a_metric_that_is_not_compared_is_shown_never_judged(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    new = _report(tmp_path / "new", [_planted(make_row("a", "t"), "simaou_random", 0.0)])
    result = diff(old, new)
    (control,) = [d for d in result.pairs[0].metrics if d.metric == "simaou_random"]
    assert where(control) == "outside both" and result.exit_code == 0


def test_a_metric_that_became_undefined_fails(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    row = make_row("a", "t")
    row["values"]["rec2ftp"], row["intervals"]["rec2ftp"] = None, [None, None]
    result = diff(old, _report(tmp_path / "new", [row], as_store=False))
    assert result.exit_code == 1 and [d.metric for d in result.pairs[0].regressions] == ["rec2ftp"]
    assert math.isnan(result.pairs[0].regressions[0].new)


def test_missing_and_new_pairs(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t"), make_row("a", "gone")])
    new = _report(tmp_path / "new", [make_row("a", "t"), make_row("a", "added")])
    result = diff(old, new)
    assert [r["task"] for r in result.missing] == ["gone"] and [r["task"] for r in result.added] == ["added"]
    assert result.exit_code == 1


def test_new_weights_are_a_note_not_a_mismatch(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    new = _report(tmp_path / "new", [make_row("a", "t", weights_hash="new-weights", task_hash="edited")])
    (pair,) = diff(old, new).pairs
    assert pair.notes == ["weights_hash: weights-a → new-weights", "task_hash: hash-t → edited"]


def test_match_by_task_compares_two_model_versions(tmp_path):
    old = _report(tmp_path / "old", [make_row("model-v1", "t")])
    new = _report(tmp_path / "new", [_planted(make_row("model-v2", "t"), "kendall", 0.1)])
    assert not diff(old, new).pairs  # different model ids: nothing to compare by model
    result = diff(old, new, match="task")
    assert result.pairs[0].name.startswith("model-v1 → model-v2 on t") and result.exit_code == 1


def test_rows_of_one_model_and_task_pair_by_their_key_first(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t", shots=4), make_row("a", "t", shots=8, value=0.9)])
    new = _report(tmp_path / "new", [make_row("a", "t", shots=8, value=0.9), make_row("a", "t", shots=4)])
    result = diff(old, new)
    assert sorted((p.old["shots"], p.new["shots"]) for p in result.pairs) == [(4, 4), (8, 8)] and result.exit_code == 0


def test_only_the_chosen_metrics_and_tolerances(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    new = _report(tmp_path / "new", [_planted(make_row("a", "t"), "simaou", 0.3)])
    result = diff(old, new, metrics=["simaou", "acc_icl"], tolerances={"simaou": 0.5})
    assert [d.metric for d in result.pairs[0].metrics] == ["simaou", "acc_icl"] and result.exit_code == 0


def test_a_path_that_is_no_report_says_what_to_give(tmp_path):
    with pytest.raises(UsageError, match="has no results: give a report folder"):
        read_rows(tmp_path / "nothing")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="is not a pytest-icl results or baseline file"):
        read_rows(tmp_path / "x.json")
    with pytest.raises(UsageError, match="--match"):
        diff(tmp_path, tmp_path, match="weights")


# ---- the command line


def test_cli_diff_exit_codes_and_json(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    same = _report(tmp_path / "same", [make_row("a", "t")])
    worse = _report(tmp_path / "worse", [_planted(make_row("a", "t"), "acc_ft", 0.2)])
    ok = run_cli("diff", old, same, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "1 pair(s) compared, 0 missing, 0 new" in ok.stdout and ok.stdout.rstrip().endswith("— ok")
    bad = run_cli("diff", old, worse, "--json", "diff.json", cwd=tmp_path)
    assert bad.returncode == 1 and "1 REGRESSED (acc_ft)" in bad.stdout
    document = json.loads((tmp_path / "diff.json").read_text())
    (acc_ft,) = [m for m in document["pairs"][0]["metrics"] if m["metric"] == "acc_ft"]
    assert document["exit_code"] == 1 and acc_ft["outside"] == "outside both" and acc_ft["verdict"] == "regressed"
    relaxed = run_cli("diff", old, worse, "--tolerance", "acc_ft=0.5", cwd=tmp_path)
    assert relaxed.returncode == 0


def test_cli_diff_against_a_baseline_file(tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"format": "pytest-icl-baseline", "schema": 1, "rows": [make_row("a", "t")]}))
    new = _report(tmp_path / "new", [_planted(make_row("a", "t"), "simam_delta", 0.1)])
    done = run_cli("diff", baseline, new, cwd=tmp_path)
    assert done.returncode == 1 and "simam_delta" in done.stdout


def test_cli_diff_usage_errors_exit_2(tmp_path):
    done = run_cli("diff", "missing-old", "missing-new", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: missing-old has no results") and "Traceback" not in done.stderr
    bad_tolerance = run_cli("diff", "a", "b", "--tolerance", "nonsense=1", cwd=tmp_path)
    assert bad_tolerance.returncode == 2 and "unknown metric 'nonsense'" in bad_tolerance.stderr


def test_the_json_form_has_no_nan(tmp_path):
    old = _report(tmp_path / "old", [make_row("a", "t")])
    row = make_row("a", "t")
    row["values"]["kendall"] = None
    document = diff(old, _report(tmp_path / "new", [row], as_store=False)).to_dict()
    text = json.dumps(document, allow_nan=False)  # raises on a NaN
    assert '"new": null' in text
