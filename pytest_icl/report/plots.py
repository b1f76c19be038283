"""Per-layer PNG plots of one task × model row, and plots against a baseline row.

matplotlib with the Agg backend (no display needed); imported only when a report is written.
Every file is written atomically. File names come from :func:`slug` so they are safe on any
file system and in relative ``<img src>`` paths.

Example::

    layer_plots(row, Path("icl-report/plots")) + control_plots(row, Path("icl-report/plots"))

Per pair (``<slug>`` = ``<model>-<task>``):

* ``<slug>-simaou.png``  — SimAOU with its official random and fair-random controls;
* ``<slug>-simam.png``   — SimAM before and after FT, and SimAM∆;
* ``<slug>-kendall.png`` — Kendall(ICL, FT) against Kendall(ICL, random);

A curve may hold NaN (null in JSON): a layer where the metric is undefined, such as a layer left
out of SimAM∆ as rounding noise. It is drawn as a gap; the left-out layers are shaded in the
figures that draw SimAM∆, and a curve with no defined layer is not drawn.

when the row was decided over draws (``row["verdicts"]``):

* ``<slug>-verdicts.png`` — per property, metric − control with its 95 % interval against the
  margin, coloured by outcome (passed, failed, undecided, inconclusive);

when the row has controls with per-layer curves (``--icl-controls``: untrained, shuffled, lcgd):

* ``<slug>-controls-simaou.png``, ``-controls-simam_delta.png``, ``-controls-kendall.png`` — the
  real run's curve beside the same metric of every control run (no training, trained
  embeddings, shuffled labels, LCGD) and beside the metric's own in-run control;

and when a baseline row was compared:

* ``<slug>-baseline-layers.png``  — the per-layer curves of this run (solid) and the stored row
  (dashed);
* ``<slug>-baseline-metrics.png`` — every compared metric: the stored value with its interval,
  the new value, coloured by verdict.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

from pytest_icl import catalogue
from pytest_icl.report import rows as report

# The per-layer figures: (file suffix, title, y label, [(metric, label, colour, style)]), from the
# catalogue's figures and the metrics drawn in each.
LAYER_FIGURES = tuple(
    (
        figure.name, figure.title, figure.ylabel,
        tuple((m.name, m.line.label, m.line.colour, m.line.style) for m in catalogue.figure_lines(figure.name)),
    )
    for figure in catalogue.FIGURES
)  # fmt: skip

# Control figures: (metric, title, y label, the metric's in-run control or None). Each shows the
# real run's curve beside every control run that has the metric's layers.
CONTROL_FIGURES = tuple(
    (m.name, m.control_figure.title, m.control_figure.ylabel, m.control_figure.beside) for m in catalogue.METRICS if m.control_figure
)

# Control runs as they are drawn: (control, variant) -> (label, colour, line style).
CONTROL_CURVES = {(c.name, v.name): (v.line.label, v.line.colour, v.line.style) for c in catalogue.CONTROLS for v in c.variants}

# Curves compared with the baseline: (panel title, [(metric, label, colour)]): per figure, its compared metrics.
BASELINE_PANELS = tuple(
    (figure.panel, tuple((m.name, m.label, m.line.colour) for m in catalogue.figure_lines(figure.name) if m.compared))
    for figure in catalogue.FIGURES
)

# A property's outcome, as the page's badges colour it (templates/report.css).
OUTCOME_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "undecided": "#7b1fa2", "inconclusive": "#c77800"}

VERDICT_COLOURS = {"regressed": "#d62728", "undefined": "#d62728", "improved": "#2ca02c", "ok": "#1f77b4", "not stored": "#7f7f7f"}

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def slug(row: dict[str, Any]) -> str:
    return _UNSAFE.sub("-", f"{row['model_id']}-{row['task']}").strip("-.") or "pair"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    report.atomic_write_bytes(path, buffer.getvalue())


def _curve(row: dict[str, Any], metric: str) -> list[float]:
    """A per-layer curve, None as NaN (a gap); [] when no layer is defined, so it is not drawn."""
    values = [math.nan if v is None else float(v) for v in (row.get("layers") or {}).get(metric) or []]
    return values if any(not math.isnan(v) for v in values) else []


def _mark_left_out(ax, row: dict[str, Any], metrics) -> None:
    """Shade the layers left out of SimAM∆ (rounding noise) in a figure that draws it."""
    if not any(m.startswith("simam_delta") for m in metrics):
        return
    for n, layer in enumerate(row.get("left_out_layers") or []):
        ax.axvspan(layer - 0.5, layer + 0.5, color="#bbbbbb", alpha=0.3, zorder=0, label="left out of SimAM∆" if n == 0 else None)


def _x(length: int, relative: bool) -> list[float]:
    if relative:
        return [i / max(1, length - 1) for i in range(length)]
    return list(range(length))


def _label(label: str, value: Any) -> str:
    return f"{label} = {value:.3f}" if isinstance(value, (int, float)) and not math.isnan(value) else label


def _control_curves(row: dict[str, Any], metric: str) -> list[tuple[str, str, str, list[float], Any]]:
    """(label, colour, style, per-layer values, overall value) of every control run with ``metric``'s layers."""
    found = []
    for (control, variant), (label, colour, style) in CONTROL_CURVES.items():
        run = (row.get("controls") or {}).get(control) or {}
        values = [math.nan if v is None else float(v) for v in ((run.get("layers") or {}).get(variant) or {}).get(metric) or []]
        if values:
            found.append((label, colour, style, values, ((run.get("values") or {}).get(variant) or {}).get(metric)))
    return found


def _per_layer_axes(ax, row: dict[str, Any], title: str, ylabel: str, *, legend_size: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.axhline(0, color="#cccccc", linewidth=0.8, zorder=0)
    ax.set_title(f"{title}\n{row['model_id']} · {row['task']}", fontsize=10)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="best")


def layer_plots(row: dict[str, Any], folder: Path) -> list[tuple[str, Path]]:
    """The three per-layer figures of one row; returns (caption, path) for those it could draw."""
    plt = _pyplot()

    written = []
    name = slug(row)
    for suffix, title, ylabel, curves in LAYER_FIGURES:
        present = [(m, label, colour, style) for m, label, colour, style in curves if _curve(row, m)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(4.1, 2.9))
        for metric, label, colour, style in present:
            values = _curve(row, metric)
            ax.plot(
                _x(len(values), False),
                values,
                style,
                color=colour,
                marker="o",
                markersize=3,
                label=_label(label, row["values"].get(metric)),
            )
        _mark_left_out(ax, row, [m for m, *_ in present])
        _per_layer_axes(ax, row, title, ylabel, legend_size=7)
        path = folder / f"{name}-{suffix}.png"
        _save(fig, path)
        written.append((title, path))
    return written


def control_plots(row: dict[str, Any], folder: Path) -> list[tuple[str, Path]]:
    """Each metric's per-layer curve beside the control runs' (drawn only for controls with that metric's layers)."""
    plt = _pyplot()

    written = []
    name = slug(row)
    for metric, title, ylabel, own_control in CONTROL_FIGURES:
        controls = _control_curves(row, metric)
        real = _curve(row, metric)
        if not controls or not real:
            continue
        fig, ax = plt.subplots(figsize=(4.6, 3.1))
        ax.plot(_x(len(real), False), real, "-", color="#1f77b4", marker="o", markersize=3, linewidth=2,
                label=_label("real run", row["values"].get(metric)))  # fmt: skip
        for label, colour, style, values, overall in controls:
            ax.plot(_x(len(values), False), values, style, color=colour, marker=".", markersize=4, label=_label(label, overall))
        if own_control and _curve(row, own_control):
            values = _curve(row, own_control)
            ax.plot(
                _x(len(values), False),
                values,
                ":",
                color="#7f7f7f",
                label=_label(own_control.replace("_", " "), row["values"].get(own_control)),
            )
        _mark_left_out(ax, row, [metric])
        _per_layer_axes(ax, row, title, ylabel, legend_size=6)
        path = folder / f"{name}-controls-{metric}.png"
        _save(fig, path)
        written.append((title, path))
    return written


def baseline_plots(row: dict[str, Any], stored: dict[str, Any], diffs: list[dict[str, Any]], folder: Path) -> list[tuple[str, Path]]:
    """This run against the stored row: per-layer curves, and every compared metric."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    name = slug(row)
    written = []
    label_new = f"this run ({row['model_id']}, {row.get('dtype')})"
    label_old = f"baseline ({stored.get('model_id')}, {stored.get('dtype')})"

    fig, axes = plt.subplots(1, len(BASELINE_PANELS), figsize=(4.1 * len(BASELINE_PANELS), 3.1), squeeze=False)
    drew = False
    for ax, (title, curves) in zip(axes[0], BASELINE_PANELS):
        for metric, label, colour in curves:
            new, old = _curve(row, metric), _curve(stored, metric)
            relative = bool(new and old and len(new) != len(old))  # different depths: relative depth axis
            if new:
                ax.plot(_x(len(new), relative), new, "-", color=colour, marker="o", markersize=3, label=f"{label}: {label_new}")
                drew = True
            if old:
                ax.plot(_x(len(old), relative), old, "--", color=colour, alpha=0.7, label=f"{label}: {label_old}")
                drew = True
            ax.set_xlabel("relative depth" if relative else "layer")
            if not relative:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0, color="#cccccc", linewidth=0.8, zorder=0)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{row['model_id']} · {row['task']}: per layer, this run (solid) vs baseline (dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    if drew:
        path = folder / f"{name}-baseline-layers.png"
        _save(fig, path)
        written.append(("Per layer against the baseline", path))
    else:
        plt.close(fig)

    shown = [d for d in diffs if not _nan(d.get("stored")) or not _nan(d.get("new"))]
    if shown:
        fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(shown) + 1.3))
        for y, d in enumerate(reversed(shown)):
            colour = VERDICT_COLOURS.get(d["verdict"], "#1f77b4")
            interval = d.get("stored_interval")
            if interval:
                ax.plot(interval, [y, y], "-", color="#999999", linewidth=5, alpha=0.5, solid_capstyle="butt")
            if not _nan(d["stored"]):
                ax.plot([d["stored"]], [y], "|", color="#333333", markersize=14, markeredgewidth=2)
            if not _nan(d["new"]):
                ax.plot([d["new"]], [y], "o", color=colour, markersize=7)
            ax.text(1.02, y, d["verdict"], transform=ax.get_yaxis_transform(), va="center", fontsize=8, color=colour)
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([d["metric"] for d in reversed(shown)], fontsize=8)
        ax.set_xlabel("value (grey bar: stored 95% interval, | stored value, ● this run)")
        ax.set_title(f"{row['model_id']} · {row['task']} against the baseline (higher is better)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        path = folder / f"{name}-baseline-metrics.png"
        _save(fig, path)
        written.append(("Compared metrics", path))
    return written


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def verdict_plots(row: dict[str, Any], folder: Path) -> list[tuple[str, Path]]:
    """Per property (and each extra comparison): metric − control, its 95% interval and the margin, by outcome."""
    lines = []  # (label, estimate, low, high, margin, outcome drawn, outcome written)
    for name, v in (row.get("verdicts") or {}).items():
        for n, c in enumerate(v.get("comparisons") or [v]):
            outcome = v["outcome"] if n == 0 or v["outcome"] == "inconclusive" else c["outcome"]
            control = str(c.get("control", ""))
            label = (
                name if n == 0 else f"{name} vs " + ("shuffled-label FT" if control.endswith("_shuffled") else control.replace("_", " "))
            )
            lines.append((label, c.get("estimate"), c.get("low"), c.get("high"), v.get("margin"), outcome))
    if not lines:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(lines) + 1.5))
    for y, (_, estimate, low, high, margin, outcome) in enumerate(reversed(lines)):
        colour = OUTCOME_COLOURS.get(outcome, "#555555")
        if not _nan(low) and not _nan(high):
            ax.plot([low, high], [y, y], "-", color=colour, linewidth=5, alpha=0.55, solid_capstyle="butt")
        if not _nan(estimate):
            ax.plot([estimate], [y], "o", color=colour, markersize=7)
        if not _nan(margin):
            ax.plot([margin], [y], "|", color="#111111", markersize=16, markeredgewidth=2)
        ax.text(1.02, y, outcome, transform=ax.get_yaxis_transform(), va="center", fontsize=8, color=colour)
    ax.set_yticks(range(len(lines)))
    ax.set_yticklabels([line[0] for line in reversed(lines)], fontsize=8)
    ax.set_ylim(-0.7, len(lines) - 0.3)
    draws = row.get("draws", 1)
    over = "a single draw: eval examples only" if draws == 1 else f"over {draws} draws and the eval examples"
    ax.set_xlabel(f"metric − control (bar: 95% interval, {over}; ● estimate; | margin)")
    ax.set_title(f"{row['model_id']} · {row['task']}: each property against its margin", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    path = folder / f"{slug(row)}-verdicts.png"
    _save(fig, path)
    return [("Each property: metric − control against its margin", path)]
