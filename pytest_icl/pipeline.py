"""One task on one loaded model, from the task's source to the result a test checks; no pytest.

The pipeline is: load the task (with the run's overrides) → choose the FT lr when it is
``auto`` → ZSL, ICL and FT (:func:`pytest_icl.engine.runs.run_settings`) → the metrics
(:func:`pytest_icl.analysis.aggregate.analyse`) → the opt-in controls → the pair's row → its
samples file. It is composed here and nowhere else: the pytest session only adds the model pool
and the memo, and the ``tune`` command, the benchmarks and ``gpu_check`` call it too.

:class:`PipelineSettings` is the whole configuration of a run, typed: the overrides of the
task's own settings (``None`` keeps the task's) and the run's knobs. The plugin builds it once
from the parsed options (:meth:`PipelineSettings.from_options`); a notebook writes it directly.

Example::

    from pytest_icl import PipelineSettings, TaskSource, load_model, run_pipeline

    with load_model("smollm2-135m") as lm:
        result = run_pipeline(lm, TaskSource.from_path("tasks/antonym_choice/antonym_choice.yaml"), PipelineSettings(limit=32))
    result.check("simaou").passed
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_icl.errors import ModelError, TaskError
from pytest_icl.tasks.files import AUTO_LR, TaskSource, find_task

if TYPE_CHECKING:
    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.analysis.verdicts import Verdict
    from pytest_icl.controls.pair import PairControls
    from pytest_icl.engine.runs import Records
    from pytest_icl.engine.tune import LrChoice
    from pytest_icl.models.loading import LoadedModel
    from pytest_icl.options import IclOptions
    from pytest_icl.tasks.loading import IclTask

Progress = Callable[[str, int, int], None]  # (stage, done, total), e.g. ("FT steps", 3, 16)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that configures the analysis of a task, beside the model and the task itself.

    Values are typed as :func:`pytest_icl.options.parse_options` gives them (``lr`` a number or
    ``"auto"``); the task loader checks the overrides with the task file's own rules.
    """

    # Overrides of the task's metadata.icl settings; None keeps the task's own value.
    shots: int | None = None
    seed: int | None = None
    lr: float | str | None = None
    position: str | None = None
    limit: int | None = None
    data: Mapping[str, str] = field(default_factory=dict)  # task name -> local files (DIR, or TRAIN,EVAL)
    # The run.
    batch_size: int = 16
    thresholds: Mapping[str, float] = field(default_factory=dict)  # beat the task's icl.thresholds
    accuracy_gate: bool = True  # similarity verdicts need ICL to beat ZSL (read by whoever checks them)
    controls: tuple[str, ...] = ()  # the opt-in control items (--icl-controls), run beside every draw
    seeds: int = 3  # demonstration draws per pair (S): the task's seed, seed + 1, ... (the 'seeds' control reads them)
    shuffled: bool = True  # FT on shuffled labels per draw: every similarity property must beat it too
    report: Path | None = None  # the folder a pair's samples file is written to; None: no files

    @classmethod
    def from_options(cls, options: IclOptions) -> PipelineSettings:
        """The settings part of the run's parsed options (the fields share their names)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})

    def task_overrides(self, task_name: str) -> dict[str, Any]:
        """The keyword arguments of :func:`pytest_icl.tasks.loading.load_task` for this task."""
        return {
            "shots": self.shots, "seed": self.seed, "lr": self.lr, "position": self.position,
            "limit": self.limit, "data": self.data.get(task_name),
        }  # fmt: skip

    def analysis_key(self, task_name: str) -> tuple:
        """What, beside the task's content and the model, decides its analysis (for a memo key)."""
        return (*self.task_overrides(task_name).values(), self.seeds, self.shuffled)


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
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # each property over the draws
    draws: list[Records] = field(default_factory=list)  # every draw's records (``records`` is the first)
    evidence: Analysis | None = None  # the multi-draw analysis the verdicts were decided on
    gates_on: bool = True

    def check(self, name: str, margin: float | None = None) -> Verdict:
        """The verdict of one property (``accuracy``, ``rec2ftp``, ``simaou``, ``simam``, ``kendall``).

        ``outcome`` is passed, failed, undecided or inconclusive; ``passed`` is True only for the
        first. ``margin`` decides it again against another margin.
        """
        if margin is None and name in self.verdicts:
            return self.verdicts[name]
        from pytest_icl.analysis.verdicts import decide_property

        margin = self.margins[name] if margin is None else margin
        return decide_property(name, self.evidence, margin=margin, gates_on=self.gates_on, seed=self.task.settings.seed)

    def check_control(self, name: str):
        """The verdict of one control item (``untrained``, ``shuffled``, ``seeds``, ``output``)."""
        if self.controls is None:
            raise KeyError(f"no control ran for this pair; add {name} to --icl-controls")
        return self.controls.check(name)

    @property
    def analysis(self) -> Analysis:
        """The numbers as :func:`pytest_icl.analysis.aggregate.analyse` gave them (a control compares with them)."""
        if self.evidence is not None:
            return self.evidence
        from pytest_icl.analysis.aggregate import Analysis

        return Analysis(self.values, self.intervals, self.layers, self.counts, dict(self.row["timings"]))


# ---- where a task comes from


def task_source(task: str | os.PathLike | dict, *, roots: list[Path], base: Path | None = None) -> TaskSource:
    """A task as a test or a command names it: an inline config, a YAML path, or a task name.

    A relative YAML path is relative to ``base`` (a test file's folder), else to the working
    folder; a name is a task file under ``roots`` first, then an lm-eval built-in.
    """
    if isinstance(task, dict):
        return TaskSource.inline(task)
    if str(task).endswith((".yaml", ".yml")):
        path = Path(task)
        return TaskSource.from_path(base / path if base is not None and not path.is_absolute() else path)
    return find_task(str(task), roots) or TaskSource.builtin(str(task))


def load(source: TaskSource, settings: PipelineSettings, *, split: str | None = None, **changes: Any) -> IclTask:
    """The task as the pipeline loads it: its settings with the overrides, then ``changes`` (``seed=``...)."""
    from pytest_icl.tasks.loading import load_task

    return load_task(source, **{**settings.task_overrides(source.name), **changes}, split=split)


def margins_of(thresholds: Mapping[str, float], settings: PipelineSettings, *, origin: str) -> dict[str, float]:
    """Each property's margin (defaults < the task's ``thresholds`` < the run's); a bad name is a TaskError."""
    from pytest_icl.analysis.properties import margins_for

    try:
        return margins_for(dict(thresholds), dict(settings.thresholds))
    except ValueError as error:
        raise TaskError(f"{origin}: {error}") from None


# ---- the pipeline


def run_pipeline(
    lm: LoadedModel, source: TaskSource, settings: PipelineSettings | None = None, *, progress: Progress | None = None
) -> IclResult:
    """The analysis of ``source`` on ``lm``; raises :class:`pytest_icl.IclError` when it cannot be had.

    ``progress`` is told each step of the ZSL, ICL and FT runs. Out of memory becomes a
    ModelError with the figures, so that a caller running many pairs can go on with the next.
    ``settings`` None: the task's own settings, batches of 16, no controls, no files.
    """
    settings = settings or PipelineSettings()
    task = load(source, settings)
    margins = margins_of(task.settings.thresholds, settings, origin=source.origin)
    lr_choice = None
    if task.settings.lr == AUTO_LR:  # per model: FT's effect depends on the lr more than on anything else
        from pytest_icl.engine.tune import choose_lr

        lr_choice = choose_lr(
            lm.model, lm.tokenizer, source, weights_hash=lm.weights_hash, shots=settings.shots, seed=settings.seed,
            position=settings.position, data=settings.data.get(source.name), batch_size=settings.batch_size,
        )  # fmt: skip
        task = task.with_lr(lr_choice.lr)

    def reload(seed: int) -> IclTask:  # another draw: other demonstrations, the lr this run used
        return load(source, settings, seed=seed, lr=task.settings.lr)

    return analyse_task(lm, task, settings, margins=margins, lr_choice=lr_choice, reload=reload, progress=progress)


def analyse_task(
    lm: LoadedModel,
    task: IclTask,
    settings: PipelineSettings | None = None,
    *,
    margins: dict[str, float] | None = None,
    lr_choice: LrChoice | None = None,
    reload: Callable[[int], IclTask] | None = None,
    progress: Progress | None = None,
) -> IclResult:
    """The pipeline from a task already loaded with a concrete lr (``gpu_check`` builds one without lm-eval).

    ``reload(seed)`` gives the task with the demonstrations of another seed: the draws after the
    first need it (without it, one draw).
    """
    from pytest_icl.analysis.draws import analyse_draws
    from pytest_icl.analysis.verdicts import decide_properties
    from pytest_icl.report import rows

    settings = settings or PipelineSettings()
    if margins is None:
        margins = margins_of(task.settings.thresholds, settings, origin=f"task {task.name!r}")
    tasks = draw_tasks(task, settings.seeds if reload is not None else 1, reload)
    draws, shuffled = _within_memory(lambda: run_draws(lm, tasks, settings, progress), lm, settings.batch_size)
    start = time.perf_counter()
    with _one_thread():  # the bootstrap's many small ops: one thread is ~40x faster than two fighting
        analysis = analyse_draws(draws, shuffled=shuffled, seed=task.settings.seed)
        verdicts = decide_properties(analysis, margins, gates_on=settings.accuracy_gate, seed=task.settings.seed)
    analysis.timings["metrics"] = time.perf_counter() - start
    analysis.timings["load_model"] = lm.load_seconds
    records = draws[0]
    row = pair_row(task, lm, analysis)
    row.update(
        draws=len(draws), seeds=[t.settings.seed for t in tasks], shuffled_control=shuffled is not None,
        verdicts={name: v.as_dict() for name, v in verdicts.items()},
        gates={name: {"open": g.open, "reason": g.reason} for name, g in analysis.gates.items()},
        left_out_layers=list(analysis.left_out_layers), per_draw=analysis.per_draw,
    )  # fmt: skip
    row["lr_source"] = lr_choice.source if lr_choice else "fixed"  # validation | cache | fixed
    if lr_choice is not None:
        row["lr_reason"] = lr_choice.reason
    controls = None
    if settings.controls:
        from pytest_icl.controls.pair import run_pair_controls

        # Beside every draw, decided by the properties' interval rule; the shuffled-label FT of
        # the draws is reused, not trained again.
        controls = _within_memory(
            lambda: run_pair_controls(settings.controls, lm.model, lm.tokenizer, tasks, draws, analysis, margins=margins,
                                      verdicts=verdicts, batch_size=settings.batch_size),
            lm, settings.batch_size,
        )  # fmt: skip
        row["controls"] = controls.row
    if settings.report is not None:
        rows.write_samples(settings.report, row, task, records)
    return IclResult(
        task=task, model_id=lm.spec.id, values=analysis.values, intervals=analysis.intervals,
        layers=analysis.layers, counts=analysis.counts, records=records, row=row, margins=margins, controls=controls,
        verdicts=verdicts, draws=draws, evidence=analysis, gates_on=settings.accuracy_gate,
    )  # fmt: skip


def draw_tasks(task: IclTask, count: int, reload: Callable[[int], IclTask] | None) -> list[IclTask]:
    """The pair's demonstration draws: ``task`` (its seed s) and the task with seeds s + 1 ... s + count − 1.

    Every draw is scored on the same eval examples (ZSL runs once): an example that is a
    demonstration of some draw is left out of all of them, with a warning.
    """
    import warnings
    from dataclasses import replace

    from pytest_icl.errors import TaskWarning

    if count > 1 and reload is None:
        raise TaskError(f"task {task.name!r}: {count} demonstration draws need the task's source to load the others")
    tasks = [task] + [reload(task.settings.seed + j) for j in range(1, count)]
    others = [set(t.eval_examples) for t in tasks[1:]]  # Examples are frozen: a set finds each in O(1)
    common = [e for e in task.eval_examples if all(e in seen for seen in others)]
    if len(common) < len(task.eval_examples) or any(len(t.eval_examples) != len(common) for t in tasks[1:]):
        if not common:
            raise TaskError(f"task {task.name!r}: the demonstration draws share no eval example; use fewer --icl-seeds")
        warnings.warn(TaskWarning(f"task {task.name!r}: {len(task.eval_examples) - len(common)} eval example(s) left out: "
                                  "a demonstration in another draw"), stacklevel=2)  # fmt: skip
        tasks = [replace(t, eval_examples=tuple(common)) for t in tasks]
    return tasks


def run_draws(lm: LoadedModel, tasks: list[IclTask], settings: PipelineSettings, progress: Progress | None = None):
    """ZSL once, then ICL and FT per draw (and FT on the draw's shuffled labels when the control is on)."""
    from pytest_icl.controls.shuffled import shuffled_label_task
    from pytest_icl.engine.runs import run_settings

    draws, shuffled = [], []
    for j, task in enumerate(tasks):
        tell = None if progress is None else (lambda stage, done, total, j=j: progress(f"{stage} (draw {j + 1}/{len(tasks)})", done, total))
        zsl = draws[0].zsl if draws else None
        records = run_settings(lm.model, lm.tokenizer, task, batch_size=settings.batch_size, progress=tell, zsl=zsl)
        draws.append(records)
        if settings.shuffled:
            shuffled_task = shuffled_label_task(task, seed=task.settings.seed)
            shuffled.append(run_settings(lm.model, lm.tokenizer, task, batch_size=settings.batch_size, progress=tell,
                                         ft_task=shuffled_task, reuse=records))  # fmt: skip
    return draws, (shuffled if settings.shuffled else None)


class _one_thread:
    """torch on one intra-op thread for a block, then as it was."""

    def __enter__(self):
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.threads)


def pair_row(task: IclTask, lm: LoadedModel, analysis: Analysis) -> dict[str, Any]:
    """The pair's row: what the table, the files, the HTML report and the baseline read."""
    from pytest_icl.report.rows import library_versions

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
        "versions": library_versions(),
    }


def _within_memory(work: Callable[[], Any], lm: LoadedModel, batch_size: int):
    """Run a stage; out of memory becomes a ModelError with the figures (the other pairs go on)."""
    import gc

    from pytest_icl.models.loading import empty_cuda_cache
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
