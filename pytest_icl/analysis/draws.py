"""One pair over several demonstration draws: per-draw values, intervals, gates and noise layers.

A single draw of k demonstrations decides nothing: removing a few rows from the pool moves ICL
accuracy by tenths. So a pair runs ZSL once (it sees no demonstration) and ICL and FT once per
draw, every draw on the same eval examples, and optionally FT on the draw's demonstrations with
shuffled labels (the default control: it shows whether FT's resemblance to ICL comes from
learning the demonstrations' mapping or only from moving toward the label words).

What this module returns is an :class:`~pytest_icl.analysis.aggregate.Analysis` whose

* ``values`` are means over draws of the paper's aggregation (examples, then layers), so one
  draw gives exactly the single-run numbers;
* ``intervals`` are hierarchical bootstrap intervals (resample draws, then examples;
  :mod:`.decision`);
* ``evidence`` keeps every per-example value per draw, which :mod:`.verdicts` decides on;
* ``gates`` say whether a similarity between ICL and FT can mean anything here (:mod:`.gates`);
* ``left_out_layers`` are the layers where ICL's scores to the query equal ZSL's to rounding:
  SimAM∆ and its shuffled control average over the other layers only.

Metrics computed with the shuffled-label FT in place of FT carry the suffix ``_shuffled``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pytest_icl.analysis import decision, gates, metrics, stats
from pytest_icl.analysis.aggregate import Analysis, output_distributions, similarities_per_example

if TYPE_CHECKING:
    from pytest_icl.engine.runs import Records

SHUFFLED = "_shuffled"
# The similarities recomputed with the shuffled-label FT: what each similarity property must beat too.
SHUFFLED_METRICS = ("simaou", "simam_after", "simam_delta", "kendall")


def _mean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def _ratio_value(ratio: decision.Ratio) -> float:
    den = float(ratio.den.sum())
    return float(ratio.num.sum()) / den if den else math.nan


def analyse_draws(
    draws: Sequence[Records],
    *,
    shuffled: Sequence[Records] | None = None,
    seed: int = 0,
    n_boot: int = 2000,
    rel_tol: float = gates.DEFAULT_REL_TOL,
    min_fixes: int = 10,
    min_support: int = 10,
) -> Analysis:
    """Analyse S draws of one pair (``draws[s]`` holds ZSL, draw s's ICL and FT on one eval set).

    ``shuffled[s]``: the same draw with FT trained on shuffled labels (its ZSL and ICL are draw
    s's). Draw s's random baselines use seed ``seed + s``, so the draws are independent replicates.
    """
    import torch

    if not draws:
        raise ValueError("analyse_draws: no draws")
    if shuffled is not None and len(shuffled) != len(draws):
        raise ValueError("analyse_draws: one shuffled-label run per draw")
    gold = draws[0].gold
    for records in draws[1:]:
        if not torch.equal(records.gold, gold) or not torch.equal(records.zsl.correct, draws[0].zsl.correct):
            raise ValueError("analyse_draws: every draw must score the same eval examples with one ZSL run")
    zsl = draws[0].zsl

    layer_filter = gates.noise_layers_from_scores(zsl.eval_scores, [r.icl.eval_scores for r in draws], rel_tol=rel_tol)
    evidence: dict[str, list] = {}
    curves: dict[str, list[list[float]]] = {}

    def add(name: str, per_example) -> None:
        evidence.setdefault(name, []).append(per_example)

    for s, records in enumerate(draws):
        g = torch.Generator().manual_seed(seed + s)
        for name, matrix in similarities_per_example(records, g).items():
            curves.setdefault(name, []).append([float(v) for v in stats.layer_curve(matrix)])
            add(name, layer_filter.apply(matrix) if name == "simam_delta" else matrix)
        for name, per_example in output_distributions(records.zsl, records.icl, records.ft).items():
            add(name, per_example)
        add("acc_zsl", zsl.correct.double())
        add("acc_icl", records.icl.correct.double())
        add("acc_ft", records.ft.correct.double())
        add("rec2ftp", decision.rec2ftp_ratio(zsl.correct, records.icl.correct, records.ft.correct))
        add("rec2ftp_chance", decision.rec2ftp_chance_ratio(zsl.correct, records.icl.correct))
        add("ft_precision", decision.ft_precision_ratio(zsl.correct, records.icl.correct, records.ft.correct))
        if shuffled is not None:
            control = shuffled[s]
            g = torch.Generator().manual_seed(seed + s)
            for name, matrix in similarities_per_example(control, g, only=SHUFFLED_METRICS).items():
                curves.setdefault(name + SHUFFLED, []).append([float(v) for v in stats.layer_curve(matrix)])
                add(name + SHUFFLED, layer_filter.apply(matrix) if name == "simam_delta" else matrix)
            for name, per_example in output_distributions(control.zsl, control.icl, control.ft).items():
                if name.endswith("_icl_ft"):
                    add(name + SHUFFLED, per_example)
            add("acc_ft" + SHUFFLED, control.ft.correct.double())

    values, per_draw, intervals = {}, {}, {}
    for name, items in evidence.items():
        draw_values = [_ratio_value(x) if isinstance(x, decision.Ratio) else stats.overall(x) for x in items]
        per_draw[name] = [float(v) if v is not None else math.nan for v in draw_values]
        values[name] = _mean(per_draw[name])
        boot = decision.bootstrap_difference(items, n_boot=n_boot, seed=seed)
        intervals[name] = (float(boot.low), float(boot.high))
    for setting in ("zsl", "icl", "ft"):
        values[f"majority_{setting}"] = _mean([_majority(getattr(r, setting).predictions) for r in draws])
    layers = {name: _mean_curve(rows) for name, rows in curves.items()}
    for name in ("simam_delta", "simam_delta" + SHUFFLED):
        if name in layers:
            layers[name] = [math.nan if i in layer_filter.left_out else v for i, v in enumerate(layers[name])]

    icl_correct = [r.icl.correct for r in draws]
    ft_correct = [r.ft.correct for r in draws]
    pair_gates = {
        "icl_effect": gates.combine(
            gates.icl_beats_zsl(icl_correct, zsl.correct, n_boot=n_boot, seed=seed),
            gates.icl_beats_constant(icl_correct, gold, n_boot=n_boot, seed=seed),
            gates.not_single_class([r.icl.predictions for r in draws], gold=gold),
            name="icl_effect",
        ),
        "ft_learned": gates.ft_learned(ft_correct, zsl.correct, min_fixes=min_fixes, n_boot=n_boot, seed=seed),
        "rec2ftp_support": gates.rec2ftp_support(zsl.correct, ft_correct, minimum=min_support),
        "noise_layers": layer_filter.gate,
    }
    zsl_wrong = ~zsl.correct
    counts = {
        "eval": len(gold),
        "draws": len(draws),
        "shots": len(draws[0].ft_losses),
        "training_tokens": draws[0].num_training_tokens,
        "prompt_tokens": max(r.prompt_tokens for r in draws),
        "zsl_wrong": int(zsl_wrong.sum()),
        # Per draw the fewest: Rec2FTP's support rule asks for enough examples in every draw.
        "ft_fixed": min(int((zsl_wrong & r.ft.correct).sum()) for r in draws),
        "icl_fixed": min(int((zsl_wrong & r.icl.correct).sum()) for r in draws),
        "predictions_changed_by_ft": min(int((r.ft.predictions != zsl.predictions).sum()) for r in draws),
    }
    timings: dict[str, float] = {}
    for records in [*draws, *(shuffled or ())]:
        for stage, seconds in records.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    return Analysis(
        values=values, intervals=intervals, layers=layers, counts=counts, timings=timings,
        per_draw=per_draw, evidence=evidence, gates=pair_gates, left_out_layers=layer_filter.left_out,
    )  # fmt: skip


def _majority(predictions) -> float:
    return float(metrics.majority_fraction(predictions))


def _mean_curve(rows: list[list[float]]) -> list[float]:
    return [_mean([row[i] for row in rows]) for i in range(len(rows[0]))]
