"""The controls Dai et al. lacked, behind one interface, each run through the same pipeline as the real analysis.

Every control is a row of :data:`pytest_icl.catalogue.CONTROLS` (what it runs, its checks, how
the report shows it) and a module ``pytest_icl.controls.<name>`` whose ``CONTROL`` is a
:class:`Control`: :mod:`.untrained`, :mod:`.shuffled`, :mod:`.lcgd`, :mod:`.seeds`, :mod:`.output`.
:func:`get` finds it by name. A control

* *runs* beside every demonstration draw of the pair: :meth:`Control.variant_draws` gives the
  extra runs its checks read, one per draw (none for ``output``, whose numbers are in every
  analysis); :meth:`Control.measure` runs them and analyses each variant over the draws as the
  real run is analysed (:func:`pytest_icl.analysis.draws.analyse_draws`);
* *is checked* by the rule the properties obey: every :class:`~pytest_icl.catalogue.ControlCheck`
  of its row is the paired difference real − control, per eval example and draw, with its
  hierarchical bootstrap interval (:func:`pytest_icl.analysis.decision.decide`); a check passes
  when the interval lies above the margin, fails when it lies below, and is undecided otherwise
  (:func:`check_control`); :meth:`Control.judge` combines them into the pair's item verdict;
* *is packed*: :meth:`Control.run` gives the verdict and the JSON-simple entry of the pair's
  ``row["controls"]`` that the report shows as its catalogue row says.

A control that does something else (``seeds``) overrides :meth:`Control.run`. Transformers
and the engine are imported inside functions.

Example::

    draws = [run_settings(model, tokenizer, task)]
    result = run_control("shuffled", model, tokenizer, [task], draws, batch_size=16, seed=task.settings.seed)
    [outcome.message for outcome in result.outcomes]
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pytest_icl import catalogue
from pytest_icl.analysis.decision import FAILED, PASSED, UNDECIDED, Decision, combine_outcomes, decide
from pytest_icl.analysis.verdicts import INCONCLUSIVE  # a control whose checks could not be computed here
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
    """One check: the real run's metric and the control's (means over draws), and their decided difference."""

    check: ControlCheck
    value: float  # the real run's metric
    control: float
    decision: Decision | None = None  # None: reported side by side (no verdict), or a number is missing

    @property
    def outcome(self) -> str | None:
        """passed, failed or undecided; None for a side-by-side report or an undefined difference."""
        if self.check.better is None or self.decision is None or math.isnan(self.decision.estimate):
            return None
        return self.decision.outcome

    @property
    def passed(self) -> bool | None:
        return {PASSED: True, FAILED: False}.get(self.outcome)

    @property
    def message(self) -> str:
        c = self.check
        where = f"{c.variant} run" if c.variant else "same run"
        numbers = f"{c.metric} = {self.value:.4f}, control {c.control_metric} ({where}) = {self.control:.4f}"
        if self.outcome is None:
            verdict = "reported" if c.better is None else "undefined (a value is NaN or the records lack it)"
            return f"{c.claim}: {verdict}. {numbers}"
        b = self.decision.bootstrap
        side = "real − control" if c.better == "higher" else "control − real"
        return (f"{c.claim}: {self.outcome}. {numbers}; {side} {b.estimate:+.4f} "
                f"({round(100 * b.level)}% CI {b.low:+.4f}…{b.high:+.4f}), margin {self.decision.margin:+.4f}")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        low, high = self.decision.interval if self.decision is not None else (math.nan, math.nan)
        return {"claim": self.check.claim, "metric": self.check.metric, "variant": self.check.variant, "value": self.value,
                "control": self.control, "passed": self.passed, "outcome": self.outcome,
                "estimate": self.decision.estimate if self.decision is not None else math.nan, "low": low, "high": high}  # fmt: skip


@dataclass
class ControlResult:
    name: str
    analyses: dict[str, Analysis]  # variant -> the control runs' analysis over the draws
    seconds: dict[str, float]  # variant -> wall time of its runs and analysis
    outcomes: list[CheckOutcome] = field(default_factory=list)


@dataclass(frozen=True)
class ControlVerdict:
    """A control item's outcome (passed, failed, undecided or inconclusive) and why."""

    name: str
    outcome: str
    message: str

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    def as_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome, "message": self.message}


@dataclass(frozen=True)
class PairRun:
    """The real runs of one task × model (one per demonstration draw) that every control of the pair is run beside."""

    model: Any
    tokenizer: Any
    tasks: tuple[IclTask, ...]  # one per draw: the task with that draw's demonstrations
    draws: tuple[Records, ...]
    analysis: Analysis  # the real runs over the draws (analyse_draws), shuffled-label numbers included when they ran
    margins: dict[str, float]  # each property's margin for this pair
    verdicts: dict[str, Any] = field(default_factory=dict)  # the properties' verdicts over the draws
    batch_size: int = 16

    @property
    def task(self) -> IclTask:
        return self.tasks[0]


def check_control(
    name: str, base: Analysis, analyses: dict[str, Analysis], *, margin: float = 0.0, n_boot: int = 2000, seed: int = 0
) -> list[CheckOutcome]:
    """Every check of control ``name``'s catalogue row, decided on the per-example evidence of both analyses."""
    outcomes = []
    for check in catalogue.control(name).checks:
        source = base if check.variant is None else analyses.get(check.variant)
        if source is None:
            continue
        real, control = base.evidence.get(check.metric), source.evidence.get(check.control_metric)
        decision = None
        if check.better is not None and real is not None and control is not None:
            decision = decide(real, control, margin=margin, better=check.better, n_boot=n_boot, seed=seed)
        value = base.values.get(check.metric, math.nan)
        outcomes.append(CheckOutcome(check, value, source.values.get(check.control_metric, math.nan), decision))
    return outcomes


class Control:
    """One control: what it runs (:meth:`variant_draws`), how it is checked (:meth:`judge`), what it adds to the row (:meth:`run`).

    The base class is a complete control for one whose checks read only the real run (``output``).
    """

    needs = ""  # what to turn on when no check could be computed (said in the inconclusive verdict)

    def __init__(self, name: str):
        self.name = name
        self.spec = catalogue.control(name)  # what it runs, its checks and how it is shown

    def variant_runs(self, model, tokenizer, task: IclTask, base: Records, *, seed: int, common: dict) -> dict[str, Callable[[], Records]]:
        """variant -> a function that makes that control run for one draw (``common``: batch_size and progress)."""
        return {}

    def variant_draws(
        self, model, tokenizer, tasks: Sequence[IclTask], draws: Sequence[Records], *, seed: int, common: dict
    ) -> dict[str, Callable[[], list[Records]]]:
        """variant -> a function that makes its runs beside every draw; draw s gets the control seed ``seed + s``."""
        per_draw = [self.variant_runs(model, tokenizer, t, r, seed=seed + s, common=common) for s, (t, r) in enumerate(zip(tasks, draws))]
        return {variant: (lambda variant=variant: [runs[variant]() for runs in per_draw]) for variant in per_draw[0]}

    def measure(
        self,
        model,
        tokenizer,
        tasks: IclTask | Sequence[IclTask],
        draws: Records | Sequence[Records],
        *,
        batch_size: int = 16,
        seed: int = 0,
        base_analysis: Analysis | None = None,
        ready: dict[str, Analysis] | None = None,
        margin: float = 0.0,
        n_boot: int = 2000,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ControlResult:
        """Each variant run beside every draw and analysed over the draws, then the checks.

        One task and one records object are one draw. The control runs are analysed with the
        task's analysis seed, as the real runs are, so the random baselines and bootstrap rows
        are the same. ``seed`` seeds the control itself (the re-initialisation, the label
        permutation). ``ready``: variant analyses already made (the pipeline's shuffled-label FT).
        """
        from pytest_icl.analysis.draws import analyse_draws

        tasks = [tasks] if not isinstance(tasks, Sequence) else list(tasks)
        draws = [draws] if not isinstance(draws, Sequence) else list(draws)
        analysis_seed = tasks[0].settings.seed
        if base_analysis is None or not base_analysis.evidence:
            base_analysis = analyse_draws(draws, seed=analysis_seed, n_boot=n_boot)
        analyses: dict[str, Analysis] = dict(ready or {})
        seconds: dict[str, float] = {}
        common = dict(batch_size=batch_size, progress=progress)
        for variant, make in self.variant_draws(model, tokenizer, tasks, draws, seed=seed, common=common).items():
            if variant in analyses:
                continue
            start = time.perf_counter()
            analyses[variant] = analyse_draws(make(), seed=analysis_seed, n_boot=n_boot)
            seconds[variant] = time.perf_counter() - start
        outcomes = check_control(self.name, base_analysis, analyses, margin=margin, n_boot=n_boot, seed=analysis_seed)
        return ControlResult(self.name, analyses, seconds, outcomes)

    def judge(self, outcomes: list[CheckOutcome]) -> ControlVerdict | None:
        """The item's verdict: passed when every decided check passed, failed when one failed, else undecided.

        None for a control reported without a verdict; inconclusive when no check could be decided.
        """
        if not self.spec.verdict:
            return None
        decided = [o.outcome for o in outcomes if o.outcome is not None]
        if not decided:
            outcome, head = INCONCLUSIVE, "no check had both numbers" + (f" ({self.needs})" if self.needs else "")
        else:
            outcome = combine_outcomes(decided)
            head = {PASSED: "holds", FAILED: "does not hold", UNDECIDED: "undecided (an interval contains the margin)"}[outcome]
        return ControlVerdict(self.name, outcome, f"control {self.name} {head}: " + "; ".join(o.message for o in outcomes))

    def ready(self, pair: PairRun) -> dict[str, Analysis]:
        """Variant analyses the pair's runs already hold (a hook: the shuffled-label FT of the default run)."""
        return {}

    def run(self, pair: PairRun) -> tuple[ControlVerdict | None, dict[str, Any]]:
        """Run beside ``pair``'s draws: the verdict, and the entry of ``row["controls"]`` (values, layers, outcomes)."""
        result = self.measure(
            pair.model, pair.tokenizer, pair.tasks, pair.draws, batch_size=pair.batch_size, seed=pair.task.settings.seed,
            base_analysis=pair.analysis, ready=self.ready(pair),
        )  # fmt: skip
        verdict = self.judge(result.outcomes)
        entry = {
            "values": {v: a.values for v, a in result.analyses.items()},
            "layers": {v: a.layers for v, a in result.analyses.items()},
            "outcomes": [o.as_dict() for o in result.outcomes],
        }
        if verdict is not None:
            entry["verdict"] = verdict.as_dict()
        return verdict, entry


def get(name: str) -> Control:
    """The control named ``name``: ``CONTROL`` of the module ``pytest_icl.controls.<name>``."""
    catalogue.control(name)  # an unknown name fails here, naming the known ones
    return import_module(f"{__package__}.{name}").CONTROL


def run_control(name: str, model, tokenizer, tasks, draws, **options) -> ControlResult:
    """Run control ``name`` (one of :data:`RUNNABLE`) beside the real runs ``draws`` of ``tasks`` (or one of each).

    :meth:`Control.measure` with its keyword ``options`` (batch_size, seed, base_analysis,
    margin, n_boot, progress); ``base_analysis`` saves re-analysing the draws when the caller has it.
    """
    if name not in RUNNABLE:
        hint = f" ({catalogue.control(name).runs})" if name in CONTROLS else ""
        raise ValueError(f"run_control runs {', '.join(RUNNABLE)}; not {name!r}{hint}")
    return get(name).measure(model, tokenizer, tasks, draws, **options)


def derived_hash(task: IclTask, what: str) -> str:
    """The config hash of a task derived from ``task`` (other labels, another order): never a stale baseline's."""
    return hashlib.sha256(f"{task.config_hash}|{what}".encode()).hexdigest()[: max(16, len(task.config_hash))]
