"""The decision rule (pytest_icl.analysis.decision) on constructed records whose answer is known:
a clear difference passes, a clearly negative one fails, one whose interval straddles the margin
is undecided; the bootstrap is paired, hierarchical over draws, deterministic given a seed, and
its 95 % interval covers a known mean about 95 % of the time."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from pytest_icl.analysis import decision, metrics, stats
from pytest_icl.analysis.decision import (
    FAILED,
    PASSED,
    UNDECIDED,
    Ratio,
    bootstrap_difference,
    decide,
    outcome_of,
    rec2ftp_chance_ratio,
    rec2ftp_ratio,
)

F64 = torch.float64


def _normal(g, *shape, sd=1.0):
    return torch.randn(*shape, generator=g, dtype=F64) * sd


# ---------------------------------------------------------------------------------------------
# the rule


@pytest.mark.parametrize(
    ("low", "high", "margin", "expected"),
    [
        (0.1, 0.2, 0.0, PASSED),
        (-0.2, -0.1, 0.0, FAILED),
        (-0.1, 0.1, 0.0, UNDECIDED),
        (0.0, 0.1, 0.0, UNDECIDED),  # touching the margin is not above it
        (-0.1, 0.0, 0.0, UNDECIDED),
        (0.06, 0.2, 0.05, PASSED),
        (0.01, 0.04, 0.05, FAILED),  # above zero, yet below the margin
        (math.nan, math.nan, 0.0, UNDECIDED),
    ],
)
def test_outcome_of(low, high, margin, expected):
    assert outcome_of(low, high, margin) == expected


def test_a_clear_difference_passes():
    g = torch.Generator().manual_seed(0)
    draws = [0.3 + _normal(g, 200, sd=0.2) for _ in range(3)]
    d = decide(draws, margin=0.0)
    assert d.outcome == PASSED and d.passed
    assert 0.25 < d.estimate < 0.35 and d.interval[0] > 0.2


def test_a_clearly_negative_difference_fails():
    g = torch.Generator().manual_seed(1)
    metric = [_normal(g, 150, sd=0.1) for _ in range(3)]
    control = [m + 0.2 + _normal(g, 150, sd=0.05) for m in metric]
    d = decide(metric, control, margin=0.0)
    assert d.outcome == FAILED and d.failed
    assert d.interval[1] < -0.15


def test_a_difference_whose_interval_straddles_the_margin_is_undecided():
    g = torch.Generator().manual_seed(2)
    draws = [0.02 + _normal(g, 60, sd=0.5) for _ in range(3)]
    d = decide(draws, margin=0.0)
    low, high = d.interval
    assert low < 0.0 < high
    assert d.outcome == UNDECIDED and not d.passed and not d.failed
    assert "undecided" in d.message("SimAOU above control") and "CI" in d.message()


def test_positive_but_below_the_margin_fails():
    g = torch.Generator().manual_seed(3)
    draws = [0.02 + _normal(g, 400, sd=0.02) for _ in range(3)]
    assert decide(draws, margin=0.0).outcome == PASSED
    assert decide(draws, margin=0.05).outcome == FAILED


def test_a_constant_difference_has_a_degenerate_interval():
    control = torch.linspace(0, 1, 40, dtype=F64)
    metric = [control + 0.1, control + 0.1]
    b = bootstrap_difference(metric, control)
    assert b.estimate == pytest.approx(0.1)
    assert b.low == pytest.approx(0.1) and b.high == pytest.approx(0.1)
    assert b.per_draw == pytest.approx((0.1, 0.1))


# ---------------------------------------------------------------------------------------------
# paired, hierarchical, seeded


def test_pairing_cancels_what_metric_and_control_share():
    """A small real gain under a large shared per-example spread: clear paired, lost unpaired."""
    g = torch.Generator().manual_seed(4)
    base = _normal(g, 300, sd=1.0)
    metric = [base + 0.05 + _normal(g, 300, sd=0.05)]
    control = base.clone()
    assert decide(metric, control).outcome == PASSED
    unpaired = control[torch.randperm(300, generator=g)]
    assert decide(metric, unpaired).outcome == UNDECIDED


def test_draws_that_disagree_make_the_interval_span_them():
    """Per-draw differences +1, −1, +1 with no example noise: the draws are the uncertainty."""
    metric = [torch.full((50,), v, dtype=F64) for v in (1.0, -1.0, 1.0)]
    d = decide(metric)
    assert d.estimate == pytest.approx(1 / 3)
    assert d.interval == pytest.approx((-1.0, 1.0))
    assert d.outcome == UNDECIDED
    assert d.bootstrap.per_draw == pytest.approx((1.0, -1.0, 1.0))


def test_shared_examples_keep_the_example_effect_across_draws():
    """Draws on one eval set share each example's difficulty; resampling the examples once per
    replicate keeps it, resampling them per draw would average it away (too narrow)."""
    g = torch.Generator().manual_seed(5)
    example = _normal(g, 100, sd=1.0)
    draws = [example + _normal(g, 100, sd=0.1) for _ in range(3)]
    shared = bootstrap_difference(draws)
    independent = bootstrap_difference(draws, shared_examples=False)
    assert shared.shared_examples and not independent.shared_examples
    width = lambda b: b.high - b.low  # noqa: E731
    assert width(shared) > 1.4 * width(independent)


def test_draws_on_their_own_eval_sets():
    g = torch.Generator().manual_seed(6)
    draws = [0.5 + _normal(g, n, sd=0.1) for n in (30, 50, 70)]
    b = bootstrap_difference(draws)
    assert not b.shared_examples and b.n_examples == (30, 50, 70)
    assert b.low < 0.5 < b.high
    with pytest.raises(ValueError, match="different numbers of examples"):
        bootstrap_difference(draws, shared_examples=True)


def test_same_seed_same_interval_other_seed_other_interval():
    g = torch.Generator().manual_seed(7)
    draws = [_normal(g, 80) for _ in range(3)]
    a, b = decide(draws, seed=11), decide(draws, seed=11)
    assert a == b
    assert decide(draws, seed=12).interval != a.interval


def test_one_control_for_every_draw_is_the_same_as_repeating_it():
    g = torch.Generator().manual_seed(8)
    zsl = (torch.rand(90, generator=g) < 0.5).to(F64)
    icl = [(torch.rand(90, generator=g) < 0.7).to(F64) for _ in range(3)]
    assert bootstrap_difference(icl, zsl, seed=3) == bootstrap_difference(icl, [zsl] * 3, seed=3)


def test_a_number_as_control_and_lower_is_better():
    g = torch.Generator().manual_seed(9)
    kl = [0.2 + _normal(g, 100, sd=0.05) for _ in range(2)]
    assert decide(kl, 0.5, better="lower").outcome == PASSED  # 0.5 − KL ≈ 0.3 > 0
    assert decide(kl, 0.5).outcome == FAILED
    assert bootstrap_difference(kl, [0.5, 0.5], seed=4) == bootstrap_difference(kl, 0.5, seed=4)
    lower = bootstrap_difference(kl, 0.5, better="lower")
    higher = bootstrap_difference(kl, 0.5)
    assert lower.estimate == pytest.approx(-higher.estimate)


# ---------------------------------------------------------------------------------------------
# the paper's aggregation and ratio metrics


def test_layer_values_are_aggregated_like_the_paper():
    """[n, L] per draw: nan-mean over examples per layer, then mean over layers (stats.overall)."""
    g = torch.Generator().manual_seed(10)
    metric = _normal(g, 40, 5)
    control = _normal(g, 40, 5)
    metric[3, 1] = math.nan
    metric[7, 4] = math.nan
    b = bootstrap_difference([metric], [control])
    assert b.estimate == pytest.approx(stats.overall(metric) - stats.overall(control))


def test_an_all_nan_layer_is_undefined_and_undecided():
    metric = torch.zeros(20, 3, dtype=F64)
    metric[:, 2] = math.nan
    d = decide([metric])
    assert math.isnan(d.estimate) and d.outcome == UNDECIDED
    assert "undefined" in d.message()


def test_rec2ftp_as_a_ratio_matches_the_metric():
    g = torch.Generator().manual_seed(11)
    zsl, icl, ft = (torch.rand(120, generator=g) < p for p in (0.5, 0.8, 0.6))
    b = bootstrap_difference([rec2ftp_ratio(zsl, icl, ft)], [rec2ftp_chance_ratio(zsl, icl)])
    expected = metrics.rec2ftp(zsl, icl, ft) - metrics.rec2ftp_chance(zsl, icl)
    assert b.estimate == pytest.approx(expected)
    assert b.dropped == 0
    ratio = decision.ft_precision_ratio(zsl, icl, ft)
    assert float(ratio.num.sum() / ratio.den.sum()) == pytest.approx(metrics.ft_precision(zsl, icl, ft))


def test_resamples_with_an_empty_denominator_are_dropped_and_counted():
    zsl = torch.ones(30, dtype=torch.bool)
    zsl[:2] = False  # two ZSL errors, FT fixes both: |D| = 2
    ft = torch.ones(30, dtype=torch.bool)
    icl = torch.ones(30, dtype=torch.bool)
    b = bootstrap_difference([rec2ftp_ratio(zsl, icl, ft)], n_boot=500)
    assert b.estimate == 1.0
    assert 0 < b.dropped < 500  # P(neither example drawn) = (28/30)^30 ≈ 0.13
    assert "resamples undefined" in decision.Decision(UNDECIDED, 0.0, b).message()


def test_bad_inputs_are_refused():
    x = torch.zeros(10)
    with pytest.raises(ValueError, match="paired"):
        bootstrap_difference([x], [torch.zeros(11)])
    with pytest.raises(ValueError, match="2 draws given"):
        bootstrap_difference([x, x, x], [x, x])
    with pytest.raises(ValueError, match="better"):
        bootstrap_difference([x], better="more")
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_difference([x], alpha=1.5)
    with pytest.raises(ValueError, match=r"\[n\] or \[n, L\]"):
        bootstrap_difference([torch.zeros(2, 3, 4)])
    with pytest.raises(ValueError, match="no draws"):
        bootstrap_difference([])
    with pytest.raises(ValueError, match="numerator"):
        bootstrap_difference([Ratio(torch.zeros(3), torch.zeros(4))])


# ---------------------------------------------------------------------------------------------
# coverage


def _coverage(reps: int, n_draws: int, n: int, sd_draw: float, seed: int) -> float:
    """Share of repetitions whose 95 % interval holds the true mean 0.1 of the paired difference.

    Difference d[s, i] = 0.1 + a_s + b_i + e_si: a draw effect, an effect of eval example i
    shared by every draw (one eval set), and noise.
    """
    truth = 0.1
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for rep in range(reps):
        a = _normal(g, n_draws, sd=sd_draw)
        b = _normal(g, n, sd=0.3)
        draws = [truth + a[s] + b + _normal(g, n, sd=0.3) for s in range(n_draws)]
        boot = bootstrap_difference(draws, seed=1000 + rep)
        hits += boot.low <= truth <= boot.high
    return hits / reps


@pytest.fixture
def one_thread():
    """torch's intra-op threads cost more than they save on these small tensors, and on a busy
    shared machine each parallel op waits for a core (~100 ms per bootstrap instead of ~3 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_95_percent_interval_covers_a_known_mean(one_thread):
    """200 simulated pairs, 3 draws on one eval set of 100 examples, example noise dominant:
    the interval covers the truth in 90–98 % of them (measured: see the design note)."""
    coverage = _coverage(reps=200, n_draws=3, n=100, sd_draw=0.02, seed=0)
    assert 0.90 <= coverage <= 0.98, coverage


def _forbidden(name: str) -> bool:
    return name.split(".")[0] in {"pytest", "numpy", "scipy"} or name.startswith("pytest_icl.engine")


def test_the_analysis_modules_import_neither_the_engine_nor_pytest():
    from pytest_icl.analysis import gates

    for module in (decision, gates):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not [name for name in names if _forbidden(name)], names


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["passed"], "passed"),
        (["passed", "passed"], "passed"),
        (["passed", "undecided"], "undecided"),
        (["undecided", "failed"], "failed"),
        (["passed", "failed"], "failed"),
    ],
)
def test_comparisons_a_claim_needs_together_combine_into_one_outcome(outcomes, expected):
    assert decision.combine_outcomes(outcomes) == expected


def test_combining_no_outcome_is_refused():
    with pytest.raises(ValueError, match="no outcome"):
        decision.combine_outcomes([])
