"""How much batching would buy the draws on this machine: one FT step's forward + backward (on demand).

    pytest benchmarks/test_bench_batching.py --benchmark-only -s

SmolLM2-135M, fp32, eager attention, a 25-token sequence (a demonstration's length in the
made-up tasks), gradients only for the key and value projections as FT has them. A batch of B
such sequences is what one FT step of B runs at once would cost if each run kept its own key and
value weights (the rest of the model is shared). ``extra_info`` has the seconds per batch and per
sequence; docs/results.md uses them to bound what batching the draws could save on a CPU.
"""

from __future__ import annotations

import pytest

from pytest_icl.models.loading import load_model

TOKENS = 25


@pytest.fixture(scope="module")
def model():
    lm = load_model("smollm2-135m")
    for parameter in lm.model.parameters():
        parameter.requires_grad_(False)
    for name, module in lm.model.named_modules():
        if name.endswith(("k_proj", "v_proj")):
            module.weight.requires_grad_(True)
    yield lm.model
    lm.close()


@pytest.mark.parametrize("batch", [1, 2, 4, 6])
def test_ft_step_forward_backward(benchmark, model, batch):
    import torch

    ids = torch.randint(100, 1000, (batch, TOKENS), generator=torch.Generator().manual_seed(0))

    def step():
        model(input_ids=ids).logits[:, -1].logsumexp(-1).sum().backward()

    step()  # warm-up: the first pass allocates
    benchmark.pedantic(step, rounds=5, iterations=1)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(batch=batch, seconds_per_sequence=round(mean / batch, 4))
    print(f"\nbatch {batch}: {mean * 1000:.0f} ms per step, {mean * 1000 / batch:.0f} ms per sequence")
    assert mean > 0
