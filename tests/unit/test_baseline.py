"""pytest_icl.report.baseline: reading, checking, merging and writing baseline files, and the comparison rule.

Rows here are hand-made with round numbers so every verdict can be worked out by eye.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest

from pytest_icl.report import baseline as B
from pytest_icl.report import comparison as C
from pytest_icl.report import rows as report


def make_row(**changes) -> dict:
    """A result row: every compared metric 0.5 with interval [0.45, 0.55], 3 layers."""
    metrics = list(B.COMPARED) + list(B.NOT_COMPARED)
    row = {
        "task": "ant", "task_hash": "abc123", "model": "./tiny", "model_id": "tiny", "revision": None,
        "weights_hash": "w" * 64, "dtype": "float32", "device": "cpu", "shots": 4, "seed": 1, "lr": 0.01,
        "position": "label", "eval": 12,
        "values": {m: 0.5 for m in metrics},
        "intervals": {m: [0.45, 0.55] for m in metrics},
        "layers": {m: [0.4, 0.5, 0.6] for m in metrics},
        "counts": {"eval": 12}, "timings": {}, "versions": {}, "properties": {},
    }  # fmt: skip
    for key, value in changes.items():
        row[key] = value
    return row


def with_value(row: dict, metric: str, value, interval=None) -> dict:
    row = copy.deepcopy(row)
    row["values"][metric] = value
    if interval is not None:
        row["intervals"][metric] = list(interval)
    return row


def base(*rows, path="baseline.json") -> B.Baseline:
    return B.Baseline(Path(path), [copy.deepcopy(r) for r in rows])


TOL = B.tolerances_for({}, {})


def verdicts(comparison) -> dict[str, str]:
    return {d.metric: d.verdict for d in comparison.diffs}


# ---- the comparison rule


def test_identical_rows_pass_with_every_compared_metric_ok():
    row = make_row()
    comparison = C.compare(row, base(row), TOL)
    assert comparison.status == "passed" and comparison.passed
    assert set(verdicts(comparison)) == set(B.COMPARED)
    assert set(verdicts(comparison).values()) == {"ok"}
    assert "no regression" in comparison.message


def test_drop_beyond_tolerance_and_both_intervals_is_a_regression_with_a_readable_diff():
    stored = make_row()
    new = with_value(stored, "simaou", 0.3, interval=(0.25, 0.35))  # -0.2; stored CI [0.45, 0.55]
    comparison = C.compare(new, base(stored, path="/x/bl.json"), TOL)
    assert comparison.status == "regressed" and not comparison.passed
    assert [d.metric for d in comparison.regressions] == ["simaou"]
    message = comparison.message
    assert "/x/bl.json" in message and "[tiny-ant]" in message
    line = next(line for line in message.splitlines() if line.strip().startswith("simaou "))
    # metric, stored, stored CI, new, new CI, change, tolerance, direction, verdict
    for part in ("0.5000", "[0.4500, 0.5500]", "0.3000", "[0.2500, 0.3500]", "-0.2000", "0.0200", "lower", "REGRESSED"):
        assert part in line, (part, line)
    assert "worse if" in message


def test_drop_inside_the_stored_interval_is_not_a_regression():
    stored = make_row()
    new = with_value(stored, "simaou", 0.46, interval=(0.40, 0.52))  # beyond tolerance 0.02, inside [0.45, 0.55]
    assert verdicts(C.compare(new, base(stored), TOL))["simaou"] == "ok"


def test_drop_outside_intervals_but_within_tolerance_is_not_a_regression():
    stored = with_value(make_row(), "kendall", 0.5, interval=(0.499, 0.501))
    new = with_value(stored, "kendall", 0.485, interval=(0.484, 0.486))  # -0.015 < 0.02
    assert verdicts(C.compare(new, base(stored), TOL))["kendall"] == "ok"
    assert C.compare(new, base(stored), {**TOL, "kendall": 0.01}).status == "regressed"


def test_a_change_of_exactly_the_tolerance_is_not_a_regression():
    stored = with_value(make_row(), "simaou", 0.5, interval=(0.5, 0.5))
    new = with_value(stored, "simaou", 0.5 - 0.02, interval=(0.48, 0.48))
    assert verdicts(C.compare(new, base(stored), TOL))["simaou"] == "ok"


def test_one_flipped_example_under_a_degenerate_stored_interval_is_not_significant():
    # 12/12 correct stored: its percentile interval is the point [1, 1]; 11/12 now, whose interval
    # still holds 1.0. Outside the stored interval and beyond 0.05, but not a regression.
    stored = with_value(make_row(), "acc_icl", 1.0, interval=(1.0, 1.0))
    new = with_value(stored, "acc_icl", 11 / 12, interval=(0.75, 1.0))
    assert verdicts(C.compare(new, base(stored), TOL))["acc_icl"] == "ok"
    collapsed = with_value(stored, "acc_icl", 0.5, interval=(0.25, 0.75))
    assert verdicts(C.compare(collapsed, base(stored), TOL))["acc_icl"] == "regressed"


def test_improvements_pass_and_are_marked():
    stored = make_row()
    new = with_value(stored, "simam_after", 0.8, interval=(0.75, 0.85))
    comparison = C.compare(new, base(stored), TOL)
    assert comparison.passed and verdicts(comparison)["simam_after"] == "improved"


def test_controls_are_never_compared():
    stored = make_row()
    new = copy.deepcopy(stored)
    for control in B.NOT_COMPARED:
        new = with_value(new, control, -0.9, interval=(-0.95, -0.85))
    comparison = C.compare(new, base(stored), TOL)
    assert comparison.passed
    assert not set(verdicts(comparison)) & set(B.NOT_COMPARED)


def test_a_metric_that_became_undefined_fails_and_one_undefined_before_does_not():
    stored = make_row()
    new = with_value(stored, "rec2ftp", math.nan, interval=(math.nan, math.nan))
    comparison = C.compare(new, base(stored), TOL)
    assert comparison.status == "regressed" and verdicts(comparison)["rec2ftp"] == "undefined"
    assert "UNDEFINED" in comparison.message

    stored_none = with_value(stored, "rec2ftp", None, interval=(None, None))  # NaN as stored in JSON
    assert C.compare(stored, base(stored_none), TOL).passed
    assert C.compare(new, base(stored_none), TOL).passed


def test_a_metric_missing_from_an_older_stored_row_is_reported_not_failed():
    stored = make_row()
    del stored["values"]["simam_delta"]
    comparison = C.compare(make_row(), base(stored), TOL)
    assert comparison.passed and verdicts(comparison)["simam_delta"] == "not stored"


def test_missing_row_fails_and_says_how_to_add_it():
    comparison = C.compare(make_row(task="other"), base(make_row()), TOL)
    assert comparison.status == "missing" and not comparison.passed
    assert "--icl-baseline-update" in comparison.message


@pytest.mark.parametrize(
    "field, value",
    [
        ("task_hash", "changed"),
        ("shots", 8),
        ("seed", 2),
        ("lr", 0.1),
        ("position", "prompt"),
        ("weights_hash", "v" * 64),
        ("revision", "abc"),
    ],
)
def test_a_key_mismatch_is_reported_never_compared(field, value):
    stored = make_row()
    new = with_value(make_row(**{field: value}), "simaou", 0.0, interval=(0.0, 0.0))  # would regress
    comparison = C.compare(new, base(stored), TOL)
    assert comparison.status == "mismatch" and not comparison.passed
    assert comparison.diffs == []
    assert comparison.mismatches == [(field, stored[field], value)]
    assert "key mismatch" in comparison.message and field in comparison.message


def test_a_dtype_mismatch_suggests_the_cross_dtype_comparison():
    stored = make_row()
    comparison = C.compare(make_row(dtype="bfloat16"), base(stored), TOL)
    assert comparison.status == "mismatch"
    assert "--icl-baseline-model tiny:float32" in comparison.message


def test_update_keeps_one_row_per_dtype_and_the_right_one_is_compared():
    fp32, bf16 = make_row(), with_value(make_row(dtype="bfloat16"), "simaou", 0.1, interval=(0.05, 0.15))
    new_bf16 = with_value(make_row(dtype="bfloat16"), "simaou", 0.1, interval=(0.05, 0.15))
    assert C.compare(new_bf16, base(fp32, bf16), TOL).passed


# ---- comparing with another model's row


def test_cross_dtype_comparison_with_baseline_model():
    stored = make_row()
    new = with_value(make_row(dtype="bfloat16", weights_hash="b" * 64), "kendall", 0.2, interval=(0.15, 0.25))
    comparison = C.compare(new, base(stored), TOL, against="tiny")
    assert comparison.status == "regressed" and [d.metric for d in comparison.regressions] == ["kendall"]
    assert comparison.stored["dtype"] == "float32"
    assert "stored row of tiny (float32" in comparison.message


def test_cross_model_comparison_by_typed_name_or_id():
    stored = make_row(model="smollm2", model_id="smollm2-135m")
    new = make_row(model_id="other", weights_hash="o" * 64)
    assert C.compare(new, base(stored), TOL, against="smollm2-135m").passed
    assert C.compare(new, base(stored), TOL, against="smollm2").passed


def test_cross_model_comparison_still_needs_the_same_experiment():
    stored = make_row(model_id="ref")
    comparison = C.compare(make_row(shots=8), base(stored), TOL, against="ref")
    assert comparison.status == "mismatch" and comparison.mismatches == [("shots", 4, 8)]


def test_several_dtypes_of_the_reference_model_need_name_colon_dtype():
    fp32, bf16 = make_row(model_id="ref"), make_row(model_id="ref", dtype="bfloat16")
    new = make_row(dtype="float16")
    ambiguous = C.compare(new, base(fp32, bf16), TOL, against="ref")
    assert ambiguous.status == "mismatch" and "ref:DTYPE" in ambiguous.message
    picked = C.compare(new, base(fp32, bf16), TOL, against="ref:bfloat16")
    assert picked.passed and picked.stored["dtype"] == "bfloat16"


def test_unknown_reference_model_is_missing_and_lists_stored_models():
    comparison = C.compare(make_row(), base(make_row(model_id="a")), TOL, against="zzz")
    assert comparison.status == "missing" and "'zzz'" in comparison.message and "a" in comparison.message


def test_comparison_travels_as_plain_json():
    stored = make_row()
    new = with_value(stored, "simaou", 0.3, interval=(0.25, 0.35))
    data = json.loads(json.dumps(C.compare(new, base(stored), TOL).to_dict()))
    assert data["status"] == "regressed" and data["pair"] == "tiny-ant"
    assert {d["metric"]: d["verdict"] for d in data["diffs"]}["simaou"] == "regressed"
    assert "REGRESSED" in data["message"]


# ---- tolerances


def test_tolerances_defaults_then_task_then_cli():
    assert B.tolerances_for(None, None) == B.DEFAULT_TOLERANCES
    merged = B.tolerances_for({"simaou": 0.1, "kendall": "0.2"}, {"simaou": 0.3})
    assert merged["simaou"] == 0.3 and merged["kendall"] == 0.2 and merged["acc_icl"] == B.DEFAULT_TOLERANCES["acc_icl"]
    assert set(B.DEFAULT_TOLERANCES) == set(B.COMPARED)


def test_parse_tolerance():
    assert B.parse_tolerance("simaou=0.05") == ("simaou", 0.05)
    assert B.parse_tolerance("kendall=inf") == ("kendall", math.inf)
    for bad, words in [
        ("simaou", "METRIC=VALUE"),
        ("simaou=x", "not a number"),
        ("simaou=-1", "≥ 0"),
        ("nope=1", "unknown metric"),
        ("simam_before=0.1", "not compared"),
    ]:
        with pytest.raises(ValueError, match=words):
            B.parse_tolerance(bad)


def test_task_tolerances_are_checked():
    with pytest.raises(ValueError, match="icl.tolerances.*unknown metric 'simou'"):
        B.tolerances_for({"simou": 0.1}, {})


def test_an_infinite_tolerance_switches_a_metric_off():
    stored = make_row()
    new = with_value(stored, "simaou", 0.0, interval=(0.0, 0.0))
    assert C.compare(new, base(stored), {**TOL, "simaou": math.inf}).passed


# ---- the file


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_error_names_it(tmp_path):
    path = tmp_path / "none.json"
    with pytest.raises(B.BaselineError, match=f"{path}.*does not exist.*--icl-baseline-update"):
        B.read_baseline(path)
    assert B.read_baseline(path, missing_ok=True).rows == []


def test_corrupt_file_error_names_it_and_where(tmp_path):
    path = write(tmp_path / "bl.json", '{"format": "pytest-icl-baseline", "rows": [')
    with pytest.raises(B.BaselineError, match=rf"{path} is corrupt: not valid JSON .*line 1") as info:
        B.read_baseline(path)
    assert "left untouched" in str(info.value)
    with pytest.raises(B.BaselineError, match="corrupt"):
        B.read_baseline(write(tmp_path / "empty.json", ""))


@pytest.mark.parametrize(
    "content, words",
    [
        ("[1, 2]", "expected a JSON object with a 'rows' list"),
        ('{"name": "my-package", "version": "1.0"}', "expected a JSON object with a 'rows' list"),
        ('{"format": "something-else", "schema": 1, "rows": []}', "its format is 'something-else'"),
        ('{"rows": []}', "neither a 'format' nor a 'schema'"),
        ('{"format": "pytest-icl-baseline", "schema": 1, "rows": [{"task": "x"}]}', "row 0 lacks"),
        ('{"format": "pytest-icl-baseline", "schema": 1, "rows": [3]}', "row 0 is a int"),
    ],
)
def test_foreign_files_are_refused_by_name(tmp_path, content, words):
    path = write(tmp_path / "foreign.json", content)
    with pytest.raises(B.BaselineError) as info:
        B.read_baseline(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_a_newer_schema_is_refused(tmp_path):
    path = write(tmp_path / "new.json", json.dumps({"format": B.FORMAT, "schema": report.SCHEMA_VERSION + 1, "rows": []}))
    with pytest.raises(B.BaselineError, match="newer"):
        B.read_baseline(path)


def test_a_results_json_is_accepted_as_a_baseline(tmp_path):
    path = write(tmp_path / "results.json", report.results_json([make_row()]))
    assert len(B.read_baseline(path)) == 1


def test_update_creates_then_merges_by_slot(tmp_path):
    path = tmp_path / "sub" / "bl.json"
    summary = B.update_baseline(path, [make_row(), make_row(task="b")])
    assert (summary.added, summary.refreshed, summary.kept) == (2, 0, 0)
    first = B.read_baseline(path).rows
    assert all("stored_at" in row for row in first)

    refreshed = with_value(make_row(), "simaou", 0.9)
    summary = B.update_baseline(path, [refreshed, make_row(dtype="bfloat16")])
    assert (summary.added, summary.refreshed, summary.kept) == (1, 1, 1)
    rows = B.read_baseline(path).rows
    assert len(rows) == 3 and len({B.slot(r) for r in rows}) == 3
    by_slot = {B.slot(r): r for r in rows}
    assert by_slot[("ant", "tiny", "float32")]["values"]["simaou"] == 0.9
    assert by_slot[("b", "tiny", "float32")] == first[[r["task"] for r in first].index("b")]
    assert "3 rows: 1 added, 1 refreshed, 1 kept" in summary.line


def test_update_never_duplicates_a_slot_given_twice(tmp_path):
    path = tmp_path / "bl.json"
    B.update_baseline(path, [make_row(), with_value(make_row(), "simaou", 0.7)])
    rows = B.read_baseline(path).rows
    assert len(rows) == 1 and rows[0]["values"]["simaou"] == 0.7


def test_update_writes_nan_as_null_and_reads_it_back(tmp_path):
    path = tmp_path / "bl.json"
    B.update_baseline(path, [with_value(make_row(), "rec2ftp", math.nan, interval=(math.nan, math.nan))])
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["format"] == B.FORMAT and data["rows"][0]["values"]["rec2ftp"] is None
    assert C.compare(make_row(), B.read_baseline(path), TOL).passed


def test_an_update_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "bl.json"
    B.update_baseline(path, [make_row()])
    before = path.read_bytes()

    def crash(source, target):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        B.update_baseline(path, [with_value(make_row(), "simaou", 0.9), make_row(task="b")])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bl.json"]


def test_an_update_never_overwrites_a_corrupt_or_foreign_file(tmp_path):
    path = write(tmp_path / "bl.json", '{"name": "not ours"}')
    with pytest.raises(B.BaselineError, match="not a pytest-icl baseline file"):
        B.update_baseline(path, [make_row()])
    assert path.read_text() == '{"name": "not ours"}'


def test_notable_changes_lists_what_moved_beyond_its_tolerance():
    stored = with_value(make_row(), "acc_icl", 1.0, interval=(1.0, 1.0))
    new = with_value(stored, "acc_icl", 11 / 12, interval=(0.75, 1.0))  # beyond 0.05, inside the new interval
    new = with_value(new, "simaou", 0.8, interval=(0.75, 0.85))  # improved
    new = with_value(new, "kendall", 0.51)  # within the tolerance: not listed
    line = C.notable_changes(C.compare(new, base(stored), TOL).to_dict())
    assert line == "tiny-ant vs tiny (float32): acc_icl 1.000→0.917 (-0.083, within the intervals), simaou 0.500→0.800 (+0.300, improved)"
    assert C.notable_changes(C.compare(stored, base(stored), TOL).to_dict()) is None
    assert C.notable_changes(C.compare(make_row(shots=9), base(stored), TOL).to_dict()) is None  # mismatch: no diffs
