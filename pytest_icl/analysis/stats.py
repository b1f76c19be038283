"""Statistics over eval examples: the paper's aggregation, bootstrap intervals, and comparisons
of next-token distributions.

Pure functions on tensors: no model, no I/O, no pytest. Section numbers (§) refer to
``docs/definitions.md``.

* :func:`layer_curve` and :func:`overall` aggregate the ``[n, L]`` per-example values of
  ``pytest_icl.analysis.metrics`` the way the paper does (definitions §8.5);
* :func:`bootstrap_ci` / :func:`bootstrap_ci_fn`: percentile bootstrap intervals over eval
  examples, the same resampled rows for the same seed, so intervals of different metrics are
  paired;
* :func:`kl_divergence` and :func:`topk_overlap` compare two settings' next-token distributions
  per eval example (Shen et al.'s point that ICL and GD change the output distribution
  differently, definitions §12.2): ``[n, V]`` log-probabilities in, ``[n]`` float64 out.

Example::

    per_example = metrics.simaou_per_example(h_zsl, h_icl, h_ft)   # [n, L]
    overall(per_example), bootstrap_ci(per_example, seed=1)
    kl_divergence(icl_logp, ft_logp).mean()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["bootstrap_ci", "bootstrap_ci_fn", "kl_divergence", "layer_curve", "overall", "topk_overlap"]

_F64 = torch.float64


def _f64(x: Tensor) -> Tensor:
    return torch.as_tensor(x).to(_F64)


# ---------------------------------------------------------------------------------------------
# Aggregation and bootstrap intervals (definitions §8.5)


def _as_matrix(per_example: Tensor) -> Tensor:
    x = _f64(per_example)
    if x.dim() == 1:
        return x[:, None]  # e.g. per-example correctness: one "layer"
    if x.dim() != 2:
        raise ValueError(f"expected per-example values [n, L] or [n], got shape {tuple(x.shape)}")
    return x


def layer_curve(per_example: Tensor) -> Tensor:
    """Per-layer curve: nanmean over examples, [n, L] -> [L] (definitions §8.5; a [n] input gives [1])."""
    return torch.nanmean(_as_matrix(per_example), dim=0)


def overall(per_example: Tensor) -> float:
    """The paper's number: mean over layers of :func:`layer_curve` (definitions §8.5).

    A layer with no finite value at all makes this NaN, on purpose: it flags a broken record
    instead of quietly averaging over fewer layers.
    """
    return float(layer_curve(per_example).mean())


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> Tensor:
    # One place draws the resamples, so the matrix and function forms use the same rows for the
    # same seed: intervals of different metrics over the same examples are paired.
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=g)


def _percentile_interval(stats: Tensor, alpha: float) -> tuple[float, float]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    stats = stats[~torch.isnan(stats)]
    if stats.numel() == 0:
        return float("nan"), float("nan")
    q = torch.quantile(stats, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=_F64))
    return float(q[0]), float(q[1])


def bootstrap_ci_fn(
    stat: Callable[[Tensor], float],
    n: int,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(idx)`` over eval examples resampled with replacement.

    ``stat`` receives a LongTensor ``idx`` of n row indices (with repeats) and returns a float,
    e.g. ``lambda idx: rec2ftp(zs[idx], icl[idx], ft[idx])``. Interval: the alpha/2 and
    1 − alpha/2 quantiles (linear interpolation) of the n_boot values; NaN values (e.g. an empty
    Rec2FTP denominator in a resample) are dropped. (nan, nan) when n = 0 or every value is NaN.
    """
    if n <= 0:
        return float("nan"), float("nan")
    idx = _bootstrap_indices(n, n_boot, seed)
    stats = torch.tensor([float(stat(row)) for row in idx], dtype=_F64)
    return _percentile_interval(stats, alpha)


def bootstrap_ci(
    per_example: Tensor | Callable[[Tensor], float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n: int | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`overall`, resampling eval examples (rows).

    ``per_example``: [n, L] (or [n]) values; vectorised over resamples. A callable is passed on
    to :func:`bootstrap_ci_fn` (then ``n`` is required). Same seed, same resampled rows as
    :func:`bootstrap_ci_fn`. Resamples whose statistic is NaN are dropped.
    """
    if callable(per_example):
        if n is None:
            raise ValueError("bootstrap_ci: pass n when giving a statistic function")
        return bootstrap_ci_fn(per_example, n, n_boot=n_boot, alpha=alpha, seed=seed)
    x = _as_matrix(per_example)
    rows, layers = x.shape
    if rows == 0:
        return float("nan"), float("nan")
    idx = _bootstrap_indices(rows, n_boot, seed)
    # Chunk over resamples so a [chunk, n, L] gather stays around 32 MB whatever n and L are.
    chunk = max(1, 4_000_000 // max(1, rows * layers))
    stats = torch.cat([torch.nanmean(x[idx[s : s + chunk]], dim=1).mean(dim=-1) for s in range(0, n_boot, chunk)])
    return _percentile_interval(stats, alpha)


# ---------------------------------------------------------------------------------------------
# Next-token distributions (definitions §12.2)


def _log_probs(name: str, logp_p: Tensor, logp_q: Tensor) -> tuple[Tensor, Tensor]:
    p, q = _f64(logp_p), _f64(logp_q)
    if p.shape != q.shape or p.dim() != 2:
        raise ValueError(
            f"{name}: expected two [n, V] log-probability tensors of the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )
    return p, q


def kl_divergence(logp_p: Tensor, logp_q: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) per row, in nats, shape [n].

    Rows are log-probabilities over the vocabulary (a log-softmax). Terms where p_v = 0 count 0
    (also where log q_v = −inf); a token with p_v > 0 and q_v = 0 gives +inf, as it should.
    The inputs are renormalised in float64 first (a bf16 log-softmax does not sum to exactly 1).
    """
    p, q = _log_probs("kl_divergence", logp_p, logp_q)
    p, q = p.log_softmax(-1), q.log_softmax(-1)
    prob = p.exp()
    terms = torch.where(prob > 0, prob * (p - q), torch.zeros((), dtype=_F64, device=p.device))
    return terms.sum(-1)


def topk_overlap(logp_p: Tensor, logp_q: Tensor, k: int = 10) -> Tensor:
    """|top-k(p) ∩ top-k(q)| / k per row, shape [n] (Shen et al.'s token overlap, k = 10).

    Ties at the k-th place are broken by ``torch.topk`` (lowest index first on CPU), the same
    way for both rows.
    """
    p, q = _log_probs("topk_overlap", logp_p, logp_q)
    if not 1 <= k <= p.shape[-1]:
        raise ValueError(f"topk_overlap: k must be between 1 and the vocabulary size {p.shape[-1]}, got {k}")
    top_p = p.topk(k, dim=-1).indices
    top_q = q.topk(k, dim=-1).indices
    shared = (top_p[:, :, None] == top_q[:, None, :]).any(-1).sum(-1)
    return shared.to(_F64) / k
