"""analysis.analyse on hand-made records: the existing keys stay, the output-distribution keys are
added when the records carry next-token log-probabilities and left out when they do not."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pytest_icl.analysis import stats
from pytest_icl.analysis.aggregate import analyse

N, L, D, H, T, CTX = 6, 2, 4, 2, 3, 5
VOCAB = 12
OUTPUT_KEYS = {"kl_icl_ft", "kl_icl_zsl", "top10_icl_ft", "top10_icl_zsl"}


def _setting(g, predictions, gold, *, next_logprobs=None, context=False, queries=False):
    predictions = torch.tensor(predictions)
    return SimpleNamespace(
        logprobs=torch.randn(N, 2, generator=g),
        predictions=predictions,
        correct=predictions == gold,
        outputs=torch.randn(N, L, D, generator=g),
        eval_scores=torch.randn(N, L, H, T, generator=g),
        context_scores=torch.randn(N, L, CTX, generator=g) if context else None,
        queries=torch.randn(N, L, D, generator=g) if queries else None,
        next_logprobs=next_logprobs,
    )


def _records(with_next: bool):
    g = torch.Generator().manual_seed(0)
    gold = torch.tensor([0, 1, 0, 1, 0, 1])
    g_next = torch.Generator().manual_seed(1)  # its own stream: the other tensors are the same either way
    logp = (lambda: torch.log_softmax(torch.randn(N, VOCAB, generator=g_next), -1)) if with_next else (lambda: None)
    return SimpleNamespace(
        zsl=_setting(g, [0, 0, 0, 0, 0, 0], gold, next_logprobs=logp()),
        icl=_setting(g, [0, 1, 0, 1, 1, 1], gold, next_logprobs=logp(), context=True),
        ft=_setting(g, [0, 1, 0, 0, 0, 0], gold, next_logprobs=logp(), queries=True),
        ft_train_queries=torch.randn(L, CTX, D, generator=g),
        ft_aligned=True,
        ft_losses=[1.0, 0.5],
        gold=gold,
        num_training_tokens=CTX,
        prompt_tokens=20,
        timings={"zsl": 0.1},
    )


def test_output_distribution_values_are_added_beside_the_existing_ones():
    without = analyse(_records(False), n_boot=50)
    records = _records(True)
    with_next = analyse(records, n_boot=50)
    assert not OUTPUT_KEYS & set(without.values)
    assert set(with_next.values) == set(without.values) | OUTPUT_KEYS
    assert set(with_next.intervals) == set(without.intervals) | OUTPUT_KEYS
    assert with_next.layers == without.layers and not OUTPUT_KEYS & set(with_next.layers)  # no per-layer curve
    assert with_next.counts == without.counts
    for name, value in without.values.items():  # the same records otherwise: the same numbers
        assert value == pytest.approx(with_next.values[name], nan_ok=True), name

    icl, ft, zsl = records.icl.next_logprobs, records.ft.next_logprobs, records.zsl.next_logprobs
    assert with_next.values["kl_icl_ft"] == pytest.approx(float(stats.kl_divergence(icl, ft).mean()))
    assert with_next.values["top10_icl_zsl"] == pytest.approx(float(stats.topk_overlap(icl, zsl, k=10).mean()))
    low, high = with_next.intervals["kl_icl_zsl"]
    assert low <= with_next.values["kl_icl_zsl"] <= high


def test_existing_outputs_are_unchanged_in_name():
    analysis = analyse(_records(False), n_boot=20)
    assert {"simaou", "simaou_fair_random", "simam_delta", "kendall", "acc_icl", "rec2ftp", "majority_ft"} <= set(analysis.values)
    assert set(analysis.layers) >= {"simaou", "simam_after", "kendall_random"} and len(analysis.layers["simaou"]) == L
    assert analysis.counts["eval"] == N and analysis.counts["shots"] == 2
    assert analysis.values["acc_zsl"] == pytest.approx(0.5) and not math.isnan(analysis.values["simaou"])


def test_kendall_is_undefined_when_ft_trained_on_other_tokens_than_icl_showed():
    records = _records(False)
    records.ft_train_queries = torch.randn(L, CTX + 1, D)  # e.g. a shuffled label one token longer
    analysis = analyse(records, n_boot=20)
    assert math.isnan(analysis.values["kendall"]) and all(math.isnan(v) for v in analysis.layers["kendall"])
    assert not math.isnan(analysis.values["kendall_random"]) and not math.isnan(analysis.values["simaou"])


def test_kendall_is_undefined_when_the_lengths_differ_per_demonstration_but_not_in_total():
    # Permuted labels of 1 and 2 tokens keep the total length: only the per-demonstration check sees it.
    records = _records(False)
    records.ft_aligned = False
    analysis = analyse(records, n_boot=20)
    assert math.isnan(analysis.values["kendall"]) and not math.isnan(analysis.values["simaou"])
