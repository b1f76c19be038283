"""The page's view of the decisions over draws: verdicts, gates, left-out layers, draws.

A row written since issue 15 (``row["verdicts"]``, ``row["gates"]``, ``row["draws"]``,
``row["left_out_layers"]``, ``row["per_draw"]``; see :mod:`pytest_icl.report.rows`) carries per
property the estimate of metric − control (mean over draws), its 95 % interval, the margin and
the outcome: passed, failed, undecided (the interval contains the margin) or inconclusive (a
gate is closed). This module turns those into what ``report.html.j2`` shows; a row without
them (written by an older version) gives empty views, so it renders as it did.

Example::

    verdict_lines(row)   # one line per property, then one per extra comparison
    gate_lines(row)      # every gate: open or closed, and why
    draws_cell(row)      # {"text": "1", "single": True, "title": ...}
"""

from __future__ import annotations

import math
from typing import Any

from pytest_icl import catalogue

# The outcomes of a property item, in the order the page counts them; the first four are the
# decision's (analysis.verdicts.OUTCOMES), the rest pytest's.
OUTCOME_ORDER = ("passed", "failed", "undecided", "inconclusive", "xfailed", "xpassed", "skipped", "error")

# What each decision outcome means: the legend under the summary (one entry per outcome shown).
LEGEND = {
    "passed": "the whole 95% interval of metric − control lies above the margin",
    "failed": "the whole 95% interval lies below the margin",
    "undecided": "the 95% interval contains the margin: the evidence cannot tell (never a pass); "
    "more draws (--icl-seeds) or eval examples may decide it",
    "inconclusive": "a gate is closed (no ICL effect, FT learned nothing, too little Rec2FTP support, or no layer "
    "that is not rounding noise), so the comparison would mean nothing: neither passed nor failed",
}

SINGLE_DRAW = "the intervals cover the eval examples only, not the choice of demonstrations (--icl-seeds draws more)"

SHUFFLED = "_shuffled"  # analysis.draws.SHUFFLED: a metric recomputed with FT on shuffled labels


def is_new_style(row: dict[str, Any]) -> bool:
    """Whether the row was decided over draws (it carries verdicts or a draw count)."""
    return "verdicts" in row or "draws" in row


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def signed(value: Any, digits: int = 4) -> str:
    return "n/a" if _nan(value) else f"{value:+.{digits}f}"


def interval(low: Any, high: Any, digits: int = 4) -> str:
    return "n/a" if _nan(low) or _nan(high) else f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def margin_text(margin: Any) -> str:
    return "n/a" if _nan(margin) else f"{margin:+g}"


def _metric_label(name: str) -> str:
    """A metric's label; a shuffled-label metric is its metric "with FT on shuffled labels"."""
    if name.endswith(SHUFFLED):
        return f"{_metric_label(name[: -len(SHUFFLED)])} with FT on shuffled labels"
    try:
        return catalogue.metric(name).label
    except KeyError:
        return name


def _property(name: str) -> catalogue.Property | None:
    try:
        return catalogue.prop(name)
    except KeyError:
        return None  # a property of another version: shown by its name


def draws_cell(row: dict[str, Any]) -> dict[str, Any]:
    """The number of draws S; ``single`` marks S = 1 on a row decided over draws."""
    if not is_new_style(row):
        return {"text": "–", "single": False, "title": "a row written before draws were recorded"}
    draws = row.get("draws", 1)
    single = draws == 1
    title = (
        f"a single demonstration draw: {SINGLE_DRAW}"
        if single
        else f"{draws} demonstration draws; the intervals resample draws, then eval examples"
    )
    return {"text": str(draws), "single": single, "title": title}


def _per_draw(row: dict[str, Any], metric: str) -> str:
    values = (row.get("per_draw") or {}).get(metric) or []
    return ", ".join("n/a" if _nan(v) else f"{v:.3f}" for v in values) if len(values) > 1 else ""


def verdict_lines(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per property: metric − control, estimate, 95% CI, margin, outcome; then a line per extra comparison.

    A line is ``{"property", "claim", "difference", "estimate", "interval", "margin", "outcome",
    "first", "per_draw", "note", "reason", "muted"}``; ``first`` is False on a property's extra
    comparison (the shuffled-label control), whose ``outcome`` is that comparison's (``muted``
    when the property is inconclusive).
    """
    lines = []
    for name, v in (row.get("verdicts") or {}).items():
        p = _property(name)
        comparisons = v.get("comparisons") or []
        metric = p.metric if p else None
        control = p.control if p else (comparisons[0]["control"] if comparisons else "")
        notes = []
        if v.get("support") is not None:
            subset = f" ({p.support.subset})" if p and p.support else ""
            notes.append(f"rests on {v['support']} example(s) per draw at least{subset}")
        if v.get("reason"):
            notes.append(_short_reason(row, v["reason"]))
        lines.append({
            "property": name, "claim": p.claim if p else "", "first": True,
            "difference": f"{_metric_label(metric)} − {_metric_label(control)}" if metric else f"− {control}",
            "estimate": signed(v.get("estimate")), "interval": interval(v.get("low"), v.get("high")),
            "margin": margin_text(v.get("margin")), "outcome": v.get("outcome") or "n/a",
            "per_draw": _per_draw_pair(row, metric, control), "note": "; ".join(notes), "reason": v.get("reason") or "",
            "muted": False,
        })  # fmt: skip
        for c in comparisons[1:]:
            lines.append({
                "property": name, "claim": "", "first": False,
                "difference": f"{_metric_label(metric) if metric else name} − {_metric_label(c['control'])}",
                "estimate": signed(c.get("estimate")), "interval": interval(c.get("low"), c.get("high")),
                "margin": margin_text(v.get("margin")), "outcome": c.get("outcome") or "n/a",
                "per_draw": _per_draw_pair(row, None, c["control"]), "note": "", "reason": "",
                # Behind a closed gate a comparison's own outcome decides nothing: shown muted, never as a pass.
                "muted": v.get("outcome") == "inconclusive",
            })  # fmt: skip
    return lines


def _short_reason(row: dict[str, Any], reason: str) -> str:
    """An inconclusive verdict's reason with the closed gates' own reasons (long, and the same for every
    property behind them) replaced by the gates' names; the gates table and the summary list the reasons."""
    closed = [(name, g["reason"]) for name, g in (row.get("gates") or {}).items() if not g.get("open") and g.get("reason")]
    found = [(reason.find(text), name, text) for name, text in closed if text in reason]
    if not found:
        return reason
    end = max(at + len(text) for at, _, text in found)
    rest = reason[end:].lstrip(" .;")
    names = ", ".join(name for _, name, _ in sorted(found))
    return f"Inconclusive: gate{'s' * (len(found) != 1)} {names} closed (see the gates)" + (f". {rest}" if rest else "")


def _per_draw_pair(row: dict[str, Any], metric: str | None, control: str) -> str:
    parts = [f"{_metric_label(m)}: {_per_draw(row, m)}" for m in (metric, control) if m and _per_draw(row, m)]
    return " · ".join(parts)


def gate_lines(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every gate of the row: ``{"name", "open", "state", "reason"}`` (state "open" or "closed")."""
    return [
        {"name": name, "open": bool(g.get("open")), "state": "open" if g.get("open") else "closed", "reason": str(g.get("reason", ""))}
        for name, g in (row.get("gates") or {}).items()
    ]


def left_out_text(row: dict[str, Any]) -> str:
    """Which layers SimAM∆ leaves out, in words; "" for a row that does not say."""
    if "left_out_layers" not in row:
        return ""
    layers = row.get("left_out_layers") or []
    if not layers:
        return "No layer left out of SimAM∆: ICL's attention to the query differs from ZSL's in every layer."
    listed = ", ".join(str(i) for i in layers)
    return (
        f"Layer{'s' * (len(layers) != 1)} {listed} left out of SimAM∆ and its controls: ICL's attention to the query "
        "equals ZSL's there to rounding, so its SimAM∆ would be the cosine of rounding noise (blank in the SimAM plot)."
    )


def summary_lines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair's verdict lines, with the pair (model, task, anchor) and its draws, for the summary's table."""
    from pytest_icl.report.plots import slug

    found = []
    for row in rows:
        for line in verdict_lines(row):
            found.append({**line, "model_id": row["model_id"], "task": row["task"], "anchor": slug(row), "draws": draws_cell(row)})
    return found


def closed_gates(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each closed gate of every pair: why that pair's gated items are inconclusive."""
    return [
        {"pair": f"{row['model_id']} · {row['task']}", "name": g["name"], "reason": g["reason"]}
        for row in rows
        for g in gate_lines(row)
        if not g["open"]
    ]


def outcome_counts(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(outcome, number of items) over every pair's property items, known outcomes first: the summary line."""
    counts: dict[str, int] = {}
    for row in rows:
        for outcome in (row.get("properties") or {}).values():
            counts[outcome] = counts.get(outcome, 0) + 1
    order = [o for o in OUTCOME_ORDER if o in counts] + sorted(o for o in counts if o not in OUTCOME_ORDER)
    return [(o, counts[o]) for o in order]


def legend(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(outcome, meaning) for the decision outcomes, shown when any row was decided over draws."""
    return list(LEGEND.items()) if any(is_new_style(row) for row in rows) else []
