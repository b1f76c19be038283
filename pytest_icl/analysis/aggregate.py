"""From the three settings' records to every metric, its control, per-layer curve and interval.

Names of the numbers (the keys of :attr:`Analysis.values`, the columns of the report):

==========================  ==================================================================
``acc_zsl/acc_icl/acc_ft``  accuracy of each setting; ``majority_*`` the share of the most
                            frequent prediction (label bias)
``rec2ftp``                 Dai's Rec2FTP as a fraction (definitions §8.1)
``rec2ftp_chance``          P(ICL right | ZSL wrong): what Rec2FTP is without FT (definitions §12.4)
``ft_precision``            P(FT right | ICL corrected)
``simaou``                  normalise-then-subtract SimAOU, the official definition (definitions §8.2)
``simaou_random``           the official random baseline (U[0,1), not normalised)
``simaou_fair_random``      a zero-mean random FT update of the real update's size, through the
                            same normalise-then-subtract pipeline (Deutch's bias, definitions §12.1)
``simaou_unnormalised``     plain-difference SimAOU (Deutch)
``simam_before/after``      cos(ICL, ZSL) / cos(ICL, FT) of pre-softmax maps (definitions §8.3)
``simam_zsl_ft``            cos(ZSL, FT): how far FT moved the maps
``simam_delta``             cos(ICL − ZSL, FT − ZSL) (Deutch's SimAM∆)
``kendall/kendall_random``  token-level Kendall tau-b, ICL vs FT and ICL vs random (definitions §8.4)
``kl_icl_ft/kl_icl_zsl``    KL(ICL ‖ FT) and KL(ICL ‖ ZSL) of the next-token distributions at the
                            prompt's last token, in nats (Shen et al., definitions §12.2): FT moves the
                            output toward ICL's when the first is below the second
``top10_icl_ft/_icl_zsl``   share of ICL's 10 most likely next tokens that are also FT's / ZSL's
==========================  ==================================================================

Every similarity is averaged over eval examples per layer (``layers``), then over layers
(``values``), as the paper reports. The four output-distribution numbers exist only when the
records carry next-token log-probabilities (``SettingRecord.next_logprobs``); they have no
per-layer curve. Intervals are percentile bootstrap intervals over eval
examples, all drawn with the same resampled rows.

Departure from the official code: Kendall uses every eval example (the official script reads
the first 100), and all random baselines are seeded.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_icl.analysis import metrics, stats

if TYPE_CHECKING:
    from pytest_icl.engine.runs import Records


@dataclass
class Analysis:
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    layers: dict[str, list[float]]
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    # Filled by pytest_icl.analysis.draws (several demonstration draws); empty for one run.
    per_draw: dict[str, list[float]] = field(default_factory=dict)  # each value, draw by draw
    evidence: dict[str, list] = field(default_factory=dict)  # per-example values per draw, for the decisions
    gates: dict = field(default_factory=dict)  # name -> analysis.gates.Gate
    left_out_layers: tuple[int, ...] = ()  # rounding-noise layers left out of SimAM∆


def analyse(records: Records, *, seed: int = 0, n_boot: int = 1000) -> Analysis:
    import torch

    zsl, icl, ft = records.zsl, records.icl, records.ft
    g = torch.Generator().manual_seed(seed)
    per_example = similarities_per_example(records, g)
    layers = {name: [float(v) for v in stats.layer_curve(matrix)] for name, matrix in per_example.items()}
    per_example.update(output_distributions(zsl, icl, ft))
    values = {name: stats.overall(matrix) for name, matrix in per_example.items()}
    intervals = {name: stats.bootstrap_ci(matrix, n_boot=n_boot, seed=seed) for name, matrix in per_example.items()}

    outcomes = {
        "acc_zsl": lambda idx: metrics.accuracy(zsl.correct[idx]),
        "acc_icl": lambda idx: metrics.accuracy(icl.correct[idx]),
        "acc_ft": lambda idx: metrics.accuracy(ft.correct[idx]),
        "rec2ftp": lambda idx: metrics.rec2ftp(zsl.correct[idx], icl.correct[idx], ft.correct[idx]),
        "rec2ftp_chance": lambda idx: metrics.rec2ftp_chance(zsl.correct[idx], icl.correct[idx]),
        "ft_precision": lambda idx: metrics.ft_precision(zsl.correct[idx], icl.correct[idx], ft.correct[idx]),
    }
    n = len(records.gold)
    everything = torch.arange(n)
    for name, statistic in outcomes.items():
        values[name] = statistic(everything)
        intervals[name] = stats.bootstrap_ci_fn(statistic, n, n_boot=n_boot, seed=seed)
    for setting, record in (("zsl", zsl), ("icl", icl), ("ft", ft)):
        values[f"majority_{setting}"] = metrics.majority_fraction(record.predictions)

    zsl_wrong = ~zsl.correct
    counts = {
        "eval": n,
        "shots": len(records.ft_losses),
        "training_tokens": records.num_training_tokens,
        "prompt_tokens": records.prompt_tokens,
        "zsl_wrong": int(zsl_wrong.sum()),
        "ft_fixed": int((zsl_wrong & ft.correct).sum()),  # Rec2FTP's denominator
        "icl_fixed": int((zsl_wrong & icl.correct).sum()),
        "predictions_changed_by_ft": int((ft.predictions != zsl.predictions).sum()),
    }
    values = {k: (float(v) if v is not None else math.nan) for k, v in values.items()}
    intervals = {k: (float(lo), float(hi)) for k, (lo, hi) in intervals.items()}
    return Analysis(values=values, intervals=intervals, layers=layers, counts=counts, timings=dict(records.timings))


def similarities_per_example(records: Records, g, only: Collection[str] | None = None) -> dict:
    """Every per-layer similarity of one run and its random controls, per example: name -> ``[n, L]``.

    ``g`` (a seeded ``torch.Generator``) draws the random baselines; it is advanced in a fixed
    order, so the same seed gives the same baselines. ``only``: compute just these (a control
    run needs its similarities, not another set of random baselines).
    """
    zsl, icl, ft = records.zsl, records.icl, records.ft
    aligned = records.ft_aligned
    metrics_of = {
        "simaou": lambda: metrics.simaou_per_example(zsl.outputs, icl.outputs, ft.outputs),
        "simaou_random": lambda: metrics.random_simaou_per_example(zsl.outputs, icl.outputs, g),
        "simaou_fair_random": lambda: metrics.fair_random_simaou_per_example(zsl.outputs, icl.outputs, ft.outputs, g),
        "simaou_unnormalised": lambda: metrics.simaou_per_example(zsl.outputs, icl.outputs, ft.outputs, normalize=False),
        "simam_before": lambda: metrics.simam_per_example(icl.eval_scores, zsl.eval_scores),
        "simam_after": lambda: metrics.simam_per_example(icl.eval_scores, ft.eval_scores),
        "simam_zsl_ft": lambda: metrics.simam_per_example(zsl.eval_scores, ft.eval_scores),
        "simam_delta": lambda: metrics.simam_delta_per_example(zsl.eval_scores, icl.eval_scores, ft.eval_scores),
        "kendall": lambda: _kendall(icl.context_scores, records.ft_train_queries, ft.queries, aligned),
        "kendall_random": lambda: metrics.random_kendall_per_example(icl.context_scores, g),
    }
    return {name: compute() for name, compute in metrics_of.items() if only is None or name in only}  # in this order: g's


def output_distributions(zsl, icl, ft) -> dict:
    """Per-example KL and top-10 overlap between next-token distributions, when all three have them."""
    logps = [getattr(record, "next_logprobs", None) for record in (zsl, icl, ft)]
    if any(logp is None for logp in logps):
        return {}
    zsl_logp, icl_logp, ft_logp = logps
    k = min(10, icl_logp.shape[-1])
    return {
        "kl_icl_ft": stats.kl_divergence(icl_logp, ft_logp),
        "kl_icl_zsl": stats.kl_divergence(icl_logp, zsl_logp),
        "top10_icl_ft": stats.topk_overlap(icl_logp, ft_logp, k=k),
        "top10_icl_zsl": stats.topk_overlap(icl_logp, zsl_logp, k=k),
    }


def _kendall(icl_ctx_scores, ft_train_queries, ft_eval_queries, aligned: bool = True):
    """Kendall(ICL, FT) per example; NaN when FT trained on other tokens than ICL's demonstrations.

    That happens in the shuffled-label control when the labels tokenise to different lengths:
    token t of FT's training data is then not ICL's demonstration token t, and ranking them
    against each other would mean nothing. A permutation of labels keeps the total length, so
    the shapes alone cannot tell: ``aligned`` compares each demonstration's length.
    """
    import torch

    if not aligned or icl_ctx_scores.shape[-1] != ft_train_queries.shape[1]:
        return torch.full(icl_ctx_scores.shape[:2], float("nan"), dtype=torch.float64)
    return metrics.kendall_per_example(icl_ctx_scores, ft_train_queries, ft_eval_queries)
