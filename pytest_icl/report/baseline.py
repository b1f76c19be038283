"""Baselines: store result rows, compare a new run with them, say what regressed.

Pure logic and file I/O, no pytest (the plugin turns :class:`Comparison` into a failing
``test_icl[<model>-<task>-baseline]`` item and calls :func:`update_baseline` after the run).

The file (``--icl-baseline FILE``) is JSON::

    {"format": "pytest-icl-baseline", "schema": 1, "updated": "2026-…Z", "rows": [row, …]}

with the rows of :mod:`pytest_icl.report.rows` (values, intervals, layers, …) plus ``stored_at``. A
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
Which metric is compared, and its default tolerance, is its row of :data:`pytest_icl.catalogue.METRICS`.

Example::

    baseline = read_baseline("icl-baseline.json")
    comparison = compare(result.row, baseline, tolerances_for({}, {}))
    comparison.status, comparison.message
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_icl import catalogue
from pytest_icl.errors import BaselineError  # noqa: F401 - defined in errors, used or re-exported here
from pytest_icl.report import rows as report

FORMAT = "pytest-icl-baseline"

#: Metrics compared with the baseline (those the catalogue gives a tolerance); higher is better for all of them.
COMPARED: dict[str, str] = {m.name: m.about for m in catalogue.compared_metrics()}

#: Stored and plotted, never compared: controls and diagnostics without a better direction, and
#: the output-distribution numbers (the catalogue says why).
NOT_COMPARED: dict[str, str] = {m.name: m.about for m in catalogue.METRICS if not m.compared}

#: Absolute tolerances: fractions over eval examples move in steps of 1/n, so they get more room.
DEFAULT_TOLERANCES: dict[str, float] = {m.name: m.tolerance for m in catalogue.compared_metrics()}

#: Fields that must agree for two rows of the same task × model to be compared.
EXPERIMENT_FIELDS = ("task_hash", "shots", "seed", "lr", "position")
MODEL_FIELDS = ("revision", "weights_hash", "dtype")
KEY_FIELDS = EXPERIMENT_FIELDS + MODEL_FIELDS
REQUIRED_ROW_FIELDS = ("task", "model_id", "values") + KEY_FIELDS
DTYPES = ("float32", "bfloat16", "float16")


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
