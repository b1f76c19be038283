"""The state of one pytest run in one process: the loaded model and the finished analyses.

One :class:`IclSession` lives in ``config.stash``. It owns the only reference to the loaded
model (one model resident at a time: loading another frees the first) and memoises each
task × model analysis, so the property tests of a pair share one run. The memo key is the
model, the task's *content* hash and every setting that changes the analysis: two inline tasks
of the same name but different shots are two analyses. Errors are memoised too, so a model or
task that cannot be used costs one attempt and gives every item the same one-line message.

Controller-side results (rows, outcomes, files) are :mod:`pytest_icl.report.results`'s job.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_icl.report import rows as report
from pytest_icl.models.loading import ModelError, ModelSpec, empty_cuda_cache, resolve_model
from pytest_icl.options import IclOptions
from pytest_icl.analysis.properties import margins_for
from pytest_icl.tasks.loading import AUTO_LR, TaskError, TaskSource

if TYPE_CHECKING:
    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.controls.pair import PairControls
    from pytest_icl.models.loading import LoadedModel
    from pytest_icl.engine.runs import Records
    from pytest_icl.tasks.loading import IclTask


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
    controls: PairControls | None = None  # the opt-in controls (--icl-controls) that ran

    def check(self, name: str, margin: float | None = None):
        """Check one property (``accuracy``, ``rec2ftp``, ``simaou``, ``simam``, ``kendall``)."""
        from pytest_icl.analysis.properties import check_property

        return check_property(
            name, self.values, self.intervals, margin=self.margins[name] if margin is None else margin, counts=self.counts
        )

    def check_control(self, name: str):
        """The verdict of one control item (``untrained``, ``shuffled``, ``seeds``, ``output``)."""
        if self.controls is None:
            raise KeyError(f"no control ran for this pair; add {name} to --icl-controls")
        return self.controls.check(name)


class ModelPool:
    """Holds at most one loaded model; asking for another frees the current one first."""

    def __init__(self, options: IclOptions, progress):
        self.options = options
        self.progress = progress
        self.current: LoadedModel | None = None
        self.failures: dict[str, str] = {}
        self.loads: list[str] = []

    def get(self, spec: ModelSpec) -> LoadedModel:
        from pytest_icl.models.architectures import architecture_of
        from pytest_icl.models.loading import load_model

        if spec.id in self.failures:
            raise ModelError(self.failures[spec.id])
        if self.current is not None and self.current.spec == spec:
            return self.current
        self.close()
        try:
            loaded = load_model(
                spec, device=self.options.device, dtype=self.options.dtype, device_map=self.options.device_map,
                progress=self.progress,
            )
            try:
                architecture_of(loaded.model)  # an unsupported model fails here, once, not per task
            except ModelError:
                loaded.close()
                raise
        except ModelError as error:
            self.failures[spec.id] = str(error)
            raise
        self.current = loaded
        self.loads.append(spec.id)
        return loaded

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


class IclSession:
    def __init__(self, options: IclOptions, *, is_worker: bool = False):
        self.options = options
        self.is_worker = is_worker
        self.pool = ModelPool(options, self._progress_line)
        self._results: dict[tuple, IclResult | Exception] = {}
        self.baseline = None  # pytest_icl.report.baseline.Baseline, read at configure when comparing

    # ---- models and analyses

    def model_specs(self) -> list[ModelSpec]:
        return [resolve_model(name) for name in self.options.models]

    def memo_key(self, case: IclCase) -> tuple:
        return (case.model.id, case.task.content_hash, self.options.analysis_key(case.task.name))

    def result(self, case: IclCase) -> IclResult:
        """The memoised analysis of ``case``'s task on its model (errors are memoised too)."""
        key = self.memo_key(case)
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
        from pytest_icl.analysis.aggregate import analyse
        from pytest_icl.engine.runs import run_settings
        from pytest_icl.tasks.loading import load_task

        o = self.options
        lm = self.pool.get(case.model)  # first: an unusable model fails before its tasks are loaded
        task = load_task(
            case.task, shots=o.shots, seed=o.seed, lr=o.lr, position=o.position, limit=o.limit,
            data=o.data.get(case.task.name),
        )
        try:
            margins = margins_for(task.settings.thresholds, o.thresholds)
        except ValueError as error:
            raise TaskError(f"{case.task.origin}: {error}") from None
        lr_choice = None
        if task.settings.lr == AUTO_LR:  # per model: FT's effect depends on the lr more than on anything else
            from pytest_icl.engine.tune import choose_lr

            lr_choice = choose_lr(
                lm.model, lm.tokenizer, case.task, weights_hash=lm.weights_hash, shots=o.shots, seed=o.seed,
                position=o.position, data=o.data.get(case.task.name), batch_size=o.batch_size,
            )
            task = task.with_lr(lr_choice.lr)
        bars = _ProgressBars()
        try:
            records = _run(
                lambda: run_settings(lm.model, lm.tokenizer, task, batch_size=o.batch_size, progress=bars.update), lm, o.batch_size
            )
        finally:
            bars.close()
        start = time.perf_counter()
        analysis = analyse(records, seed=task.settings.seed)
        analysis.timings["metrics"] = time.perf_counter() - start
        analysis.timings["load_model"] = lm.load_seconds
        row = self._row(task, lm, analysis)
        row["lr_source"] = lr_choice.source if lr_choice else "fixed"  # validation | cache | fixed
        if lr_choice is not None:
            row["lr_reason"] = lr_choice.reason
        controls = None
        if o.controls:
            from pytest_icl.controls.pair import run_pair_controls

            def reload(seed: int) -> IclTask:
                return load_task(
                    case.task, shots=o.shots, seed=seed, lr=task.settings.lr, position=o.position, limit=o.limit,
                    data=o.data.get(case.task.name),
                )

            controls = _run(
                lambda: run_pair_controls(
                    o.controls, lm.model, lm.tokenizer, task, records, analysis, seeds=o.seeds, margins=margins,
                    reload=reload, batch_size=o.batch_size,
                ),
                lm, o.batch_size,
            )
            row["controls"] = controls.row
        if o.report is not None:
            report.write_samples(o.report, row, task, records)
        return IclResult(
            task=task, model_id=case.model.id, values=analysis.values, intervals=analysis.intervals,
            layers=analysis.layers, counts=analysis.counts, records=records, row=row, margins=margins, controls=controls,
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

    # ---- progress

    def _progress_line(self, message: str) -> None:
        if sys.__stderr__ is not None and sys.__stderr__.isatty():
            print(f"\r[pytest-icl] {message}", file=sys.__stderr__, flush=True)


def _run(work, lm: LoadedModel, batch_size: int):
    """Run an analysis stage; out of memory becomes a ModelError with the figures (the other pairs go on)."""
    import gc

    from pytest_icl.models.placement import describe_oom, is_out_of_memory

    message = None
    try:
        return work()
    except Exception as error:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raises
        if not is_out_of_memory(error):
            raise
        message = describe_oom(error, lm.device, batch_size=batch_size)
    # Outside the except block: the error's traceback holds the failed pass's tensors.
    gc.collect()
    empty_cuda_cache()
    raise ModelError(message)


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
