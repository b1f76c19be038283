"""The state of one pytest run: options, the loaded model, finished analyses, result rows.

One :class:`IclSession` lives in ``config.stash``. It owns the only reference to the loaded
model (one model resident at a time: loading another frees the first), memoises each
task × model analysis so the property tests of a pair share one run, and gathers result rows
from test reports (which also works across pytest-xdist workers).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_icl import report
from pytest_icl.models import DEFAULT_MODEL, ModelError, ModelSpec, resolve_model
from pytest_icl.properties import margins_for
from pytest_icl.tasks import TaskError, TaskSource

if TYPE_CHECKING:
    from pytest_icl.analysis import Analysis
    from pytest_icl.models import LoadedModel
    from pytest_icl.runs import Records
    from pytest_icl.tasks import IclTask


@dataclass(frozen=True)
class IclOptions:
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    tasks: tuple[str, ...] = ()  # filter by name; a named task that cannot load fails instead of skipping
    shots: int | None = None
    seed: int | None = None
    lr: float | None = None
    position: str | None = None
    limit: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    report: Path | None = None
    data: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    batch_size: int = 16
    baseline: Path | None = None  # --icl-baseline FILE
    baseline_update: bool = False  # --icl-baseline-update: write FILE after the run instead of comparing
    baseline_model: str | None = None  # --icl-baseline-model NAME: compare with NAME's stored rows
    tolerances: dict[str, float] = field(default_factory=dict)  # --icl-tolerance METRIC=VALUE


@dataclass(frozen=True)
class IclCase:
    """What a generated test item checks: a model, a task, and (for the suite) one property."""

    model: ModelSpec
    task: TaskSource
    property_name: str | None = None

    @property
    def pair(self) -> str:
        return f"{self.model.id}-{self.task.name}"


@dataclass
class IclResult:
    """One task × model analysis: what the ``icl_analysis`` fixture gives a test."""

    task: IclTask
    model_id: str
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    layers: dict[str, list[float]]
    counts: dict[str, int]
    records: Records
    row: dict[str, Any]
    margins: dict[str, float]  # defaults < the task's icl.thresholds < --icl-threshold

    def check(self, name: str, margin: float | None = None):
        """Check one property (``accuracy``, ``rec2ftp``, ``simaou``, ``simam``, ``kendall``)."""
        from pytest_icl.properties import check_property

        return check_property(
            name, self.values, self.intervals, margin=self.margins[name] if margin is None else margin, counts=self.counts
        )


class ModelPool:
    """Holds at most one loaded model; asking for another frees the current one first."""

    def __init__(self, options: IclOptions, progress):
        self.options = options
        self.progress = progress
        self.current: LoadedModel | None = None
        self.failures: dict[str, str] = {}
        self.loads: list[str] = []

    def get(self, spec: ModelSpec) -> LoadedModel:
        from pytest_icl.models import load_model

        if spec.id in self.failures:
            raise ModelError(self.failures[spec.id])
        if self.current is not None and self.current.spec == spec:
            return self.current
        self.close()
        try:
            self.current = load_model(spec, device=self.options.device, dtype=self.options.dtype, progress=self.progress)
        except ModelError as error:
            self.failures[spec.id] = str(error)
            raise
        self.loads.append(spec.id)
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


class IclSession:
    def __init__(self, options: IclOptions, *, is_worker: bool = False):
        self.options = options
        self.is_worker = is_worker
        self.pool = ModelPool(options, self._progress_line)
        self._results: dict[tuple[str, str], IclResult | Exception] = {}
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.property_outcomes: dict[str, dict[str, str]] = {}  # pair -> property -> outcome
        self.baseline = None  # pytest_icl.baseline.Baseline, read at configure when comparing

    # ---- models and analyses

    def model_specs(self) -> list[ModelSpec]:
        return [resolve_model(name) for name in self.options.models]

    def result(self, case: IclCase) -> IclResult:
        """The memoised analysis of ``case``'s task on its model (errors are memoised too)."""
        key = (case.model.id, case.task.path and str(case.task.path) or case.task.name)
        if key not in self._results:
            try:
                self._results[key] = self._analyse(case)
            except (TaskError, ModelError) as error:
                self._results[key] = error
        outcome = self._results[key]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _analyse(self, case: IclCase) -> IclResult:
        from pytest_icl.analysis import analyse
        from pytest_icl.runs import run_settings
        from pytest_icl.tasks import load_task

        o = self.options
        task = load_task(
            case.task, shots=o.shots, seed=o.seed, lr=o.lr, position=o.position, limit=o.limit,
            data=o.data.get(case.task.name),
        )
        try:
            margins = margins_for(task.settings.thresholds, o.thresholds)
        except ValueError as error:
            raise TaskError(f"{case.task.origin}: {error}") from None
        lm = self.pool.get(case.model)
        bars = _ProgressBars()
        try:
            records = run_settings(lm.model, lm.tokenizer, task, batch_size=o.batch_size, progress=bars.update)
        finally:
            bars.close()
        start = time.perf_counter()
        analysis = analyse(records, seed=task.settings.seed)
        analysis.timings["metrics"] = time.perf_counter() - start
        analysis.timings["load_model"] = lm.load_seconds
        return IclResult(
            task=task, model_id=case.model.id, values=analysis.values, intervals=analysis.intervals,
            layers=analysis.layers, counts=analysis.counts, records=records, row=self._row(task, lm, analysis),
            margins=margins,
        )

    def _row(self, task: IclTask, lm: LoadedModel, analysis: Analysis) -> dict[str, Any]:
        return {
            "task": task.name,
            "task_hash": task.config_hash,
            "model": lm.spec.name,
            "model_id": lm.spec.id,
            "revision": lm.revision,
            "weights_hash": lm.weights_hash,
            "dtype": str(lm.dtype).removeprefix("torch."),
            "device": str(lm.device),
            "shots": task.settings.shots,
            "seed": task.settings.seed,
            "lr": task.settings.lr,
            "position": task.settings.position,
            "eval": len(task.eval_examples),
            "values": analysis.values,
            "intervals": {k: list(v) for k, v in analysis.intervals.items()},
            "layers": analysis.layers,
            "counts": analysis.counts,
            "timings": {k: round(v, 3) for k, v in analysis.timings.items()},
            "versions": report.library_versions(),
        }

    def close(self) -> None:
        self.pool.close()

    # ---- rows (controller side)

    def add_row(self, row: dict[str, Any]) -> None:
        key = report.row_key(row)
        if key in self.rows:
            return
        self.rows[key] = row
        self.write_report()

    def add_property_outcome(self, pair: str, name: str, outcome: str) -> None:
        self.property_outcomes.setdefault(pair, {})[name] = outcome
        self.write_report()

    def finished_rows(self) -> list[dict[str, Any]]:
        rows = []
        order = {name: index for index, name in enumerate(self.options.models)}
        # Sorted, so the table and files read the same with and without xdist (rows arrive as workers finish).
        for row in sorted(self.rows.values(), key=lambda r: (order.get(r["model"], len(order)), r["model_id"], r["task"])):
            pair = f"{row['model_id']}-{row['task']}"
            rows.append({**row, "properties": dict(self.property_outcomes.get(pair, {}))})
        return rows

    def write_report(self) -> None:
        if self.options.report is not None and self.rows:
            report.write_results(self.options.report, self.finished_rows())

    # ---- progress

    def _progress_line(self, message: str) -> None:
        if sys.__stderr__ is not None and sys.__stderr__.isatty():
            print(f"\r[pytest-icl] {message}", file=sys.__stderr__, flush=True)


class _ProgressBars:
    """tqdm bars for the FT steps and eval batches, on the real terminal (not pytest's capture)."""

    def __init__(self):
        self.bars = {}

    def update(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            # disable=None: no bar unless stderr is a terminal, so CI logs stay clean
            bar = self.bars[stage] = tqdm(total=total, desc=f"[pytest-icl] {stage}", file=sys.__stderr__, leave=False, disable=None)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
