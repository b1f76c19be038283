"""The full analysis of a shipped task on SmolLM2, stage by stage (run on demand).

    pytest benchmarks --benchmark-only -s

Reports in ``extra_info``: seconds per stage; total time over the time of plain forward/backward
passes over the same tokens (the cost of capture and bookkeeping); the prefix-reuse speed-up over
re-encoding every prompt; peak resident memory over the fp32 weight size.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch

from pytest_icl.analysis import analyse
from pytest_icl.encoding import encode_task
from pytest_icl.models import load_model
from pytest_icl.runs import run_settings
from pytest_icl.tasks import TaskSource, load_task

TASK = Path(__file__).resolve().parents[1] / "tasks" / "sentiment_blue_red" / "sentiment_blue_red.yaml"


@pytest.fixture(scope="module")
def smollm2():
    lm = load_model("smollm2-135m")
    yield lm
    lm.close()


@pytest.fixture(scope="module")
def task():
    return load_task(TaskSource.from_path(TASK), shots=16, limit=64)


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass


def _plain_passes(model, encoded, batch_size=16) -> float:
    """Forward (and FT backward) passes over the same tokens, with no capture and no bookkeeping."""
    start = time.perf_counter()
    with torch.no_grad():
        for prefix in (encoded.zsl_prefix, encoded.icl_prefix, encoded.zsl_prefix):
            cache = model(torch.tensor([list(prefix)]), use_cache=True).past_key_values if prefix else None
            for lo in range(0, len(encoded.queries), batch_size):
                rows = [list(q) + list(c[0]) for q, cs in zip(encoded.queries[lo : lo + batch_size], encoded.choices[lo : lo + batch_size]) for c in ([cs[0]] if encoded.single_token else cs)]
                width = max(map(len, rows))
                ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
                kwargs = {}
                if cache is not None:
                    c = copy.deepcopy(cache)
                    c.batch_repeat_interleave(len(rows))
                    kwargs = {"past_key_values": c}
                model(input_ids=ids, **kwargs)
    for sequence in encoded.demo_sequences:
        ids = torch.tensor([list(sequence)])
        model(input_ids=ids, labels=ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def test_full_analysis(benchmark, smollm2, task):
    model, tokenizer = smollm2.model, smollm2.tokenizer
    encoded = encode_task(task, tokenizer)
    _reset_peak_rss()

    def full():
        records = run_settings(model, tokenizer, task)
        start = time.perf_counter()
        analysis = analyse(records)
        records.timings["metrics"] = time.perf_counter() - start
        return records, analysis

    records, analysis = benchmark.pedantic(full, rounds=1, iterations=1)
    peak = _peak_rss_bytes()
    total = sum(records.timings.values())
    plain = _plain_passes(model, encoded)
    start = time.perf_counter()
    run_settings(model, tokenizer, task, reuse_prefix=False)
    reencoded = time.perf_counter() - start
    weights = sum(p.numel() * 4 for p in model.parameters())
    benchmark.extra_info.update(
        stages={k: round(v, 2) for k, v in records.timings.items()},
        total_s=round(total, 2),
        plain_passes_s=round(plain, 2),
        total_over_plain=round(total / plain, 2),
        reencode_s=round(reencoded, 2),
        prefix_reuse_speedup=round(reencoded / (total - records.timings["metrics"]), 2),
        peak_rss_gib=round(peak / 2**30, 2),
        peak_rss_over_fp32_weights=round(peak / weights, 2),
        accuracies={k: round(analysis.values[k], 3) for k in ("acc_zsl", "acc_icl", "acc_ft")},
    )
    print(benchmark.extra_info)
    assert analysis.counts["eval"] == 64 and analysis.counts["shots"] == 16
