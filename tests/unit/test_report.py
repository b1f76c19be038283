"""Atomic report writes: old or new content, never half, and ordinary file permissions."""

import os
import stat

import pytest

from pytest_icl.report.rows import atomic_write_bytes, atomic_write_text, format_table


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_the_umask_permissions_not_mkstemps_private_ones(tmp_path, umask_022):
    path = tmp_path / "out" / "results.json"
    atomic_write_text(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert _mode(path) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left


def test_a_rewritten_file_keeps_its_permissions(tmp_path, umask_022):
    path = tmp_path / "baseline.json"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "index.html"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        ({"accuracy": "passed", "simam": "passed"}, "pass"),
        ({"accuracy": "passed", "simam": "xfailed", "kendall": "xpassed"}, "pass xfail simam XPASS kendall"),
        ({"accuracy": "failed", "rec2ftp": "failed", "simam": "xfailed"}, "FAIL accuracy,rec2ftp xfail simam"),
        ({"accuracy": "skipped", "simam": "skipped"}, "skip"),
        ({}, "-"),
        ({"accuracy": "failed", "simaou": "inconclusive", "kendall": "inconclusive"}, "FAIL accuracy inconclusive simaou,kendall"),
        ({"accuracy": "passed", "simaou": "error"}, "FAIL simaou"),
    ],
    ids=["pass", "xfail-and-xpass", "fail-keeps-xfail", "skip", "nothing-ran", "gated", "error"],
)
def test_the_result_column_names_failures_expected_failures_and_fixes(outcomes, verdict):
    row = {
        "model_id": "m", "task": "t", "shots": 4, "eval": 8, "lr": 3e-3, "lr_source": "fixed", "properties": outcomes,
        "values": dict.fromkeys(("acc_zsl", "acc_icl", "acc_ft", "rec2ftp", "rec2ftp_chance", "simaou",
                                 "simaou_fair_random", "simam_before", "simam_after", "kendall", "kendall_random"), 0.5),
    }  # fmt: skip
    header, rule, line = format_table([row])
    assert header.split()[-1] == "result" and set(rule) <= {"-", " "}
    assert line.endswith(verdict)


def test_the_lr_column_marks_a_per_model_choice():
    values = dict.fromkeys(("acc_zsl", "acc_icl", "acc_ft", "rec2ftp", "rec2ftp_chance", "simaou", "simaou_fair_random",
                            "simam_before", "simam_after", "kendall", "kendall_random"), 0.5)  # fmt: skip
    rows = [
        {"model_id": "m", "task": "fixed", "shots": 4, "eval": 8, "lr": 3e-3, "lr_source": "fixed", "values": values},
        {"model_id": "m", "task": "chosen", "shots": 4, "eval": 8, "lr": 1e-2, "lr_source": "validation", "values": values},
    ]
    header, _, fixed, chosen = format_table(rows)
    assert "lr" in header.split()
    assert "0.003 " in fixed and "auto" not in fixed
    assert "0.01 auto" in chosen


def test_gate_lines_say_why_and_where_lr_auto_fell_back():
    from pytest_icl.report.rows import format_gates

    row = {"model_id": "m", "task": "t", "lr": 0.01, "lr_source": "fixed", "lr_reason": "the task has no validation split",
           "gates": {"icl_effect": {"open": False, "reason": "ICL does not clearly beat zero-shot"}, "ft_learned": {"open": True, "reason": "ok"}},
           "left_out_layers": [0]}  # fmt: skip
    lines = format_gates([row])
    assert lines == [
        "m-t: icl_effect closed: ICL does not clearly beat zero-shot",
        "m-t: lr: auto fell back to the fixed lr 0.01: the task has no validation split",
        "m-t: layer(s) 0 left out of SimAM∆ (ICL's scores to the query equal ZSL's to rounding)",
    ]
    assert format_gates([{**row, "lr_source": "validation", "gates": {}, "left_out_layers": []}]) == []
