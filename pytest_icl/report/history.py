"""Metrics across model versions: ``python -m pytest_icl history DIR... -o OUT``.

Each DIR is one report (a store folder, a report folder with a ``results.json``, or such a
JSON file), typically one model version each. Every row becomes one point:

* its **label** (the x axis) is the DIR's label when labels are given (``--labels``, one per
  DIR), else the row's model id, with ``@revision`` when it has one;
* its **series** (one line in a plot, one row of the table) is what makes rows comparable
  across versions: task, dtype, shots, seed and position;
* labels are ordered by natural sort (``v2`` before ``v10``), or as given with ``order="given"``
  (DIRs in command-line order), since version names are not always sortable.

Two rows with the same label and series are refused: give each DIR a label of its own.

Written to OUT: ``history.csv`` (one line per label × series × metric: value and 95 %
interval) and ``<metric>.png`` per metric (one line per series, the intervals as error bars).
The metrics are the compared ones (those the baseline judges) unless chosen.
"""

from __future__ import annotations

import csv
import io
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_icl import catalogue
from pytest_icl.errors import UsageError
from pytest_icl.report import rows as report
from pytest_icl.report.comparison import _table
from pytest_icl.report.diff import read_rows
from pytest_icl.report.keys import safe

SERIES_FIELDS = ("task", "dtype", "shots", "seed", "position")
CSV_COLUMNS = ("label", *SERIES_FIELDS, "model_id", "revision", "source", "metric", "value", "low", "high")


def natural(text: str) -> list:
    """Sort key that reads digits as numbers: v2 < v10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text) if part]


def label_of(row: dict[str, Any]) -> str:
    """The model id, and the resolved revision unless the id names one already (``org--model@v2``)."""
    model_id, revision = str(row["model_id"]), row.get("revision")
    return f"{model_id}@{str(revision)[:12]}" if revision and "@" not in model_id else model_id


@dataclass
class History:
    labels: list[str]  # the x axis, in order
    series: list[tuple]  # SERIES_FIELDS values, in order
    points: dict[tuple[tuple, str], tuple[dict[str, Any], str]]  # (series, label) -> (row, source)
    metrics: list[str]
    files: list[Path]

    def value(self, series: tuple, label: str, metric: str) -> tuple[float, float, float]:
        """(value, low, high); NaN where the point or its interval is missing."""
        row = self.points.get((series, label), ({}, ""))[0]
        value = (row.get("values") or {}).get(metric)
        interval = (row.get("intervals") or {}).get(metric) or [None, None]
        return tuple(math.nan if v is None else float(v) for v in (value, *interval[:2]))  # type: ignore[return-value]

    def series_name(self, series: tuple) -> str:
        """The task, plus the series fields that vary among the series."""
        varying = [i for i in range(1, len(SERIES_FIELDS)) if len({s[i] for s in self.series}) > 1]
        extra = ", ".join(f"{SERIES_FIELDS[i]} {series[i]}" for i in varying)
        return f"{series[0]} ({extra})" if extra else str(series[0])

    def table(self, metric: str) -> list[str]:
        body = []
        for series in self.series:
            cells = []
            for label in self.labels:
                value = self.value(series, label, metric)[0]
                cells.append("—" if (series, label) not in self.points else "n/a" if math.isnan(value) else f"{value:.3f}")
            body.append([self.series_name(series), *cells])
        return [metric, *_table(["pair", *self.labels], body)]

    def lines(self) -> list[str]:
        lines = [f"history of {len(self.series)} pair(s) over {len(self.labels)} version(s): {', '.join(self.labels)}"]
        for metric in self.metrics:
            lines += ["", *self.table(metric)]
        lines.append("")
        lines += [f"wrote {path}" for path in self.files]
        return lines

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for series in self.series:
            for label in self.labels:
                if (series, label) not in self.points:
                    continue
                row, source = self.points[(series, label)]
                for metric in self.metrics:
                    value, low, high = self.value(series, label, metric)
                    numbers = ["" if math.isnan(v) else f"{v:.6g}" for v in (value, low, high)]
                    writer.writerow([label, *series, row.get("model_id"), row.get("revision") or "", source, metric, *numbers])
        return buffer.getvalue()


def collect(
    sources: Sequence[str | Path], *, labels: Sequence[str] | None = None, order: str = "label", metrics: Sequence[str] | None = None
) -> History:
    """Read the reports and line their rows up by label and series (see the module's notes)."""
    if not sources:
        raise UsageError("history needs at least one report folder: python -m pytest_icl history DIR... -o OUT")
    if labels and len(labels) != len(sources):
        raise UsageError(f"history: {len(labels)} label(s) for {len(sources)} folder(s); give one label per folder, in the same order.")
    if order not in ("label", "given"):
        raise UsageError(f"history --order {order!r}: use 'label' (natural sort of the labels) or 'given' (the folders' order).")
    points: dict[tuple[tuple, str], tuple[dict[str, Any], str]] = {}
    seen_labels: list[str] = []
    for index, source in enumerate(sources):
        for row in read_rows(source):
            label = labels[index] if labels else label_of(row)
            series = tuple(row.get(name) for name in SERIES_FIELDS)
            if (series, label) in points:
                raise UsageError(
                    f"history: two rows of {series[0]} ({', '.join(f'{n} {v}' for n, v in zip(SERIES_FIELDS[1:], series[1:]))}) have "
                    f"the label {label!r} (in {points[(series, label)][1]} and {source}); give each folder a label of its own with --labels."
                )
            points[(series, label)] = (row, str(source))
            if label not in seen_labels:
                seen_labels.append(label)
    ordered = seen_labels if order == "given" else sorted(seen_labels, key=natural)
    series_list = sorted({series for series, _ in points}, key=lambda s: tuple(str(v) for v in s))
    present = {name for row, _ in points.values() for name in row.get("values", {})}
    if metrics:
        unknown = [m for m in metrics if m not in present]
        if unknown:
            raise UsageError(f"history: no row has the metric(s) {', '.join(unknown)}; these are present: {', '.join(sorted(present))}.")
        chosen = list(metrics)
    else:
        chosen = [m.name for m in catalogue.compared_metrics() if m.name in present]
    return History(ordered, series_list, points, chosen, [])


def plot(history: History, metric: str, path: Path) -> Path:
    """One metric across the labels: a line per series, its intervals as error bars."""
    from pytest_icl.report.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(history.labels) + 2), 3.6))
    xs = list(range(len(history.labels)))
    for series in history.series:
        triples = [history.value(series, label, metric) for label in history.labels]
        values = [t[0] for t in triples]
        below = [0.0 if math.isnan(t[1]) else max(t[0] - t[1], 0.0) for t in triples]
        above = [0.0 if math.isnan(t[2]) else max(t[2] - t[0], 0.0) for t in triples]
        ax.errorbar(xs, values, yerr=[below, above], marker="o", capsize=3, label=history.series_name(series))
    ax.set_xticks(xs)
    ax.set_xticklabels(history.labels, rotation=30, ha="right")
    known = {m.name: m for m in catalogue.METRICS}
    ax.set_title(textwrap.fill(f"{metric}: {known[metric].about}" if metric in known else metric, 80), fontsize=8)
    ax.set_ylabel(known[metric].label if metric in known else metric)
    ax.grid(alpha=0.3)
    if history.series:
        ax.legend(fontsize=7)
    _save(fig, path)
    return path


def write_history(
    sources: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None, order: str = "label",
    metrics: Sequence[str] | None = None,
) -> History:  # fmt: skip
    """:func:`collect`, then ``OUT/history.csv`` and ``OUT/<metric>.png`` (atomic writes)."""
    history = collect(sources, labels=labels, order=order, metrics=metrics)
    out = Path(out)
    report.atomic_write_text(out / "history.csv", history.csv_text())
    history.files.append(out / "history.csv")
    for metric in history.metrics:
        history.files.append(plot(history, metric, out / f"{safe(metric)}.png"))
    return history
