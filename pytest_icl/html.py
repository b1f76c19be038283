"""``index.html``: the summary table, the baseline comparison and the per-layer plots.

One self-contained page (inline CSS, no network, no server): it opens from disk and finds its
plots through relative paths (``plots/<model>-<task>-*.png``), so the whole report folder can be
moved, zipped or attached to a CI run. A few lines of inline script mark the page when a plot
fails to load (``<body data-images="ok|broken">``) and say so at the top.

Example::

    write_html_report(Path("icl-report"), rows, comparisons={pair: comparison.to_dict()})
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from pytest_icl import report

PLOTS = "plots"

# Summary columns: (header, [metrics shown as a / b], tooltip).
SUMMARY_COLUMNS = (
    ("ZSL", ("acc_zsl",), "zero-shot accuracy"),
    ("ICL", ("acc_icl",), "in-context accuracy"),
    ("FT", ("acc_ft",), "accuracy after finetuning on the demonstrations"),
    ("Rec2FTP / chance", ("rec2ftp", "rec2ftp_chance"), "Rec2FTP and its chance level P(ICL right | ZSL wrong)"),
    ("SimAOU / fair random", ("simaou", "simaou_fair_random"), "SimAOU and the fair random-update control"),
    ("SimAM before / after", ("simam_before", "simam_after"), "SimAM of ICL vs ZSL maps, and of ICL vs FT maps"),
    ("SimAM∆", ("simam_delta",), "cos(ICL − ZSL, FT − ZSL)"),
    ("Kendall / random", ("kendall", "kendall_random"), "Kendall(ICL, FT) and Kendall(ICL, random)"),
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px 32px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; } .meta { color: #666; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; } th, td { padding: 3px 9px; border-bottom: 1px solid #e6e6e6; text-align: left; }
th { background: #f5f5f7; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; margin: 1px 2px; color: #fff; }
.passed, .ok { background: #2e7d32; } .failed, .regressed, .undefined, .mismatch, .missing { background: #c62828; }
.skipped, .not-stored, .xfailed { background: #888; } .improved, .xpassed { background: #1565c0; }
tr.bad td { background: #fdecea; } tr.good td { background: #eaf4ff; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.plots figure { margin: 0; } .plots img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
#broken { background: #fff3cd; border: 1px solid #e0c060; padding: 8px; }
details { margin: 6px 0; } summary { cursor: pointer; color: #1565c0; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var bad = [];
  document.querySelectorAll("img").forEach(function (img) {
    if (!img.complete || img.naturalWidth === 0) { bad.push(img.getAttribute("src")); }
  });
  document.body.setAttribute("data-images", bad.length ? "broken" : "ok");
  if (bad.length) {
    var box = document.getElementById("broken");
    box.hidden = false;
    box.textContent += " " + bad.join(", ");
  }
});
"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "off"
    return f"{value:.{digits}f}"


def _badge(text: str, kind: str | None = None) -> str:
    return f'<span class="badge {escape((kind or text).replace(" ", "-"))}" title="{escape(kind or text)}">{escape(text)}</span>'


def _property_badge(name: str, outcome: str) -> str:
    """A property's outcome; expected failures say so in words, not only in colour."""
    label = {"xfailed": f"{name} (xfail)", "xpassed": f"{name} (XPASS)"}.get(outcome, name)
    return _badge(label, outcome)


def _pair(row: dict[str, Any]) -> str:
    return f"{row['model_id']}-{row['task']}"


def _summary(rows: list[dict[str, Any]], comparisons: dict[str, dict[str, Any]]) -> str:
    head = "".join(f'<th title="{escape(tip)}">{escape(name)}</th>' for name, _, tip in SUMMARY_COLUMNS)
    lines = [
        "<table id=summary><thead><tr><th>model</th><th>task</th><th>dtype</th><th>k</th><th>n</th>"
        f"{head}<th>properties</th>{'<th>baseline</th>' if comparisons else ''}</tr></thead><tbody>"
    ]
    for row in rows:
        values = row["values"]
        cells = "".join(f'<td class="num">{" / ".join(_num(values.get(m)) for m in metrics)}</td>' for _, metrics, _ in SUMMARY_COLUMNS)
        properties = row.get("properties", {})
        badges = " ".join(_property_badge(name, outcome) for name, outcome in properties.items() if name != "baseline") or "–"
        baseline = ""
        if comparisons:
            comparison = comparisons.get(_pair(row))
            baseline = f"<td>{_badge(comparison['status'], comparison['status']) if comparison else '–'}</td>"
        failed = any(outcome == "failed" for outcome in properties.values())
        lines.append(
            f'<tr class="{"bad" if failed else ""}"><td><a href="#{escape(_anchor(row))}">{escape(row["model_id"])}</a></td>'
            f"<td>{escape(row['task'])}</td><td>{escape(str(row.get('dtype')))}</td><td class=num>{row.get('shots')}</td>"
            f"<td class=num>{row.get('eval')}</td>{cells}<td>{badges}</td>{baseline}</tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _anchor(row: dict[str, Any]) -> str:
    from pytest_icl.plots import slug

    return slug(row)


def _comparison(row: dict[str, Any], comparison: dict[str, Any]) -> str:
    status = comparison["status"]
    stored = comparison.get("stored") or {}
    parts = [f"<h3>{escape(_pair(row))} {_badge(status)}</h3>"]
    if status in ("missing", "mismatch"):
        parts.append(f"<pre>{escape(comparison.get('message', ''))}</pre>")
        return "\n".join(parts)
    source = f"stored row of {stored.get('model_id')} ({stored.get('dtype')}, {stored.get('device', '?')})"
    if stored.get("stored_at"):
        source += f", stored {stored['stored_at']}"
    parts.append(f"<p class=meta>Against the {escape(source)}. Higher is better for every metric; a regression is lower, "
                 "beyond the tolerance and outside both 95% intervals.</p>")  # fmt: skip
    parts.append(
        "<table><thead><tr><th>metric</th><th>stored</th><th>stored 95% CI</th><th>new</th><th>new 95% CI</th>"
        "<th>change</th><th>tolerance</th><th>worse if</th><th>verdict</th></tr></thead><tbody>"
    )
    for d in comparison.get("diffs", []):
        cls = "bad" if d["verdict"] in ("regressed", "undefined") else "good" if d["verdict"] == "improved" else ""
        change = None if _nanlike(d["stored"]) or _nanlike(d["new"]) else d["new"] - d["stored"]
        parts.append(
            f'<tr class="{cls}"><td>{escape(d["metric"])}</td><td class=num>{_num(d["stored"], 4)}</td><td class=num>{_ci(d.get("stored_interval"))}</td>'
            f'<td class=num>{_num(d["new"], 4)}</td><td class=num>{_ci(d.get("new_interval"))}</td>'
            f'<td class=num>{"n/a" if change is None else f"{change:+.4f}"}</td><td class=num>{_num(d["tolerance"], 4)}</td><td>lower</td>'
            f'<td title="{escape(d.get("reason", ""))}">{_badge(d["verdict"])}</td></tr>'
        )
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _nanlike(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _ci(interval) -> str:
    return "n/a" if not interval else f"[{_num(interval[0], 4)}, {_num(interval[1], 4)}]"


def _values_table(row: dict[str, Any]) -> str:
    intervals = row.get("intervals") or {}
    body = "".join(
        f"<tr><td>{escape(name)}</td><td class=num>{_num(value, 4)}</td><td class=num>{_ci(intervals.get(name))}</td></tr>"
        for name, value in row["values"].items()
    )
    counts = ", ".join(f"{escape(k)} {v}" for k, v in (row.get("counts") or {}).items())
    return (
        "<details><summary>all values, intervals and counts</summary>"
        f"<table><thead><tr><th>metric</th><th>value</th><th>95% CI</th></tr></thead><tbody>{body}</tbody></table>"
        f"<p class=meta>{counts}</p><p class=meta>task hash {escape(str(row.get('task_hash')))}, weights "
        f"{escape(str(row.get('weights_hash'))[:16])}…, revision {escape(str(row.get('revision')))}, seed {row.get('seed')}, "
        f"lr {row.get('lr')}, position {escape(str(row.get('position')))}, device {escape(str(row.get('device')))}</p></details>"
    )


def _figures(figures: list[tuple[str, Path]], folder: Path) -> str:
    items = []
    for caption, path in figures:
        src = path.relative_to(folder).as_posix()
        items.append(f'<figure><img src="{escape(src)}" alt="{escape(caption)}" title="{escape(caption)}"></figure>')
    return f'<div class="plots">{"".join(items)}</div>'


def render(
    rows: list[dict[str, Any]],
    figures: dict[str, list[tuple[str, Path]]],
    folder: Path,
    *,
    comparisons: dict[str, dict[str, Any]] | None = None,
    baseline: Path | None = None,
) -> str:
    comparisons = comparisons or {}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = rows[0].get("versions", {}) if rows else {}
    meta = f"{len(rows)} task × model pair{'s' * (len(rows) != 1)}, generated {now}"
    if versions:
        meta += " · " + ", ".join(f"{escape(k)} {escape(str(v))}" for k, v in versions.items())
    body = [
        f"<h1>pytest-icl: in-context learning vs finetuning</h1><p class=meta>{meta}</p>",
        '<div id="broken" hidden>Some plots did not load (keep index.html next to its plots/ folder):</div>',
        "<h2>Summary</h2>",
        _summary(rows, comparisons),
        "<p class=meta>Each metric is followed by its control where it has one. Properties pass when the metric "
        "beats its control by the margin; results.json holds every value, interval and per-layer curve.</p>",
    ]
    if comparisons:
        body.append(f"<h2>Against the baseline</h2><p class=meta>{escape(str(baseline or ''))}</p>")
        for row in rows:
            if _pair(row) in comparisons:
                body.append(_comparison(row, comparisons[_pair(row)]))
    body.append("<h2>Per pair</h2>")
    for row in rows:
        properties = " ".join(_property_badge(name, outcome) for name, outcome in row.get("properties", {}).items())
        body.append(f'<section id="{escape(_anchor(row))}"><h3>{escape(row["model_id"])} · {escape(row["task"])} {properties}</h3>')
        body.append(_figures(figures.get(_pair(row), []), folder))
        body.append(_values_table(row))
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>pytest-icl report</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_html_report(
    folder: Path,
    rows: list[dict[str, Any]],
    *,
    comparisons: dict[str, dict[str, Any]] | None = None,
    baseline: Path | None = None,
) -> Path:
    """Plots into ``folder/plots``, then ``folder/index.html`` (all atomic). Returns the page's path."""
    from pytest_icl import plots

    folder = Path(folder)
    comparisons = comparisons or {}
    figures: dict[str, list[tuple[str, Path]]] = {}
    for row in rows:
        drawn = plots.layer_plots(row, folder / PLOTS)
        comparison = comparisons.get(_pair(row))
        if comparison and comparison.get("stored") and comparison.get("status") in ("passed", "regressed"):
            drawn += plots.baseline_plots(row, comparison["stored"], comparison.get("diffs", []), folder / PLOTS)
        figures[_pair(row)] = drawn
    page = folder / "index.html"
    report.atomic_write_text(page, render(rows, figures, folder, comparisons=comparisons, baseline=baseline))
    return page
