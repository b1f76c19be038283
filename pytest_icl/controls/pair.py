"""The opt-in controls of one task × model pair (``--icl-controls``), run after its analysis.

:mod:`pytest_icl.controls.base` defines each control and runs it through the same pipeline as the
real run; this module runs the ones asked for, turns their outcomes into one verdict per
control item, and packs their numbers into the pair's row (``row["controls"]``), where the
table, the files and the HTML report read them.

* ``untrained``, ``shuffled``: every check of :data:`controls.CONTROL_CHECKS` with a verdict
  must hold (the real model beats both untrained variants; real FT beats shuffled-label FT).
* ``output``: FT's next-token distribution is closer to ICL's than ZSL's is (KL, top-10).
* ``lcgd``: run and reported beside GD, no verdict (another FT, not a control with a winner).
* ``seeds``: the analysis over S demonstration seeds; the item holds when each similarity
  property holds on the mean over seeds (metric − control ≥ margin), reported with ± sd.

Example::

    controls = run_pair_controls(("shuffled", "seeds"), lm, task, records, analysis, reload=..., margins=...)
    controls.check("shuffled").passed
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pytest_icl.analysis.properties import PROPERTIES, SIMILARITY_PROPERTIES

if TYPE_CHECKING:
    from pytest_icl.analysis.aggregate import Analysis
    from pytest_icl.engine.runs import Records
    from pytest_icl.tasks.loading import IclTask


@dataclass(frozen=True)
class ControlVerdict:
    name: str
    passed: bool
    message: str


@dataclass
class PairControls:
    verdicts: dict[str, ControlVerdict] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)  # JSON-simple: goes into the pair's row

    def check(self, name: str) -> ControlVerdict:
        if name not in self.verdicts:
            raise KeyError(f"control {name!r} did not run for this pair; add it to --icl-controls")
        return self.verdicts[name]


def run_pair_controls(
    names: tuple[str, ...],
    model,
    tokenizer,
    task: IclTask,
    records: Records,
    analysis: Analysis,
    *,
    seeds: int,
    margins: dict[str, float],
    reload: Callable[[int], IclTask],
    batch_size: int = 16,
) -> PairControls:
    """Run the controls in ``names``; ``reload(seed)`` gives the task with other demonstrations."""
    from pytest_icl.controls.base import RUNNABLE, check_control, run_control

    result = PairControls()
    for name in names:
        start = time.perf_counter()
        if name in RUNNABLE:
            control = run_control(
                name, model, tokenizer, task, records, batch_size=batch_size, seed=task.settings.seed, base_analysis=analysis
            )
            outcomes, variants = control.outcomes, {v: a.values for v, a in control.analyses.items()}
            layers = {v: a.layers for v, a in control.analyses.items()}
        elif name == "output":
            outcomes, variants, layers = check_control("output", analysis, {}), {}, {}
        else:  # seeds
            result.verdicts[name], result.row[name] = _seeds(model, tokenizer, task, records, analysis, seeds, margins, reload, batch_size)
            result.row[name]["seconds"] = round(time.perf_counter() - start, 3)
            continue
        result.row[name] = {
            "values": variants,
            "layers": layers,
            "outcomes": [
                {"claim": o.check.claim, "metric": o.check.metric, "variant": o.check.variant, "value": o.value,
                 "control": o.control, "passed": o.passed}
                for o in outcomes
            ],  # fmt: skip
            "seconds": round(time.perf_counter() - start, 3),
        }
        decided = [o for o in outcomes if o.passed is not None]
        if name != "lcgd":  # LCGD has no verdict: it is reported beside GD
            passed = bool(decided) and all(o.passed for o in decided)
            verdict = "holds" if passed else "does not hold"
            if not decided:
                verdict = "is undefined (no check had both numbers)"
            result.verdicts[name] = ControlVerdict(name, passed, f"control {name} {verdict}: " + "; ".join(o.message for o in outcomes))
    return result


def _seeds(model, tokenizer, task, records, analysis, count, margins, reload, batch_size):
    """The analysis over ``count`` demonstration seeds (the real run is the first), mean ± sd."""
    from pytest_icl.analysis.aggregate import analyse
    from pytest_icl.controls.base import summarise_seeds
    from pytest_icl.engine.runs import run_settings

    analyses, all_records, seed_list = [analysis], [records], [task.settings.seed]
    for offset in range(1, count):
        seed = task.settings.seed + offset
        other = reload(seed)
        other_records = run_settings(model, tokenizer, other, batch_size=batch_size)
        analyses.append(analyse(other_records, seed=task.settings.seed))
        all_records.append(other_records)
        seed_list.append(seed)
    summary = summarise_seeds(analyses, all_records)
    lines, passed = [], True
    for name in SIMILARITY_PROPERTIES:
        prop = PROPERTIES[name]
        differences = [a.values[prop.metric] - a.values[prop.control] for a in analyses]
        finite = [d for d in differences if not math.isnan(d)]
        mean = statistics.fmean(finite) if finite else math.nan
        sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
        holds = not math.isnan(mean) and mean >= margins[name]
        passed &= holds
        lines.append(f"{name} {prop.metric} − {prop.control} = {mean:+.4f} ± {sd:.4f} over {len(finite)} seed(s) ({'holds' if holds else 'does not hold'})")
    sensitivity = summary["order_sensitivity"]
    flips = sensitivity.get("prediction_flips", {})
    if flips:
        lines.append(f"predictions that change with the demonstrations: ICL {flips['icl']:.2f}, FT {flips['ft']:.2f}")
    message = f"control seeds {'holds' if passed else 'does not hold'} on the mean over seeds {seed_list}: " + "; ".join(lines)
    row = {"seeds": seed_list, "metrics": {k: {"mean": v["mean"], "sd": v["sd"]} for k, v in summary["metrics"].items()}, "order_sensitivity": sensitivity}
    return ControlVerdict("seeds", passed, message), row
