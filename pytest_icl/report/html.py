"""``index.html``: the summary table, the verdicts, the controls, the baseline comparison and the per-layer plots.

One self-contained page (inline CSS, no network, no server): it opens from disk and finds its
plots through relative paths (``plots/<model>-<task>-*.png``), so the whole report folder can be
moved, zipped or attached to a CI run. A few lines of inline script mark the page when a plot
fails to load (``<body data-images="ok|broken">``) and say so at the top.

The page is the jinja2 template ``templates/report.html.j2`` (with ``report.css`` and
``report.js`` inlined), autoescaped: every name and message from a row is text, never markup.
This module turns rows into what the template shows (formatted numbers, badges, verdicts), so
the template holds layout only; :mod:`pytest_icl.report.html_verdicts` does so for the decisions
over draws (each property's estimate, interval, margin and outcome, the gates, the left-out layers).

Example::

    write_html_report(Path("icl-report"), rows, comparisons={pair: comparison.to_dict()})
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from pytest_icl import catalogue
from pytest_icl.report import html_verdicts as verdicts
from pytest_icl.report import rows as report

PLOTS = "plots"
TEMPLATES = Path(__file__).parent / "templates"

# Summary columns: (header, [metrics shown as a / b], tooltip), the catalogue's.
SUMMARY_COLUMNS = tuple((column.header, column.metrics, column.tip) for column in catalogue.COLUMNS)

# Outcomes whose badge says it in words too, not only in colour.
OUTCOME_LABELS = {"xfailed": "xfail", "xpassed": "XPASS", "undecided": "undecided", "inconclusive": "inconclusive", "error": "error"}

# lr_source values that mean lr: auto chose the lr for this model (report.py's table marks them the same way).
AUTO_LR_SOURCES = ("validation", "cache")

# A control check's outcome (CheckOutcome.outcome) as (text, badge class); rows stored before
# checks had intervals carry only ``passed``.
CHECK_VERDICTS = {"passed": ("passed", "holds"), "failed": ("failed", "does-not-hold"), "undecided": ("undecided", "undecided"),
                  True: ("holds", "holds"), False: ("does not hold", "does-not-hold")}  # fmt: skip


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "off"
    return f"{value:.{digits}f}"


def ci(interval) -> str:
    return "n/a" if not interval else f"[{num(interval[0], 4)}, {num(interval[1], 4)}]"


def _nanlike(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pair(row: dict[str, Any]) -> str:
    return f"{row['model_id']}-{row['task']}"


def _anchor(row: dict[str, Any]) -> str:
    from pytest_icl.report.plots import slug

    return slug(row)


def property_badges(properties: dict[str, str], *, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(label, outcome) per property; an outcome with a word of its own carries it in the label."""
    return [
        (f"{name} ({OUTCOME_LABELS[outcome]})" if outcome in OUTCOME_LABELS else name, outcome)
        for name, outcome in properties.items()
        if name not in skip
    ]


def lr_cell(row: dict[str, Any]) -> dict[str, Any]:
    """The lr as the table shows it; ``auto`` when lr: auto chose it for this model, the reason as a tooltip."""
    lr = row.get("lr")
    text = f"{lr:g}" if isinstance(lr, (int, float)) else str(lr)
    source = row.get("lr_source") or "fixed"
    tip = row.get("lr_reason") or ("fixed lr (the task's or --icl-lr)" if source == "fixed" else f"lr: auto ({source})")
    return {"text": text, "auto": source in AUTO_LR_SOURCES, "title": tip}


def _mean_sd(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "n/a"
    return f"{num(stats.get('mean'))} ± {num(stats.get('sd'))}"


def _seed_lines(spec: catalogue.Control, control: dict[str, Any]) -> list[dict[str, Any]]:
    """Each property's metric beside its control as mean ± sd over the seeds (the item's verdict is its badge)."""
    seeds = ", ".join(str(s) for s in control.get("seeds") or [])
    metrics = control.get("metrics") or {}
    lines = []
    for prop in catalogue.PROPERTIES:
        if prop.metric in metrics or prop.control in metrics:
            lines.append({
                "check": f"{prop.claim} (over seeds {seeds})", "variant": "mean ± sd", "real": _mean_sd(metrics.get(prop.metric)),
                "control": _mean_sd(metrics.get(prop.control)), "verdict": None,
            })  # fmt: skip
    for metric, claim, against in spec.over_seeds.extras:
        if metric in metrics:
            lines.append({
                "check": f"{claim} (over seeds {seeds})", "variant": "mean ± sd", "real": _mean_sd(metrics[metric]),
                "control": _mean_sd(metrics.get(against)) if against else "", "verdict": None,
            })  # fmt: skip
    return lines


def _order_sensitivity(control: dict[str, Any]) -> str:
    """Shen et al.'s point in one sentence: how much ICL's and FT's predictions move with the demonstrations."""
    sensitivity = control.get("order_sensitivity") or {}
    parts = []
    flips = sensitivity.get("prediction_flips") or {}
    if sensitivity.get("aligned") and flips:
        parts.append(f"predictions that change with the demonstrations: ICL {num(flips.get('icl'), 2)}, FT {num(flips.get('ft'), 2)}")
        parts.append(f"choice-probability sd ICL / FT = {num(sensitivity.get('icl_over_ft'), 2)}")
    acc_sd = sensitivity.get("acc_sd") or {}
    if acc_sd:
        parts.append("accuracy sd " + ", ".join(f"{setting.upper()} {num(sd)}" for setting, sd in acc_sd.items()))
    return "; ".join(parts)


def _variant_name(spec: catalogue.Control, variant: str | None) -> str:
    """Which run a check's control value comes from; blank where the control has just the one of its name."""
    if variant is None:
        return "this run"  # the output control compares two distributions of the real run
    shown = {v.name: v.shown for v in spec.variants}
    return shown.get(variant, "" if variant == spec.name else variant)


def _check_lines(spec: catalogue.Control, control: dict[str, Any]) -> list[dict[str, Any]]:
    """Each check: the real run's value beside the control's, and its verdict."""
    lines = []
    for check in control.get("outcomes") or []:
        outcome = check.get("outcome", check.get("passed"))
        if outcome is None:  # a control without a verdict is reported beside GD; elsewhere None means a value is missing
            verdict = ("undefined", "no-verdict") if spec.verdict else ("reported", "reported")
        else:
            verdict = CHECK_VERDICTS[outcome]
        if "low" in check and verdict[1] != "reported" and not _nanlike(check.get("low")):
            verdict = (f"{verdict[0]} {ci((check['low'], check['high']))}", verdict[1])
        lines.append({
            "check": check.get("claim", ""), "variant": _variant_name(spec, check.get("variant")),
            "real": num(check.get("value"), 4), "control": num(check.get("control"), 4), "verdict": verdict,
        })  # fmt: skip
    return lines


# How a control's catalogue row says it is shown: (its table lines, the note under them).
_SHOWN = {
    catalogue.CHECKS: (_check_lines, lambda control: ""),
    catalogue.OVER_SEEDS: (_seed_lines, _order_sensitivity),
}


def control_sections(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per control of the row (``row["controls"]``): its item's outcome, time, and table lines.

    A line is ``{"check", "variant", "real", "control", "verdict": (text, class) | None}``:
    the real run's value beside the control's, as in :func:`pytest_icl.report.rows.control_lines`.
    """
    sections = []
    for name, control in (row.get("controls") or {}).items():
        spec = catalogue.control(name, strict=False)
        lines, note = _SHOWN[spec.shown]
        sections.append({
            "name": name, "outcome": (row.get("properties") or {}).get(name), "seconds": control.get("seconds"),
            "lines": lines(spec, control), "note": note(control),
        })  # fmt: skip
    return sections


def _summary_row(row: dict[str, Any], comparisons: dict[str, dict[str, Any]]) -> dict[str, Any]:
    values = row["values"]
    properties = row.get("properties") or {}
    comparison = comparisons.get(_pair(row))
    return {
        "anchor": _anchor(row), "model_id": row["model_id"], "task": row["task"], "dtype": str(row.get("dtype")),
        "shots": row.get("shots"), "eval": row.get("eval"), "lr": lr_cell(row), "draws": verdicts.draws_cell(row),
        "cells": [" / ".join(num(values.get(m)) for m in metrics) for _, metrics, _ in SUMMARY_COLUMNS],
        "badges": property_badges(properties, skip=("baseline",)),
        "baseline": comparison["status"] if comparison else None,
        "bad": any(outcome in ("failed", "error") for outcome in properties.values()),
    }  # fmt: skip


def _comparison_view(row: dict[str, Any], comparison: dict[str, Any]) -> dict[str, Any]:
    stored = comparison.get("stored") or {}
    source = f"stored row of {stored.get('model_id')} ({stored.get('dtype')}, {stored.get('device', '?')})"
    if stored.get("stored_at"):
        source += f", stored {stored['stored_at']}"
    diffs = []
    for d in comparison.get("diffs", []):
        change = None if _nanlike(d["stored"]) or _nanlike(d["new"]) else d["new"] - d["stored"]
        diffs.append({
            "cls": "bad" if d["verdict"] in ("regressed", "undefined") else "good" if d["verdict"] == "improved" else "",
            "metric": d["metric"], "stored": num(d["stored"], 4), "stored_ci": ci(d.get("stored_interval")),
            "new": num(d["new"], 4), "new_ci": ci(d.get("new_interval")), "change": "n/a" if change is None else f"{change:+.4f}",
            "tolerance": num(d["tolerance"], 4), "reason": d.get("reason", ""), "verdict": d["verdict"],
        })  # fmt: skip
    return {"pair": _pair(row), "status": comparison["status"], "message": comparison.get("message", ""), "source": source, "diffs": diffs}


def _pair_view(
    row: dict[str, Any],
    figures: list[tuple[str, Path]],
    control_figures: list[tuple[str, Path]],
    verdict_figures: list[tuple[str, Path]],
    folder: Path,
) -> dict[str, Any]:
    intervals = row.get("intervals") or {}
    per_draw = row.get("per_draw") or {}
    lr = lr_cell(row)
    settings = (
        f"task hash {row.get('task_hash')}, weights {str(row.get('weights_hash'))[:16]}…, revision {row.get('revision')}, "
        f"seed {row.get('seed')}, lr {lr['text']}{' (auto)' if lr['auto'] else ''}, position {row.get('position')}, device {row.get('device')}"
    )
    return {
        "anchor": _anchor(row), "model_id": row["model_id"], "task": row["task"],
        "badges": property_badges(row.get("properties") or {}),
        "figures": _figure_views(figures, folder), "control_figures": _figure_views(control_figures, folder),
        "controls": control_sections(row),
        "metrics": [(name, num(value, 4), ci(intervals.get(name)), _draw_values(per_draw.get(name))) for name, value in row["values"].items()],
        "has_per_draw": bool(per_draw), "draws": verdicts.draws_cell(row), "new_style": verdicts.is_new_style(row),
        "verdicts": verdicts.verdict_lines(row), "verdict_figures": _figure_views(verdict_figures, folder),
        "gates": verdicts.gate_lines(row), "left_out": verdicts.left_out_text(row),
        "counts": ", ".join(f"{k} {v}" for k, v in (row.get("counts") or {}).items()),
        "settings": settings, "lr_reason": row.get("lr_reason") or "",
    }  # fmt: skip


def _draw_values(values: list | None) -> str:
    return ", ".join(num(v, 4) for v in values or [])


def _figure_views(figures: list[tuple[str, Path]], folder: Path) -> list[dict[str, str]]:
    return [{"caption": caption, "src": path.relative_to(folder).as_posix()} for caption, path in figures]


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every value is text: a task named "<script>" shows as such
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(
    rows: list[dict[str, Any]],
    figures: dict[str, list[tuple[str, Path]]],
    folder: Path,
    *,
    comparisons: dict[str, dict[str, Any]] | None = None,
    baseline: Path | None = None,
    control_figures: dict[str, list[tuple[str, Path]]] | None = None,
    verdict_figures: dict[str, list[tuple[str, Path]]] | None = None,
) -> str:
    comparisons = comparisons or {}
    control_figures = control_figures or {}
    verdict_figures = verdict_figures or {}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = rows[0].get("versions", {}) if rows else {}
    meta = f"{len(rows)} task × model pair{'s' * (len(rows) != 1)}, generated {now}"
    if versions:
        meta += " · " + ", ".join(f"{k} {v}" for k, v in versions.items())
    # Rows decided over draws explain inconclusive in the legend; older rows had one gate, the accuracy item.
    old_inconclusive = any("inconclusive" in (row.get("properties") or {}).values() for row in rows if not verdicts.is_new_style(row))
    template = _environment().get_template("report.html.j2")
    return template.render(
        meta=meta,
        columns=[(name, tip) for name, _, tip in SUMMARY_COLUMNS],
        summary=[_summary_row(row, comparisons) for row in rows],
        has_baseline=bool(comparisons),
        baseline=str(baseline or ""),
        comparisons=[_comparison_view(row, comparisons[_pair(row)]) for row in rows if _pair(row) in comparisons],
        any_inconclusive=old_inconclusive,
        single_draw=verdicts.SINGLE_DRAW,
        has_draws=any(verdicts.is_new_style(row) for row in rows),
        counts=verdicts.outcome_counts(rows),
        legend=verdicts.legend(rows),
        verdict_summary=verdicts.summary_lines(rows),
        closed_gates=verdicts.closed_gates(rows),
        any_auto_lr=any(lr_cell(row)["auto"] for row in rows),
        pairs=[
            _pair_view(row, figures.get(_pair(row), []), control_figures.get(_pair(row), []), verdict_figures.get(_pair(row), []), folder)
            for row in rows
        ],
    )


def write_html_report(
    folder: Path,
    rows: list[dict[str, Any]],
    *,
    comparisons: dict[str, dict[str, Any]] | None = None,
    baseline: Path | None = None,
) -> Path:
    """Plots into ``folder/plots``, then ``folder/index.html`` (all atomic). Returns the page's path."""
    from pytest_icl.report import plots

    folder = Path(folder)
    comparisons = comparisons or {}
    figures: dict[str, list[tuple[str, Path]]] = {}
    control_figures: dict[str, list[tuple[str, Path]]] = {}
    verdict_figures: dict[str, list[tuple[str, Path]]] = {}
    for row in rows:
        drawn = plots.layer_plots(row, folder / PLOTS)
        comparison = comparisons.get(_pair(row))
        if comparison and comparison.get("stored") and comparison.get("status") in ("passed", "regressed"):
            drawn += plots.baseline_plots(row, comparison["stored"], comparison.get("diffs", []), folder / PLOTS)
        figures[_pair(row)] = drawn
        control_figures[_pair(row)] = plots.control_plots(row, folder / PLOTS)
        verdict_figures[_pair(row)] = plots.verdict_plots(row, folder / PLOTS)
    page = folder / "index.html"
    html = render(
        rows, figures, folder, comparisons=comparisons, baseline=baseline, control_figures=control_figures, verdict_figures=verdict_figures
    )
    report.atomic_write_text(page, html)
    return page
