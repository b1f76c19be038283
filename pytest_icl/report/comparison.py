"""Comparing a new run's row with the stored baseline: per-metric diffs, a verdict, the message.

A metric regresses when it drops outside the stored bootstrap interval *and* by more than its
tolerance (:mod:`pytest_icl.report.baseline` stores rows and tolerances; this module only compares).

Example::

    comparison = compare(result.row, read_baseline("baseline.json"), tolerances_for({}, {}))
    comparison.status, comparison.message
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_icl.report.baseline import COMPARED, DEFAULT_TOLERANCES, DTYPES, EXPERIMENT_FIELDS, KEY_FIELDS, Baseline

_EPS = 1e-12  # float slack so a change of exactly the tolerance is not a regression


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _interval(row: dict[str, Any], metric: str) -> tuple[float, float] | None:
    interval = (row.get("intervals") or {}).get(metric)
    if not interval or len(interval) != 2:
        return None
    lo, hi = _number(interval[0]), _number(interval[1])
    if math.isnan(lo) or math.isnan(hi):
        return None
    return lo, hi


@dataclass(frozen=True)
class MetricDiff:
    """One compared metric: ``verdict`` is regressed, improved, ok, undefined or not stored."""

    metric: str
    stored: float
    new: float
    tolerance: float
    stored_interval: tuple[float, float] | None
    new_interval: tuple[float, float] | None
    verdict: str
    reason: str = ""

    @property
    def change(self) -> float:
        return self.new - self.stored

    @property
    def regressed(self) -> bool:
        return self.verdict in ("regressed", "undefined")

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "stored": self.stored, "new": self.new, "tolerance": self.tolerance,
            "stored_interval": list(self.stored_interval) if self.stored_interval else None,
            "new_interval": list(self.new_interval) if self.new_interval else None,
            "verdict": self.verdict, "reason": self.reason,
        }  # fmt: skip


def diff_metric(metric: str, stored_row: dict[str, Any], new_row: dict[str, Any], tolerance: float) -> MetricDiff:
    """Compare one metric (higher is better) of two rows."""
    stored = _number(stored_row["values"].get(metric))
    new = _number(new_row["values"].get(metric))
    stored_ci, new_ci = _interval(stored_row, metric), _interval(new_row, metric)

    def verdict(name: str, reason: str = "") -> MetricDiff:
        return MetricDiff(metric, stored, new, tolerance, stored_ci, new_ci, name, reason)

    if metric not in stored_row["values"]:
        return verdict("not stored", "the stored row has no such metric")
    if math.isnan(stored):
        return verdict("ok" if math.isnan(new) else "improved", "undefined in the stored row")
    if math.isnan(new):
        return verdict("undefined", "was defined, is now undefined (NaN)")
    change = new - stored
    beyond_tolerance = abs(change) > tolerance + _EPS
    if change < 0:
        outside_stored = stored_ci is None or new < stored_ci[0] - _EPS
        outside_new = new_ci is None or stored > new_ci[1] + _EPS
        if beyond_tolerance and outside_stored and outside_new:
            return verdict("regressed", "lower, beyond the tolerance and outside both intervals")
        if not beyond_tolerance:
            return verdict("ok", "within the tolerance")
        return verdict("ok", "within the bootstrap intervals")
    if beyond_tolerance and (stored_ci is None or new > stored_ci[1] + _EPS):
        return verdict("improved", "higher, beyond the tolerance and the stored interval")
    return verdict("ok", "within the tolerance" if not beyond_tolerance else "within the bootstrap interval")


def diff_rows(stored_row: dict[str, Any], new_row: dict[str, Any], tolerances: dict[str, float]) -> list[MetricDiff]:
    return [diff_metric(metric, stored_row, new_row, tolerances.get(metric, DEFAULT_TOLERANCES[metric])) for metric in COMPARED]


@dataclass
class Comparison:
    """The outcome for one task × model: passed, regressed, mismatch (key) or missing (no row)."""

    status: str
    pair: str
    path: Path
    row: dict[str, Any]
    stored: dict[str, Any] | None = None
    diffs: list[MetricDiff] = field(default_factory=list)
    mismatches: list[tuple[str, Any, Any]] = field(default_factory=list)  # (field, stored, new)
    against: str | None = None
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def regressions(self) -> list[MetricDiff]:
        return [d for d in self.diffs if d.regressed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-simple, to travel from an xdist worker to the controller (the HTML report)."""
        return {
            "status": self.status, "pair": self.pair, "path": str(self.path), "against": self.against,
            "note": self.note, "stored": self.stored, "diffs": [d.to_dict() for d in self.diffs],
            "mismatches": [list(m) for m in self.mismatches], "message": self.message,
        }  # fmt: skip

    @property
    def message(self) -> str:
        head = f"[{self.pair}] baseline {self.path}"
        if self.status == "missing":
            return f"{head}: {self.note}"
        if self.status == "mismatch":
            lines = [f"{head}: key mismatch, not compared. {self.note}".rstrip()]
            if self.mismatches:
                lines += _table(["field", "stored", "this run"], [[name, _show(a), _show(b)] for name, a, b in self.mismatches])
            return "\n".join(lines)
        stored = self.stored or {}
        source = f"stored row of {stored.get('model_id')} ({stored.get('dtype')}, {stored.get('device', '?')}"
        source += f", stored {stored['stored_at']})" if stored.get("stored_at") else ")"
        if self.status == "regressed":
            names = ", ".join(d.metric for d in self.regressions)
            lines = [f"{head}: {len(self.regressions)} metric(s) regressed ({names}) against the {source}."]
        else:
            lines = [f"{head}: no regression against the {source}."]
        lines.append("Higher is better for every metric below; a regression is lower, beyond the tolerance and outside both 95% intervals.")
        lines += _table(
            ["metric", "stored", "stored 95% CI", "new", "new 95% CI", "change", "tolerance", "worse if", "verdict"],
            [
                [
                    d.metric, _fmt(d.stored), _fmt_ci(d.stored_interval), _fmt(d.new), _fmt_ci(d.new_interval),
                    _fmt(d.change, sign=True), _fmt(d.tolerance), "lower", d.verdict.upper() if d.regressed else d.verdict,
                ]
                for d in self.diffs
            ],
        )  # fmt: skip
        return "\n".join(lines)


def notable_changes(comparison: dict[str, Any]) -> str | None:
    """One line for the terminal: the metrics of a compared pair that moved beyond their tolerance.

    Takes :meth:`Comparison.to_dict` (what reaches the controller); None when nothing moved.
    """
    moved = []
    for d in comparison.get("diffs", []):
        stored, new = _number(d["stored"]), _number(d["new"])
        if d["verdict"] == "undefined":
            moved.append(f"{d['metric']} {_fmt(stored, digits=3)}→undefined (REGRESSED)")
        elif not (math.isnan(stored) or math.isnan(new)) and abs(new - stored) > d["tolerance"] + _EPS:
            verdict = {"regressed": "REGRESSED", "improved": "improved"}.get(d["verdict"], "within the intervals")
            moved.append(f"{d['metric']} {stored:.3f}→{new:.3f} ({new - stored:+.3f}, {verdict})")
    if not moved:
        return None
    stored_row = comparison.get("stored") or {}
    return f"{comparison['pair']} vs {stored_row.get('model_id')} ({stored_row.get('dtype')}): " + ", ".join(moved)


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


def _fmt(value: float, sign: bool = False, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "off"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _fmt_ci(interval: tuple[float, float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [header, *rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells]


def _matches_model(row: dict[str, Any], name: str) -> bool:
    return name in (row.get("model_id"), row.get("model"))


def _rows_of_model(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Stored rows of model ``name`` (id or typed name; ``NAME:DTYPE`` narrows to one dtype)."""
    found = [row for row in rows if _matches_model(row, name)]
    if not found:
        base, sep, dtype = name.rpartition(":")
        if sep and dtype in DTYPES:
            found = [row for row in rows if _matches_model(row, base) and row.get("dtype") == dtype]
    if not found:
        try:
            from pytest_icl.models.loading import ModelError, resolve_model

            ident = resolve_model(name).id
        except (ModelError, ImportError):
            return []
        found = [row for row in rows if row.get("model_id") == ident]
    return found


def _differing(stored: dict[str, Any], new: dict[str, Any], fields: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    return [(name, stored.get(name), new.get(name)) for name in fields if stored.get(name) != new.get(name)]


def compare(row: dict[str, Any], baseline: Baseline, tolerances: dict[str, float], *, against: str | None = None) -> Comparison:
    """Find the stored row for ``row`` and compare every metric of :data:`COMPARED`."""
    pair = f"{row['model_id']}-{row['task']}"
    same_task = [r for r in baseline.rows if r["task"] == row["task"]]
    fix = "Run with --icl-baseline-update to store this run's row instead."

    if against is None:
        candidates = [r for r in same_task if r["model_id"] == row["model_id"]]
        if not candidates:
            return Comparison(
                "missing", pair, baseline.path, row, note=f"No stored row for model {row['model_id']} on task {row['task']}. {fix}"
            )
        in_slot = [r for r in candidates if r.get("dtype") == row.get("dtype")]
        if not in_slot:
            dtypes = ", ".join(sorted({str(r.get("dtype")) for r in candidates}))
            return Comparison(
                "mismatch", pair, baseline.path, row, stored=candidates[0],
                mismatches=_differing(candidates[0], row, KEY_FIELDS),
                note=(
                    f"The stored rows of {row['model_id']} on {row['task']} are in {dtypes}, this run is in {row.get('dtype')}. "
                    f"To compare across dtypes, add --icl-baseline-model {row['model_id']}:{candidates[0].get('dtype')}; {fix[0].lower()}{fix[1:]}"
                ),
            )  # fmt: skip
        stored = in_slot[-1]
        differing = _differing(stored, row, KEY_FIELDS)
        if differing:
            names = ", ".join(name for name, _, _ in differing)
            return Comparison(
                "mismatch", pair, baseline.path, row, stored=stored, mismatches=differing,
                note=f"The stored row was made with a different {names}. {fix}",
            )  # fmt: skip
    else:
        candidates = [r for r in _rows_of_model(baseline.rows, against) if r["task"] == row["task"]]
        if not candidates:
            models = sorted({r["model_id"] for r in same_task})
            known = f" (stored models for {row['task']}: {', '.join(models)})" if models else ""
            return Comparison(
                "missing", pair, baseline.path, row, against=against,
                note=f"No stored row of model {against!r} on task {row['task']}{known}.",
            )  # fmt: skip
        matching = [r for r in candidates if not _differing(r, row, EXPERIMENT_FIELDS)]
        if not matching:
            closest = min(candidates, key=lambda r: len(_differing(r, row, EXPERIMENT_FIELDS)))
            differing = _differing(closest, row, EXPERIMENT_FIELDS)
            names = ", ".join(name for name, _, _ in differing)
            return Comparison(
                "mismatch", pair, baseline.path, row, stored=closest, mismatches=differing, against=against,
                note=f"The stored row of {against} was made with a different {names}; cross-model comparisons need the same task and settings.",
            )  # fmt: skip
        if len(matching) > 1:
            dtypes = ", ".join(str(r.get("dtype")) for r in matching)
            return Comparison(
                "mismatch", pair, baseline.path, row, against=against,
                note=f"Model {against} has several stored rows for {row['task']} (dtypes {dtypes}): pick one with --icl-baseline-model {against}:DTYPE.",
            )  # fmt: skip
        stored = matching[0]
    diffs = diff_rows(stored, row, tolerances)
    status = "regressed" if any(d.regressed for d in diffs) else "passed"
    return Comparison(status, pair, baseline.path, row, stored=stored, diffs=diffs, against=against)
