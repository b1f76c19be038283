"""Golden tests for pytest_icl.analysis.metrics and pytest_icl.analysis.stats.

Expected values are worked out by hand in the comments, or by plain NumPy/SciPy
re-implementations written here from the spec (docs/definitions.md definitions §8, definitions §12), never by calling
the module under test.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from pytest_icl.analysis import metrics as M
from pytest_icl.analysis import stats as S

# ------------------------------------------------------------------------------------------
# NumPy references, transcribed from the official compute_sim.py (definitions §8.2, definitions §8.3)


def np_cos(v1, v2):
    num = (v1 * v2).sum(axis=-1)
    denom = np.linalg.norm(v1, axis=-1) * np.linalg.norm(v2, axis=-1) + 1e-20
    return num / denom


def np_norm_hidden(h):
    return h / (np.linalg.norm(h, axis=-1, keepdims=True) + 1e-20)


def scipy_tau(x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input warning
        t = scipy.stats.kendalltau(x, y).statistic
    return 0.0 if np.isnan(t) else float(t)  # the module's documented convention


def t64(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


# ------------------------------------------------------------------------------------------
# 1. Rec2FTP, chance level, precision, accuracy, majority


# Eight examples, one per (ZS, ICL, FT) truth combination:
#   i : ZS ICL FT
#   0 :  0  0  0
#   1 :  0  0  1   in D (ZS wrong, FT right), ICL wrong
#   2 :  0  1  0   ICL corrected, FT did not
#   3 :  0  1  1   in D, ICL right; ICL corrected and FT right
#   4..7: ZS right (never in any denominator)
ZS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool)
ICL = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
FT = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1], dtype=torch.bool)


def test_rec2ftp_truth_table():
    # D = {1, 3}; ICL right on {3} -> 1/2.
    assert M.rec2ftp(ZS, ICL, FT) == pytest.approx(0.5)


def test_rec2ftp_extra_examples_change_it_correctly():
    # Add two more D members with ICL right: D = {1, 3, 8, 9}, ICL right on {3, 8, 9} -> 3/4.
    zs = torch.cat([ZS, torch.tensor([False, False])])
    icl = torch.cat([ICL, torch.tensor([True, True])])
    ft = torch.cat([FT, torch.tensor([True, True])])
    assert M.rec2ftp(zs, icl, ft) == pytest.approx(0.75)


def test_rec2ftp_chance_and_precision():
    # ZS wrong: {0,1,2,3}, ICL right on {2,3} -> 1/2.
    assert M.rec2ftp_chance(ZS, ICL) == pytest.approx(0.5)
    # ICL corrected: {2,3}; FT right on {3} -> 1/2. Drop example 2 -> {3} -> 1.
    assert M.ft_precision(ZS, ICL, FT) == pytest.approx(0.5)
    keep = torch.tensor([0, 1, 3, 4, 5, 6, 7])
    assert M.ft_precision(ZS[keep], ICL[keep], FT[keep]) == pytest.approx(1.0)
    # ICL right on 3 of ZS-wrong {0,1,2,3,8}: chance = 3/5
    assert M.rec2ftp_chance(torch.cat([ZS, torch.tensor([False])]), torch.cat([ICL, torch.tensor([True])])) == pytest.approx(3 / 5)


def test_rec2ftp_empty_denominators_are_nan():
    all_right = torch.ones(5, dtype=torch.bool)
    assert math.isnan(M.rec2ftp(all_right, all_right, all_right))  # ZS never wrong
    zs_wrong = torch.zeros(5, dtype=torch.bool)
    assert math.isnan(M.rec2ftp(zs_wrong, all_right, zs_wrong))  # FT never right
    assert math.isnan(M.rec2ftp_chance(all_right, zs_wrong))
    assert math.isnan(M.ft_precision(zs_wrong, zs_wrong, all_right))  # ICL never right
    assert math.isnan(M.accuracy(torch.zeros(0, dtype=torch.bool)))


def test_rec2ftp_accepts_int_vectors_and_rejects_mismatched_lengths():
    assert M.rec2ftp(ZS.int(), ICL.long(), FT.int()) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.rec2ftp(ZS, ICL[:-1], FT)


def test_accuracy_and_majority_fraction():
    assert M.accuracy(FT) == pytest.approx(0.5)
    assert M.accuracy(torch.tensor([1, 1, 1, 0])) == pytest.approx(0.75)
    # label ids: 2 appears 3 times out of 5
    assert M.majority_fraction(torch.tensor([2, 0, 2, 1, 2])) == pytest.approx(0.6)
    assert M.majority_fraction(["pos", "neg", "pos", "pos"]) == pytest.approx(0.75)
    assert M.majority_fraction(torch.tensor([7, 7])) == pytest.approx(1.0)
    assert math.isnan(M.majority_fraction([]))


# ------------------------------------------------------------------------------------------
# 2. SimAOU


def deutch_case(a_icl: float, a_ft: float, d: int = 3):
    """z = e1, r = √a_icl·e2, r' = √a_ft·e3 (r ⟂ r' ⟂ z); shapes [1, 1, d]."""
    z = torch.zeros(d, dtype=torch.float64)
    z[0] = 1.0
    r = torch.zeros(d, dtype=torch.float64)
    r[1] = math.sqrt(a_icl)
    rp = torch.zeros(d, dtype=torch.float64)
    rp[2] = math.sqrt(a_ft)
    return z.view(1, 1, d), (z + r).view(1, 1, d), (z + rp).view(1, 1, d)


def test_simaou_deutch_worked_example():
    # |r|² = |r'|² = 3|z|²: ĥ_X = (z + r)/2, Δ_ICL = (r − z)/2, Δ_FT = (r' − z)/2,
    # cos = |z|² / (|r − z||r' − z|) = 1 / (2·2) = 1/4. Unnormalised: cos(r, r') = 0.
    h_zs, h_icl, h_ft = deutch_case(3.0, 3.0)
    norm = M.simaou_per_example(h_zs, h_icl, h_ft, normalize=True)
    raw = M.simaou_per_example(h_zs, h_icl, h_ft, normalize=False)
    assert norm.shape == (1, 1)
    assert float(norm) == pytest.approx(0.25, abs=1e-12)
    assert float(raw) == pytest.approx(0.0, abs=1e-12)


def test_simaou_normalised_bias_general_formula():
    # With c = 1/√(1 + a): |Δ|² = 2(1 − c) and Δ_ICL·Δ_FT = (1 − c_I)(1 − c_F), so
    # cos = √((1 − c_I)(1 − c_F)) / 2. a_I = 3 (c = 1/2), a_F = 8 (c = 1/3): √(1/3)/2.
    h_zs, h_icl, h_ft = deutch_case(3.0, 8.0)
    assert float(M.simaou_per_example(h_zs, h_icl, h_ft)) == pytest.approx(math.sqrt(1 / 3) / 2, abs=1e-12)


def test_simaou_matches_official_numpy_and_scale_behaviour():
    rng = np.random.default_rng(1)
    zs, icl, ft = (rng.normal(size=(5, 4, 16)) for _ in range(3))
    icl = zs + 0.3 * icl
    ft = zs + 0.3 * ft
    zs_hat = np_norm_hidden(zs)
    ref_norm = np_cos(np_norm_hidden(icl) - zs_hat, np_norm_hidden(ft) - zs_hat)
    ref_raw = np_cos(icl - zs, ft - zs)
    got_norm = M.simaou_per_example(t64(zs), t64(icl), t64(ft))
    got_raw = M.simaou_per_example(t64(zs), t64(icl), t64(ft), normalize=False)
    np.testing.assert_allclose(got_norm.numpy(), ref_norm, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_raw.numpy(), ref_raw, rtol=0, atol=1e-12)
    assert got_norm.shape == (5, 4) and got_norm.dtype == torch.float64
    # Normalising first makes each vector's scale irrelevant; the raw version is not.
    scaled = M.simaou_per_example(t64(zs), t64(icl * 7.0), t64(ft * 0.2))
    np.testing.assert_allclose(scaled.numpy(), ref_norm, atol=1e-12)
    scaled_raw = M.simaou_per_example(t64(zs), t64(icl * 7.0), t64(ft * 0.2), normalize=False)
    assert not np.allclose(scaled_raw.numpy(), ref_raw, atol=1e-3)


def test_simaou_accepts_half_precision_inputs():
    rng = np.random.default_rng(2)
    zs, icl, ft = (torch.tensor(rng.normal(size=(2, 3, 8)), dtype=torch.float16) for _ in range(3))
    ref = np_cos(
        np_norm_hidden(icl.double().numpy()) - np_norm_hidden(zs.double().numpy()),
        np_norm_hidden(ft.double().numpy()) - np_norm_hidden(zs.double().numpy()),
    )
    np.testing.assert_allclose(M.simaou_per_example(zs, icl, ft).numpy(), ref, atol=1e-12)


def test_simaou_zero_updates_give_zero_not_nan():
    h_zs, h_icl, h_ft = deutch_case(3.0, 3.0)
    for normalize in (True, False):
        same_icl = M.simaou_per_example(h_zs, h_zs.clone(), h_ft, normalize=normalize)
        same_ft = M.simaou_per_example(h_zs, h_icl, h_zs.clone(), normalize=normalize)
        assert float(same_icl) == 0.0 and float(same_ft) == 0.0
    # A positive rescaling of h_ZS is a zero update after normalisation, not before:
    # h_ICL = 2z → raw Δ_ICL = z; h_FT = 2z + r' → raw Δ_FT = z + r' (|z + r'| = 2), cos = 1/2.
    h_ft2 = 2 * h_zs + (h_ft - h_zs)
    assert float(M.simaou_per_example(h_zs, 2 * h_zs, h_ft2)) == 0.0
    assert float(M.simaou_per_example(h_zs, 2 * h_zs, h_ft2, normalize=False)) == pytest.approx(0.5)


def test_simaou_shape_check():
    with pytest.raises(ValueError):
        M.simaou_per_example(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


# ------------------------------------------------------------------------------------------
# 3-4. Random SimAOU baselines


def test_random_simaou_deterministic_per_seed():
    rng = np.random.default_rng(3)
    zs, icl = t64(rng.normal(size=(4, 3, 32))), t64(rng.normal(size=(4, 3, 32)))
    a = M.random_simaou_per_example(zs, icl, 123)
    b = M.random_simaou_per_example(zs, icl, torch.Generator().manual_seed(123))
    c = M.random_simaou_per_example(zs, icl, 124)
    assert a.shape == (4, 3)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(TypeError):
        M.random_simaou_per_example(zs, icl, 1.5)


def test_random_simaou_is_not_zero_mean_official_bias():
    # h_ZS = e1, h_ICL = e1 − (2/d)·1 has norm exactly 1 ((1 − 2/d)² + (d − 1)·4/d² = 1), so
    # Δ_ICL = −(2/d)·1 and cos(Δ_ICL, u) = −Σu / (√d |u|) → −E[u]/√E[u²] = −(1/2)/√(1/3) = −√3/2
    # for u ~ U[0,1)^d. A zero-mean baseline would give ≈ 0 here.
    d, n, L = 4096, 4, 2
    zs = torch.zeros(n, L, d, dtype=torch.float64)
    zs[..., 0] = 1.0
    icl = zs - 2.0 / d
    ones = torch.ones(n, L, dtype=torch.float64)
    assert torch.allclose(torch.linalg.vector_norm(icl, dim=-1), ones)
    s = M.random_simaou_per_example(zs, icl, 0)
    assert float(s.mean()) == pytest.approx(-math.sqrt(3) / 2, abs=0.01)
    # Unnormalised Δ_ICL = +1 direction gives +√3/2.
    s_raw = M.random_simaou_per_example(zs, zs + 1.0, 0, normalize=False)
    assert float(s_raw.mean()) == pytest.approx(math.sqrt(3) / 2, abs=0.01)


def orthogonal_case(n, L, d, a_icl, a_ft, seed=0):
    """Per (i, l): random z, r ⟂ z, r' ⟂ {z, r}, |r|² = a_icl|z|², |r'|² = a_ft|z|²."""
    rng = np.random.default_rng(seed)
    z, r, rp = (rng.normal(size=(n, L, d)) for _ in range(3))

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def remove(v, u):  # remove the component along unit u
        return v - (v * u).sum(-1, keepdims=True) * u

    zu = unit(z)
    ru = unit(remove(r, zu))
    rpu = unit(remove(remove(rp, zu), ru))
    zn = np.linalg.norm(z, axis=-1, keepdims=True)
    return t64(z), t64(z + math.sqrt(a_icl) * zn * ru), t64(z + math.sqrt(a_ft) * zn * rpu)


def test_fair_random_baseline_reproduces_normalisation_bias():
    # Deutch's case in d = 2048: real FT update is unrelated to ICL's, yet normalised SimAOU is
    # exactly 1/4. The fair random update of the same norm goes through the same pipeline and so
    # shows the same bias (≈ 1/4; random r'' is only approximately ⟂ z, r: O(1/√d) noise).
    n, L, d = 16, 4, 2048
    zs, icl, ft = orthogonal_case(n, L, d, 3.0, 3.0)
    real = M.simaou_per_example(zs, icl, ft)
    assert torch.allclose(real, torch.full((n, L), 0.25, dtype=torch.float64), atol=1e-10)
    fair = M.fair_random_simaou_per_example(zs, icl, ft, 0)
    assert fair.shape == (n, L)
    assert float(fair.mean()) == pytest.approx(0.25, abs=0.015)
    # The zero-mean, unnormalised random cosine has no shared −ĥ_ZS component: ≈ 0.
    fair_raw = M.fair_random_simaou_per_example(zs, icl, ft, 0, normalize=False)
    assert abs(float(fair_raw.mean())) < 0.01
    assert float(fair.mean()) > float(fair_raw.mean()) + 0.2
    # The official U[0,1) baseline does not see the bias either (Δ_ICL here is ~zero-mean).
    assert abs(float(M.random_simaou_per_example(zs, icl, 0).mean())) < 0.05


def test_fair_random_baseline_matches_the_ft_update_norm():
    # Bias depends on |h_FT − h_ZS|: with |r'|² = 8|z|² it is √((1 − 1/2)(1 − 1/3))/2 = √(1/3)/2
    # ≈ 0.2887 (see test_simaou_normalised_bias_general_formula), not 1/4.
    zs, icl, ft = orthogonal_case(16, 4, 2048, 3.0, 8.0, seed=5)
    fair = M.fair_random_simaou_per_example(zs, icl, ft, 1)
    assert float(fair.mean()) == pytest.approx(math.sqrt(1 / 3) / 2, abs=0.015)


def test_fair_random_baseline_zero_update_and_determinism():
    zs, icl, ft = orthogonal_case(3, 2, 64, 3.0, 3.0)
    zero = M.fair_random_simaou_per_example(zs, icl, zs.clone(), 0)
    assert torch.equal(zero, torch.zeros(3, 2, dtype=torch.float64))
    a = M.fair_random_simaou_per_example(zs, icl, ft, 7)
    assert torch.equal(a, M.fair_random_simaou_per_example(zs, icl, ft, 7))
    assert not torch.allclose(a, M.fair_random_simaou_per_example(zs, icl, ft, 8))


# ------------------------------------------------------------------------------------------
# 5-6. SimAM and SimAM∆


def test_simam_hand_example_and_padding_invariance():
    # head 0: cos([1, 0], [1, 1]) = 1/√2; head 1: cos([3, 4], [3, 4]) = 1 → mean (1/√2 + 1)/2.
    m_a = t64([[[[1.0, 0.0], [3.0, 4.0]]]])
    m_b = t64([[[[1.0, 1.0], [3.0, 4.0]]]])
    expected = (1 / math.sqrt(2) + 1) / 2
    assert float(M.simam_per_example(m_a, m_b)) == pytest.approx(expected, abs=1e-12)
    pad = torch.nn.functional.pad  # 3 zeros on the left, 2 on the right
    assert float(M.simam_per_example(pad(m_a, (3, 2)), pad(m_b, (3, 2)))) == pytest.approx(expected, abs=1e-12)
    # A zero map (e.g. an all-padding head) gives cosine 0, not NaN: (0 + 1)/2.
    m_c = m_a.clone()
    m_c[..., 0, :] = 0
    assert float(M.simam_per_example(m_c, m_b)) == pytest.approx(0.5, abs=1e-12)


def test_simam_matches_official_left_padding_on_ragged_examples():
    rng = np.random.default_rng(4)
    n, L, H = 5, 3, 4
    lens = [3, 7, 5, 7, 1]
    maps = [[rng.normal(size=(L, H, t)) for t in lens] for _ in range(3)]  # zs, icl, ft
    T = max(lens)

    def padded(which, side):
        out = np.zeros((n, L, H, T))
        for i, t in enumerate(lens):
            if side == "left":
                out[i, ..., T - t :] = maps[which][i]
            else:
                out[i, ..., :t] = maps[which][i]
        return out

    # official: cos per (i, l, h) on left-padded maps, mean over heads
    ref_before = np_cos(padded(1, "left"), padded(0, "left")).mean(axis=2)
    ref_after = np_cos(padded(1, "left"), padded(2, "left")).mean(axis=2)
    got_before = M.simam_per_example(t64(padded(1, "right")), t64(padded(0, "right")))
    got_after = M.simam_per_example(t64(padded(1, "left")), t64(padded(2, "left")))
    assert got_before.shape == (n, L)
    np.testing.assert_allclose(got_before.numpy(), ref_before, atol=1e-12)
    np.testing.assert_allclose(got_after.numpy(), ref_after, atol=1e-12)
    # Deutch's SimAM∆ (their metrics.py, diff=True), per head then mean over heads
    zs, icl, ft = padded(0, "left"), padded(1, "left"), padded(2, "left")
    ref_delta = np_cos(icl - zs, ft - zs).mean(axis=2)
    got_delta = M.simam_delta_per_example(t64(padded(0, "right")), t64(padded(1, "right")), t64(padded(2, "right")))
    np.testing.assert_allclose(got_delta.numpy(), ref_delta, atol=1e-12)


def test_simam_delta_hand_example_and_zero_update():
    # head 0: Δ_ICL = [2,1]−[1,1] = [1,0], Δ_FT = [2,2]−[1,1] = [1,1] → 1/√2
    # head 1: FT = ZS → zero update → 0.          mean = 1/(2√2)
    zs = t64([[[[1.0, 1.0], [1.0, 1.0]]]])
    icl = t64([[[[2.0, 1.0], [2.0, 1.0]]]])
    ft = t64([[[[2.0, 2.0], [1.0, 1.0]]]])
    expected = 1 / (2 * math.sqrt(2))
    assert float(M.simam_delta_per_example(zs, icl, ft)) == pytest.approx(expected, abs=1e-12)
    # opposite updates: Δ_FT = [−1, 0] on both heads → −1
    ft_opp = t64([[[[0.0, 1.0], [0.0, 1.0]]]])
    assert float(M.simam_delta_per_example(zs, icl, ft_opp)) == pytest.approx(-1.0, abs=1e-12)
    assert float(M.simam_delta_per_example(zs, zs.clone(), ft)) == 0.0


def test_simam_is_dominated_by_shared_zs_map_but_simam_delta_is_not():
    # Deutch's point (definitions §12.1): a large shared m_ZS makes raw maps look alike even when the two
    # updates are orthogonal. m_ZS = [10,10,10], Δ_ICL = [1,−1,0]·0.1, Δ_FT = [1,1,−2]·0.1 (⟂).
    zs = t64([[[[10.0, 10.0, 10.0]]]])
    icl = zs + 0.1 * t64([1.0, -1.0, 0.0])
    ft = zs + 0.1 * t64([1.0, 1.0, -2.0])
    assert float(M.simam_per_example(icl, ft)) > 0.999
    assert float(M.simam_delta_per_example(zs, icl, ft)) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# 7-8. Kendall tau-b


def test_kendall_tau_b_hand_examples():
    # x = [1,2,3], y = [1,3,2]: pairs (1,2) C, (1,3) C, (2,3) D → (2 − 1)/3 = 1/3.
    assert float(M.kendall_tau_b(t64([1, 2, 3]), t64([1, 3, 2]))) == pytest.approx(1 / 3, abs=1e-12)
    # Ties: x = [1,1,2], y = [1,2,3]: n0 = 3, x-ties n1 = 1, y-ties 0; (1,2) tied in x,
    # (1,3) C, (2,3) C → tau_b = 2 / √((3 − 1)(3 − 0)) = 2/√6. (tau-a would be 2/3.)
    tied = float(M.kendall_tau_b(t64([1, 1, 2]), t64([1, 2, 3])))
    assert tied == pytest.approx(2 / math.sqrt(6), abs=1e-12)
    # reversed order → −1
    assert float(M.kendall_tau_b(t64([1, 2, 3, 4]), t64([9, 5, 2, -1]))) == pytest.approx(-1.0)


@pytest.mark.parametrize("n_items", [2, 3, 5, 8, 9, 37, 128, 400])
@pytest.mark.parametrize("ties", ["none", "x", "y", "both"])
def test_kendall_tau_b_matches_scipy(n_items, ties):
    rng = np.random.default_rng(n_items * 10 + len(ties))
    rows = 12
    x = rng.normal(size=(rows, n_items))
    y = rng.normal(size=(rows, n_items))
    if ties in ("x", "both"):
        x = rng.integers(0, 4, size=(rows, n_items)).astype(float)
    if ties in ("y", "both"):
        y = rng.integers(0, 3, size=(rows, n_items)).astype(float)
    got = M.kendall_tau_b(t64(x), t64(y))
    ref = np.array([scipy_tau(x[i], y[i]) for i in range(rows)])
    assert got.shape == (rows,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)


def test_kendall_tau_b_degenerate_rows_and_nan():
    x = t64([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [1.0, float("nan"), 2.0]])
    y = t64([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])
    got = M.kendall_tau_b(x, y)
    # constant x, constant y: scipy NaN, documented 0.0; NaN input propagates (scipy default).
    assert got[0].item() == 0.0 and got[1].item() == 0.0
    assert math.isnan(got[2].item())
    assert float(M.kendall_tau_b(t64([3.0]), t64([1.0]))) == 0.0  # N = 1


def test_kendall_tau_b_keeps_leading_dims():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(2, 3, 10)), rng.integers(0, 3, size=(2, 3, 10)).astype(float)
    got = M.kendall_tau_b(t64(x), t64(y))
    assert got.shape == (2, 3)
    assert got[1, 2].item() == pytest.approx(scipy_tau(x[1, 2], y[1, 2]), abs=1e-12)


def test_kendall_per_example_matches_numpy_scipy_with_ties():
    # Integer scores and {−1, 0, 1} queries make many exact ties on both sides.
    rng = np.random.default_rng(7)
    n, L, N, D = 4, 3, 23, 6
    icl = rng.integers(-2, 3, size=(n, L, N)).astype(float)
    q_train = rng.integers(-1, 2, size=(L, N, D)).astype(float)
    q_eval = rng.integers(-1, 2, size=(n, L, D)).astype(float)
    m_ft = (q_train[None] * q_eval[:, :, None, :]).sum(-1)  # official: (n, L, N)
    np.testing.assert_allclose(M.ft_context_scores(t64(q_train), t64(q_eval)).numpy(), m_ft)
    ref = np.array([[scipy_tau(icl[i, layer], m_ft[i, layer]) for layer in range(L)] for i in range(n)])
    got = M.kendall_per_example(t64(icl), t64(q_train), t64(q_eval))
    assert got.shape == (n, L)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    assert len(np.unique(m_ft[0, 0])) < N  # the case really has ties


def test_kendall_softmax_flag_reproduces_official_underflow_ties():
    # Scores far below the row max underflow to exactly 0 after a float64 softmax (official
    # np_softmax), creating ties that the raw scores do not have.
    icl = t64([[[0.0, -800.0, -900.0, -1000.0, -1.0, -2.0]]])
    q_train = t64([[[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]])  # m_FT = [1..6]·q
    q_eval = t64([[[1.0]]])

    def np_softmax(x):
        x = x - x.max(axis=-1, keepdims=True)
        return np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)

    m_ft = np.arange(1.0, 7.0)
    ref_soft = scipy_tau(np_softmax(icl.numpy()[0, 0]), np_softmax(m_ft))
    ref_raw = scipy_tau(icl.numpy()[0, 0], m_ft)
    got_soft = float(M.kendall_per_example(icl, q_train, q_eval, softmax=True))
    got_raw = float(M.kendall_per_example(icl, q_train, q_eval))
    assert got_soft == pytest.approx(ref_soft, abs=1e-12)
    assert got_raw == pytest.approx(ref_raw, abs=1e-12)
    assert got_soft != pytest.approx(got_raw)


def test_kendall_per_example_rejects_mismatched_token_counts():
    with pytest.raises(ValueError):
        M.kendall_per_example(torch.zeros(2, 3, 5), torch.zeros(3, 6, 4), torch.zeros(2, 3, 4))


def test_random_kendall_deterministic_and_centred():
    g = torch.Generator().manual_seed(1)
    icl = torch.randn(16, 8, 300, generator=g)
    a = M.random_kendall_per_example(icl, 3)
    assert a.shape == (16, 8)
    assert torch.equal(a, M.random_kendall_per_example(icl, torch.Generator().manual_seed(3)))
    assert not torch.allclose(a, M.random_kendall_per_example(icl, 4))
    # Under independence tau has sd √(2(2N+5)/(9N(N−1))) ≈ 0.039 for N = 300; the mean of 128
    # values has sd ≈ 0.0035.
    assert abs(float(a.mean())) < 0.015
    assert 0.02 < float(a.std()) < 0.06


# ------------------------------------------------------------------------------------------
# 9. Aggregation and bootstrap


def test_layer_curve_and_overall():
    x = t64([[1.0, float("nan")], [3.0, 4.0]])
    np.testing.assert_allclose(S.layer_curve(x).numpy(), [2.0, 4.0])
    assert S.overall(x) == pytest.approx(3.0)
    assert S.overall(t64([1.0, 0.0, 0.0, 1.0])) == pytest.approx(0.5)  # [n] input
    assert math.isnan(S.overall(t64([[1.0, float("nan")], [2.0, float("nan")]])))


def test_bootstrap_constant_data_and_determinism():
    lo, hi = S.bootstrap_ci(torch.full((20, 5), 0.3, dtype=torch.float64))
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.3)
    rng = np.random.default_rng(8)
    x = t64(rng.normal(size=(50, 6)))
    assert S.bootstrap_ci(x, seed=1) == S.bootstrap_ci(x, seed=1)
    assert S.bootstrap_ci(x, seed=1) != S.bootstrap_ci(x, seed=2)
    with pytest.raises(ValueError):
        S.bootstrap_ci(x, alpha=1.5)
    assert all(math.isnan(v) for v in S.bootstrap_ci(torch.zeros(0, 3)))


def test_bootstrap_matrix_and_function_forms_use_the_same_resamples():
    rng = np.random.default_rng(9)
    x = t64(rng.normal(size=(30, 4)))
    mat = S.bootstrap_ci(x, n_boot=200, seed=5)
    fn = S.bootstrap_ci_fn(lambda idx: S.overall(x[idx]), 30, n_boot=200, seed=5)
    via_callable = S.bootstrap_ci(lambda idx: S.overall(x[idx]), n_boot=200, seed=5, n=30)
    assert mat == pytest.approx(fn, abs=1e-12)
    assert via_callable == fn
    with pytest.raises(ValueError):
        S.bootstrap_ci(lambda idx: 0.0)


def test_bootstrap_width_matches_normal_theory():
    # Mean of n = 400 iid N(0.3, 1) values: 95% interval ≈ mean ± 1.96/√400 → width ≈ 0.196.
    rng = np.random.default_rng(10)
    v = rng.normal(0.3, 1.0, size=400)
    lo, hi = S.bootstrap_ci(t64(v), n_boot=2000, seed=0)
    assert lo < v.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * v.std() / 20, rel=0.12)


def test_bootstrap_of_rec2ftp_function_form():
    rng = np.random.default_rng(11)
    n = 200
    zs = torch.tensor(rng.random(n) < 0.4)
    icl = torch.tensor(rng.random(n) < 0.9)
    ft = torch.tensor(rng.random(n) < 0.5)
    point = M.rec2ftp(zs, icl, ft)
    lo, hi = S.bootstrap_ci_fn(lambda idx: M.rec2ftp(zs[idx], icl[idx], ft[idx]), n, n_boot=300)
    assert 0.0 <= lo < point < hi <= 1.0
    # accuracy through the matrix form on 0/1 values
    lo_a, hi_a = S.bootstrap_ci(icl.double())
    assert lo_a < M.accuracy(icl) < hi_a


# ------------------------------------------------------------------------------------------
# 10. Next-token distributions (definitions §12.2)


def test_kl_divergence_against_a_hand_computed_value():
    # p = (1/2, 1/4, 1/4), q = (1/4, 1/4, 1/2): KL = 1/2 ln 2 + 0 + 1/4 ln(1/2) = ln(2)/4.
    p = torch.tensor([[0.5, 0.25, 0.25]]).log()
    q = torch.tensor([[0.25, 0.25, 0.5]]).log()
    assert S.kl_divergence(p, q).tolist() == pytest.approx([math.log(2) / 4])
    assert S.kl_divergence(p, p).tolist() == pytest.approx([0.0], abs=1e-15)
    # A zero of p costs nothing; a zero of q where p > 0 is infinite.
    zero_p = torch.tensor([[0.0, 0.5, 0.5]]).log()
    assert S.kl_divergence(zero_p, q).tolist() == pytest.approx([0.5 * math.log(2) + 0.0])
    assert S.kl_divergence(q, zero_p).tolist() == [math.inf]
    with pytest.raises(ValueError, match=r"\[n, V\]"):
        S.kl_divergence(p[0], q[0])


def test_kl_divergence_matches_scipy_on_random_rows():
    rng = np.random.default_rng(12)
    logits_p, logits_q = rng.normal(size=(5, 50)), rng.normal(size=(5, 50))
    p = torch.log_softmax(t64(logits_p), -1)
    q = torch.log_softmax(t64(logits_q), -1)
    expected = [scipy.stats.entropy(np.exp(a), np.exp(b)) for a, b in zip(p.numpy(), q.numpy())]
    np.testing.assert_allclose(S.kl_divergence(p.float(), q.float()).numpy(), expected, rtol=1e-5)


def test_topk_overlap_counts_shared_tokens():
    # top-3 of p = {0, 1, 2}, of q = {2, 3, 4} (largest first): one shared token.
    p = t64([[9.0, 8.0, 7.0, 1.0, 0.0]])
    q = t64([[0.0, 1.0, 7.0, 8.0, 9.0]])
    assert S.topk_overlap(p, q, k=3).tolist() == [pytest.approx(1 / 3)]
    assert S.topk_overlap(p, p, k=3).tolist() == [1.0]
    assert S.topk_overlap(p, q, k=5).tolist() == [1.0]
    with pytest.raises(ValueError, match="k must be"):
        S.topk_overlap(p, q, k=6)
