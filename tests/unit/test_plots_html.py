"""pytest_icl.report.plots and pytest_icl.report.html on hand-made rows: files exist, are PNGs, the page links them relatively."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from pytest_icl.report import baseline as B
from pytest_icl.report import html
from pytest_icl.report import plots
from pytest_icl.report.comparison import compare

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
    return compare(new, B.Baseline(Path("bl.json"), [stored]), B.tolerances_for({}, {}), against=against).to_dict()


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
    comparison = compare(row, B.Baseline(Path("bl.json"), [stored]), B.tolerances_for({}, {})).to_dict()
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


# ---- lr: auto, inconclusive, controls


def with_controls(row: dict, layers: int = 3) -> dict:
    """``row`` as --icl-controls untrained,shuffled,lcgd,output,seeds leaves it (pytest_icl.controls.pair)."""
    row = copy.deepcopy(row)
    curve = {m: [0.05 * i for i in range(layers)] for m in ("simaou", "simam_delta", "kendall", "simaou_unnormalised")}
    values = {"simaou": 0.2, "simam_delta": 0.1, "kendall": 0.05, "simaou_unnormalised": 0.3}

    def outcome(claim, metric, variant, control, passed):
        return {"claim": claim, "metric": metric, "variant": variant, "value": row["values"].get(metric, 0.5), "control": control, "passed": passed}

    row["values"].update({"kl_icl_ft": 0.4, "kl_icl_zsl": 0.9, "top10_icl_ft": 0.7, "top10_icl_zsl": 0.5})
    row["controls"] = {
        "untrained": {
            "values": {"no_training": dict(values), "trained_embeddings": dict(values)},
            "layers": {"no_training": copy.deepcopy(curve), "trained_embeddings": copy.deepcopy(curve)},
            "outcomes": [
                outcome("SimAOU above the no training model's", "simaou", "no_training", 0.2, True),
                outcome("SimAM∆ above the no training model's", "simam_delta", "no_training", 0.61, False),
                outcome("SimAOU above the trained embeddings model's", "simaou", "trained_embeddings", None, None),
            ],
            "seconds": 12.34,
        },
        "shuffled": {
            "values": {"shuffled": dict(values)}, "layers": {"shuffled": copy.deepcopy(curve)},
            "outcomes": [outcome("Kendall(ICL, FT) above FT on shuffled labels", "kendall", "shuffled", 0.1, True)], "seconds": 3.0,
        },
        "lcgd": {
            "values": {"lcgd": dict(values)}, "layers": {"lcgd": copy.deepcopy(curve)},
            "outcomes": [outcome("SimAOU of GD beside LCGD", "simaou", "lcgd", 0.25, None)], "seconds": 2.5,
        },
        "output": {
            "values": {}, "layers": {},
            "outcomes": [outcome("FT shares more of ICL's top-10 next tokens than ZSL does", "top10_icl_ft", None, 0.5, True)],
            "seconds": 0.0,
        },
        "seeds": {
            "seeds": [1, 2, 3],
            "metrics": {"simaou": {"mean": 0.41, "sd": 0.05}, "simaou_fair_random": {"mean": 0.12, "sd": 0.01},
                        "acc_icl": {"mean": 0.8, "sd": None}, "acc_zsl": {"mean": 0.6, "sd": 0.02}, "acc_ft": {"mean": 0.7, "sd": 0.03}},
            "order_sensitivity": {"acc_sd": {"zsl": 0.0, "icl": 0.05, "ft": 0.01}, "aligned": True,
                                  "prediction_flips": {"zsl": 0.0, "icl": 0.31, "ft": 0.06}, "icl_over_ft": 4.2},
            "seconds": 30.0,
        },
    }  # fmt: skip
    row["properties"].update({"untrained": "failed", "shuffled": "passed", "output": "passed", "seeds": "passed"})
    return row


def _table_lines(text: str, table_class: str) -> list[str]:
    body = text.split(f"<table class={table_class}>", 1)[1].split("</table>", 1)[0]
    return [line for line in body.splitlines() if line.startswith("<tr>")]


def test_lr_column_marks_an_auto_lr_and_says_why(tmp_path):
    fixed, auto = make_row(task="fixed"), make_row(task="auto")
    auto.update(lr=0.003, lr_source="cache", lr_reason="lr 0.003 chosen on 32 validation examples <best>")
    text = html.write_html_report(tmp_path, [fixed, auto]).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("<tr") and 'href="#tiny-' in line]
    assert '<td class="num lr" title="fixed lr (the task&#39;s or --icl-lr)">0.01</td>' in lines[0]
    assert '>0.003 <span class="auto">auto</span></td>' in lines[1]
    assert 'title="lr 0.003 chosen on 32 validation examples &lt;best&gt;"' in lines[1]  # the reason, escaped
    assert "lr 0.003 (auto)" in text and "<th title=" in text


def test_validation_and_fixed_sources():
    assert html.lr_cell({"lr": 1e-3, "lr_source": "validation"})["auto"]
    assert not html.lr_cell({"lr": 1e-3, "lr_source": "fixed", "lr_reason": "no validation split"})["auto"]
    assert html.lr_cell({"lr": 1e-3, "lr_source": "fixed", "lr_reason": "no validation split"})["title"] == "no validation split"
    assert html.lr_cell({"lr": 1e-3})["text"] == "0.001"  # an older row without lr_source: a fixed lr


def test_inconclusive_has_its_own_badge_and_is_not_a_failure(tmp_path):
    row = make_row()
    row["properties"] = {"accuracy": "failed", "simaou": "inconclusive", "kendall": "inconclusive", "rec2ftp": "error"}
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    assert '<span class="badge inconclusive" title="inconclusive">simaou (inconclusive)</span>' in text
    assert '<span class="badge error" title="error">rec2ftp (error)</span>' in text
    assert ".inconclusive { background:" in text  # a colour of its own
    assert "no in-context learning to explain" in text  # the legend, shown only when a pair is inconclusive
    assert "no in-context learning to explain" not in html.write_html_report(tmp_path, [make_row()]).read_text(encoding="utf-8")


def test_a_row_with_only_an_error_is_marked_bad(tmp_path):
    row = make_row()
    row["properties"] = {"accuracy": "error"}
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    assert any(line.startswith('<tr class="bad">') and 'href="#tiny-ant"' in line for line in text.splitlines())


def test_controls_table_shows_each_check_beside_its_control(tmp_path):
    text = html.write_html_report(tmp_path, [with_controls(make_row())]).read_text(encoding="utf-8")
    lines = _table_lines(text, "controls")
    untrained = [line for line in lines if line.startswith("<tr><td>untrained")]
    assert len(untrained) == 3
    assert '<span class="badge failed" title="failed">failed</span>' in untrained[0]  # the item's outcome, once
    assert "12.3 s" in untrained[0] and "failed" not in untrained[1]
    assert "<td>SimAOU above the no training model&#39;s</td><td class=num>0.5000</td><td class=num>0.2000</td>" in untrained[0]
    assert 'badge holds" title="holds">holds<' in untrained[0]
    assert 'badge does-not-hold" title="does-not-hold">does not hold<' in untrained[1]
    assert "<td class=num>n/a</td>" in untrained[2] and ">undefined</span>" in untrained[2]  # a missing control value
    assert '<span class="variant">trained embeddings</span>' in untrained[2]
    (lcgd,) = [line for line in lines if line.startswith("<tr><td>lcgd")]
    assert ">reported</span>" in lcgd and "<td class=num>0.2500</td>" in lcgd
    assert '<td>lcgd <span class="variant">2.5 s</span></td>' in lcgd  # no item, no badge
    (output,) = [line for line in lines if line.startswith("<tr><td>output")]
    assert '<span class="variant">this run</span>' in output and "<td class=num>0.7000</td><td class=num>0.5000</td>" in output
    seeds = [line for line in lines if line.startswith("<tr><td>seeds")]
    simaou = next(line for line in seeds if "SimAOU above the fair random" in line)
    assert "(over seeds 1, 2, 3)" in simaou and "<td class=num>0.410 ± 0.050</td><td class=num>0.120 ± 0.010</td>" in simaou
    assert any("<td class=num>0.800 ± n/a</td><td class=num>0.600 ± 0.020</td>" in line for line in seeds)  # sd null: n/a
    assert any("ICL 0.31, FT 0.06" in line and "ICL / FT = 4.20" in line for line in seeds)  # order sensitivity
    assert any("<td>FT accuracy (over seeds 1, 2, 3)</td><td class=num>0.700 ± 0.030</td>" in line for line in seeds)


def test_controls_section_only_with_controls(tmp_path):
    text = html.write_html_report(tmp_path, [make_row()]).read_text(encoding="utf-8")
    assert "<h4>Controls</h4>" not in text and "controls-" not in text


def test_control_plots_are_written_and_linked(tmp_path):
    row = with_controls(make_row())
    written = plots.control_plots(row, tmp_path / "plots")
    assert [path.name for _, path in written] == [
        "tiny-ant-controls-simaou.png", "tiny-ant-controls-simam_delta.png", "tiny-ant-controls-kendall.png"
    ]  # fmt: skip
    for _, path in written:
        assert path.read_bytes().startswith(PNG)
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 3 + 3 and all((tmp_path / src).is_file() for src in sources)
    assert text.index("plots/tiny-ant-controls-simaou.png") > text.index("<h4>Controls</h4>")  # beside the table


def test_control_curves_come_from_the_row(monkeypatch, tmp_path):
    """Each figure draws the real curve and one curve per control run that has the metric's layers."""
    row = with_controls(make_row())
    del row["controls"]["untrained"]["layers"]["trained_embeddings"]["kendall"]
    labels = [label for label, *_ in plots._control_curves(row, "kendall")]
    assert labels == ["untrained: no training", "FT on shuffled labels", "LCGD (layer-causal FT)"]
    seeds_only = make_row()
    seeds_only["controls"] = {"seeds": with_controls(make_row())["controls"]["seeds"]}
    assert plots.control_plots(seeds_only, tmp_path) == []  # seeds store no layers: nothing to draw
    no_layers = with_controls(make_row())
    no_layers["layers"] = {}
    assert plots.control_plots(no_layers, tmp_path) == []  # nothing to put the controls beside


def test_control_values_that_are_null_or_nan_are_drawn_and_shown(tmp_path):
    row = with_controls(make_row())
    row["controls"]["lcgd"]["layers"]["lcgd"]["simaou"][1] = None
    row["controls"]["lcgd"]["values"]["lcgd"]["simaou"] = float("nan")
    row["controls"]["shuffled"]["outcomes"][0]["value"] = float("nan")
    assert len(plots.control_plots(row, tmp_path)) == 3
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    (shuffled,) = [line for line in _table_lines(text, "controls") if line.startswith("<tr><td>shuffled")]
    assert "<td class=num>n/a</td>" in shuffled


def test_everything_from_a_row_is_text_not_markup(tmp_path):
    evil = "<script>alert(1)</script>"
    row = with_controls(make_row(model_id="m<b>", task=evil))
    row["controls"]["shuffled"]["outcomes"][0]["claim"] = evil
    row["properties"][evil] = "passed"
    row["lr_source"], row["lr_reason"] = "validation", evil
    row["counts"][evil] = 1
    row["versions"][evil] = evil
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<b>" not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6
    assert text.count("<script>") == 1  # only the page's own broken-image script


def test_the_template_ships_with_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    names = {p.name for p in html.TEMPLATES.iterdir()}
    assert {"report.html.j2", "report.css", "report.js"} <= names
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "templates/*" in project["tool"]["setuptools"]["package-data"]["pytest_icl.report"]
    assert any(dep.startswith("jinja2") for dep in project["project"]["dependencies"])
