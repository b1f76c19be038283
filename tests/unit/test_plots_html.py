"""pytest_icl.plots and pytest_icl.html on hand-made rows: files exist, are PNGs, the page links them relatively."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from pytest_icl import baseline as B
from pytest_icl import html, plots

PNG = b"\x89PNG\r\n\x1a\n"


def make_row(model_id="tiny", task="ant", layers=3) -> dict:
    metrics = list(B.COMPARED) + list(B.NOT_COMPARED)
    return {
        "task": task, "task_hash": "abc", "model": model_id, "model_id": model_id, "revision": None,
        "weights_hash": "w" * 64, "dtype": "float32", "device": "cpu", "shots": 4, "seed": 1, "lr": 0.01,
        "position": "label", "eval": 12,
        "values": {m: 0.5 for m in metrics},
        "intervals": {m: [0.45, 0.55] for m in metrics},
        "layers": {m: [0.1 * i for i in range(layers)] for m in metrics if not m.startswith(("acc", "rec2", "ft_", "majority"))},
        "counts": {"eval": 12}, "versions": {"pytest-icl": "0.1.0"},
        "properties": {"accuracy": "passed", "simaou": "failed"},
    }  # fmt: skip


def regressed_comparison(row: dict, stored: dict, against: str | None = None) -> dict:
    new = copy.deepcopy(row)
    new["values"]["simaou"] = 0.2
    new["intervals"]["simaou"] = [0.15, 0.25]
    return B.compare(new, B.Baseline(Path("bl.json"), [stored]), B.tolerances_for({}, {}), against=against).to_dict()


def test_slug_is_file_and_url_safe():
    assert plots.slug({"model_id": "org--model@v1", "task": "a b/c"}) == "org--model-v1-a-b-c"
    assert plots.slug({"model_id": "..", "task": ".."}) == "pair"


def test_layer_plots_are_three_pngs(tmp_path):
    written = plots.layer_plots(make_row(), tmp_path)
    assert [path.name for _, path in written] == ["tiny-ant-simaou.png", "tiny-ant-simam.png", "tiny-ant-kendall.png"]
    for _, path in written:
        assert path.read_bytes().startswith(PNG)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_a_row_without_layers_draws_nothing(tmp_path):
    row = make_row()
    row["layers"] = {}
    assert plots.layer_plots(row, tmp_path) == []


def test_baseline_plots_handle_different_depths_and_nan(tmp_path):
    row, stored = make_row(layers=4), make_row(model_id="ref", layers=6)
    row["layers"]["kendall"][1] = float("nan")
    comparison = regressed_comparison(row, stored, against="ref")
    assert comparison["status"] == "regressed"
    written = plots.baseline_plots(row, comparison["stored"], comparison["diffs"], tmp_path)
    assert [path.name for _, path in written] == ["tiny-ant-baseline-layers.png", "tiny-ant-baseline-metrics.png"]
    for _, path in written:
        assert path.read_bytes().startswith(PNG)


def test_html_report_links_every_plot_relatively(tmp_path):
    row, stored = make_row(), make_row()
    other = make_row(task="topic")
    comparisons = {"tiny-ant": regressed_comparison(row, stored)}
    page = html.write_html_report(tmp_path, [row, other], comparisons=comparisons, baseline=Path("/somewhere/bl.json"))
    assert page == tmp_path / "index.html"
    text = page.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 3 + 2 + 3  # ant: layers + baseline; topic: layers
    for src in sources:
        assert not src.startswith(("/", "file:", "http")) and (tmp_path / src).is_file()
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count('class="badge regressed"') >= 2  # summary + the simaou line
    assert "Against the baseline" in text and "/somewhere/bl.json" in text


def test_html_without_baseline_has_no_baseline_section(tmp_path):
    text = html.write_html_report(tmp_path, [make_row()]).read_text(encoding="utf-8")
    assert "Against the baseline" not in text and "<th>baseline</th>" not in text


def test_html_escapes_names(tmp_path):
    row = make_row(task="<script>alert(1)</script>")
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    assert "<script>alert(1)" not in text and "&lt;script&gt;" in text


def test_mismatch_is_shown_as_text(tmp_path):
    row, stored = make_row(), make_row()
    stored["shots"] = 8
    comparison = B.compare(row, B.Baseline(Path("bl.json"), [stored]), B.tolerances_for({}, {})).to_dict()
    text = html.write_html_report(tmp_path, [row], comparisons={"tiny-ant": comparison}).read_text(encoding="utf-8")
    assert "key mismatch" in text and "badge mismatch" in text
    assert not (tmp_path / "plots" / "tiny-ant-baseline-layers.png").exists()


@pytest.mark.parametrize("name", ["index.html"])
def test_report_files_are_written_atomically(tmp_path, monkeypatch, name):
    html.write_html_report(tmp_path, [make_row()])
    before = (tmp_path / name).read_bytes()
    import os

    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        html.write_html_report(tmp_path, [make_row(task="other")])
    assert (tmp_path / name).read_bytes() == before
    assert not [p for p in tmp_path.rglob("*.tmp")]
