"""The properties a test asserts: each metric against its control, by a margin.

Dai et al.'s claims, each made testable by comparing with the control the paper lacked
(spec §12.4):

* ``accuracy`` — ICL accuracy exceeds zero-shot accuracy (there is an ICL effect to explain);
* ``rec2ftp`` — of the ZSL errors FT fixes, ICL fixes more than it fixes of ZSL errors overall
  (Rec2FTP above its chance level P(ICL right | ZSL wrong));
* ``simaou`` — ICL's and FT's attention-output updates agree more than a zero-mean random FT
  update of the same size sent through the same normalise-then-subtract pipeline;
* ``simam`` — ICL's attention maps are closer to FT's than to ZSL's (after > before);
* ``kendall`` — ICL's attention to demonstration tokens ranks them like FT's query similarity
  does, more than a random ranking.

Margins come from (in order) ``--icl-threshold NAME=VALUE``, the task YAML's
``icl.thresholds``, then ``DEFAULT_MARGINS``.

Example::

    check = check_property("simaou", analysis.values, margin=0.02)
    check.passed, check.message
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Property:
    name: str
    metric: str
    control: str
    claim: str


PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property("accuracy", "acc_icl", "acc_zsl", "ICL accuracy above zero-shot accuracy"),
        Property("rec2ftp", "rec2ftp", "rec2ftp_chance", "Rec2FTP above its chance level P(ICL right | ZSL wrong)"),
        Property("simaou", "simaou", "simaou_fair_random", "SimAOU above the fair random-update SimAOU"),
        Property("simam", "simam_after", "simam_before", "SimAM after FT above SimAM before FT"),
        Property("kendall", "kendall", "kendall_random", "Kendall(ICL, FT) above Kendall(ICL, random)"),
    )
}

# The properties about ICL *resembling* FT. With the accuracy gate on (the default) they are
# inconclusive for a pair where ICL does not beat zero-shot: there is no ICL effect to explain.
SIMILARITY_PROPERTIES = ("rec2ftp", "simaou", "simam", "kendall")

# Opt-in control items (--icl-controls): see pytest_icl.controls.base for what each compares. LCGD is
# run and reported beside GD (table, files, HTML) but has no verdict: it is another FT, not a
# control with an expected winner (spec §12.1.4).
CONTROL_PROPERTIES = ("untrained", "shuffled", "seeds", "output")

# Margins: the metric must exceed its control by at least this much. Accuracy asks for a
# visible ICL effect; the similarity margins are zero so that the bootstrap intervals in the
# report, not an arbitrary constant, say how clear a win is.
DEFAULT_MARGINS: dict[str, float] = {"accuracy": 0.05, "rec2ftp": 0.0, "simaou": 0.0, "simam": 0.0, "kendall": 0.0}


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
            head += f". {p.metric} is undefined" + (
                ": FT fixed none of the zero-shot errors (try another --icl-lr or more shots)" if p.name == "rec2ftp" else ""
            )
        elif self.support is not None:
            head += f"; {p.metric} is over {self.support} example(s) ({_SUPPORT[p.name][1]})"
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


# Where a metric is a ratio over a subset of the eval examples: the count (a key of the
# analysis' counts) that says how much to trust it, and what that subset is.
_SUPPORT = {"rec2ftp": ("ft_fixed", "zero-shot wrong, FT right")}


def check_property(
    name: str, values: dict[str, float], intervals: dict | None = None, *, margin: float, counts: dict[str, int] | None = None
) -> PropertyCheck:
    p = PROPERTIES[name]
    interval = (intervals or {}).get(p.metric)
    support = (counts or {}).get(_SUPPORT[name][0]) if name in _SUPPORT else None
    return PropertyCheck(p, values[p.metric], values[p.control], margin, tuple(interval) if interval else None, support)
