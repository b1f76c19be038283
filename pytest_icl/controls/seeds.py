"""``seeds``: the claim across demonstration seeds, and how much they move ICL and FT (Deutch's 3 seeds, Shen definitions §12.2).

Every pair already runs S demonstration draws (``--icl-seeds``; draw s uses the task's seed +
s), so this control runs nothing: the item holds when every gated property of the catalogue
*passed* over those draws by the interval rule, fails when one failed, and is undecided when
the rest cannot tell; it is inconclusive with a single draw. The row holds mean ± sd of every
metric over the draws and the order sensitivity (:func:`summarise_seeds`).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pytest_icl import catalogue
from pytest_icl.analysis.decision import FAILED, PASSED, UNDECIDED, combine_outcomes
from pytest_icl.controls.base import INCONCLUSIVE, Control, ControlVerdict, PairRun, derived_hash

if TYPE_CHECKING:
    from pytest_icl.engine.runs import Records
    from pytest_icl.tasks.loading import IclTask


def permuted_task(task: IclTask, seed: int) -> IclTask:
    """``task`` with its demonstrations in another (seeded) order, for ICL and FT alike (Shen's order sensitivity)."""
    demos = list(task.demonstrations)
    random.Random(seed).shuffle(demos)
    return replace(task, demonstrations=tuple(demos), config_hash=derived_hash(task, f"permuted:{seed}"))


def _mean_sd(values: list[float]) -> dict:
    finite = [v for v in values if not math.isnan(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return {"mean": mean, "sd": sd, "n": len(finite), "values": list(values)}


def summarise_seeds(per_draw: dict[str, list[float]], records: list[Records] | None = None) -> dict:
    """Mean ± sd over S draws of the same task (demonstration seeds or permutations), and order sensitivity.

    ``per_draw``: each metric's value per draw (``Analysis.per_draw``). Returns ``{"runs": S,
    "metrics": {name: {"mean", "sd", "n", "values"}}, "order_sensitivity": {...}}``. sd is the
    sample standard deviation (S − 1), over the draws where the value is defined; NaN for fewer
    than two. ``order_sensitivity`` (Shen et al.: ICL's predictions depend on the
    demonstrations far more than GD's):

    * ``acc_sd``: per setting (zsl, icl, ft), the sd of accuracy across draws;
    * with ``records`` (the S draws' records, same eval examples in the same order):
      ``prediction_flips`` — per setting, the share of eval examples whose prediction is not the
      same in every draw; ``choice_prob_sd`` — per setting, the sd across draws of the
      probabilities over the answer choices, averaged over choices and examples;
      ``icl_over_ft`` — choice_prob_sd of ICL / FT. When the draws' gold labels differ (other
      eval examples) these are NaN, ``aligned`` False.
    """
    if not per_draw:
        raise ValueError("summarise_seeds needs the values of at least one draw")
    runs = max(len(values) for values in per_draw.values())
    summary = {"runs": runs, "metrics": {name: _mean_sd(list(values)) for name, values in per_draw.items()}}
    nan = [math.nan]
    sensitivity: dict = {"acc_sd": {s: _mean_sd(per_draw.get(f"acc_{s}", nan))["sd"] for s in ("zsl", "icl", "ft")}}
    if records is not None:
        sensitivity.update(_prediction_spread(records))
    summary["order_sensitivity"] = sensitivity
    return summary


def _prediction_spread(records: list[Records]) -> dict:
    import torch

    settings = ("zsl", "icl", "ft")
    aligned = len(records) > 1 and all(torch.equal(r.gold, records[0].gold) for r in records)
    if not aligned:
        nan = {s: math.nan for s in settings}
        return {"aligned": False, "prediction_flips": nan, "choice_prob_sd": dict(nan), "icl_over_ft": math.nan}
    flips, prob_sd = {}, {}
    for s in settings:
        predictions = torch.stack([getattr(r, s).predictions for r in records])  # [S, n]
        flips[s] = float((predictions != predictions[0]).any(dim=0).double().mean())
        logprobs = torch.stack([getattr(r, s).logprobs.double() for r in records])  # [S, n, choices], -inf pads
        spread = logprobs.softmax(-1).std(dim=0)  # [n, choices]
        prob_sd[s] = float(spread[torch.isfinite(logprobs[0])].mean())  # over each example's real choices
    ratio = prob_sd["icl"] / prob_sd["ft"] if prob_sd["ft"] > 0 else (math.nan if prob_sd["icl"] == 0 else math.inf)
    return {"aligned": True, "prediction_flips": flips, "choice_prob_sd": prob_sd, "icl_over_ft": ratio}


class Seeds(Control):
    """Not a check of a control run: the pair's own draws, judged on the gated properties' verdicts over them."""

    def run(self, pair: PairRun) -> tuple[ControlVerdict, dict[str, Any]]:
        seed_list = [task.settings.seed for task in pair.tasks]
        summary = summarise_seeds(pair.analysis.per_draw, list(pair.draws))
        lines, decided = [], []
        for prop in (p for p in catalogue.PROPERTIES if p.gated):
            verdict = pair.verdicts.get(prop.name)
            if verdict is None:
                continue
            low, high = verdict.interval
            lines.append(f"{prop.name} {verdict.outcome} ({prop.metric} − {prop.control} {verdict.estimate:+.4f}, "
                         f"95% CI {low:+.4f}…{high:+.4f})")  # fmt: skip
            if verdict.outcome in (PASSED, FAILED, UNDECIDED):
                decided.append(verdict.outcome)
        if len(pair.draws) < 2:
            outcome, head = INCONCLUSIVE, "is inconclusive with one demonstration draw (run with --icl-seeds 2 or more)"
        elif not decided:
            outcome, head = INCONCLUSIVE, "is inconclusive (no gated property could be decided)"
        else:
            outcome = combine_outcomes(decided)
            head = {PASSED: "holds", FAILED: "does not hold", UNDECIDED: "is undecided"}[outcome]
        flips = summary["order_sensitivity"].get("prediction_flips", {})
        if flips:
            lines.append(f"predictions that change with the demonstrations: ICL {flips['icl']:.2f}, FT {flips['ft']:.2f}")
        message = f"control seeds {head} over demonstration seeds {seed_list}: " + "; ".join(lines)
        verdict = ControlVerdict(self.name, outcome, message)
        entry = {
            "seeds": seed_list,
            "metrics": {k: {"mean": v["mean"], "sd": v["sd"]} for k, v in summary["metrics"].items()},
            "order_sensitivity": summary["order_sensitivity"],
            "verdict": verdict.as_dict(),
        }
        return verdict, entry


CONTROL = Seeds("seeds")
