"""The catalogue names every metric, property and control once, and every layer reads it.

What a forgotten row would break silently, these tests break loudly: a metric the analysis
computes that no row names (not in the baselines, not in the report), a row that points at a
metric or variant that does not exist, a control row without its module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pytest_icl import catalogue
from pytest_icl.analysis import properties
from pytest_icl.analysis.aggregate import Analysis, analyse
from pytest_icl.controls import base
from pytest_icl.controls.pair import run_pair_controls
from pytest_icl.report import baseline, html, plots, rows
from tests.unit.test_analysis import _records

METRICS = {m.name: m for m in catalogue.METRICS}


def test_the_catalogue_imports_nothing_but_errors_and_no_torch():
    tree = ast.parse(Path(catalogue.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name.startswith("pytest_icl")} <= {"pytest_icl.errors"}
    code = "import sys, pytest_icl.catalogue; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pytest_icl')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['pytest_icl', 'pytest_icl.catalogue']"


def test_every_number_the_analysis_computes_has_exactly_one_row():
    from pytest_icl.analysis.draws import SHUFFLED, analyse_draws

    analysis = analyse(_records(True), n_boot=20)
    assert list(METRICS) == list(dict.fromkeys(METRICS)), "a metric has two rows"
    assert set(analysis.values) == {name for name in METRICS if not name.endswith(SHUFFLED)}
    # with the default shuffled-label control, every row is computed
    draws = analyse_draws([_records(True)], shuffled=[_records(True)], n_boot=20)
    assert set(draws.values) == set(METRICS)
    assert {name for name, m in METRICS.items() if m.per_layer} == set(draws.layers)


def test_every_row_points_at_names_that_exist():
    figures = {f.name for f in catalogue.FIGURES}
    for m in catalogue.METRICS:
        assert m.kind in catalogue.KINDS, m.name
        assert (m.figure is None) == (m.line is None), f"{m.name}: a figure needs a line and a line a figure"
        assert m.figure is None or (m.figure in figures and m.per_layer), m.name
        assert m.control_figure is None or (m.per_layer and m.control_figure.beside in (None, *METRICS)), m.name
        assert not m.compared or m.kind == "score", f"{m.name}: only scores are compared with a baseline"
        assert m.about, m.name
    assert all(catalogue.figure_lines(f) for f in figures), "a figure with no metric drawn in it"
    for column in catalogue.COLUMNS:
        assert set(column.metrics) <= set(METRICS), column.header
    for p in catalogue.PROPERTIES:
        assert {p.metric, p.control} <= set(METRICS), p.name
    assert catalogue.GATE in {p.name for p in catalogue.PROPERTIES} and not catalogue.prop(catalogue.GATE).gated
    for c in catalogue.CONTROLS:
        assert c.shown in catalogue.SHOWN_AS and (c.over_seeds is not None) == (c.shown == catalogue.OVER_SEEDS), c.name
        variants = {v.name for v in c.variants}
        for check in c.checks:
            assert check.control == c.name and {check.metric, check.control_metric} <= set(METRICS), check
            assert check.variant is None or check.variant in variants, check
            assert (check.better is None) == (not c.verdict), f"{check}: a check has a verdict exactly when its control has"
        if c.over_seeds:
            extras = {metric for metric, _, _ in c.over_seeds.extras} | {a for _, _, a in c.over_seeds.extras if a}
            assert set(c.over_seeds.terminal) | extras <= set(METRICS), c.name


def test_the_output_distribution_numbers_have_a_baseline_decision():
    """The four KL/top-10 numbers were once in no baseline table at all; now they are explicitly not compared, with why."""
    for name in ("kl_icl_ft", "kl_icl_zsl", "top10_icl_ft", "top10_icl_zsl"):
        assert not METRICS[name].compared and "output control" in baseline.NOT_COMPARED[name]
    with pytest.raises(ValueError, match=r"kl_icl_ft is not compared with the baseline \(.*lower is better"):
        baseline.parse_tolerance("kl_icl_ft=0.1")


def test_the_layers_read_their_tables_from_the_catalogue():
    assert set(baseline.COMPARED) | set(baseline.NOT_COMPARED) == set(METRICS)
    assert not set(baseline.COMPARED) & set(baseline.NOT_COMPARED)
    assert baseline.DEFAULT_TOLERANCES == {m.name: m.tolerance for m in catalogue.compared_metrics()}
    assert list(properties.PROPERTIES) == [p.name for p in catalogue.PROPERTIES]
    assert properties.SIMILARITY_PROPERTIES == ("rec2ftp", "simaou", "simam", "kendall")
    assert properties.CONTROL_PROPERTIES == tuple(c.name for c in catalogue.CONTROLS if c.verdict)
    assert "lcgd" in base.CONTROLS and "lcgd" not in properties.CONTROL_PROPERTIES  # reported beside GD, no item
    assert base.CONTROLS == catalogue.control_names()
    assert base.RUNNABLE == tuple(c.name for c in catalogue.CONTROLS if c.variants) and {"seeds", "output"}.isdisjoint(base.RUNNABLE)
    assert set(plots.CONTROL_CURVES) == {(c.name, v.name) for c in catalogue.CONTROLS for v in c.variants}
    drawn = {metric for _, _, _, curves in plots.LAYER_FIGURES for metric, *_ in curves}
    assert drawn == {m.name for m in catalogue.METRICS if m.figure}
    assert [header for header, _ in rows.TABLE_COLUMNS][6:-1] == [c.terminal for c in catalogue.COLUMNS if c.terminal]
    assert [header for header, _, _ in html.SUMMARY_COLUMNS] == [c.header for c in catalogue.COLUMNS]


def test_headline_metrics_are_what_junit_records():
    assert catalogue.headline_metrics() == ("acc_zsl", "acc_icl", "acc_ft", "rec2ftp", "simaou", "simam_after", "kendall")


def test_every_control_row_has_its_module_and_every_module_its_row():
    for spec in catalogue.CONTROLS:
        control = base.get(spec.name)
        assert isinstance(control, base.Control) and control.name == spec.name and control.spec is spec
    modules = {p.stem for p in Path(base.__file__).parent.glob("*.py")} - {"__init__", "base", "pair"}
    assert modules == set(catalogue.control_names())
    with pytest.raises(KeyError, match="known: untrained, shuffled"):
        base.get("nope")


def test_lookups_name_what_is_known():
    assert catalogue.metric("simaou").label == "SimAOU" and catalogue.control("lcgd").verdict is False
    with pytest.raises(KeyError, match="no metric named 'simou'"):
        catalogue.metric("simou")
    plain = catalogue.control("from_another_version", strict=False)
    assert plain.shown == catalogue.CHECKS and plain.verdict and not plain.variants


# ---- adding a control is one module and one row


def _analysis(**values) -> Analysis:
    """Two draws of 20 examples whose per-example values are the given means (no spread: a clear difference)."""
    import torch

    evidence = {name: [torch.full((20,), value, dtype=torch.float64)] * 2 for name, value in values.items()}
    return Analysis(values=values, intervals={}, layers={}, counts={}, evidence=evidence)


@pytest.fixture
def a_new_control(monkeypatch):
    """A control ``margin_gap`` as a contributor would add it: a row in the catalogue and a module of its own."""
    row = catalogue.Control(
        "margin_gap", "no extra run: the accuracy gap read from the real run",
        checks=(catalogue.ControlCheck("margin_gap", None, "acc_icl", "acc_zsl", "higher", "ICL accuracy above ZSL accuracy"),),
    )  # fmt: skip
    monkeypatch.setattr(catalogue, "CONTROLS", (*catalogue.CONTROLS, row))
    module = types.ModuleType("pytest_icl.controls.margin_gap")
    module.CONTROL = base.Control("margin_gap")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return row


def test_a_new_control_runs_and_is_shown_with_no_other_change(a_new_control):
    real, task = _analysis(acc_icl=0.8, acc_zsl=0.6), types.SimpleNamespace(settings=types.SimpleNamespace(seed=0))
    pair = run_pair_controls(("margin_gap",), None, None, [task, task], [None, None], real, margins={})
    assert pair.check("margin_gap").passed and pair.check("margin_gap").message.startswith("control margin_gap holds:")
    entry = pair.row["margin_gap"]
    assert [o["outcome"] for o in entry["outcomes"]] == ["passed"] and set(entry) == {"values", "layers", "outcomes", "seconds", "verdict"}
    row = {"model_id": "m", "task": "t", "controls": {"margin_gap": entry}, "properties": {"margin_gap": "passed"}}
    assert rows.control_lines(row) == [["margin_gap", "ICL accuracy above ZSL accuracy", "0.800", "0.600", "passed [0.200, 0.200]"]]
    (section,) = html.control_sections(row)
    assert section["outcome"] == "passed" and section["lines"][0]["variant"] == "this run"
    assert section["lines"][0]["verdict"] == ("passed [0.2000, 0.2000]", "holds")
