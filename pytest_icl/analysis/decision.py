"""Deciding a property with its uncertainty: a paired, hierarchical bootstrap over demonstration
draws and eval examples, and a three-way verdict against a margin.

Pure functions on tensors: no model, no I/O, no pytest, no engine import.

What is decided
    Every property compares a metric with its control on the same eval examples (a random
    baseline of the same run, ZSL's accuracy, a control run on the same draws, ...). The
    quantity decided is the *paired* difference ``metric − control`` (``control − metric`` when
    lower is better, e.g. KL). One demonstration draw s gives one number, the paper's
    aggregation of that draw: the mean over eval examples (per layer, then over layers, for
    ``[n, L]`` values) of the metric, minus the same of the control. The estimate is the mean of
    these numbers over the S draws.

The bootstrap (percentile, B resamples, default 2000)
    One resample (1) draws S draws with replacement, (2) draws the eval examples with
    replacement and (3) recomputes the estimate on those: each chosen draw's metric and control
    on the resampled examples, their difference, averaged over the chosen draws. Metric and
    control always see the same resampled examples (paired), so what they share (an example
    both find hard) cancels. When every draw is scored on the same eval set (the default when
    all draws have the same number of examples) step (2) is done once per resample and applied
    to every draw: an example's difficulty is shared across draws and must not be averaged away
    as if each draw had its own examples. With ``shared_examples=False`` every chosen draw gets
    its own example resample (draws with their own eval sets). The 95 % interval is the 2.5 %
    and 97.5 % quantiles of the B resampled estimates. Resamples whose estimate is undefined
    (a ratio metric whose denominator is empty in the resample) are dropped and counted.

The verdict
    ``passed`` when the interval's lower end is above the margin, ``failed`` when its upper end
    is below it, ``undecided`` otherwise: an interval that straddles (or touches) the margin, or
    an undefined estimate. Undecided is its own outcome, never counted as passed. The same rule
    serves the control items.

Coverage (measured, 1000 simulated repetitions each; see the tests and the design note)
    One draw: 95 %. Draws that agree (example noise dominant, 3 draws on one eval set of 60–200
    examples): 97–98 %, slightly conservative, because resampling both draws and examples
    counts the example-by-draw noise twice. Where the spread *between draws* dominates, 3 draws
    cannot pin it down: the interval of a mean of 3 draws under the bootstrap is about [min,
    max] of the draws, which covers the truth 75–87 % of the time (S = 5: 91 %, S = 10: 94 %).
    So a pass at S = 3 says "clear for these draws and examples, and the draws agree", not a
    guarantee over every possible demonstration set; more draws are the only cure.

Inputs per draw, each one of
    * a tensor ``[n]`` of per-example values (correctness as 0/1, a KL, ...);
    * a tensor ``[n, L]`` of per-example, per-layer values: aggregated as the paper does
      (nan-mean over examples per layer, then mean over layers; an all-NaN layer gives NaN);
    * a :class:`Ratio` of per-example numerators and denominators, for metrics that are a share
      of a subset of the examples (Rec2FTP = Σ_i [i ∈ D ∧ ICL_i right] / Σ_i [i ∈ D]): the
      resampled value is Σ w_i num_i / Σ w_i den_i, see :func:`rec2ftp_ratio`.
    The control is a list of the same kind (one per draw, paired by position), a single tensor
    shared by every draw (ZSL's correctness: ZSL runs once), a number (a constant predictor's
    accuracy) or None (zero).

Example::

    d = decide([icl_c.float() for icl_c in icl_correct], zsl_correct.float(), margin=0.05)
    d.outcome, d.interval, d.message("ICL accuracy above zero-shot")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "FAILED",
    "OUTCOMES",
    "PASSED",
    "UNDECIDED",
    "Bootstrap",
    "Decision",
    "Ratio",
    "bootstrap_difference",
    "decide",
    "ft_precision_ratio",
    "outcome_of",
    "rec2ftp_chance_ratio",
    "rec2ftp_ratio",
]

PASSED, FAILED, UNDECIDED = "passed", "failed", "undecided"
OUTCOMES = (PASSED, FAILED, UNDECIDED)

_F64 = torch.float64
# Cap on the doubles one [chunk, n] weight matrix holds (about 32 MB).
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Ratio:
    """Per-example numerator and denominator ``[n]`` (or ``[n, L]``) of a ratio metric."""

    num: Tensor
    den: Tensor


Values = Tensor | Ratio
Control = Sequence[Values] | Values | float | int | None


def _b(x: Tensor) -> Tensor:
    return torch.as_tensor(x).reshape(-1).bool()


def rec2ftp_ratio(zsl_correct: Tensor, icl_correct: Tensor, ft_correct: Tensor) -> Ratio:
    """Rec2FTP per example: num = [ZSL wrong ∧ FT right ∧ ICL right], den = [ZSL wrong ∧ FT right]."""
    zs, icl, ft = _b(zsl_correct), _b(icl_correct), _b(ft_correct)
    d = ~zs & ft
    return Ratio((d & icl).to(_F64), d.to(_F64))


def rec2ftp_chance_ratio(zsl_correct: Tensor, icl_correct: Tensor) -> Ratio:
    """Rec2FTP's chance level P(ICL right | ZSL wrong) per example."""
    zs, icl = _b(zsl_correct), _b(icl_correct)
    return Ratio((~zs & icl).to(_F64), (~zs).to(_F64))


def ft_precision_ratio(zsl_correct: Tensor, icl_correct: Tensor, ft_correct: Tensor) -> Ratio:
    """P(FT right | ZSL wrong ∧ ICL right) per example."""
    zs, icl, ft = _b(zsl_correct), _b(icl_correct), _b(ft_correct)
    c = ~zs & icl
    return Ratio((c & ft).to(_F64), c.to(_F64))


# ---------------------------------------------------------------------------------------------
# inputs -> (numerator, denominator) matrices


@dataclass(frozen=True)
class _Q:
    """One draw's values as weighted-mean ingredients: stat(w) = mean_l (w @ num)_l / (w @ den)_l."""

    num: Tensor  # [n, L] float64, zero where the value is undefined
    den: Tensor  # [n, L] float64

    @property
    def n(self) -> int:
        return self.num.shape[0]

    def stat(self, w: Tensor) -> Tensor:
        """[rows, n] example weights -> [rows] statistic (NaN where a layer has no weight)."""
        return ((w @ self.num) / (w @ self.den)).mean(dim=-1)


def _matrix(x: Tensor, what: str) -> Tensor:
    t = torch.as_tensor(x).to(_F64)
    if t.dim() == 1:
        return t[:, None]
    if t.dim() != 2:
        raise ValueError(f"{what}: expected per-example values [n] or [n, L], got shape {tuple(t.shape)}")
    return t


def _prepare(x: Values, what: str) -> _Q:
    if isinstance(x, Ratio):
        num, den = _matrix(x.num, what), _matrix(x.den, what)
        if num.shape != den.shape:
            raise ValueError(f"{what}: ratio numerator {tuple(num.shape)} and denominator {tuple(den.shape)} differ")
        ok = torch.isfinite(num) & torch.isfinite(den)
    else:
        num = _matrix(x, what)
        ok = torch.isfinite(num)
        den = torch.ones_like(num)
    zero = torch.zeros((), dtype=_F64)
    return _Q(torch.where(ok, num, zero), torch.where(ok, den, zero))


def _constant(value: float, n: int) -> _Q:
    return _Q(torch.full((n, 1), float(value), dtype=_F64), torch.ones((n, 1), dtype=_F64))


def _controls(control: Control, metric: list[_Q]) -> list[_Q]:
    s = len(metric)
    if control is None or isinstance(control, (int, float)):
        value = 0.0 if control is None else float(control)
        return [_constant(value, q.n) for q in metric]
    if isinstance(control, (Tensor, Ratio)):
        shared = _prepare(control, "control")
        return [shared] * s
    items = list(control)
    if len(items) != s:
        raise ValueError(f"control: {len(items)} draws given for a metric over {s} draws")
    return [
        _constant(float(c), q.n) if isinstance(c, (int, float)) else _prepare(c, f"control draw {k}")
        for k, (c, q) in enumerate(zip(items, metric))
    ]


# ---------------------------------------------------------------------------------------------
# the bootstrap


@dataclass(frozen=True)
class Bootstrap:
    """The paired difference's point estimate, per-draw values and percentile interval."""

    estimate: float
    low: float
    high: float
    per_draw: tuple[float, ...]
    n_examples: tuple[int, ...]
    n_boot: int
    dropped: int  # resamples whose estimate was undefined (left out of the interval)
    level: float
    shared_examples: bool

    @property
    def interval(self) -> tuple[float, float]:
        return (self.low, self.high)


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def _counts(rows: int, n: int, g: torch.Generator) -> Tensor:
    """[rows, n] multinomial counts: how often each example is drawn in a resample of size n."""
    idx = torch.randint(0, n, (rows, n), generator=g)
    return torch.zeros(rows, n, dtype=_F64).scatter_add_(1, idx, torch.ones(rows, n, dtype=_F64))


def _diff(w: Tensor, m: _Q, c: _Q, sign: float) -> Tensor:
    return sign * (m.stat(w) - c.stat(w))


def _shared_resamples(metric: list[_Q], control: list[_Q], sign: float, n_boot: int, g: torch.Generator) -> Tensor:
    s, n = len(metric), metric[0].n
    picks = torch.randint(0, s, (n_boot, s), generator=g)
    draw_counts = torch.zeros(n_boot, s, dtype=_F64).scatter_add_(1, picks, torch.ones(n_boot, s, dtype=_F64))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n))
    out = []
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        w = _counts(rows, n, g)  # one example resample per bootstrap replicate, for every draw
        per_draw = torch.stack([_diff(w, m, c, sign) for m, c in zip(metric, control)], dim=1)  # [rows, S]
        cnt = draw_counts[start : start + rows]
        weighted = torch.where(cnt > 0, cnt * per_draw, torch.zeros((), dtype=_F64))
        out.append(weighted.sum(dim=1) / s)
    return torch.cat(out)


def _independent_resamples(metric: list[_Q], control: list[_Q], sign: float, n_boot: int, g: torch.Generator) -> Tensor:
    s = len(metric)
    picks = torch.randint(0, s, (n_boot, s), generator=g)
    total = torch.zeros(n_boot, dtype=_F64)
    for slot in range(s):
        for draw in range(s):
            rows = (picks[:, slot] == draw).nonzero().reshape(-1)
            if rows.numel() == 0:
                continue
            n = metric[draw].n
            chunk = max(1, _CHUNK_ELEMENTS // max(1, n))
            for start in range(0, rows.numel(), chunk):
                part = rows[start : start + chunk]
                w = _counts(part.numel(), n, g)  # this slot's own example resample
                total[part] += _diff(w, metric[draw], control[draw], sign)
    return total / s


def _quantiles(samples: Tensor, alpha: float) -> tuple[float, float]:
    if samples.numel() == 0:
        return math.nan, math.nan
    q = torch.quantile(samples, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=_F64))
    return float(q[0]), float(q[1])


def bootstrap_difference(
    metric: Sequence[Values] | Values,
    control: Control = None,
    *,
    better: str = "higher",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int | torch.Generator = 0,
    shared_examples: bool | None = None,
) -> Bootstrap:
    """Point estimate and percentile interval of the paired difference, over draws and examples.

    ``metric``: one entry per demonstration draw (a single tensor or :class:`Ratio` is one
    draw); each ``[n]``, ``[n, L]`` or a :class:`Ratio`. ``control``: see the module docstring.
    ``better="higher"`` decides metric − control, ``"lower"`` control − metric.
    ``shared_examples``: None = the draws share one eval set when all have the same n.
    Deterministic for a given ``seed``; the same seed resamples the same draws and examples
    for every metric of the same shape, so intervals of different properties are paired too.
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    draws = [metric] if isinstance(metric, (Tensor, Ratio)) else list(metric)
    if not draws:
        raise ValueError("metric: no draws given")
    m = [_prepare(x, f"metric draw {k}") for k, x in enumerate(draws)]
    c = _controls(control, m)
    for k, (mq, cq) in enumerate(zip(m, c)):
        if mq.n != cq.n:
            raise ValueError(f"draw {k}: metric has {mq.n} examples, control {cq.n}: they must be paired")
    sizes = tuple(q.n for q in m)
    same_n = len(set(sizes)) == 1
    shared = same_n if shared_examples is None else bool(shared_examples)
    if shared and not same_n:
        raise ValueError(f"shared_examples: the draws have different numbers of examples {sizes}")
    sign = 1.0 if better == "higher" else -1.0
    per_draw = tuple(float(_diff(torch.ones(1, q.n, dtype=_F64), q, cq, sign)[0]) for q, cq in zip(m, c))
    estimate = math.fsum(per_draw) / len(per_draw)
    if math.isnan(estimate):  # also no examples at all: nothing to resample
        return Bootstrap(math.nan, math.nan, math.nan, per_draw, sizes, n_boot, n_boot, 1 - alpha, shared)
    g = _generator(seed)
    resample = _shared_resamples if shared else _independent_resamples
    samples = resample(m, c, sign, n_boot, g)
    defined = samples[~torch.isnan(samples)]
    low, high = _quantiles(defined, alpha)
    return Bootstrap(estimate, low, high, per_draw, sizes, n_boot, n_boot - defined.numel(), 1 - alpha, shared)


# ---------------------------------------------------------------------------------------------
# the verdict


def combine_outcomes(outcomes: Sequence[str]) -> str:
    """Several decided comparisons that a claim needs together: passed when every one passed,
    failed when one failed, undecided otherwise. ``outcomes`` must not be empty."""
    if not outcomes:
        raise ValueError("combine_outcomes: no outcome to combine")
    if FAILED in outcomes:
        return FAILED
    return PASSED if all(o == PASSED for o in outcomes) else UNDECIDED


def outcome_of(low: float, high: float, margin: float) -> str:
    """passed when low > margin, failed when high < margin, undecided otherwise (NaN included)."""
    if math.isnan(low) or math.isnan(high):
        return UNDECIDED
    if low > margin:
        return PASSED
    if high < margin:
        return FAILED
    return UNDECIDED


@dataclass(frozen=True)
class Decision:
    """A property's verdict: the paired difference, its interval and the outcome against the margin."""

    outcome: str
    margin: float
    bootstrap: Bootstrap

    @property
    def estimate(self) -> float:
        return self.bootstrap.estimate

    @property
    def interval(self) -> tuple[float, float]:
        return self.bootstrap.interval

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def failed(self) -> bool:
        return self.outcome == FAILED

    @property
    def undecided(self) -> bool:
        return self.outcome == UNDECIDED

    def message(self, claim: str = "difference") -> str:
        """One line: claim, outcome, difference with its interval, margin, draws and examples."""
        b = self.bootstrap
        pct = round(100 * b.level)
        sizes = (
            f"{len(b.per_draw)} draw(s) × {b.n_examples[0]} examples"
            if len(set(b.n_examples)) == 1
            else (f"{len(b.per_draw)} draws of {', '.join(map(str, b.n_examples))} examples")
        )
        text = (
            f"{claim}: {self.outcome}. difference {b.estimate:+.4f} ({pct}% CI {b.low:+.4f}…{b.high:+.4f}), "
            f"margin {self.margin:+.4f}; {sizes}; per draw {', '.join(f'{v:+.4f}' for v in b.per_draw)}"
        )
        if math.isnan(b.estimate):
            text += "; the difference is undefined"
        elif b.dropped:
            text += f"; {b.dropped} of {b.n_boot} resamples undefined and left out"
        if self.outcome == UNDECIDED and not math.isnan(b.low):
            text += " (the interval contains the margin)"
        return text


def decide(
    metric: Sequence[Values] | Values,
    control: Control = None,
    *,
    margin: float = 0.0,
    better: str = "higher",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int | torch.Generator = 0,
    shared_examples: bool | None = None,
) -> Decision:
    """:func:`bootstrap_difference`, then :func:`outcome_of` against ``margin``.

    The margin is on the oriented difference: metric − control ≥ margin when higher is better,
    control − metric when lower is.
    """
    b = bootstrap_difference(metric, control, better=better, n_boot=n_boot, alpha=alpha, seed=seed, shared_examples=shared_examples)
    return Decision(outcome_of(b.low, b.high, margin), float(margin), b)
