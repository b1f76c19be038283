"""The controls Dai et al. lacked, behind one interface, each run through the same pipeline as the real analysis.

Every control is a row of :data:`pytest_icl.catalogue.CONTROLS` (what it runs, its checks, how
the report shows it) and a module ``pytest_icl.controls.<name>`` whose ``CONTROL`` is a
:class:`Control`: :mod:`.untrained`, :mod:`.shuffled`, :mod:`.lcgd`, :mod:`.seeds`, :mod:`.output`.
:func:`get` finds it by name. A control

* *runs*: :meth:`Control.variant_runs` gives the extra runs its checks read (none for
  ``output``, whose numbers are in every analysis); :meth:`Control.measure` runs and analyses
  them as the real run is analysed;
* *is checked*: every :class:`~pytest_icl.catalogue.ControlCheck` of its row compares a metric
  of the real run with one of a control run (:func:`check_control`); :meth:`Control.judge`
  turns the outcomes into the pair's item verdict, or none where the row has no verdict;
* *is packed*: :meth:`Control.run` gives the verdict and the JSON-simple entry of the pair's
  ``row["controls"]`` that the report shows as its catalogue row says.

A control that does something else (``seeds``) overrides :meth:`Control.run`. Torch and
transformers are imported inside functions.

Example::

    base = run_settings(model, tokenizer, task)
    result = run_control("shuffled", model, tokenizer, task, base, batch_size=16, seed=0)
    [outcome.message for outcome in result.outcomes]
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pytest_icl import catalogue
from pytest_icl.catalogue import ControlCheck  # noqa: F401 - re-exported: the check rows' type

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.engine.runs import Records
    from pytest_icl.tasks.loading import IclTask

CONTROLS = catalogue.control_names()
RUNNABLE = tuple(c.name for c in catalogue.CONTROLS if c.variants)  # what run_control runs: controls with runs of their own

#: Every control's checks, in the catalogue's order (definitions §12.1, definitions §12.2, definitions §12.4; the catalogue says why each).
CONTROL_CHECKS: tuple[ControlCheck, ...] = tuple(check for c in catalogue.CONTROLS for check in c.checks)


@dataclass(frozen=True)
class CheckOutcome:
    check: ControlCheck
    value: float  # the real run's metric
    control: float
    margin: float = 0.0

    @property
    def passed(self) -> bool | None:
        """True/False for a check with a verdict; None for a side-by-side report (or a missing number)."""
        if self.check.better is None or math.isnan(self.value) or math.isnan(self.control):
            return None
        gain = self.value - self.control if self.check.better == "higher" else self.control - self.value
        return gain >= self.margin

    @property
    def message(self) -> str:
        c = self.check
        where = f"{c.variant} run" if c.variant else "same run"
        numbers = f"{c.metric} = {self.value:.4f}, control {c.control_metric} ({where}) = {self.control:.4f}"
        if self.passed is None:
            verdict = "reported" if c.better is None else "undefined (a value is NaN or the records lack it)"
            return f"{c.claim}: {verdict}. {numbers}"
        verdict = "holds" if self.passed else "does not hold"
        return f"{c.claim}: {verdict}. {numbers}, required {c.better} by ≥ {self.margin:+.4f}"


@dataclass
class ControlResult:
    name: str
    analyses: dict[str, Analysis]  # variant -> the control run's analysis
    seconds: dict[str, float]  # variant -> wall time of its run and analysis
    outcomes: list[CheckOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class ControlVerdict:
    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class PairRun:
    """The real run of one task × model that every control of the pair is run beside."""

    model: Any
    tokenizer: Any
    task: IclTask
    records: Records
    analysis: Analysis
    seeds: int  # demonstration seeds for the seeds control
    margins: dict[str, float]  # each property's margin for this pair
    reload: Callable[[int], IclTask]  # the task with the demonstrations of another seed
    batch_size: int = 16


def check_control(name: str, base: Analysis, analyses: dict[str, Analysis], *, margin: float = 0.0) -> list[CheckOutcome]:
    """Every check of control ``name``'s catalogue row, on the real and the control analyses."""
    outcomes = []
    for check in catalogue.control(name).checks:
        source = base if check.variant is None else analyses.get(check.variant)
        if source is None:
            continue
        value = base.values.get(check.metric, math.nan)
        control = source.values.get(check.control_metric, math.nan)
        outcomes.append(CheckOutcome(check, value, control, margin))
    return outcomes


class Control:
    """One control: what it runs (:meth:`variant_runs`), how it is checked (:meth:`judge`), what it adds to the row (:meth:`run`).

    The base class is a complete control for one whose checks read only the real run (``output``).
    """

    def __init__(self, name: str):
        self.name = name
        self.spec = catalogue.control(name)  # what it runs, its checks and how it is shown

    def variant_runs(self, model, tokenizer, task: IclTask, base: Records, *, seed: int, common: dict) -> dict[str, Callable[[], Records]]:
        """variant -> a function that makes that control run (``common``: batch_size and progress for ``run_settings``)."""
        return {}

    def adjust(self, analyses: dict[str, Analysis], task: IclTask, tokenizer, seed: int) -> None:
        """Mark what a control run's analysis cannot mean (a hook; most controls need none)."""

    def measure(
        self,
        model,
        tokenizer,
        task: IclTask,
        base: Records,
        *,
        batch_size: int = 16,
        seed: int = 0,
        base_analysis: Analysis | None = None,
        margin: float = 0.0,
        n_boot: int = 1000,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ControlResult:
        """Each variant run through ``runs.run_settings`` and ``analysis.analyse``, then the checks.

        Every control run is analysed with the task's analysis seed, as the real run is, so the
        random baselines and bootstrap rows are the same (pass the real run's ``n_boot`` too).
        ``seed`` seeds the control itself (the re-initialisation, the label permutation).
        """
        from pytest_icl.analysis.aggregate import analyse

        analysis_seed = task.settings.seed
        if base_analysis is None:
            base_analysis = analyse(base, seed=analysis_seed, n_boot=n_boot)
        analyses: dict[str, Analysis] = {}
        seconds: dict[str, float] = {}
        common = dict(batch_size=batch_size, progress=progress)
        for variant, make in self.variant_runs(model, tokenizer, task, base, seed=seed, common=common).items():
            start = time.perf_counter()
            analyses[variant] = analyse(make(), seed=analysis_seed, n_boot=n_boot)
            seconds[variant] = time.perf_counter() - start
        self.adjust(analyses, task, tokenizer, seed)
        return ControlResult(self.name, analyses, seconds, check_control(self.name, base_analysis, analyses, margin=margin))

    def judge(self, outcomes: list[CheckOutcome]) -> ControlVerdict | None:
        """The item's verdict: every check with a verdict holds. None for a control reported without one."""
        if not self.spec.verdict:
            return None
        decided = [o for o in outcomes if o.passed is not None]
        passed = bool(decided) and all(o.passed for o in decided)
        verdict = "holds" if passed else "does not hold"
        if not decided:
            verdict = "is undefined (no check had both numbers)"
        return ControlVerdict(self.name, passed, f"control {self.name} {verdict}: " + "; ".join(o.message for o in outcomes))

    def run(self, pair: PairRun) -> tuple[ControlVerdict | None, dict[str, Any]]:
        """Run beside ``pair``: the verdict, and the entry of ``row["controls"]`` (values, layers, outcomes)."""
        result = self.measure(
            pair.model, pair.tokenizer, pair.task, pair.records, batch_size=pair.batch_size, seed=pair.task.settings.seed,
            base_analysis=pair.analysis,
        )  # fmt: skip
        entry = {
            "values": {v: a.values for v, a in result.analyses.items()},
            "layers": {v: a.layers for v, a in result.analyses.items()},
            "outcomes": [
                {
                    "claim": o.check.claim,
                    "metric": o.check.metric,
                    "variant": o.check.variant,
                    "value": o.value,
                    "control": o.control,
                    "passed": o.passed,
                }
                for o in result.outcomes
            ],  # fmt: skip
        }
        return self.judge(result.outcomes), entry


def get(name: str) -> Control:
    """The control named ``name``: ``CONTROL`` of the module ``pytest_icl.controls.<name>``."""
    catalogue.control(name)  # an unknown name fails here, naming the known ones
    return import_module(f"{__package__}.{name}").CONTROL


def run_control(name: str, model, tokenizer, task: IclTask, base: Records, **options) -> ControlResult:
    """Run control ``name`` (one of :data:`RUNNABLE`) beside the real run ``base`` of ``task``.

    :meth:`Control.measure` with its keyword ``options`` (batch_size, seed, base_analysis,
    margin, n_boot, progress); ``base_analysis`` saves re-analysing ``base`` when the caller has it.
    """
    if name not in RUNNABLE:
        hint = f" ({catalogue.control(name).runs})" if name in CONTROLS else ""
        raise ValueError(f"run_control runs {', '.join(RUNNABLE)}; not {name!r}{hint}")
    return get(name).measure(model, tokenizer, task, base, **options)


def derived_hash(task: IclTask, what: str) -> str:
    """The config hash of a task derived from ``task`` (other labels, another order): never a stale baseline's."""
    return hashlib.sha256(f"{task.config_hash}|{what}".encode()).hexdigest()[: max(16, len(task.config_hash))]
