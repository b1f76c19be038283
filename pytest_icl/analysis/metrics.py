"""The ICL-vs-FT similarity metrics of Dai et al. 2023, Deutch et al.'s variants and our controls.

Pure functions on tensors: no model, no I/O, no pytest. Section numbers (§) refer to
``docs/definitions.md``.

Shapes (n eval examples, L layers, H heads, d hidden size, T eval-example tokens, N demo tokens):

* ``h_zsl, h_icl, h_ft``: attention-module outputs at the analysed position, ``[n, L, d]``;
* ``m_zsl, m_icl, m_ft``: pre-softmax scores to the eval example's own tokens, ``[n, L, H, T]``,
  zero-padded to the longest example (zeros change neither a cosine nor an update);
* ``icl_ctx_scores``: head-summed ICL scores to the N demo tokens, ``[n, L, N]``;
* ``ft_train_queries``: ``[L, N, D]``; ``ft_eval_queries``: ``[n, L, D]`` (scaled queries);
* ``*_correct``: bool ``[n]``.

Per-example functions return ``[n, L]`` float64 tensors so that bootstrap intervals can resample
rows; ``pytest_icl.analysis.stats`` aggregates them the way the paper does (definitions §8.5) and gives the intervals.
Everything is computed in float64: the inputs are often fp16/bf16 and the cosines of small
updates are differences of nearly equal numbers.

Random baselines take a ``torch.Generator`` or an int seed and are deterministic given it (the
official scripts never seed NumPy, definitions §13 "Pitfalls").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "accuracy",
    "fair_random_simaou_per_example",
    "ft_context_scores",
    "ft_precision",
    "kendall_per_example",
    "kendall_tau_b",
    "majority_fraction",
    "random_kendall_per_example",
    "random_simaou_per_example",
    "rec2ftp",
    "rec2ftp_chance",
    "simam_delta_per_example",
    "simam_per_example",
    "simaou_per_example",
]

#: The official code's epsilon: ``norm + 1e-20`` in ``norm_hidden`` and ``|a||b| + 1e-20`` in
#: ``cal_cos_sim`` (``compute_sim.py``). It only matters for (near-)zero vectors, where it turns
#: 0/0 into 0 instead of NaN.
EPS = 1e-20

GeneratorLike = torch.Generator | int

_F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# helpers


def _f64(x: Tensor) -> Tensor:
    return torch.as_tensor(x).to(_F64)


def _generator(generator: GeneratorLike) -> torch.Generator:
    """A ``torch.Generator`` as given, or a fresh CPU one seeded with the int."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        kind = type(generator).__name__
        raise TypeError(f"expected a torch.Generator or an int seed, got {kind}")
    g = torch.Generator(device="cpu")
    g.manual_seed(generator)
    return g


def _rand(shape: Sequence[int], g: torch.Generator, like: Tensor) -> Tensor:
    # Draw on the generator's device (a CPU generator cannot fill a CUDA tensor), then move.
    return torch.rand(tuple(shape), generator=g, dtype=_F64, device=g.device).to(like.device)


def _randn(shape: Sequence[int], g: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(tuple(shape), generator=g, dtype=_F64, device=g.device).to(like.device)


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """cos(a, b) = a·b / (|a||b| + 1e-20) over the last dim, as ``cal_cos_sim`` (definitions §8.2).

    A zero vector gives exactly 0, never NaN.
    """
    a, b = _f64(a), _f64(b)
    num = (a * b).sum(-1)
    den = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1) + EPS
    return num / den


def _normalize(h: Tensor) -> Tensor:
    """h / (|h| + 1e-20) over the last dim, as ``norm_hidden`` (definitions §8.2)."""
    h = _f64(h)
    return h / (torch.linalg.vector_norm(h, dim=-1, keepdim=True) + EPS)


def _same_shape(name: str, *tensors: Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"{name}: inputs must have the same shape, got {sorted(shapes)}")


def _check_ndim(name: str, t: Tensor, ndim: int) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d tensor, got shape {tuple(t.shape)}")


def _bools(*xs: Tensor) -> list[Tensor]:
    out = [torch.as_tensor(x).reshape(-1).bool() for x in xs]
    _same_shape("correctness vectors", *out)
    return out


def _ratio(num: int, den: int) -> float:
    return float("nan") if den == 0 else num / den


# ---------------------------------------------------------------------------------------------
# 1. Rec2FTP and its controls (definitions §8.1, definitions §12.4.1)


def rec2ftp(zsl_correct: Tensor, icl_correct: Tensor, ft_correct: Tensor) -> float:
    """Rec2FTP as a fraction: |{i ∈ D : ICL_i right}| / |D|, D = {i : ZSL_i wrong ∧ FT_i right}.

    definitions §8.1 (the paper prints 100×this). NaN when D is empty.
    """
    zs, icl, ft = _bools(zsl_correct, icl_correct, ft_correct)
    d = ~zs & ft
    return _ratio(int((d & icl).sum()), int(d.sum()))


def rec2ftp_chance(zsl_correct: Tensor, icl_correct: Tensor) -> float:
    """Chance level for Rec2FTP: P(ICL right | ZSL wrong) over all ZSL-wrong examples (definitions §12.4.1).

    If ICL's corrections were unrelated to FT's, Rec2FTP would sit here; since ICL is very
    accurate this is already close to the paper's Rec2FTP numbers. NaN when ZSL is never wrong.
    """
    zs, icl = _bools(zsl_correct, icl_correct)
    return _ratio(int((~zs & icl).sum()), int((~zs).sum()))


def ft_precision(zsl_correct: Tensor, icl_correct: Tensor, ft_correct: Tensor) -> float:
    """The reverse direction of Rec2FTP: P(FT right | ZSL wrong ∧ ICL right) (definitions §12.4.1).

    NaN when ICL corrects nothing.
    """
    zs, icl, ft = _bools(zsl_correct, icl_correct, ft_correct)
    corrected = ~zs & icl
    return _ratio(int((corrected & ft).sum()), int(corrected.sum()))


def accuracy(correct: Tensor) -> float:
    """Share of correct predictions; NaN for no examples."""
    (c,) = _bools(correct)
    return _ratio(int(c.sum()), c.numel())


def majority_fraction(predictions: Tensor | Sequence[object]) -> float:
    """Share of the most frequent prediction (label bias; 1.0 = always the same label).

    Accepts a tensor of label ids or any sequence of hashable labels; NaN when empty.
    """
    if isinstance(predictions, Tensor):
        p = predictions.reshape(-1)
        if p.numel() == 0:
            return float("nan")
        _, counts = torch.unique(p, return_counts=True)
        return int(counts.max()) / p.numel()
    items = list(predictions)
    if not items:
        return float("nan")
    return Counter(items).most_common(1)[0][1] / len(items)


# ---------------------------------------------------------------------------------------------
# 2-4. SimAOU and its random baselines (definitions §8.2, definitions §12.1, definitions §12.4.4)


def _updates(h_zsl: Tensor, h_x: Tensor, normalize: bool) -> Tensor:
    # Official: normalise every vector first, then subtract (L126-132). Deutch's unnormalised
    # SimAOU skips the first step.
    if normalize:
        return _normalize(h_x) - _normalize(h_zsl)
    return _f64(h_x) - _f64(h_zsl)


def simaou_per_example(h_zsl: Tensor, h_icl: Tensor, h_ft: Tensor, normalize: bool = True) -> Tensor:
    """s[i,l] = cos(Δ_ICL, Δ_FT), shape [n, L] (definitions §8.2).

    ``normalize=True`` (official, Dai's Table 3): Δ_X = ĥ_X − ĥ_ZS with ĥ = h / (|h| + 1e-20).
    ``normalize=False`` (Deutch's "SimAOU", definitions §12.1): Δ_X = h_X − h_ZS.
    The cosine is over the full d-dim vector (all heads, after the output projection); a zero
    update gives 0.
    """
    _check_ndim("simaou_per_example", torch.as_tensor(h_zsl), 3)
    _same_shape("simaou_per_example", h_zsl, h_icl, h_ft)
    return _cos(_updates(h_zsl, h_icl, normalize), _updates(h_zsl, h_ft, normalize))


def random_simaou_per_example(h_zsl: Tensor, h_icl: Tensor, generator: GeneratorLike, normalize: bool = True) -> Tensor:
    """Official Random SimAOU (definitions §8.2): cos(Δ_ICL[i,l], R[i,l]) with R ~ U[0,1)^d, shape [n, L].

    Reproduced with its flaws on purpose: R is not zero-mean, so the cosine measures how far the
    mean of Δ_ICL's coordinates is from 0 (for Δ_ICL ∝ ±1 it is ±√3/2), and R skips the
    normalise-then-subtract step that creates the shared −ĥ_ZS bias of the real updates (definitions §12.1).
    Use :func:`fair_random_simaou_per_example` for a fair control. ``normalize`` only selects how
    Δ_ICL is formed, as in :func:`simaou_per_example`.
    """
    _check_ndim("random_simaou_per_example", torch.as_tensor(h_zsl), 3)
    _same_shape("random_simaou_per_example", h_zsl, h_icl)
    d_icl = _updates(h_zsl, h_icl, normalize)
    r = _rand(d_icl.shape, _generator(generator), d_icl)
    return _cos(d_icl, r)


def fair_random_simaou_per_example(h_zsl: Tensor, h_icl: Tensor, h_ft: Tensor, generator: GeneratorLike, normalize: bool = True) -> Tensor:
    """SimAOU of ICL against a random FT update of the real update's size, shape [n, L] (definitions §12.4.4).

    r[i,l] ~ N(0, I_d) rescaled to |h_FT − h_ZS| at (i, l); h_R = h_ZS + r is then treated exactly
    like h_FT: Δ_R = ĥ_R − ĥ_ZS (when ``normalize``), s = cos(Δ_ICL, Δ_R).

    Why this is the apples-to-apples control: normalise-then-subtract gives every update u of
    h_ZS a component along −ĥ_ZS whatever u's direction. For u ⟂ h_ZS,
    Δ = u/|h+u| − (1 − |h|/|h+u|) ĥ_ZS, so two unrelated updates share the second term and get a
    positive cosine; with c = |h|/|h+u| per side it is √((1−c_ICL)(1−c_FT))/2, e.g. 1/4 for
    |u|² = 3|h|² on both sides (Deutch's example, definitions §12.1). The bias grows with the update's size,
    hence the norm matching. The official U[0,1) baseline cannot show it (no normalisation, and
    non-zero mean instead). Only real SimAOU in excess of this baseline says the FT update points
    the ICL way (cosines do not decompose additively, so read the excess as a test, not a size).
    With ``normalize=False`` Δ_R = r, and the expected cosine is 0.
    A zero FT update gives r = 0 and so 0.
    """
    _check_ndim("fair_random_simaou_per_example", torch.as_tensor(h_zsl), 3)
    _same_shape("fair_random_simaou_per_example", h_zsl, h_icl, h_ft)
    zs, ft = _f64(h_zsl), _f64(h_ft)
    target = torch.linalg.vector_norm(ft - zs, dim=-1, keepdim=True)
    r = _randn(zs.shape, _generator(generator), zs)
    # The +EPS keeps a (measure-zero) all-zero draw finite; target = 0 then gives r = 0.
    r = r * (target / (torch.linalg.vector_norm(r, dim=-1, keepdim=True) + EPS))
    h_r = zs + r
    return _cos(_updates(zs, h_icl, normalize), _updates(zs, h_r, normalize))


# ---------------------------------------------------------------------------------------------
# 5-6. SimAM and SimAM∆ (definitions §8.3, definitions §12.1)


def simam_per_example(m_a: Tensor, m_b: Tensor) -> Tensor:
    """mean_h cos(m_a[i,l,h,:], m_b[i,l,h,:]) over the T positions, shape [n, L] (definitions §8.3).

    Raw pre-softmax scores (the paper's ``softmax=False``). Before FT: (m_icl, m_zsl); after FT:
    (m_icl, m_ft); how far FT moved the maps (definitions §12.4.3): (m_zsl, m_ft). Zero padding on either
    side leaves the value unchanged.
    """
    _check_ndim("simam_per_example", torch.as_tensor(m_a), 4)
    _same_shape("simam_per_example", m_a, m_b)
    return _cos(m_a, m_b).mean(dim=2)


def simam_delta_per_example(m_zsl: Tensor, m_icl: Tensor, m_ft: Tensor) -> Tensor:
    """Deutch's SimAM∆: mean_h cos(m_ICL − m_ZS, m_FT − m_ZS), shape [n, L] (definitions §12.1).

    Compares how the maps moved rather than the maps, which the shared m_ZS dominates. Padding
    is zero in all three maps, so it is zero in the updates too; a zero update gives 0.
    """
    _check_ndim("simam_delta_per_example", torch.as_tensor(m_zsl), 4)
    _same_shape("simam_delta_per_example", m_zsl, m_icl, m_ft)
    zs = _f64(m_zsl)
    return _cos(_f64(m_icl) - zs, _f64(m_ft) - zs).mean(dim=2)


# ---------------------------------------------------------------------------------------------
# 7-8. Kendall's tau between ICL and FT attention to the demo tokens (definitions §8.4)


def _dense_rank_sorted(sorted_vals: Tensor) -> Tensor:
    """1-based dense ranks of rows that are already sorted ascending."""
    new = torch.ones_like(sorted_vals, dtype=torch.bool)
    new[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    return new.cumsum(-1)


def _tie_pairs(ranks: Tensor) -> Tensor:
    """Σ_groups c(c−1)/2 per row, for 1-based dense ranks (one group per rank value)."""
    counts = torch.zeros(ranks.shape[0], ranks.shape[1] + 1, dtype=torch.int64, device=ranks.device)
    counts.scatter_add_(1, ranks, torch.ones_like(ranks))
    return (counts * (counts - 1) // 2).sum(-1)


def _count_inversions(v: Tensor) -> Tensor:
    """#{(i, j) : i < j, v_i > v_j} per row, batched bottom-up merge count, O(N log² N).

    At level s, every pair of adjacent sorted blocks of size s contributes, for each element of
    the right block, the number of left-block elements strictly greater than it (a
    ``searchsorted``); then the two blocks are merged (sorted) for the next level.
    """
    b, n = v.shape
    p = 1 << max(0, (n - 1).bit_length())
    if p > n:
        # Pad at the end with a value larger than all: a pad is never greater than what precedes it.
        pad = torch.full((b, p - n), n + 1, dtype=v.dtype, device=v.device)
        v = torch.cat([v, pad], dim=1)
    total = torch.zeros(b, dtype=torch.int64, device=v.device)
    s = 1
    while s < p:
        blocks = v.reshape(b, p // (2 * s), 2, s)
        left = blocks[:, :, 0, :].contiguous()
        right = blocks[:, :, 1, :].contiguous()
        not_greater = torch.searchsorted(left, right, right=True)  # left elements <= each right one
        total += (s - not_greater).sum(dim=(1, 2))
        v = blocks.reshape(b, p // (2 * s), 2 * s).sort(dim=-1).values.reshape(b, p)
        s *= 2
    return total


def kendall_tau_b(x: Tensor, y: Tensor) -> Tensor:
    """Kendall's tau-b between x[..., :] and y[..., :], batched over the leading dims (definitions §8.4).

    tau_b = (P − Q) / √((n0 − n1)(n0 − n2)), n0 = N(N−1)/2, n1/n2 = pairs tied in x / in y:
    the formula and tie handling of ``scipy.stats.kendalltau`` (default variant 'b'),
    including its final clip to [−1, 1]; values agree to float rounding. Exact ties count
    (``==``), as in scipy.

    Differences from scipy: where x or y is constant (or N < 2) scipy returns NaN; we return
    0.0 (no ordering information = no association), so one degenerate row does not turn a
    layer's mean into NaN. A row containing NaN gives NaN (scipy's default nan_policy).

    Counts P − Q from the discordant pairs of the (x, y)-lexsorted sequence, like scipy, with a
    batched merge count: O(N log² N) per row instead of O(N²) pairwise sign matrices.
    """
    x, y = _f64(x), _f64(y)
    _same_shape("kendall_tau_b", x, y)
    lead, n = x.shape[:-1], x.shape[-1]
    x, y = x.reshape(-1, n), y.reshape(-1, n)
    bad = torch.isnan(x).any(-1) | torch.isnan(y).any(-1)
    if n < 2:
        out = torch.zeros(x.shape[0], dtype=_F64, device=x.device)
        return out.masked_fill(bad, float("nan")).reshape(lead)

    # As scipy: sort on y and dense-rank it, then stable-sort on x and dense-rank x.
    ys, perm = y.sort(dim=-1, stable=True)
    yr = _dense_rank_sorted(ys)
    xs = x.gather(-1, perm)
    xs, perm = xs.sort(dim=-1, stable=True)
    yr = yr.gather(-1, perm)
    xr = _dense_rank_sorted(xs)

    # Sorted by (x, y): discordant pairs are exactly the strict inversions of y.
    dis = _count_inversions(yr)
    # Joint ties: runs of equal (x, y) in the lexsorted order.
    new = torch.ones_like(xr, dtype=torch.bool)
    new[:, 1:] = (xr[:, 1:] != xr[:, :-1]) | (yr[:, 1:] != yr[:, :-1])
    ntie = _tie_pairs(new.cumsum(-1))
    xtie, ytie = _tie_pairs(xr), _tie_pairs(yr)
    tot = n * (n - 1) // 2

    con_minus_dis = (tot - xtie - ytie + ntie - 2 * dis).to(_F64)
    denom_x = (tot - xtie).to(_F64)
    denom_y = (tot - ytie).to(_F64)
    degenerate = (denom_x == 0) | (denom_y == 0)
    tau = con_minus_dis / torch.sqrt(denom_x.clamp_min(1)) / torch.sqrt(denom_y.clamp_min(1))
    tau = tau.clamp(-1.0, 1.0).masked_fill(degenerate, 0.0).masked_fill(bad, float("nan"))
    return tau.reshape(lead)


def ft_context_scores(ft_train_queries: Tensor, ft_eval_queries: Tensor) -> Tensor:
    """m_FT[i,l,t] = q'_t · q_i over the full D (per-head products summed over heads), [n, L, N].

    q'_t: the scaled query of demo token t recorded in its FT step; q_i: the FT model's scaled
    query at eval example i's analysed position (definitions §8.4). This is Q'ᵀq, as in the paper and code,
    not gradient contributions.
    """
    _check_ndim("ft_context_scores(ft_train_queries)", torch.as_tensor(ft_train_queries), 3)
    _check_ndim("ft_context_scores(ft_eval_queries)", torch.as_tensor(ft_eval_queries), 3)
    q_train, q_eval = _f64(ft_train_queries), _f64(ft_eval_queries)
    if q_train.shape[0] != q_eval.shape[1] or q_train.shape[2] != q_eval.shape[2]:
        raise ValueError(
            f"ft_context_scores: train queries {tuple(q_train.shape)} [L, N, D] do not match eval queries {tuple(q_eval.shape)} [n, L, D]"
        )
    return torch.einsum("lnd,ild->iln", q_train, q_eval)


def kendall_per_example(
    icl_ctx_scores: Tensor,
    ft_train_queries: Tensor,
    ft_eval_queries: Tensor,
    softmax: bool = False,
) -> Tensor:
    """Token-level Kendall(ICL, FT): tau_b(icl_ctx_scores[i,l,:], m_FT[i,l,:]), [n, L] (definitions §8.4).

    m_FT comes from :func:`ft_context_scores`. The official code softmaxes both vectors first;
    softmax is strictly increasing, so we skip it by default and rank the raw scores. The one
    difference: in float64 a softmax underflows to exact 0 for scores more than ~745 below the
    row's maximum, and those become ties. ``softmax=True`` reproduces that (float64 softmax
    before ranking). tau_b conventions as in :func:`kendall_tau_b` (constant row -> 0.0).
    The paper uses only the first 100 eval examples; select rows before calling.
    """
    _check_ndim("kendall_per_example", torch.as_tensor(icl_ctx_scores), 3)
    icl = _f64(icl_ctx_scores)
    ft = ft_context_scores(ft_train_queries, ft_eval_queries)
    _same_shape("kendall_per_example (icl_ctx_scores vs m_FT)", icl, ft)
    if softmax:
        icl, ft = icl.softmax(-1), ft.softmax(-1)
    return kendall_tau_b(icl, ft)


def random_kendall_per_example(icl_ctx_scores: Tensor, generator: GeneratorLike, softmax: bool = False) -> Tensor:
    """Kendall(ICL, Random): tau_b(icl_ctx_scores[i,l,:], R[i,l,:]), R ~ U[0,1)^N, [n, L] (definitions §8.4).

    ``softmax`` as in :func:`kendall_per_example` (applied to the ICL scores only; R is drawn
    after the softmax in the official code, so it is never softmaxed).
    """
    _check_ndim("random_kendall_per_example", torch.as_tensor(icl_ctx_scores), 3)
    icl = _f64(icl_ctx_scores)
    if softmax:
        icl = icl.softmax(-1)
    r = _rand(icl.shape, _generator(generator), icl)
    return kendall_tau_b(icl, r)
