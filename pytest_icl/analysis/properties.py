"""The properties a test asserts: each metric against its control, by a margin.

Dai et al.'s claims, each made testable by comparing with the control the paper lacked
(definitions §12.4):

* ``accuracy`` — ICL accuracy exceeds zero-shot accuracy (there is an ICL effect to explain);
* ``rec2ftp`` — of the ZSL errors FT fixes, ICL fixes more than it fixes of ZSL errors overall
  (Rec2FTP above its chance level P(ICL right | ZSL wrong));
* ``simaou`` — ICL's and FT's attention-output updates agree more than a zero-mean random FT
  update of the same size sent through the same normalise-then-subtract pipeline;
* ``simam`` — ICL's attention maps are closer to FT's than to ZSL's (after > before);
* ``kendall`` — ICL's attention to demonstration tokens ranks them like FT's query similarity
  does, more than a random ranking.

Each property is a row of :data:`pytest_icl.catalogue.PROPERTIES` (metric, control, claim,
default margin, support, gated). Margins come from (in order) ``--icl-threshold NAME=VALUE``,
the task YAML's ``icl.thresholds``, then the row's margin (``DEFAULT_MARGINS``).

Example::

    check = check_property("simaou", analysis.values, margin=0.02)
    check.passed, check.message
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_icl import catalogue
from pytest_icl.catalogue import Property  # noqa: F401 - re-exported: PropertyCheck.property is one

# The tables are the catalogue's rows (pytest_icl.catalogue.PROPERTIES); these are the views the
# plugin and the controls ask for.
PROPERTIES: dict[str, Property] = {p.name: p for p in catalogue.PROPERTIES}

# The properties about ICL *resembling* FT: inconclusive, with the accuracy gate on, for a pair
# where ICL does not beat zero-shot.
SIMILARITY_PROPERTIES = tuple(p.name for p in catalogue.PROPERTIES if p.gated)

# Opt-in control items (--icl-controls) that pass or fail; LCGD is reported without a verdict.
CONTROL_PROPERTIES = catalogue.control_properties()

DEFAULT_MARGINS: dict[str, float] = {p.name: p.margin for p in catalogue.PROPERTIES}


@dataclass(frozen=True)
class PropertyCheck:
    property: Property
    value: float
    control: float
    margin: float
    interval: tuple[float, float] | None = None
    support: int | None = None  # examples the metric averages over, where that is few (Rec2FTP's |D|)

    @property
    def passed(self) -> bool:
        return not math.isnan(self.value) and not math.isnan(self.control) and self.value - self.control >= self.margin

    @property
    def message(self) -> str:
        p = self.property
        interval = f" (95% CI {self.interval[0]:.3f}…{self.interval[1]:.3f})" if self.interval else ""
        verdict = "holds" if self.passed else "does not hold"
        head = (
            f"{p.claim}: {verdict}. {p.metric} = {self.value:.4f}{interval}, control {p.control} = {self.control:.4f}, "
            f"difference {self.value - self.control:+.4f}, required ≥ {self.margin:+.4f}"
        )
        if math.isnan(self.value):
            head += f". {p.metric} is undefined" + (f": {p.support.when_none}" if p.support else "")
        elif self.support is not None:
            head += f"; {p.metric} is over {self.support} example(s) ({p.support.subset})"
        return head


def parse_margin(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` from the command line (``--icl-threshold simaou=0.05``)."""
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in PROPERTIES:
        raise ValueError(f"NAME=VALUE with NAME one of {', '.join(PROPERTIES)}")
    try:
        return name, float(value)
    except ValueError:
        raise ValueError(f"NAME=VALUE with a number as VALUE ({value!r} is not a number)") from None


def margins_for(task_thresholds: dict[str, float], cli: dict[str, float]) -> dict[str, float]:
    unknown = set(task_thresholds) - set(PROPERTIES)
    if unknown:
        raise ValueError(f"unknown threshold name(s) {sorted(unknown)} in the task's icl.thresholds; known: {', '.join(PROPERTIES)}")
    return {**DEFAULT_MARGINS, **{k: float(v) for k, v in task_thresholds.items()}, **cli}


def check_property(
    name: str, values: dict[str, float], intervals: dict | None = None, *, margin: float, counts: dict[str, int] | None = None
) -> PropertyCheck:
    p = PROPERTIES[name]
    interval = (intervals or {}).get(p.metric)
    support = (counts or {}).get(p.support.count) if p.support else None
    return PropertyCheck(p, values[p.metric], values[p.control], margin, tuple(interval) if interval else None, support)
