"""The state of one pytest run in one process: the model pool and the memo of finished analyses.

One :class:`IclSession` lives in ``config.stash``. It owns the only reference to the loaded
model (one model resident at a time: loading another frees the first) and memoises each
task × model analysis, so the property tests of a pair share one run. The memo key is the
model, the task's *content* hash and every setting that changes the analysis: two inline tasks
of the same name but different shots are two analyses. Errors are memoised too, so a model or
task that cannot be used costs one attempt; its paragraph is shown once, by the first item that
asked, and every other item gets a one-line pointer to it (:meth:`IclSession.result`).

It also remembers what collection found: each task name and its file, so that two files with
one ``task:`` name are an error naming both, and ``--icl-data`` names can be checked against
the tasks of the run (:mod:`pytest_icl.plugin.collection`). Constructing it checks the
environment variables pytest-icl reads (:func:`pytest_icl.options.check_environment`).

The analysis itself is :func:`pytest_icl.pipeline.run_pipeline`; controller-side results (rows,
outcomes, files) are :mod:`pytest_icl.report.results`'s job. With ``--icl-report`` the folder is a
store of pairs (:class:`pytest_icl.report.store.Store`): a generated item's pair that the store
holds is resumed (:mod:`pytest_icl.plugin.resume`), and the process that computes a pair stores
its samples; the controller stores the row.

Progress goes to the real stderr: tqdm bars on a terminal, else one plain line per finished stage
per pair (and per model load), so that a CI or SLURM log shows where a long run is.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_icl.errors import IclError, ModelError, TaskDefinitionError, TaskUnavailable
from pytest_icl.models.loading import ModelSpec, resolve_model
from pytest_icl.options import IclOptions, check_environment
from pytest_icl.pipeline import IclResult, PipelineSettings, run_pipeline
from pytest_icl.tasks.files import TaskSource, task_headers

if TYPE_CHECKING:
    from pytest_icl.models.loading import LoadedModel
    from pytest_icl.plugin.resume import StoredResult
    from pytest_icl.report.store import Store


@dataclass(frozen=True)
class IclCase:
    """What a generated test item checks: a model, a task, and (for the suite) one property."""

    model: ModelSpec
    task: TaskSource
    property_name: str | None = None

    @property
    def pair(self) -> str:
        return f"{self.model.id}-{self.task.name}"

    @property
    def where(self) -> str:
        """The item as pytest names it (a generated one), for a pointer to the message it showed."""
        return f"test_icl[{self.pair}-{self.property_name}]" if self.property_name else f"the first test of {self.pair}"


def _current_item(case: IclCase) -> str:
    """The item asking: the case's own name, else the node id pytest sets in PYTEST_CURRENT_TEST while an item runs."""
    if case.property_name:
        return case.where
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    return current or case.where


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
        start = time.perf_counter()
        plain_line(f"{spec.id}: loading the model")
        try:
            loaded = load_model(
                spec,
                device=self.options.device,
                dtype=self.options.dtype,
                device_map=self.options.device_map,
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
        plain_line(f"{spec.id}: model loaded, {time.perf_counter() - start:.1f} s")
        self.current = loaded
        self.loads.append(spec.id)
        return loaded

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


class IclSession:
    def __init__(self, options: IclOptions, *, is_worker: bool = False):
        check_environment(os.environ)  # at start (exit 4): a bad variable must not fail after a model loaded
        self.options = options
        self.settings = PipelineSettings.from_options(options)  # parsed once, for every pair
        if options.report is not None:  # the store writes each pair's samples (put_samples), not the pipeline
            self.settings = replace(self.settings, report=None)
        self.is_worker = is_worker
        self.pool = ModelPool(options, self._progress_line)
        self._results: dict[tuple, IclResult | StoredResult | IclError] = {}
        self.baseline = None  # pytest_icl.report.baseline.Baseline, read at configure when comparing
        self.store: Store | None = None  # the --icl-report folder as a store of pairs (opened at configure)
        self.shard = None  # pytest_icl.sharding.Shard of this run, None: every pair
        self._shown: dict[str, str] = {}  # an error's message -> the item that showed it in full
        self.task_files: dict[str, Path] = {}  # task name -> the file collection found it in
        self.task_names: set[str] = set()  # every task collection made items for
        self._task_headers: list[tuple[Path, dict]] | None = None

    def task_headers(self, roots: list[Path]) -> list[tuple[Path, dict]]:
        """The task folders' task files and their headers, read once per run: the ``--icl-task`` check at start,
        the report header and the collection of named tasks all look names up in them."""
        if self._task_headers is None:
            self._task_headers = list(task_headers(roots))
        return self._task_headers

    # ---- what collection found

    def claim_task(self, name: str, path: Path) -> None:
        """Record that ``path`` defines task ``name``; a second file with the name is a TaskDefinitionError naming both."""
        first = self.task_files.setdefault(name, Path(path).resolve())
        if first != Path(path).resolve():
            raise TaskDefinitionError(
                f"task {name!r} is defined by two files, {first} and {Path(path).resolve()}; the name is the test ids' "
                "and the report's key, so their results would be mixed up. Rename one (its task: line), or move it out of "
                "the task folders"
            )

    # ---- models and analyses

    def model_specs(self) -> list[ModelSpec]:
        return [resolve_model(name) for name in self.options.models]

    def memo_key(self, case: IclCase) -> tuple:
        return (case.model.id, case.task.content_hash, self.options.dtype, self.settings.analysis_key(case.task.name))

    def result(self, case: IclCase, *, resume: bool = False) -> IclResult | StoredResult:
        """The memoised analysis of ``case``'s task on its model (errors are memoised too).

        ``resume``: a stored pair of the ``--icl-report`` folder will do (the generated items);
        a computed analysis of the pair is used when there is one already.
        """
        key = self.memo_key(case)
        if resume and key not in self._results and self.store is not None and not self.options.rerun:
            stored = (*key, "stored")
            if stored not in self._results:
                try:
                    self._results[stored] = self._stored(case)
                except IclError as error:
                    self._results[stored] = error
            if self._results[stored] is not None:
                return self._outcome(self._results[stored], case)
        if key not in self._results:
            try:
                self._results[key] = self._analyse(case)
            except IclError as error:
                self._results[key] = error
        return self._outcome(self._results[key], case)

    def _outcome(self, outcome, case: IclCase):
        if isinstance(outcome, IclError):
            raise self._once(outcome, case)
        return outcome

    def _once(self, error: IclError, case: IclCase) -> IclError:
        """``error`` for the first item that meets it; for the others, the same kind of error with a one-line pointer.

        Keyed by the message, so a model that cannot load points every later pair to its first item too.
        Hub data a collected task cannot have here is a skip (the icl_analysis fixture decides): pytest
        already reports equal skip reasons once, so that message is kept whole.
        """
        message = str(error)
        if isinstance(error, TaskUnavailable) and case.property_name and case.task.name not in self.options.tasks:
            return error
        where = _current_item(case)
        first = self._shown.setdefault(message, where)
        if first == where:
            return error
        head = (message.splitlines() or [""])[0]
        place, sep, rest = head.partition(": ")
        head = (rest if sep and "/" in place else head).split(". ")[0].split("; ")[0]  # without the file the paragraph names
        head = head if len(head) <= 120 else head[:117] + "..."
        pointer = type(error)(f"{case.pair}: not analysed ({type(error).__name__}), shown in full at {first}: {head}")
        pointer.__suppress_context__ = True
        return pointer

    def _stored(self, case: IclCase) -> StoredResult | None:
        """The pair from the store when it holds it, else None (then it is computed)."""
        from pytest_icl.pipeline import load
        from pytest_icl.plugin.resume import StoredResult, pair_key

        lm = self.pool.get(case.model)  # the key needs the weights' hash
        task = load(case.task, self.settings)
        key = pair_key(lm, task, self.settings)
        row = self.store.get(key)
        if row is None or "verdicts" not in row:
            return None
        plain_line(f"{case.pair}: stored in {self.store.folder}, not computed again (--icl-rerun computes it)")
        return StoredResult(task, row, key)

    def _analyse(self, case: IclCase) -> IclResult:
        lm = self.pool.get(case.model)  # first: an unusable model fails before its tasks are loaded
        bars = _ProgressBars(case.pair)
        try:
            result = run_pipeline(lm, case.task, self.settings, progress=bars.update)
        finally:
            bars.close()
        if self.store is not None:  # the process that ran the pair holds its samples; the controller stores the row
            from pytest_icl.report.keys import key_of
            from pytest_icl.report.rows import samples_jsonl

            self.store.put_samples(key_of(result.row), samples_jsonl(result.row, result.task, result.records))
        return result

    def close(self) -> None:
        self.pool.close()

    # ---- progress

    def _progress_line(self, message: str) -> None:
        if _on_terminal():
            print(f"\r[pytest-icl] {message}", file=_stderr(), flush=True)


_STDERR: list = []  # the stream behind pytest's fd capture, when the plugin found one (use_stderr)


def use_stderr(stream) -> None:
    """Plain progress lines go to ``stream``: the process's stderr as it was before pytest captured file descriptor 2."""
    _STDERR[:] = [stream]


def _stderr():
    return _STDERR[0] if _STDERR else sys.__stderr__


def _on_terminal() -> bool:
    stream = _stderr()
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False


def plain_line(message: str) -> None:
    """One progress line on the real stderr when it is not a terminal (a CI or batch log)."""
    stream = _stderr()
    if stream is not None and not _on_terminal():
        try:
            print(f"[pytest-icl] {message}", file=stream, flush=True)
        except (OSError, ValueError):  # a closed stream: progress is not worth failing a run for
            pass


class _ProgressBars:
    """tqdm bars for the FT steps and eval batches on a terminal; one line per finished stage elsewhere."""

    def __init__(self, pair: str = ""):
        self.bars = {}
        self.pair = pair
        self.start = time.perf_counter()
        self.terminal = _on_terminal()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.terminal:
            if done >= total and stage not in self.bars:
                self.bars[stage] = None  # one line per stage
                plain_line(f"{self.pair}: {stage} done, {time.perf_counter() - self.start:.1f} s")
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=f"[pytest-icl] {stage}", file=_stderr(), leave=False)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            if bar is not None:
                bar.close()
