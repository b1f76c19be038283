"""Metric speed at the paper's scale (run on demand: pytest benchmarks --benchmark-only)."""

import torch

from pytest_icl.analysis import metrics, stats


def test_kendall_paper_scale(benchmark):
    # 64 eval examples, 30 layers, 400 training tokens, query dim 1024: target ~1 s on 2 cores.
    g = torch.Generator().manual_seed(0)
    icl = torch.randn(64, 30, 400, generator=g)
    train, queries = torch.randn(30, 400, 1024, generator=g), torch.randn(64, 30, 1024, generator=g)
    tau = benchmark.pedantic(metrics.kendall_per_example, args=(icl, train, queries), rounds=3)
    assert tau.shape == (64, 30)


def test_bootstrap_matrix_form(benchmark):
    x = torch.randn(64, 30, dtype=torch.float64)
    low, high = benchmark(stats.bootstrap_ci, x, n_boot=1000)
    assert low < high
