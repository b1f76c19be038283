"""pytest_icl.report.plots and pytest_icl.report.html on hand-made rows: files exist, are PNGs, the page links them relatively."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from pytest_icl.report import baseline as B
from pytest_icl.report import html, plots
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
        return {
            "claim": claim,
            "metric": metric,
            "variant": variant,
            "value": row["values"].get(metric, 0.5),
            "control": control,
            "passed": passed,
        }

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


# ---- decided over draws (issue 15): verdicts, gates, left-out layers, draws


def _verdict(outcome, estimate, low, high, margin=0.0, *, control="simaou_fair_random", extra=None, support=None, reason=""):
    comparisons = [{"control": control, "outcome": outcome if outcome != "inconclusive" else "undecided",
                    "estimate": estimate, "low": low, "high": high}]  # fmt: skip
    comparisons += extra or []
    return {"outcome": outcome, "estimate": estimate, "low": low, "high": high, "margin": margin, "draws": 3,
            "support": support, "reason": reason, "comparisons": comparisons}  # fmt: skip


def decided(row: dict, draws: int = 3) -> dict:
    """``row`` as the pipeline leaves it since issue 15: one outcome of each kind, a closed gate, layer 0 left out."""
    row = copy.deepcopy(row)
    shuffled = {"control": "simaou_shuffled", "outcome": "undecided", "estimate": 0.01, "low": -0.02, "high": 0.04}
    row["draws"] = draws
    row["verdicts"] = {
        "accuracy": _verdict("passed", 0.2, 0.12, 0.28, 0.05, control="acc_zsl"),
        "rec2ftp": _verdict("inconclusive", None, None, None, control="rec2ftp_chance", support=3,
                            reason="Inconclusive: Rec2FTP support |D| = 3, 4, 5 per draw: too few <examples>"),
        "simaou": _verdict("undecided", 0.05, -0.01, 0.11, extra=[shuffled],
                           reason="The 95% interval contains the margin: more draws (--icl-seeds) or eval examples may decide it"),
        "simam": _verdict("failed", -0.1, -0.15, -0.05, control="simam_before"),
        "kendall": _verdict("passed", 0.3, 0.2, 0.4, control="kendall_random"),
    }  # fmt: skip
    row["gates"] = {
        "icl_effect": {"open": True, "reason": "ICL accuracy − zero-shot accuracy = +0.200: ICL beats zero-shot"},
        "ft_learned": {"open": True, "reason": "FT beats zero-shot"},
        "rec2ftp_support": {"open": False, "reason": "Rec2FTP support |D| = 3, 4, 5 per draw: too few <examples>"},
        "noise_layers": {"open": True, "reason": "layer(s) 0 left out of SimAM∆"},
    }
    row["left_out_layers"] = [0]
    row["layers"]["simam_delta"][0] = None
    row["per_draw"] = {m: [0.41, None, 0.43][:draws] for m in ("simaou", "simaou_fair_random", "simaou_shuffled", "acc_icl")}
    row["properties"] = {name: v["outcome"] for name, v in row["verdicts"].items()}
    return row


def test_each_property_shows_estimate_interval_margin_and_outcome(tmp_path):
    text = html.write_html_report(tmp_path, [decided(make_row())]).read_text(encoding="utf-8")
    summary = text.split("<table class=verdicts>", 1)[1].split("</table>", 1)[0]
    lines = [line for line in summary.splitlines() if line.startswith("<tr")]
    assert len(lines) == 6  # five properties, and SimAOU's shuffled-label comparison
    (accuracy,) = [line for line in lines if '<td title="ICL accuracy above zero-shot accuracy">accuracy</td>' in line]
    assert (
        "<td>ICL accuracy − ZSL accuracy</td><td class=num>+0.2000</td><td class=num>[+0.1200, +0.2800]</td><td class=num>+0.05</td>"
        in accuracy
    )
    assert '<span class="badge passed" title="passed">passed</span>' in accuracy
    assert '<a href="#tiny-ant">tiny</a>' in accuracy and ">3</td>" in accuracy
    simaou, also = [line for line in lines if "SimAOU" in line][:2]
    assert '<span class="badge undecided" title="undecided">undecided</span>' in simaou and "[-0.0100, +0.1100]" in simaou
    assert "more draws (--icl-seeds)" in simaou
    assert 'class="extra"' in also and "SimAOU with FT on shuffled labels" in also and "[-0.0200, +0.0400]" in also
    (rec2ftp,) = [line for line in lines if ">rec2ftp</td>" in line]
    assert "badge inconclusive" in rec2ftp and "<td class=num>n/a</td>" in rec2ftp  # None numbers: n/a
    assert "rests on 3 example(s) per draw at least (zero-shot wrong, FT right)" in rec2ftp
    assert "Inconclusive: gate rec2ftp_support closed (see the gates)</td>" in rec2ftp  # the gate's reason is in its table
    assert 'title="Inconclusive: Rec2FTP support |D| = 3, 4, 5 per draw: too few &lt;examples&gt;"' in rec2ftp  # whole, as text
    assert any("badge failed" in line and ">simam</td>" in line for line in lines)
    # The per-pair view has the same table, without the pair columns, and the per-draw values.
    pair = text.split('<section id="tiny-ant">', 1)[1]
    table = pair.split("<table class=verdicts>", 1)[1].split("</table>", 1)[0]
    assert "<th>per draw</th>" in table and "SimAOU: 0.410, n/a, 0.430 · fair random FT update: 0.410, n/a, 0.430" in table
    for outcome in ("passed", "failed", "undecided", "inconclusive"):
        assert f'<span class="badge {outcome}" title="{outcome}">{outcome}</span>' in table
    assert "<th>per draw</th>" in pair.split("all values, intervals and counts", 1)[1]  # every metric per draw too
    row = decided(make_row())
    row["verdicts"]["simaou"]["outcome"] = "inconclusive"
    row["verdicts"]["simaou"]["comparisons"][1]["outcome"] = "passed"
    muted = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    also = [line for line in muted.splitlines() if 'class="extra"' in line]
    assert also and all('<span class="badge muted"' in line and ">passed alone</span>" in line for line in also)
    assert not any('badge passed" title="passed">passed<' in line for line in also)  # behind a closed gate, never a pass


def test_undecided_and_inconclusive_have_colours_and_legend_entries_of_their_own(tmp_path):
    text = html.write_html_report(tmp_path, [decided(make_row())]).read_text(encoding="utf-8")
    css = {rule.split("{")[0].strip(): rule.split("{")[1] for rule in re.findall(r"\.[a-z-]+ \{[^}]*\}", text)}
    colours = {name: re.search(r"background: (#[0-9a-f]+)", css[f".{name}"]).group(1) for name in ("undecided", "inconclusive")}
    passed = re.search(r"\.passed, [^{]*\{ background: (#[0-9a-f]+)", text).group(1)
    assert len({*colours.values(), passed}) == 3  # neither looks like a pass
    legend = text.split("<ul class=legend>", 1)[1].split("</ul>", 1)[0]
    for outcome in ("passed", "failed", "undecided", "inconclusive"):
        assert f'<li><span class="badge {outcome}" title="{outcome}">{outcome}</span>' in legend
    assert "no in-context learning to explain" not in text  # the old single-gate legend is for old rows
    heading = text.split('<section id="tiny-ant"><h3>', 1)[1].split("</h3>", 1)[0]
    assert "simaou (undecided)</span>" in heading and "rec2ftp (inconclusive)</span>" in heading
    counts = text.split("<p class=counts>", 1)[1].split("</p>", 1)[0]
    assert [re.sub(r"<[^>]+>", "", b) for b in re.findall(r"<span[^>]*>[^<]*</span>", counts)] == [
        "2 passed", "1 failed", "1 undecided", "1 inconclusive"
    ]  # fmt: skip


def test_closed_gates_and_left_out_layers_are_shown(tmp_path):
    text = html.write_html_report(tmp_path, [decided(make_row())]).read_text(encoding="utf-8")
    closed = text.split("<ul class=gates>", 1)[1].split("</ul>", 1)[0]
    assert 'tiny · ant: <span class="badge gate-closed" title="gate-closed">rec2ftp_support</span> Rec2FTP support' in closed
    assert "icl_effect" not in closed  # only closed gates in the summary
    gates = _table_lines(text, "gates")
    assert len(gates) == 4
    assert any("<td>rec2ftp_support</td>" in g and ">closed</span>" in g and "too few &lt;examples&gt;" in g for g in gates)
    assert any("<td>icl_effect</td>" in g and ">open</span>" in g for g in gates)
    assert "Layer 0 left out of SimAM∆ and its controls" in text
    row = decided(make_row())
    row["left_out_layers"] = []
    assert "No layer left out of SimAM∆" in html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")


def test_the_number_of_draws_and_a_single_draw_are_marked(tmp_path):
    three, one = decided(make_row(task="three")), decided(make_row(task="one"), draws=1)
    text = html.write_html_report(tmp_path, [three, one]).read_text(encoding="utf-8")
    assert '<th title="demonstration draws S each property is decided over">draws</th>' in text
    rows = {task: line for line in text.splitlines() for task in ("three", "one") if line.startswith("<tr") and f'href="#tiny-{task}"' in line and "<td>float32</td>" in line}  # fmt: skip
    assert 'class="single"' not in rows["three"] and ">3</td>" in rows["three"]
    assert '>1 <span class="single"' in rows["one"] and ">single draw</span>" in rows["one"]
    one_section = text.split('<section id="tiny-one">', 1)[1].split("</section>", 1)[0]
    assert "Decided over 1 demonstration draw " in one_section and ">single draw</span>" in one_section
    assert "the intervals cover the eval examples only" in one_section
    assert (
        "<th>per draw</th>" not in one_section.split("<table class=verdicts>", 1)[1].split("</table>", 1)[0]
    )  # one value: nothing to list
    assert "Decided over 3 demonstration draws." in text


def test_old_rows_render_as_before(tmp_path):
    old = make_row()
    old["properties"] = {"accuracy": "failed", "simaou": "inconclusive"}
    text = html.write_html_report(tmp_path, [old]).read_text(encoding="utf-8")
    for absent in (
        "<table class=verdicts>",
        "<table class=gates>",
        "<ul class=legend>",
        ">draws</th>",
        "single draw",
        "left out of SimAM",
        "per draw",
    ):
        assert absent not in text, absent
    assert "no in-context learning to explain" in text  # the old legend
    assert not (tmp_path / "plots" / "tiny-ant-verdicts.png").exists()
    mixed = html.write_html_report(tmp_path, [old, decided(make_row(task="new"))]).read_text(encoding="utf-8")
    (old_line,) = [
        line for line in mixed.splitlines() if line.startswith("<tr") and 'href="#tiny-ant"' in line and "<td>float32</td>" in line
    ]
    assert 'title="a row written before draws were recorded">–</td>' in old_line


def test_verdict_plot_and_nan_layers_are_drawn(tmp_path):
    row = decided(make_row(layers=4))
    row["layers"]["simam_after"] = [None] * 4  # no defined layer: not drawn
    row["layers"]["kendall"][2] = float("nan")
    written = plots.layer_plots(row, tmp_path) + plots.verdict_plots(row, tmp_path)
    assert [path.name for _, path in written] == [
        "tiny-ant-simaou.png",
        "tiny-ant-simam.png",
        "tiny-ant-kendall.png",
        "tiny-ant-verdicts.png",
    ]
    for _, path in written:
        assert path.read_bytes().startswith(PNG)
    assert plots._curve(row, "simam_after") == [] and plots._curve(row, "simam_delta")[1:] == [0.1, 0.2, 0.30000000000000004]
    assert plots.verdict_plots(make_row(), tmp_path) == []
    text = html.write_html_report(tmp_path, [row]).read_text(encoding="utf-8")
    section = text.split('<section id="tiny-ant">', 1)[1]
    assert section.index('src="plots/tiny-ant-verdicts.png"') < section.index("<h4>Gates</h4>")


def test_left_out_layers_are_shaded_where_simam_delta_is_drawn(monkeypatch, tmp_path):
    spans = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.axvspan
    monkeypatch.setattr(matplotlib.axes.Axes, "axvspan", lambda ax, *a, **k: spans.append(a) or original(ax, *a, **k))
    plots.layer_plots(decided(make_row()), tmp_path)
    assert spans == [(-0.5, 0.5)]  # layer 0, in the SimAM figure only (SimAOU and Kendall keep every layer)
    spans.clear()
    plots.control_plots(with_controls(decided(make_row())), tmp_path)
    assert spans == [(-0.5, 0.5)]  # the SimAM∆ control figure


def test_an_inconclusive_reason_names_its_closed_gates_and_keeps_the_rest():
    from pytest_icl.report import html_verdicts as hv

    row = {"gates": {"icl_effect": {"open": False, "reason": "ICL does not beat ZSL"}, "ft_learned": {"open": True, "reason": "FT learned"},
                     "rec2ftp_support": {"open": False, "reason": "|D| = 0"}}}  # fmt: skip
    reason = "Inconclusive: ICL does not beat ZSL; |D| = 0. Decided without the shuffled-label control (switched off)"
    assert hv._short_reason(row, reason) == (
        "Inconclusive: gates icl_effect, rec2ftp_support closed (see the gates). Decided without the shuffled-label control (switched off)"
    )
    assert hv._short_reason(row, "The 95% interval contains the margin") == "The 95% interval contains the margin"
    assert hv._short_reason({}, reason) == reason  # a row without gates: the reason as it is
