"""Two reports side by side: ``python -m pytest_icl diff OLD NEW``, per pair and metric.

OLD and NEW are each a store folder, a report folder with a ``results.json``, or a JSON file
(a ``results.json`` or a baseline file). For every pair found in both, every metric is shown
with both values, both 95 % intervals, the change, and where the change lies: ``outside both``
intervals, ``outside old`` (the new value is outside the old interval), ``outside new`` (the
old value is outside the new interval) or ``inside``.

**Which rows are the same pair.** ``match="model"``: the same task, model id, dtype, shots,
seed and position. ``match="task"`` leaves the model id out, to compare two model versions that
have different ids. Within one such group, rows with the same store key are paired first (see
:func:`pytest_icl.report.keys.key_of`); what is left is paired when one row is left on each
side. Fields that differ between the paired rows (task hash, weights, lr, eval count, ...) are
listed as notes; they never stop a comparison, since a new model version *should* have new weights.

**The exit code** (:attr:`Diff.exit_code`): 1 when a compared metric regressed, by the rule of
the baseline (lower, beyond its tolerance and outside both intervals, or undefined where it
was defined: :func:`pytest_icl.report.comparison.diff_metric`), or when a pair of OLD is missing
from NEW; else 0. Metrics that are not compared (controls, diagnostics) are shown, never judged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_icl import catalogue
from pytest_icl.errors import UsageError
from pytest_icl.report import rows as report
from pytest_icl.report.baseline import COMPARED, DEFAULT_TOLERANCES
from pytest_icl.report.comparison import MetricDiff, _fmt, _fmt_ci, _table, diff_metric
from pytest_icl.report.keys import key_of
from pytest_icl.report.store import MANIFEST, PAIRS, Store

MATCH_FIELDS = {"model": ("task", "model_id", "dtype", "shots", "seed", "position"), "task": ("task", "dtype", "shots", "seed", "position")}
NOTE_FIELDS = ("model_id", "revision", "weights_hash", "task_hash", "lr", "eval", "draws", "device")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a store folder, a report folder's results.json, or a results/baseline JSON file."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).exists() and (path / PAIRS).is_dir():
        return Store.read(path).rows()
    file = path / "results.json" if path.is_dir() else path
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
        rows = document["rows"]
        if not isinstance(rows, list) or not all(isinstance(row, dict) and "values" in row for row in rows):
            raise TypeError("'rows' is not a list of result rows")
    except FileNotFoundError:
        raise UsageError(
            f"{path} has no results: give a report folder (written with --icl-report), a results.json or a baseline file."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(
            f"{file} is not a pytest-icl results or baseline file ({type(error).__name__}: {error}); give another file."
        ) from None
    return rows


def where(d: MetricDiff) -> str:
    """Where the new value lies against the two intervals."""
    if math.isnan(d.stored) or math.isnan(d.new) or d.stored_interval is None or d.new_interval is None:
        return "n/a"
    outside_old = not d.stored_interval[0] <= d.new <= d.stored_interval[1]
    outside_new = not d.new_interval[0] <= d.stored <= d.new_interval[1]
    return {(True, True): "outside both", (True, False): "outside old", (False, True): "outside new"}.get(
        (outside_old, outside_new), "inside"
    )


@dataclass
class PairDiff:
    old: dict[str, Any]
    new: dict[str, Any]
    metrics: list[MetricDiff]
    notes: list[str]

    @property
    def name(self) -> str:
        old, new = self.old["model_id"], self.new["model_id"]
        models = old if old == new else f"{old} → {new}"
        return f"{models} on {self.new['task']} ({self.new.get('dtype')}, k={self.new.get('shots')}, seed {self.new.get('seed')})"

    @property
    def regressions(self) -> list[MetricDiff]:
        return [d for d in self.metrics if d.metric in COMPARED and d.regressed]


@dataclass
class Diff:
    old: str
    new: str
    pairs: list[PairDiff] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)  # in OLD only
    added: list[dict[str, Any]] = field(default_factory=list)  # in NEW only

    @property
    def regressions(self) -> int:
        return sum(len(pair.regressions) for pair in self.pairs)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions or self.missing else 0

    def lines(self) -> list[str]:
        lines = [f"diff {self.old} → {self.new}: {len(self.pairs)} pair(s) compared, {len(self.missing)} missing, {len(self.added)} new"]
        lines.append(
            "outside: where the change lies against the old and the new 95% interval; verdict: compared metrics only (higher is better)."
        )
        for pair in self.pairs:
            lines.append("")
            head = f"{pair.name}: " + (
                f"{len(pair.regressions)} REGRESSED ({', '.join(d.metric for d in pair.regressions)})"
                if pair.regressions
                else "no regression"
            )
            lines.append(head)
            lines += [f"  note: {note}" for note in pair.notes]
            lines += _table(
                ["metric", "old", "old 95% CI", "new", "new 95% CI", "change", "outside", "verdict"],
                [
                    [d.metric, _fmt(d.stored), _fmt_ci(d.stored_interval), _fmt(d.new), _fmt_ci(d.new_interval),
                     _fmt(d.new - d.stored, sign=True), where(d), _verdict(d)]
                    for d in pair.metrics
                ],
            )  # fmt: skip
        for label, rows in (("missing from NEW", self.missing), ("only in NEW", self.added)):
            for row in rows:
                lines.append(
                    f"{label}: {row['model_id']} on {row['task']} ({row.get('dtype')}, k={row.get('shots')}, seed {row.get('seed')})"
                )
        lines.append(
            f"result: {self.regressions} regression(s), {len(self.missing)} missing pair(s)" + (" — FAIL" if self.exit_code else " — ok")
        )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-simple (NaN as null), for ``--json``."""
        return report._json_safe({
            "old": self.old, "new": self.new, "exit_code": self.exit_code,
            "pairs": [
                {"pair": pair.name, "old": _identity(pair.old), "new": _identity(pair.new), "notes": pair.notes,
                 "metrics": [{**d.to_dict(), "outside": where(d), "compared": d.metric in COMPARED} for d in pair.metrics]}
                for pair in self.pairs
            ],
            "missing": [_identity(row) for row in self.missing], "added": [_identity(row) for row in self.added],
        })  # fmt: skip


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in ("task", "model_id", "dtype", "shots", "seed", "position", *NOTE_FIELDS)}


def _verdict(d: MetricDiff) -> str:
    if d.metric not in COMPARED:
        return "—"
    return d.verdict.upper() if d.regressed else d.verdict


def _metric_order(rows: Sequence[dict[str, Any]], chosen: Sequence[str] | None) -> list[str]:
    if chosen:
        return list(chosen)
    present = {name for row in rows for name in row["values"]}
    known = [m.name for m in catalogue.METRICS if m.name in present]
    return known + sorted(present - set(known))


def diff_pair(old: dict[str, Any], new: dict[str, Any], metrics: Sequence[str], tolerances: dict[str, float]) -> PairDiff:
    found = []
    for metric in metrics:
        if metric not in old["values"] and metric not in new["values"]:
            continue
        tolerance = tolerances.get(metric, DEFAULT_TOLERANCES.get(metric, 0.0))
        found.append(diff_metric(metric, old, new, tolerance))
    notes = [f"{name}: {old.get(name)} → {new.get(name)}" for name in NOTE_FIELDS if old.get(name) != new.get(name)]
    return PairDiff(old, new, found, notes)


def _match(old_rows: list[dict], new_rows: list[dict], fields: tuple[str, ...]) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    """(old, new) pairs, old rows left over, new rows left over (see the module's notes)."""
    groups: dict[tuple, tuple[list[dict], list[dict]]] = {}
    for side, rows in ((0, old_rows), (1, new_rows)):
        for row in rows:
            groups.setdefault(tuple(json.dumps(row.get(name), default=str) for name in fields), ([], []))[side].append(row)
    matched, missing, added = [], [], []
    for olds, news in groups.values():
        for row in list(olds):
            same = [other for other in news if _same_key(row, other)]
            if same:
                matched.append((row, same[0]))
                olds.remove(row)
                news.remove(same[0])
        if len(olds) == 1 and len(news) == 1:
            matched.append((olds.pop(), news.pop()))
        missing += olds
        added += news
    return matched, missing, added


def _same_key(a: dict[str, Any], b: dict[str, Any]) -> bool:
    try:
        return key_of(a) == key_of(b) and a.get("model_id") == b.get("model_id")
    except (KeyError, TypeError, ValueError):  # a row from an older pytest-icl without every key field
        return False


def diff(
    old: str | Path,
    new: str | Path,
    *,
    match: str = "model",
    metrics: Sequence[str] | None = None,
    tolerances: dict[str, float] | None = None,
) -> Diff:
    """Compare the rows of two reports (see the module's notes)."""
    if match not in MATCH_FIELDS:
        raise UsageError(f"diff --match {match!r}: use 'model' (same model id) or 'task' (across model versions).")
    old_rows, new_rows = read_rows(old), read_rows(new)
    order = _metric_order([*old_rows, *new_rows], metrics)
    matched, missing, added = _match(old_rows, new_rows, MATCH_FIELDS[match])
    merged = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    return Diff(str(old), str(new), [diff_pair(a, b, order, merged) for a, b in matched], missing, added)
