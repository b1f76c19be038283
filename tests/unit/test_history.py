"""pytest_icl.report.history and ``python -m pytest_icl history``: a table and per-metric plots across model versions."""

from __future__ import annotations

import csv
import io

import pytest

from pytest_icl.errors import UsageError
from pytest_icl.report.history import collect, natural, write_history
from tests.unit.test_store import make_row, open_store, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def _version(tmp_path, name: str, value: float, tasks=("ant", "syn")):
    store = open_store(tmp_path / name)
    for task in tasks:
        store.put(make_row(f"org/model-{name}", task, value=value, weights_hash=f"w-{name}"))
    store.rebuild()
    return tmp_path / name


def test_natural_order_reads_numbers():
    assert sorted(["v10", "v2", "V1", "v2a"], key=natural) == ["V1", "v2", "v2a", "v10"]


def test_rows_line_up_by_series_and_label(tmp_path):
    folders = [_version(tmp_path, name, value) for name, value in (("v10", 0.9), ("v2", 0.6), ("v1", 0.5))]
    history = collect(folders)
    assert history.labels == ["org/model-v1", "org/model-v2", "org/model-v10"]
    assert [s[0] for s in history.series] == ["ant", "syn"]
    assert history.value(history.series[0], "org/model-v2", "simaou") == pytest.approx((0.6, 0.55, 0.65))
    assert history.metrics[0] == "acc_zsl" and "simaou_random" not in history.metrics  # compared metrics by default
    table = history.table("simaou")
    assert table[0] == "simaou" and table[-1].split() == ["syn", "0.500", "0.600", "0.900"]


def test_labels_and_the_given_order(tmp_path):
    folders = [_version(tmp_path, "b", 0.7), _version(tmp_path, "a", 0.4, tasks=("ant",))]
    history = collect(folders, labels=["new", "old"], order="given", metrics=["acc_icl"])
    assert history.labels == ["new", "old"]
    assert history.table("acc_icl")[-1].split() == ["syn", "0.700", "—"]  # no point: a dash, not a number


def test_a_missing_interval_draws_without_error_bars(tmp_path):
    row = make_row("m", "ant")
    row["intervals"]["simaou"] = [None, None]
    store = open_store(tmp_path / "r")
    store.put(row)
    history = write_history([tmp_path / "r"], tmp_path / "out", metrics=["simaou"])
    assert (tmp_path / "out" / "simaou.png").read_bytes().startswith(PNG)
    assert history.value(history.series[0], "m", "simaou")[0] == 0.5


def test_varying_settings_name_the_series(tmp_path):
    store = open_store(tmp_path / "r")
    store.put(make_row("m", "ant", shots=4))
    store.put(make_row("m", "ant", shots=8))
    history = collect([tmp_path / "r"])
    assert sorted(history.series_name(s) for s in history.series) == ["ant (shots 4)", "ant (shots 8)"]


def test_two_rows_at_one_point_are_refused(tmp_path):
    folders = [_version(tmp_path, "v1", 0.5), _version(tmp_path, "v2", 0.6)]
    with pytest.raises(UsageError, match="have the label 'same'.*give each folder a label of its own"):
        collect(folders, labels=["same", "same"])
    with pytest.raises(UsageError, match="1 label\\(s\\) for 2 folder\\(s\\)"):
        collect(folders, labels=["one"])
    with pytest.raises(UsageError, match="no row has the metric\\(s\\) nonsense"):
        collect(folders, metrics=["nonsense"])


def test_cli_history_writes_the_table_and_plots(tmp_path):
    folders = [_version(tmp_path, name, value) for name, value in (("v2", 0.6), ("v1", 0.5))]
    done = run_cli("history", *folders, "-o", "hist", "--metric", "simaou", "--metric", "acc_icl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "history of 2 pair(s) over 2 version(s): org/model-v1, org/model-v2" in done.stdout
    for name in ("simaou.png", "acc_icl.png"):
        assert (tmp_path / "hist" / name).read_bytes().startswith(PNG)
    lines = list(csv.DictReader(io.StringIO((tmp_path / "hist" / "history.csv").read_text())))
    assert len(lines) == 2 * 2 * 2  # versions × tasks × metrics
    first = lines[0]
    assert (first["label"], first["task"], first["metric"], first["value"], first["low"], first["high"]) == (
        "org/model-v1", "ant", "simaou", "0.5", "0.45", "0.55",
    )  # fmt: skip


def test_cli_history_usage_error_exit_2(tmp_path):
    done = run_cli("history", "nowhere", "-o", "hist", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: nowhere has no results") and "Traceback" not in done.stderr


def test_default_labels_add_the_revision_unless_the_id_has_one():
    from pytest_icl.report.history import label_of

    assert label_of({"model_id": "org--m", "revision": "0123456789abcdef"}) == "org--m@0123456789ab"
    assert label_of({"model_id": "org--m@v2", "revision": "0123456789abcdef"}) == "org--m@v2"
    assert label_of({"model_id": "local", "revision": None}) == "local"
