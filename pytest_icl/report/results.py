"""The run's results on the controller, and reading them back as pandas DataFrames.

:class:`ResultStore` gathers what test reports carry (a task × model row, each property's
outcome) — from this process or, under pytest-xdist, from the workers — and stores each pair
once it is *finished*: when every item of the pair has reported. With a
:class:`pytest_icl.report.store.Store` (``--icl-report``), the pair goes into the store
(:meth:`Store.put`, its row with the outcomes) and the folder's results files are rebuilt from
every pair it holds, so pairs of earlier runs, other shards or a concurrent run are kept; a pair
resumed from the store is not stored again. Without one, ``folder`` gets this run's rows.
:meth:`ResultStore.close` stores what is left (pairs whose items did not all run).

:func:`load` reads a report folder back::

    results = load("icl-report")
    results.pairs      # one row per task × model: settings, metrics, property outcomes
    results.layers     # one row per pair × metric × layer
    results.samples    # one row per pair × eval example (from samples_*.jsonl)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_icl.report import rows as report

if TYPE_CHECKING:
    import pandas as pd

    from pytest_icl.report.store import Store


def pair_of(row: dict[str, Any]) -> str:
    return f"{row['model_id']}-{row['task']}"


@dataclass
class ResultStore:
    """Rows and outcomes by pair; files written when a pair's last item reports."""

    folder: Path | None
    model_order: tuple[str, ...] = ()
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # pair -> row
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)  # pair -> property -> outcome
    expected: dict[str, int] = field(default_factory=dict)  # pair -> number of its items
    reported: dict[str, int] = field(default_factory=dict)
    closing: bool = False  # close(): unfinished pairs are stored too
    writes: int = 0  # how often the files were written (a test checks: once per finished pair)
    store: Store | None = None  # the report folder as a store of pairs
    resumed: set[str] = field(default_factory=set)  # pairs taken from the store, not computed
    stored: set[str] = field(default_factory=set)  # pairs this run put into the store

    def expect(self, pair: str, items: int) -> None:
        """The pair has this many generated items: its files wait for all of them."""
        self.expected[pair] = items

    def add_row(self, row: dict[str, Any], *, resumed: bool = False) -> None:
        pair = pair_of(row)
        if pair in self.rows:
            return
        self.rows[pair] = row
        if resumed:
            self.resumed.add(pair)
        if pair not in self.expected or self._finished(pair):  # a task-as-test-file row waits for nothing
            self.write()

    def add_outcome(self, pair: str, name: str, outcome: str) -> None:
        self.outcomes.setdefault(pair, {})[name] = outcome
        self.reported[pair] = self.reported.get(pair, 0) + 1
        if self._finished(pair) and pair in self.rows:
            self.write()

    def _finished(self, pair: str) -> bool:
        return self.reported.get(pair, 0) >= self.expected.get(pair, 0)

    def finished_rows(self) -> list[dict[str, Any]]:
        order = {name: index for index, name in enumerate(self.model_order)}
        # Sorted, so the table and files read the same with and without xdist (rows arrive as workers finish).
        rows = sorted(self.rows.values(), key=lambda r: (order.get(r["model"], len(order)), r["model_id"], r["task"]))
        return [{**row, "properties": dict(self.outcomes.get(pair_of(row), {}))} for row in rows]

    def write(self) -> None:
        if self.store is not None:
            new = [row for row in self.finished_rows() if pair_of(row) not in self.resumed | self.stored]
            new = [row for row in new if self._finished(pair_of(row)) or self.closing]
            for row in new:
                self.store.put(row)
                self.stored.add(pair_of(row))
            if new:
                self.store.rebuild(model_order=self.model_order)
                self.writes += 1
        elif self.folder is not None and self.rows:
            report.write_results(self.folder, self.finished_rows())
            self.writes += 1

    def close(self) -> None:
        """Write pairs that never finished (an interrupted run, -x): they still count as results."""
        unfinished = [pair for pair in self.rows if not self._finished(pair)]
        if unfinished:
            self.closing = True
            self.write()


# ---- reading a report folder back


@dataclass
class Results:
    pairs: pd.DataFrame
    layers: pd.DataFrame
    samples: pd.DataFrame


def load(folder: str | Path) -> Results:
    """The report folder written by ``--icl-report`` as three DataFrames."""
    import pandas as pd

    folder = Path(folder)
    path = folder / "results.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read it ({error.strerror}); is {folder} a --icl-report folder?") from None
    pairs, layers = [], []
    for row in document["rows"]:
        flat = {column: row.get(column) for column in report.SCALAR_COLUMNS}
        flat.update({name: value for name, value in row["values"].items()})
        flat.update({f"property_{name}": outcome for name, outcome in row.get("properties", {}).items()})
        pairs.append(flat)
        for metric, curve in row.get("layers", {}).items():
            for layer, value in enumerate(curve):
                layers.append({"model_id": row["model_id"], "task": row["task"], "metric": metric, "layer": layer, "value": value})
    samples = []
    for file in sorted(folder.glob("samples_*.jsonl")):
        with file.open(encoding="utf-8") as handle:
            samples.extend(json.loads(line) for line in handle if line.strip())
    return Results(
        pairs=pd.DataFrame(pairs),
        layers=pd.DataFrame(layers, columns=["model_id", "task", "metric", "layer", "value"]),
        samples=pd.json_normalize(samples) if samples else pd.DataFrame(),
    )
