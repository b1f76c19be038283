"""Baselines: store result rows, compare a new run with them, say what regressed.

Pure logic and file I/O, no pytest (the plugin turns :class:`Comparison` into a failing
``test_icl[<model>-<task>-baseline]`` item and calls :func:`update_baseline` after the run).

The file (``--icl-baseline FILE``) is JSON::

    {"format": "pytest-icl-baseline", "schema": 1, "updated": "2026-…Z", "rows": [row, …]}

with the rows of :mod:`pytest_icl.report` (values, intervals, layers, …) plus ``stored_at``. A
``results.json`` written by ``--icl-report`` is accepted as a baseline too. One row is kept per
*slot* (task, model id, dtype): ``--icl-baseline-update`` replaces the slots it ran and keeps
every other row of the file.

**Which row a result is compared with.** The stored row of the same task, model id and dtype;
it must also agree on every field of :data:`KEY_FIELDS` (task hash, revision, weights hash,
shots, seed, lr, position), otherwise the pair fails as a *key mismatch* that names the
fields: a stale row is never compared silently. With ``--icl-baseline-model NAME`` the row of
model NAME is used instead (NAME is a model id or name as typed, ``NAME:DTYPE`` picks one dtype
when NAME has several): then only the experiment fields (task hash, shots, seed, lr, position)
must agree, and revision, weights and dtype may differ — that is the point of the comparison.

**When a metric regressed.** Every compared metric is better when higher (:data:`COMPARED`).
A change counts as a regression only when all of these hold:

* the new value is below the stored value's 95 % bootstrap interval (over eval examples);
* the stored value is above the new value's interval — with few eval examples a percentile
  interval of an accuracy of 1.0 is the single point [1, 1], and one flipped example must
  not count as significant on the strength of the stored interval alone;
* the drop exceeds the metric's absolute tolerance (:data:`DEFAULT_TOLERANCES`, the task YAML's
  ``icl.tolerances``, ``--icl-tolerance METRIC=VALUE``, later ones winning).

A compared metric that was defined and is now undefined (NaN: e.g. Rec2FTP when FT fixes none
of the zero-shot errors) also fails. Controls and diagnostics (:data:`NOT_COMPARED`) are stored
and plotted but never compared: a random baseline moving is not a regression of the model.

Example::

    baseline = read_baseline("icl-baseline.json")
    comparison = compare(result.row, baseline, tolerances_for({}, {}))
    comparison.status, comparison.message
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_icl import report

FORMAT = "pytest-icl-baseline"

#: Metrics compared with the baseline; higher is better for all of them.
COMPARED: dict[str, str] = {
    "acc_zsl": "zero-shot accuracy",
    "acc_icl": "ICL accuracy",
    "acc_ft": "FT accuracy",
    "rec2ftp": "Rec2FTP",
    "ft_precision": "P(FT right | ICL corrected)",
    "simaou": "SimAOU",
    "simaou_unnormalised": "SimAOU (plain difference)",
    "simam_after": "SimAM after FT",
    "simam_delta": "SimAM∆",
    "kendall": "Kendall(ICL, FT)",
}

#: Stored and plotted, never compared: controls and diagnostics without a better direction.
NOT_COMPARED: dict[str, str] = {
    "rec2ftp_chance": "control of Rec2FTP",
    "simaou_random": "random control of SimAOU",
    "simaou_fair_random": "fair random control of SimAOU",
    "simam_before": "control of SimAM (ICL vs ZSL maps)",
    "simam_zsl_ft": "diagnostic: how far FT moved the maps",
    "kendall_random": "random control of Kendall",
    "majority_zsl": "label-bias diagnostic",
    "majority_icl": "label-bias diagnostic",
    "majority_ft": "label-bias diagnostic",
}

#: Absolute tolerances: fractions over eval examples move in steps of 1/n, so they get more room.
DEFAULT_TOLERANCES: dict[str, float] = {
    "acc_zsl": 0.05,
    "acc_icl": 0.05,
    "acc_ft": 0.05,
    "rec2ftp": 0.05,
    "ft_precision": 0.05,
    "simaou": 0.02,
    "simaou_unnormalised": 0.02,
    "simam_after": 0.02,
    "simam_delta": 0.02,
    "kendall": 0.02,
}

#: Fields that must agree for two rows of the same task × model to be compared.
EXPERIMENT_FIELDS = ("task_hash", "shots", "seed", "lr", "position")
MODEL_FIELDS = ("revision", "weights_hash", "dtype")
KEY_FIELDS = EXPERIMENT_FIELDS + MODEL_FIELDS
REQUIRED_ROW_FIELDS = ("task", "model_id", "values") + KEY_FIELDS
DTYPES = ("float32", "bfloat16", "float16")

_EPS = 1e-12  # float slack so a change of exactly the tolerance is not a regression


class BaselineError(Exception):
    """The baseline file cannot be used; the message names the file and says what to do."""


# ---- the file


@dataclass
class Baseline:
    path: Path
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)


def slot(row: dict[str, Any]) -> tuple:
    """One stored row per slot: an update replaces the row with the same task, model and dtype."""
    return (row["task"], row["model_id"], row.get("dtype"))


def read_baseline(path: str | Path, *, missing_ok: bool = False) -> Baseline:
    """Read and check a baseline file; :class:`BaselineError` if it is missing, corrupt or foreign."""
    path = Path(path)
    untouched = "It was left untouched: fix or delete it, or point --icl-baseline at another file."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return Baseline(path, [])
        raise BaselineError(f"baseline file {path} does not exist. Create it with --icl-baseline-update.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BaselineError(f"baseline file {path} cannot be read: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(
            f"baseline file {path} is corrupt: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}). {untouched}"
        ) from None
    foreign = f"{path} is not a pytest-icl baseline file"
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BaselineError(f"{foreign}: expected a JSON object with a 'rows' list. {untouched}")
    if data.get("format", FORMAT) != FORMAT:
        raise BaselineError(f"{foreign}: its format is {data.get('format')!r}, not {FORMAT!r}. {untouched}")
    if "format" not in data and "schema" not in data:
        raise BaselineError(f"{foreign}: it has neither a 'format' nor a 'schema' key. {untouched}")
    schema = data.get("schema")
    if not isinstance(schema, int) or schema > report.SCHEMA_VERSION:
        raise BaselineError(
            f"baseline file {path} has schema {schema!r}; this pytest-icl reads schema ≤ {report.SCHEMA_VERSION} "
            "(a newer pytest-icl wrote it?)."
        )
    for index, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            raise BaselineError(f"{foreign}: row {index} is a {type(row).__name__}, not an object. {untouched}")
        missing = [name for name in REQUIRED_ROW_FIELDS if name not in row]
        if missing or not isinstance(row.get("values"), dict):
            what = f"lacks {', '.join(missing)}" if missing else "has no 'values' object"
            raise BaselineError(f"{foreign}: row {index} {what}. {untouched}")
    return Baseline(path, data["rows"])


def baseline_json(rows: list[dict[str, Any]]) -> str:
    ordered = sorted(rows, key=lambda r: tuple(str(part) for part in slot(r)))
    payload = {"format": FORMAT, "schema": report.SCHEMA_VERSION, "updated": _now(), "rows": report._json_safe(ordered)}
    return json.dumps(payload, indent=1) + "\n"


@dataclass(frozen=True)
class UpdateSummary:
    path: Path
    added: int
    refreshed: int
    kept: int

    @property
    def line(self) -> str:
        total = self.added + self.refreshed + self.kept
        return f"wrote {self.path} ({total} row{'s' * (total != 1)}: {self.added} added, {self.refreshed} refreshed, {self.kept} kept)"


def merge_rows(stored: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], UpdateSummary]:
    """The stored rows with ``new`` rows replacing (or joining) their slots."""
    stamp = _now()
    fresh: dict[tuple, dict[str, Any]] = {}
    for row in new:
        fresh[slot(row)] = {**row, "stored_at": stamp}
    kept = [row for row in stored if slot(row) not in fresh]
    old_slots = {slot(row) for row in stored}
    refreshed = sum(1 for key in fresh if key in old_slots)
    merged = kept + list(fresh.values())
    return merged, UpdateSummary(Path(), added=len(fresh) - refreshed, refreshed=refreshed, kept=len(kept))


def update_baseline(path: str | Path, rows: list[dict[str, Any]]) -> UpdateSummary:
    """Merge ``rows`` into the file at ``path`` (created if missing) with one atomic write.

    The file is read again here, not at startup, so rows another run stored meanwhile are kept.
    A corrupt or foreign file raises :class:`BaselineError` and is not overwritten.
    """
    path = Path(path)
    stored = read_baseline(path, missing_ok=True).rows
    merged, summary = merge_rows(stored, rows)
    report.atomic_write_text(path, baseline_json(merged))
    return UpdateSummary(path, summary.added, summary.refreshed, summary.kept)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- tolerances


def parse_tolerance(text: str) -> tuple[str, float]:
    """``METRIC=VALUE`` from the command line (``--icl-tolerance simaou=0.05``)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"expected METRIC=VALUE, got {text!r}")
    _check_metric(name, "--icl-tolerance")
    return name, _tolerance_value(name, value)


def tolerances_for(task_tolerances: dict[str, Any] | None, cli: dict[str, float] | None) -> dict[str, float]:
    """Defaults, then the task YAML's ``icl.tolerances``, then the command line."""
    merged = dict(DEFAULT_TOLERANCES)
    for name, value in (task_tolerances or {}).items():
        _check_metric(name, "the task's icl.tolerances")
        merged[name] = _tolerance_value(name, value)
    merged.update(cli or {})
    return merged


def _check_metric(name: str, origin: str) -> None:
    if name in COMPARED:
        return
    if name in NOT_COMPARED:
        raise ValueError(f"{origin}: {name} is not compared with the baseline ({NOT_COMPARED[name]}); compared: {', '.join(COMPARED)}")
    raise ValueError(f"{origin}: unknown metric {name!r}; compared metrics: {', '.join(COMPARED)}")


def _tolerance_value(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance of {name}: {value!r} is not a number") from None
    if math.isnan(number) or number < 0:
        raise ValueError(f"tolerance of {name} must be ≥ 0 (inf turns the check off), got {value!r}")
    return number


# ---- comparing


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
            from pytest_icl.models import ModelError, resolve_model

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
            return Comparison("missing", pair, baseline.path, row, note=f"No stored row for model {row['model_id']} on task {row['task']}. {fix}")
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
