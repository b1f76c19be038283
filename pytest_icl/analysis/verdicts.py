"""Each property's verdict over several draws: passed, failed, undecided or inconclusive.

A property (a row of :data:`pytest_icl.catalogue.PROPERTIES`) claims ``metric − control >
margin``. It is decided by :func:`pytest_icl.analysis.decision.decide` on the paired
difference, with a hierarchical bootstrap over draws and eval examples:

* **passed**: the whole 95 % interval of the difference lies above the margin;
* **failed**: the whole interval lies below it;
* **undecided**: the interval contains the margin — the evidence cannot tell (never a pass);
* **inconclusive**: a gate is closed, so the comparison would mean nothing. A similarity
  between ICL and FT needs an ICL effect (ICL beats zero-shot and the constant predictor, and
  does not answer one class for nearly everything) and an FT that learned (beats zero-shot or
  fixes enough zero-shot errors); Rec2FTP needs enough examples in its denominator in every
  draw; SimAM∆ needs a layer that is not rounding noise.

A similarity property with ``beats_shuffled`` is compared twice, with its random control and
with the same metric computed on shuffled-label FT; it passes only when both comparisons pass,
fails when either fails, and is undecided otherwise. Without a shuffled-label run (the control
switched off) only the first comparison decides, and the verdict says so.

Example::

    verdicts = decide_properties(analysis, margins={"simaou": 0.0, ...})
    verdicts["simaou"].outcome, verdicts["simaou"].message
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_icl import catalogue
from pytest_icl.analysis.decision import FAILED, PASSED, UNDECIDED, Decision, combine_outcomes, decide
from pytest_icl.analysis.draws import SHUFFLED

INCONCLUSIVE = "inconclusive"
OUTCOMES = (PASSED, FAILED, UNDECIDED, INCONCLUSIVE)


@dataclass(frozen=True)
class Comparison:
    """One decided difference: the metric against one control."""

    control: str
    decision: Decision

    def as_dict(self) -> dict:
        low, high = self.decision.interval
        return {"control": self.control, "outcome": self.decision.outcome, "estimate": _num(self.decision.estimate),
                "low": _num(low), "high": _num(high)}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """A property's outcome, its evidence (estimate and interval of metric − control) and why."""

    property: catalogue.Property
    outcome: str
    margin: float
    comparisons: tuple[Comparison, ...]
    reason: str
    draws: int
    support: int | None = None

    @property
    def name(self) -> str:
        return self.property.name

    @property
    def estimate(self) -> float:
        return self.comparisons[0].decision.estimate if self.comparisons else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return self.comparisons[0].decision.interval if self.comparisons else (math.nan, math.nan)

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def message(self) -> str:
        return message_of(self.property, self.as_dict())

    def as_dict(self) -> dict:
        low, high = self.interval
        return {
            "outcome": self.outcome, "estimate": _num(self.estimate), "low": _num(low), "high": _num(high),
            "margin": self.margin, "draws": self.draws, "support": self.support, "reason": self.reason,
            "comparisons": [c.as_dict() for c in self.comparisons],
        }  # fmt: skip


def message_of(p: catalogue.Property, verdict: dict) -> str:
    """A verdict's one-line message from its :meth:`Verdict.as_dict` form (a stored verdict reads the same)."""

    def num(x) -> float:
        return math.nan if x is None else float(x)

    parts = [f"{p.claim}: {verdict['outcome']}"]
    for c in verdict.get("comparisons") or ():
        parts.append(
            f"{p.metric} − {c['control']} = {num(c.get('estimate')):+.4f} (95% CI {num(c.get('low')):+.4f}…"
            f"{num(c.get('high')):+.4f}, margin {num(verdict.get('margin')):+.4f}: {c.get('outcome')})"
        )
    draws = int(verdict.get("draws") or 1)
    text = "; ".join(parts) + f" over {draws} draw(s)"
    if draws == 1:
        text += " (a single draw: the interval covers the eval examples only)"
    if verdict.get("support") is not None and p.support is not None:
        text += f"; {p.metric} rests on {verdict['support']} example(s) per draw at least ({p.support.subset})"
    return text + (f". {verdict['reason']}" if verdict.get("reason") else "")


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _gates_for(p: catalogue.Property, analysis) -> list:
    if not p.gated:
        return []
    names = ["icl_effect", "ft_learned"]
    if p.support is not None:
        names.append("rec2ftp_support")
    if p.metric.startswith("simam_delta"):
        names.append("noise_layers")
    return [analysis.gates[n] for n in names if n in analysis.gates]


def decide_property(
    name: str, analysis, *, margin: float | None = None, gates_on: bool = True, n_boot: int = 2000, seed: int = 0
) -> Verdict:
    """The verdict of property ``name`` on an analysis from :func:`pytest_icl.analysis.draws.analyse_draws`."""
    p = catalogue.prop(name)
    margin = p.margin if margin is None else float(margin)
    evidence = analysis.evidence
    draws = int(analysis.counts.get("draws", 1))
    support = analysis.counts.get(p.support.count) if p.support else None
    closed = [g for g in _gates_for(p, analysis) if not g.open]

    def compare(control: str) -> Comparison:
        return Comparison(control, decide(evidence[p.metric], evidence[control], margin=margin, n_boot=n_boot, seed=seed))

    comparisons = [compare(p.control)]
    notes = []
    unmeasurable = None  # a comparison the claim needs that cannot be made here
    if p.beats_shuffled:
        if p.metric + SHUFFLED in evidence:
            shuffled = compare(p.metric + SHUFFLED)
            if math.isnan(shuffled.decision.estimate):
                unmeasurable = (f"the shuffled-label control of {p.metric} is undefined here (a shuffled label tokenises "
                                "to another length, so FT's training tokens are not ICL's demonstration tokens)")  # fmt: skip
            comparisons.append(shuffled)
        else:
            notes.append("decided without the shuffled-label control (switched off)")
    if closed and gates_on:
        reason = "Inconclusive: " + "; ".join(str(g.reason) for g in closed)
        return Verdict(p, INCONCLUSIVE, margin, tuple(comparisons), _join(reason, [*notes, *([unmeasurable] if unmeasurable else [])]),
                       draws, support)  # fmt: skip
    outcomes = [c.decision.outcome for c in comparisons if not math.isnan(c.decision.estimate)]
    outcome = combine_outcomes(outcomes) if outcomes else UNDECIDED
    if unmeasurable and outcome != FAILED:  # a control that cannot be computed is neither beaten nor refuted: no draw will tell
        return Verdict(p, INCONCLUSIVE, margin, tuple(comparisons), _join("Inconclusive: " + unmeasurable, notes), draws, support)
    if outcome == UNDECIDED:
        notes.insert(0, "the 95% interval contains the margin: more draws (--icl-seeds) or eval examples may decide it")
    return Verdict(p, outcome, margin, tuple(comparisons), _join("", notes), draws, support)


def _join(head: str, notes: list[str]) -> str:
    text = ". ".join(x for x in [head, *(n[0].upper() + n[1:] for n in notes)] if x)
    return text


def decide_properties(analysis, margins: dict[str, float], *, gates_on: bool = True, n_boot: int = 2000, seed: int = 0) -> dict:
    """Every catalogue property's verdict (``margins``: name -> margin, as ``properties.margins_for`` gives)."""
    return {
        p.name: decide_property(p.name, analysis, margin=margins.get(p.name), gates_on=gates_on, n_boot=n_boot, seed=seed)
        for p in catalogue.PROPERTIES
    }
