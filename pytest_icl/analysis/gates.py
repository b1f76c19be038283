"""Gates: the conditions under which a similarity between ICL and FT means anything.

Pure functions on tensors: no model, no I/O, no pytest, no engine import. Every gate returns a
:class:`Gate` with ``open`` and a printable ``reason`` that names the numbers it was decided on.
A closed gate makes the items behind it *inconclusive* (neither passed nor failed).

Why each gate
    * ICL must have an effect to explain. :func:`icl_beats_zsl`: ICL's accuracy above ZSL's,
      by the decision rule of :mod:`.decision` (the 95 % interval of the paired difference
      above 0). :func:`icl_beats_constant`: above the constant predictor, i.e. the eval set's
      majority-class rate (ICL that only learned the label prior beats a weak ZSL too).
      :func:`not_single_class`: ICL does not answer one class for nearly all examples (mean
      share over draws below 0.9, unless the gold labels are that skewed themselves).
    * FT must have learned something, or ICL has nothing to resemble: the similarity of an
      update of size ~0 is the cosine of noise. :func:`ft_learned`: closed when FT's accuracy
      is below ZSL's; open when FT beats ZSL by the decision rule, or fixes at least
      ``min_fixes`` (default 10) ZSL errors per draw on average (FT's gains are often a few
      points: that many fixes show it moved in the right direction without a clear net gain).
    * Rec2FTP is a share of D = {ZSL wrong ∧ FT right}; :func:`rec2ftp_support` asks
      |D| ≥ 10 in every draw (the draws' Rec2FTPs are averaged with equal weight) and prints
      the sizes. Below it Rec2FTP is inconclusive, not failed.

Noise layers
    Where ICL's pre-softmax scores to the query's own tokens equal ZSL's to rounding, SimAM∆
    at that layer is the cosine of two rounding-noise vectors: a number with no meaning that
    still moves the layer average. That happens at layer 0 of RoPE models (the query token's
    keys and queries there depend only on its embedding and relative position; ICL and ZSL
    differ by ~1e-6 in float32). :func:`noise_layers` leaves out a layer when the largest
    |ICL − ZSL| over examples, heads, tokens (and draws) is at most ``rel_tol`` times the
    layer's largest |score|; ``rel_tol`` defaults to 64 float32 epsilons (7.6e-6). The scores
    are recorded in float32; for a model run in bfloat16 the query and key projections
    already round at ~4e-3, so pass a larger ``rel_tol`` there knowingly (such rounding is
    not separable from a small real effect). The same layers are left out of SimAM∆'s
    controls so that metric and control average over the same layers.

Example::

    gate = combine(icl_beats_zsl(icl_correct, zsl_correct), ft_learned(ft_correct, zsl_correct))
    layers = noise_layers_from_scores(zsl.eval_scores, [r.eval_scores for r in icl_runs])
    per_example = layers.apply(metrics.simam_delta_per_example(...))  # [n, L_kept]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pytest_icl.analysis.decision import FAILED, PASSED, decide

__all__ = [
    "DEFAULT_REL_TOL",
    "Gate",
    "LayerFilter",
    "combine",
    "ft_learned",
    "icl_beats_constant",
    "icl_beats_zsl",
    "majority_rate",
    "noise_layers",
    "noise_layers_from_scores",
    "not_single_class",
    "rec2ftp_support",
    "score_differences",
]

#: A layer whose ICL scores differ from ZSL's by at most this share of the layer's largest
#: |score| is rounding noise: 64 float32 epsilons.
DEFAULT_REL_TOL = 64 * torch.finfo(torch.float32).eps

PerDraw = Tensor | Sequence[Tensor]


@dataclass(frozen=True)
class Gate:
    """Whether the items behind the gate can be decided, and why (printed in the report)."""

    open: bool
    reason: str
    name: str = ""

    def __str__(self) -> str:
        state = "open" if self.open else "closed"
        return f"{self.name + ' ' if self.name else ''}gate {state}: {self.reason}"


def combine(*gates: Gate, name: str = "") -> Gate:
    """Open when every gate is; the reason lists the closed gates' reasons (all, when open)."""
    if not gates:
        raise ValueError("combine: no gates given")
    closed = [g for g in gates if not g.open]
    shown = closed or list(gates)
    return Gate(not closed, "; ".join(f"{g.name}: {g.reason}" if g.name else g.reason for g in shown), name)


def _draws(x: PerDraw) -> list[Tensor]:
    items = [x] if isinstance(x, Tensor) else list(x)
    if not items:
        raise ValueError("no draws given")
    return [torch.as_tensor(t).reshape(-1) for t in items]


def _floats(x: PerDraw) -> list[Tensor]:
    return [t.to(torch.float64) for t in _draws(x)]


def _fmt(d) -> str:
    lo, hi = d.interval
    return f"{d.estimate:+.3f} (95% CI {lo:+.3f}…{hi:+.3f})"


def _share(values: Tensor) -> float:
    if values.numel() == 0:
        return math.nan
    _, counts = torch.unique(values, return_counts=True)
    return int(counts.max()) / values.numel()


def majority_rate(gold: Tensor) -> float:
    """Accuracy of the constant predictor: the share of the eval set's most frequent gold label."""
    return _share(torch.as_tensor(gold).reshape(-1))


# ---------------------------------------------------------------------------------------------
# ICL has an effect


def icl_beats_zsl(icl_correct: PerDraw, zsl_correct: Tensor, *, n_boot: int = 2000, seed: int = 0) -> Gate:
    """Open when ICL accuracy − ZSL accuracy is above 0 by the decision rule (paired per example)."""
    d = decide(_floats(icl_correct), torch.as_tensor(zsl_correct).reshape(-1).to(torch.float64), n_boot=n_boot, seed=seed)
    text = f"ICL accuracy − zero-shot accuracy = {_fmt(d)}"
    if d.outcome == PASSED:
        return Gate(True, f"{text}: ICL beats zero-shot", "icl_vs_zsl")
    return Gate(False, f"{text}: ICL does not clearly beat zero-shot, so there is no ICL effect to explain", "icl_vs_zsl")


def icl_beats_constant(icl_correct: PerDraw, gold: Tensor, *, n_boot: int = 2000, seed: int = 0) -> Gate:
    """Open when ICL accuracy is above the majority-class rate by the decision rule."""
    rate = majority_rate(gold)
    d = decide(_floats(icl_correct), rate, n_boot=n_boot, seed=seed)
    text = f"ICL accuracy − majority-class rate {rate:.3f} = {_fmt(d)}"
    if d.outcome == PASSED:
        return Gate(True, f"{text}: ICL beats the constant predictor", "icl_vs_constant")
    return Gate(False, f"{text}: ICL does not clearly beat always answering the most frequent label", "icl_vs_constant")


def not_single_class(predictions: PerDraw, *, threshold: float = 0.9, gold: Tensor | None = None) -> Gate:
    """Closed when the most frequent predicted class has a mean share over draws ≥ ``threshold``.

    With ``gold`` given, a share no larger than the gold labels' own majority rate is accepted
    (a skewed eval set answered correctly is not a degenerate predictor).
    """
    shares = [_share(p) for p in _draws(predictions)]
    mean = math.fsum(shares) / len(shares)
    per = ", ".join(f"{s:.3f}" for s in shares)
    text = f"most frequent answer's share {mean:.3f} (per draw {per}), threshold {threshold:.2f}"
    if gold is not None:
        rate = majority_rate(gold)
        text += f", gold majority rate {rate:.3f}"
        if mean <= rate:
            return Gate(True, f"{text}: no more one-sided than the gold labels", "single_class")
    if math.isnan(mean) or mean >= threshold:
        return Gate(False, f"{text}: ICL answers one class for nearly every example", "single_class")
    return Gate(True, f"{text}: ICL's answers vary", "single_class")


# ---------------------------------------------------------------------------------------------
# FT has learned


def ft_learned(ft_correct: PerDraw, zsl_correct: Tensor, *, min_fixes: float = 10, n_boot: int = 2000, seed: int = 0) -> Gate:
    """Closed when FT is below ZSL; open when FT beats ZSL (decision rule) or fixes ≥ ``min_fixes``.

    Fixes: ZSL-wrong examples FT gets right, counted per draw and averaged over draws.
    """
    zs = torch.as_tensor(zsl_correct).reshape(-1).bool()
    ft = [t.bool() for t in _draws(ft_correct)]
    d = decide([t.to(torch.float64) for t in ft], zs.to(torch.float64), n_boot=n_boot, seed=seed)
    fixes = [int((~zs & t).sum()) for t in ft]
    mean_fixes = math.fsum(fixes) / len(fixes)
    text = (
        f"FT accuracy − zero-shot accuracy = {_fmt(d)}; FT fixes {round(mean_fixes, 1):g} zero-shot error(s) per draw on average "
        f"({', '.join(map(str, fixes))}), minimum {min_fixes:g}"
    )
    if d.outcome == FAILED or d.estimate < 0:
        return Gate(False, f"{text}: FT is below zero-shot, so it did not learn the task", "ft_learned")
    if d.outcome == PASSED:
        return Gate(True, f"{text}: FT beats zero-shot", "ft_learned")
    if mean_fixes >= min_fixes:
        return Gate(True, f"{text}: FT fixes enough zero-shot errors", "ft_learned")
    return Gate(False, f"{text}: FT neither clearly beats zero-shot nor fixes enough of its errors", "ft_learned")


def rec2ftp_support(zsl_correct: Tensor, ft_correct: PerDraw, *, minimum: int = 10) -> Gate:
    """Open when every draw's D = {ZSL wrong ∧ FT right} has at least ``minimum`` examples."""
    zs = torch.as_tensor(zsl_correct).reshape(-1).bool()
    sizes = [int((~zs & t.bool()).sum()) for t in _draws(ft_correct)]
    text = f"Rec2FTP support |D| = {', '.join(map(str, sizes))} per draw (zero-shot wrong, FT right), minimum {minimum}"
    if min(sizes) >= minimum:
        return Gate(True, text, "rec2ftp_support")
    return Gate(False, f"{text}: too few examples for Rec2FTP to say anything", "rec2ftp_support")


# ---------------------------------------------------------------------------------------------
# noise layers


@dataclass(frozen=True)
class LayerFilter:
    """Which layers SimAM∆ (and its controls) keep, and the numbers that decided it."""

    keep: tuple[bool, ...]
    max_abs_diff: tuple[float, ...]
    scale: tuple[float, ...]
    rel_tol: float

    @property
    def left_out(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.keep) if not k)

    @property
    def mask(self) -> Tensor:
        return torch.tensor(self.keep, dtype=torch.bool)

    def apply(self, per_example: Tensor) -> Tensor:
        """``[n, L]`` (or ``[L]``) -> only the kept layers (last dimension)."""
        x = torch.as_tensor(per_example)
        if x.shape[-1] != len(self.keep):
            raise ValueError(f"LayerFilter.apply: {x.shape[-1]} layers given, the filter has {len(self.keep)}")
        return x[..., self.mask]

    @property
    def reason(self) -> str:
        if not self.left_out:
            return (
                f"no layer left out: ICL's attention to the query differs from ZSL's in every layer (tolerance {self.rel_tol:.1e} relative)"
            )
        detail = ", ".join(f"{i} (max |ICL − ZSL| {self.max_abs_diff[i]:.1e} of {self.scale[i]:.1e})" for i in self.left_out)
        return (
            f"layer(s) {detail} left out of SimAM∆ and its controls: ICL's attention to the query equals "
            f"ZSL's there to rounding (tolerance {self.rel_tol:.1e} relative)"
        )

    @property
    def gate(self) -> Gate:
        """Closed when every layer is noise: SimAM∆ has nothing left to average."""
        return Gate(any(self.keep), self.reason, "noise_layers")


def score_differences(m_zsl: Tensor, m_icl: PerDraw) -> tuple[Tensor, Tensor]:
    """Per layer, the largest |ICL − ZSL| and the largest |score|, over draws, examples, heads, tokens.

    ``m_zsl``: ``[n, L, H, T]`` (ZSL runs once); ``m_icl``: the same shape, or one per draw.
    Returns two float64 ``[L]`` tensors.
    """
    zs = torch.as_tensor(m_zsl).to(torch.float64)
    icl = [torch.as_tensor(t).to(torch.float64) for t in ([m_icl] if isinstance(m_icl, Tensor) else list(m_icl))]
    if not icl:
        raise ValueError("score_differences: no ICL draws given")
    if zs.dim() < 2 or any(t.shape != zs.shape for t in icl):
        raise ValueError(f"score_differences: expected ICL scores of ZSL's shape {tuple(zs.shape)} [n, L, ...]")
    dims = [0, *range(2, zs.dim())]

    def layer_max(t: Tensor) -> Tensor:
        return t.abs().amax(dim=dims) if t.numel() else torch.zeros(t.shape[1], dtype=torch.float64)

    diff = torch.stack([layer_max(t - zs) for t in icl]).amax(dim=0)
    scale = torch.stack([layer_max(zs), *(layer_max(t) for t in icl)]).amax(dim=0)
    return diff, scale


def noise_layers(max_abs_diff: Tensor, scale: Tensor | float = 1.0, *, rel_tol: float = DEFAULT_REL_TOL) -> LayerFilter:
    """Leave out layer l when max_abs_diff[l] ≤ rel_tol · scale[l] (a layer of all-zero scores too)."""
    diff = torch.as_tensor(max_abs_diff, dtype=torch.float64).reshape(-1)
    s = torch.broadcast_to(torch.as_tensor(scale, dtype=torch.float64), diff.shape)
    noise = diff <= rel_tol * s  # a NaN difference compares False: kept, it marks a broken record, not noise
    return LayerFilter(
        keep=tuple(bool(not x) for x in noise),
        max_abs_diff=tuple(float(x) for x in diff),
        scale=tuple(float(x) for x in s),
        rel_tol=float(rel_tol),
    )


def noise_layers_from_scores(m_zsl: Tensor, m_icl: PerDraw, *, rel_tol: float = DEFAULT_REL_TOL) -> LayerFilter:
    """:func:`score_differences` then :func:`noise_layers`: a layer is noise in every draw or kept."""
    diff, scale = score_differences(m_zsl, m_icl)
    return noise_layers(diff, scale, rel_tol=rel_tol)
