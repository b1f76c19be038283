"""Several draws of one pair: values, intervals, gates, noise layers and verdicts on a tiny model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pytest_icl.analysis.aggregate import analyse
from pytest_icl.analysis.draws import analyse_draws
from pytest_icl.analysis.verdicts import INCONCLUSIVE, OUTCOMES, decide_properties
from pytest_icl.engine.runs import run_settings
from tests.tiny_models import make_tiny_model
from tests.unit.test_runs import _task


def _draws(arch: str, count: int):
    model, tokenizer = make_tiny_model(arch)
    base = _task(shots=4)
    pool = base.demonstrations + base.eval_examples[:4]
    draws, first = [], None
    for s in range(count):
        demos = tuple(pool[(s + i) % len(pool)] for i in range(4))
        task = dataclasses.replace(base, demonstrations=demos, eval_examples=base.eval_examples[4:] + base.eval_examples[:4])
        records = run_settings(model, tokenizer, task, batch_size=4, zsl=first.zsl if first else None)
        first = first or records
        draws.append(records)
    return draws


@pytest.fixture(scope="module")
def llama_draws():
    return _draws("llama", 3)


def test_one_draw_gives_the_single_run_values(llama_draws):
    single = analyse(llama_draws[0], seed=0)
    one = analyse_draws(llama_draws[:1], seed=0)
    for name in ("acc_icl", "acc_ft", "simaou", "simam_after", "kendall", "kendall_random", "simaou_fair_random"):
        assert one.values[name] == pytest.approx(single.values[name], abs=1e-12, nan_ok=True), name
    assert one.counts["draws"] == 1


def test_values_are_means_over_draws_and_intervals_contain_them(llama_draws):
    analysis = analyse_draws(llama_draws, seed=0)
    assert analysis.counts["draws"] == 3
    for name in ("acc_icl", "simaou", "simam_after"):
        assert analysis.values[name] == pytest.approx(sum(analysis.per_draw[name]) / 3)
        low, high = analysis.intervals[name]
        assert low <= analysis.values[name] <= high
    # ZSL runs once: every draw carries the same ZSL accuracy
    assert len(set(analysis.per_draw["acc_zsl"])) == 1


def test_rope_layer_zero_is_left_out_of_simam_delta(llama_draws):
    analysis = analyse_draws(llama_draws, seed=0)
    assert 0 in analysis.left_out_layers
    assert math.isnan(analysis.layers["simam_delta"][0])
    assert all(m.shape[-1] == len(analysis.layers["simam_delta"]) - len(analysis.left_out_layers) for m in analysis.evidence["simam_delta"])


def test_every_property_has_one_of_the_four_outcomes_and_gates_can_close(llama_draws):
    analysis = analyse_draws(llama_draws, seed=0)
    verdicts = decide_properties(analysis, {})
    assert set(verdicts) == {"accuracy", "rec2ftp", "simaou", "simam", "kendall"}
    assert all(v.outcome in OUTCOMES for v in verdicts.values())
    # A random tiny model has no ICL effect: every gated property is inconclusive, with the reason.
    assert not analysis.gates["icl_effect"].open
    for name in ("rec2ftp", "simaou", "simam", "kendall"):
        assert verdicts[name].outcome == INCONCLUSIVE and "ICL" in verdicts[name].reason
    ungated = decide_properties(analysis, {}, gates_on=False)
    assert ungated["simaou"].outcome != INCONCLUSIVE
    assert "shuffled-label control" in ungated["simaou"].message


def test_draws_must_share_their_eval_set(llama_draws):
    other = dataclasses.replace(llama_draws[1], gold=torch.flip(llama_draws[1].gold, [0]))
    with pytest.raises(ValueError, match="same eval examples"):
        analyse_draws([llama_draws[0], other])


def _kendall_evidence(real: float, shuffled: float | None):
    """An analysis whose Kendall is ``real`` (random control 0) in 3 draws × 40 examples, and Kendall
    with shuffled-label FT ``shuffled`` (None: undefined, NaN)."""
    from pytest_icl.analysis.aggregate import Analysis

    g = torch.Generator().manual_seed(3)
    noise = [0.01 * torch.randn(40, 2, generator=g, dtype=torch.float64) for _ in range(3)]
    zero = [torch.zeros(40, 2, dtype=torch.float64)] * 3
    other = math.nan if shuffled is None else shuffled
    evidence = {"kendall": [real + n for n in noise], "kendall_random": zero, "kendall_shuffled": [z + other for z in zero]}
    return Analysis(values={}, intervals={}, layers={}, counts={"draws": 3}, evidence=evidence)


@pytest.mark.parametrize(
    ("real", "shuffled", "expected"),
    [
        (0.1, 0.0, "passed"),  # beats both controls
        (0.1, None, INCONCLUSIVE),  # beats its random control; the shuffled one cannot be computed
        (-0.1, None, "failed"),  # below its random control: failed whatever the other says
        (0.1, 0.2, "failed"),  # shuffled-label FT resembles ICL more
    ],
)
def test_an_undefined_shuffled_control_makes_a_similarity_inconclusive_not_undecided(real, shuffled, expected):
    from pytest_icl.analysis.verdicts import decide_property

    verdict = decide_property("kendall", _kendall_evidence(real, shuffled), margin=0.0, n_boot=300)
    assert verdict.outcome == expected
    if expected == INCONCLUSIVE:
        assert "shuffled-label control of kendall is undefined" in verdict.reason and "more draws" not in verdict.reason
