"""``--icl-shard I/N`` runs shard I's pairs; ``python -m pytest_icl merge`` puts the shards together.

Two shards of a two-task run (one serial, one under pytest-xdist, where the workers collect and
record the run) each compute one pair and deselect the other's items; merged, they give the rows
of the unsharded run, value for value.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

THRESHOLDS = ("--icl-threshold", "accuracy=-1", "--icl-threshold", "simam=2")


def _rows(folder) -> dict:
    rows = json.loads((folder / "results.json").read_text(encoding="utf-8"))["rows"]
    return {(row["model_id"], row["task"]): row for row in rows}


def test_two_shards_merged_give_the_unsharded_rows(project):
    project.task("antonyms")
    project.task("opposites")
    path = project.path

    shard0 = project.run("--icl-shard", "0/2", f"--icl-report={path / 's0'}", *THRESHOLDS)
    shard1 = project.run("--icl-shard", "1/2", f"--icl-report={path / 's1'}", *THRESHOLDS, "-n", "2")
    whole = project.run(f"--icl-report={path / 'all'}", *THRESHOLDS)

    for run in (shard0, shard1, whole):
        assert run.ret == 1, run.stdout.str()[-2000:]  # simam=2 fails
    shard0.stdout.fnmatch_lines(["*5 deselected*"])
    assert list(_rows(path / "s0")) == [("tiny-gpt2", "antonyms")]  # sorted pairs, cut in two
    assert list(_rows(path / "s1")) == [("tiny-gpt2", "opposites")]

    merged = subprocess.run(
        [sys.executable, "-m", "pytest_icl", "merge", str(path / "s0"), str(path / "s1"), "-o", str(path / "merged"), "--no-html"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert merged.returncode == 0, merged.stdout + merged.stderr
    rows, expected = _rows(path / "merged"), _rows(path / "all")
    assert set(rows) == set(expected) == {("tiny-gpt2", "antonyms"), ("tiny-gpt2", "opposites")}
    for pair, row in rows.items():
        assert row["values"].keys() == expected[pair]["values"].keys()
        for name, value in row["values"].items():
            want = expected[pair]["values"][name]  # NaN is stored as null
            assert (value is None and want is None) or value == pytest.approx(want, rel=1e-6, abs=1e-9), (pair, name)
        assert row["properties"] == expected[pair]["properties"]


def test_a_merge_with_a_shard_missing_is_refused(project):
    project.task("antonyms")
    project.task("opposites")
    path = project.path

    shard0 = project.run("--icl-shard", "0/2", f"--icl-report={path / 's0'}", *THRESHOLDS, "-k", "accuracy")
    merged = subprocess.run(
        [sys.executable, "-m", "pytest_icl", "merge", str(path / "s0"), "-o", str(path / "merged")],
        capture_output=True,
        text=True,
        check=False,
    )

    assert shard0.ret == 0, shard0.stdout.str()[-2000:]
    assert merged.returncode == 2, merged.stdout + merged.stderr
    assert "1/2" in merged.stderr and "Traceback" not in merged.stderr
