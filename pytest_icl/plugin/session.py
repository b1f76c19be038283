"""The state of one pytest run in one process: the model pool and the memo of finished analyses.

One :class:`IclSession` lives in ``config.stash``. It owns the only reference to the loaded
model (one model resident at a time: loading another frees the first) and memoises each
task × model analysis, so the property tests of a pair share one run. The memo key is the
model, the task's *content* hash and every setting that changes the analysis: two inline tasks
of the same name but different shots are two analyses. Errors are memoised too, so a model or
task that cannot be used costs one attempt and gives every item the same one-line message.

The analysis itself is :func:`pytest_icl.pipeline.run_pipeline`; controller-side results (rows,
outcomes, files) are :mod:`pytest_icl.report.results`'s job.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_icl.errors import IclError, ModelError
from pytest_icl.models.loading import ModelSpec, resolve_model
from pytest_icl.options import IclOptions
from pytest_icl.pipeline import IclResult, PipelineSettings, run_pipeline
from pytest_icl.tasks.files import TaskSource

if TYPE_CHECKING:
    from pytest_icl.models.loading import LoadedModel


@dataclass(frozen=True)
class IclCase:
    """What a generated test item checks: a model, a task, and (for the suite) one property."""

    model: ModelSpec
    task: TaskSource
    property_name: str | None = None

    @property
    def pair(self) -> str:
        return f"{self.model.id}-{self.task.name}"


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
        self.settings = PipelineSettings.from_options(options)  # parsed once, for every pair
        self.is_worker = is_worker
        self.pool = ModelPool(options, self._progress_line)
        self._results: dict[tuple, IclResult | IclError] = {}
        self.baseline = None  # pytest_icl.report.baseline.Baseline, read at configure when comparing

    # ---- models and analyses

    def model_specs(self) -> list[ModelSpec]:
        return [resolve_model(name) for name in self.options.models]

    def memo_key(self, case: IclCase) -> tuple:
        return (case.model.id, case.task.content_hash, self.options.dtype, self.settings.analysis_key(case.task.name))

    def result(self, case: IclCase) -> IclResult:
        """The memoised analysis of ``case``'s task on its model (errors are memoised too)."""
        key = self.memo_key(case)
        if key not in self._results:
            try:
                self._results[key] = self._analyse(case)
            except IclError as error:
                self._results[key] = error
        outcome = self._results[key]
        if isinstance(outcome, IclError):
            raise outcome
        return outcome

    def _analyse(self, case: IclCase) -> IclResult:
        lm = self.pool.get(case.model)  # first: an unusable model fails before its tasks are loaded
        bars = _ProgressBars()
        try:
            return run_pipeline(lm, case.task, self.settings, progress=bars.update)
        finally:
            bars.close()

    def close(self) -> None:
        self.pool.close()

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
