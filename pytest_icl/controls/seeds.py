"""``seeds``: the analysis over S demonstration seeds, and how much the order moves ICL and FT (Deutch's 3 seeds, Shen definitions §12.2).

The real run is the first seed; ``PairRun.reload(seed)`` gives the task with the demonstrations
of each further seed. The item holds when each gated property of the catalogue holds on the
mean over seeds (metric − control ≥ margin); the row holds mean ± sd of every metric and the
order sensitivity (:func:`summarise_seeds`).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pytest_icl import catalogue
from pytest_icl.controls.base import Control, ControlVerdict, PairRun, derived_hash

if TYPE_CHECKING:
    from pytest_icl.analysis.aggregate import Analysis
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


def summarise_seeds(analyses: list[Analysis], records: list[Records] | None = None) -> dict:
    """Mean ± sd over S analyses of the same task (demonstration seeds or permutations), and order sensitivity.

    Returns ``{"runs": S, "metrics": {name: {"mean", "sd", "n", "values"}}, "order_sensitivity": {...}}``.
    sd is the sample standard deviation (S − 1), over the runs where the value is defined; NaN
    for fewer than two. ``order_sensitivity`` (Shen et al.: ICL's predictions depend on the
    demonstrations' order far more than GD's):

    * ``acc_sd``: per setting (zsl, icl, ft), the sd of accuracy across runs;
    * with ``records`` (the S runs' records, same eval examples in the same order, as with
      permutations of one demonstration set): ``prediction_flips`` — per setting, the share
      of eval examples whose prediction is not the same in every run; ``choice_prob_sd`` — per
      setting, the sd across runs of the probabilities over the answer choices, averaged over
      choices and examples; ``icl_over_ft`` — choice_prob_sd of ICL / FT. When the runs' gold
      labels differ (another seed picked other eval examples) these are NaN, ``aligned`` False.
    """
    if not analyses:
        raise ValueError("summarise_seeds needs at least one analysis")
    names = [k for k in analyses[0].values if all(k in a.values for a in analyses)]
    summary = {
        "runs": len(analyses),
        "metrics": {name: _mean_sd([a.values[name] for a in analyses]) for name in names},
    }
    sensitivity: dict = {
        "acc_sd": {s: _mean_sd([a.values.get(f"acc_{s}", math.nan) for a in analyses])["sd"] for s in ("zsl", "icl", "ft")}
    }
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
    """Not a check of one control run: S real runs, judged on the mean of each gated property."""

    def run(self, pair: PairRun) -> tuple[ControlVerdict, dict[str, Any]]:
        from pytest_icl.analysis.aggregate import analyse
        from pytest_icl.engine.runs import run_settings

        task = pair.task
        analyses, all_records, seed_list = [pair.analysis], [pair.records], [task.settings.seed]
        for offset in range(1, pair.seeds):
            seed = task.settings.seed + offset
            other_records = run_settings(pair.model, pair.tokenizer, pair.reload(seed), batch_size=pair.batch_size)
            analyses.append(analyse(other_records, seed=task.settings.seed))
            all_records.append(other_records)
            seed_list.append(seed)
        summary = summarise_seeds(analyses, all_records)
        lines, passed = [], True
        for prop in (p for p in catalogue.PROPERTIES if p.gated):
            differences = [a.values[prop.metric] - a.values[prop.control] for a in analyses]
            finite = [d for d in differences if not math.isnan(d)]
            mean = statistics.fmean(finite) if finite else math.nan
            sd = statistics.stdev(finite) if len(finite) > 1 else math.nan
            holds = not math.isnan(mean) and mean >= pair.margins[prop.name]
            passed &= holds
            lines.append(
                f"{prop.name} {prop.metric} − {prop.control} = {mean:+.4f} ± {sd:.4f} over {len(finite)} seed(s) "
                f"({'holds' if holds else 'does not hold'})"
            )
        sensitivity = summary["order_sensitivity"]
        flips = sensitivity.get("prediction_flips", {})
        if flips:
            lines.append(f"predictions that change with the demonstrations: ICL {flips['icl']:.2f}, FT {flips['ft']:.2f}")
        message = f"control seeds {'holds' if passed else 'does not hold'} on the mean over seeds {seed_list}: " + "; ".join(lines)
        entry = {
            "seeds": seed_list,
            "metrics": {k: {"mean": v["mean"], "sd": v["sd"]} for k, v in summary["metrics"].items()},
            "order_sensitivity": sensitivity,
        }
        return ControlVerdict(self.name, passed, message), entry


CONTROL = Seeds("seeds")
