"""The gates (pytest_icl.analysis.gates) on constructed records whose answer is known: a constant
ICL is gated out, FT below ZSL is gated out, |D| = 2 is inconclusive, a layer where ICL's
attention to the query equals ZSL's to rounding is left out; every gate says why."""

from __future__ import annotations

import pytest
import torch

from pytest_icl.analysis import gates
from pytest_icl.analysis.gates import (
    DEFAULT_REL_TOL,
    Gate,
    combine,
    ft_learned,
    icl_beats_constant,
    icl_beats_zsl,
    majority_rate,
    noise_layers,
    noise_layers_from_scores,
    not_single_class,
    rec2ftp_support,
    score_differences,
)

N = 100
GOLD = torch.tensor([0] * 60 + [1] * 40)  # majority-class rate 0.6


def _predictions_with_accuracy(correct: int, seed: int) -> torch.Tensor:
    """Binary predictions right on a random ``correct`` of the N examples."""
    g = torch.Generator().manual_seed(seed)
    right = torch.zeros(N, dtype=torch.bool)
    right[torch.randperm(N, generator=g)[:correct]] = True
    return torch.where(right, GOLD, 1 - GOLD)


# ---------------------------------------------------------------------------------------------
# ICL


def test_a_constant_icl_is_gated_out():
    """ICL always answering the majority class: its accuracy is the majority rate, exactly."""
    icl_pred = [torch.zeros(N, dtype=torch.long)] * 3
    icl_correct = [p == GOLD for p in icl_pred]
    zsl_correct = _predictions_with_accuracy(40, seed=0) == GOLD  # a weak zero-shot: ICL beats it

    assert icl_beats_zsl(icl_correct, zsl_correct).open
    constant = icl_beats_constant(icl_correct, GOLD)
    single = not_single_class(icl_pred, gold=GOLD)
    assert not constant.open and not single.open
    assert "majority-class rate 0.600" in constant.reason
    assert "share 1.000" in single.reason and "one class" in single.reason
    gate = combine(icl_beats_zsl(icl_correct, zsl_correct), constant, single, name="similarity")
    assert not gate.open and "icl_vs_constant" in gate.reason and "icl_vs_zsl" not in gate.reason
    assert str(gate).startswith("similarity gate closed:")


def test_an_icl_that_learned_opens_the_icl_gates():
    icl_pred = [_predictions_with_accuracy(90, seed=s) for s in range(3)]
    icl_correct = [p == GOLD for p in icl_pred]
    zsl_correct = _predictions_with_accuracy(55, seed=9) == GOLD
    for gate in (icl_beats_zsl(icl_correct, zsl_correct), icl_beats_constant(icl_correct, GOLD), not_single_class(icl_pred)):
        assert gate.open, gate.reason
    assert "95% CI" in icl_beats_zsl(icl_correct, zsl_correct).reason


def test_icl_no_better_than_zero_shot_is_gated_out():
    zsl_correct = _predictions_with_accuracy(70, seed=1) == GOLD
    icl_correct = [_predictions_with_accuracy(71, seed=s) == GOLD for s in range(3)]
    gate = icl_beats_zsl(icl_correct, zsl_correct)
    assert not gate.open and "no ICL effect" in gate.reason


def test_one_sided_answers_on_a_skewed_eval_set_are_not_degenerate():
    gold = torch.tensor([0] * 95 + [1] * 5)
    pred = gold.clone()
    pred[-2:] = 0  # 97 % class 0, the gold labels 95 %
    assert not not_single_class(pred).open  # without the gold labels: one-sided
    assert not_single_class(pred, gold=torch.tensor([0] * 97 + [1] * 3)).open
    assert not not_single_class(pred, gold=gold).open  # more one-sided than the gold labels
    assert majority_rate(gold) == pytest.approx(0.95)


# ---------------------------------------------------------------------------------------------
# FT


def test_ft_below_zero_shot_is_gated_out_even_when_it_fixes_some_errors():
    zsl = _predictions_with_accuracy(70, seed=2) == GOLD
    ft = zsl.clone()
    wrong = (~zsl).nonzero().reshape(-1)
    right = zsl.nonzero().reshape(-1)
    ft[wrong[:12]] = True  # fixes 12 zero-shot errors ...
    ft[right[:30]] = False  # ... and breaks 30
    gate = ft_learned([ft, ft, ft], zsl, min_fixes=10)
    assert not gate.open
    assert "below zero-shot" in gate.reason and "fixes 12 zero-shot error(s)" in gate.reason


def test_ft_that_beats_zero_shot_is_open():
    zsl = _predictions_with_accuracy(60, seed=3) == GOLD
    ft = [zsl | (torch.rand(N, generator=torch.Generator().manual_seed(s)) < 0.5) for s in range(3)]
    gate = ft_learned(ft, zsl)
    assert gate.open and "FT beats zero-shot" in gate.reason


def test_ft_that_fixes_enough_errors_without_a_net_gain_is_open():
    zsl = _predictions_with_accuracy(70, seed=4) == GOLD
    ft = zsl.clone()
    ft[(~zsl).nonzero().reshape(-1)[:10]] = True
    ft[zsl.nonzero().reshape(-1)[:10]] = False  # as many broken: accuracy unchanged
    assert ft_learned(ft, zsl, min_fixes=10).open
    closed = ft_learned(ft, zsl, min_fixes=11)
    assert not closed.open and "neither" in closed.reason


def test_ft_that_changed_nothing_is_gated_out():
    zsl = _predictions_with_accuracy(70, seed=5) == GOLD
    gate = ft_learned([zsl.clone()] * 3, zsl)
    assert not gate.open and "fixes 0 zero-shot error(s)" in gate.reason


# ---------------------------------------------------------------------------------------------
# Rec2FTP support


def test_rec2ftp_with_two_examples_in_d_is_inconclusive():
    zsl = torch.ones(N, dtype=torch.bool)
    zsl[:20] = False
    ft = zsl.clone()
    ft[:2] = True  # |D| = 2
    gate = rec2ftp_support(zsl, ft)
    assert not gate.open
    assert "|D| = 2 per draw" in gate.reason and "minimum 10" in gate.reason


def test_rec2ftp_support_is_counted_per_draw():
    zsl = torch.ones(N, dtype=torch.bool)
    zsl[:20] = False
    many, few = zsl.clone(), zsl.clone()
    many[:15] = True
    few[:9] = True
    assert rec2ftp_support(zsl, [many, many]).open
    gate = rec2ftp_support(zsl, [many, few, many])
    assert not gate.open and "15, 9, 15" in gate.reason


# ---------------------------------------------------------------------------------------------
# noise layers


def _scores(seed: int, n=4, layers=3, heads=2, tokens=5) -> torch.Tensor:
    return torch.randn(n, layers, heads, tokens, generator=torch.Generator().manual_seed(seed)) * 3


def test_a_layer_where_icl_equals_zsl_to_rounding_is_left_out():
    zsl = _scores(0)
    icl = zsl + 0.5 * _scores(1)
    icl[:, 0] = zsl[:, 0] * (1 + 1e-7)  # layer 0: fp32 rounding, as at a RoPE model's first layer
    second = icl.clone()
    second[:, 1:] += 0.1 * _scores(2)[:, 1:]  # another draw: other real changes, the same layer 0
    layers = noise_layers_from_scores(zsl, [icl, second])
    assert layers.left_out == (0,)
    assert layers.keep == (False, True, True)
    assert "layer(s) 0" in layers.reason and "left out of SimAM∆ and its controls" in layers.reason
    assert layers.gate.open
    per_example = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(layers.apply(per_example), per_example[:, 1:])
    with pytest.raises(ValueError, match="layers"):
        layers.apply(torch.zeros(4, 2))


def test_a_zero_difference_layer_is_left_out_and_a_tiny_real_one_kept():
    diff = torch.tensor([0.0, 1e-9, 1e-3, 2.0])
    scale = torch.tensor([5.0, 5.0, 5.0, 5.0])
    layers = noise_layers(diff, scale)
    assert layers.left_out == (0, 1)
    assert DEFAULT_REL_TOL == pytest.approx(64 * 1.1920929e-07)


def test_a_layer_is_noise_only_when_it_is_in_every_draw():
    zsl = _scores(3)
    same = zsl.clone()
    other = zsl.clone()
    other[:, 1] += 0.3
    layers = noise_layers_from_scores(zsl, [same, other])
    assert layers.left_out == (0, 2)
    diff, scale = score_differences(zsl, [same, other])
    assert diff[1] == pytest.approx(0.3, rel=1e-5) and diff[0] == 0
    assert torch.all(scale >= zsl.abs().amax(dim=(0, 2, 3)).double())


def test_nothing_left_closes_the_gate():
    zsl = _scores(4)
    layers = noise_layers_from_scores(zsl, zsl.clone())
    assert layers.left_out == (0, 1, 2) and not layers.gate.open
    assert noise_layers_from_scores(zsl, zsl + 1.0).reason.startswith("no layer left out")


def test_score_differences_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        score_differences(_scores(0), _scores(1, tokens=6))


def test_combine_lists_every_reason_when_open():
    gate = combine(Gate(True, "a", "x"), Gate(True, "b"))
    assert gate.open and gate.reason == "x: a; b"
    with pytest.raises(ValueError):
        combine()
    assert gates.Gate(False, "r").open is False
