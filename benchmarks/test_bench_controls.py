"""Time cost of each control on SmolLM2 beside the real run it controls (run on demand).

    pytest benchmarks/test_bench_controls.py --benchmark-only -s

One task (sentiment_blue_red, k=16, 64 eval examples, fp32, CPU). ``extra_info`` gives the
seconds of the real run (ZSL + ICL + FT + analysis), of each control's runs and analyses, each
control's verdicts, and the load average (the 2-core machine is shared, so read the seconds
against it). ``seeds`` costs S real runs (S = 3: 3x the real run) and ``output`` only the
KL/top-10 inside every analysis (``output_analysis_s`` beside ``analysis_s``), so neither needs
a run of its own here.

Measured once (2-core CPU shared with four other jobs, load average 5-10, so every figure is
inflated several-fold; the engine benchmark's quiet real run is 12 s): real run 278-518 s
(stages 35/56/156/30 s), analysis 8-10 s; untrained 119 s (no training) + 147 s (trained
embeddings), i.e. two full runs plus an init; shuffled 84-93 s (FT train 73 s + FT eval 16 s +
analysis); lcgd 189-195 s (FT train 147 s: about 2x GD's step at the same load, the lens
computes every layer's logits over the 49k vocabulary); output adds nothing measurable to
analyse (5.1 s with, 5.8 s without, noise). Seeds: S x the real run.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_icl.analysis.aggregate import analyse
from pytest_icl.controls.base import RUNNABLE, run_control
from pytest_icl.models.loading import load_model
from pytest_icl.pipeline import PipelineSettings, run_pipeline
from pytest_icl.tasks.loading import TaskSource

TASK = Path(__file__).resolve().parents[1] / "tasks" / "sentiment_blue_red" / "sentiment_blue_red.yaml"


@pytest.fixture(scope="module")
def real_run():
    lm = load_model("smollm2-135m")
    # the real run the controls are measured beside: one draw, no default control
    result = run_pipeline(lm, TaskSource.from_path(TASK), PipelineSettings(shots=16, limit=64, seeds=1, shuffled=False))
    stages = result.records.timings  # ZSL, ICL and FT; the metrics' seconds are in the row
    real = {
        "real_run_s": round(sum(stages.values()), 2),
        "analysis_s": result.row["timings"]["metrics"],
        "real_stages_s": {k: round(v, 2) for k, v in stages.items()},
        "real_values": {k: round(result.values[k], 3) for k in ("acc_zsl", "acc_icl", "acc_ft", "simaou", "simam_delta", "kendall")},
    }
    yield lm, result.task, result.records, result.analysis, real
    lm.close()


@pytest.mark.parametrize("name", RUNNABLE)
def test_control_cost(benchmark, real_run, name):
    lm, task, records, analysis, real = real_run
    load_before = os.getloadavg()[0]

    def control():
        return run_control(name, lm.model, lm.tokenizer, task, records, batch_size=16, seed=0, base_analysis=analysis)

    result = benchmark.pedantic(control, rounds=1, iterations=1)
    benchmark.extra_info.update(
        **real,
        control_s={variant: round(s, 2) for variant, s in result.seconds.items()},
        control_stages_s={v: {k: round(t, 2) for k, t in a.timings.items()} for v, a in result.analyses.items()},
        over_real_run=round(sum(result.seconds.values()) / (real["real_run_s"] + real["analysis_s"]), 2),
        verdicts=[
            f"{o.check.variant}: {o.check.metric} {o.value:.3f} vs {o.check.control_metric} {o.control:.3f} -> {o.outcome}"
            for o in result.outcomes
        ],
        accuracies={v: {k: round(a.values[k], 3) for k in ("acc_zsl", "acc_icl", "acc_ft")} for v, a in result.analyses.items()},
        load_average=(round(load_before, 2), round(os.getloadavg()[0], 2)),
    )
    print(name, benchmark.extra_info)
    assert set(result.analyses) and result.outcomes


def test_output_distribution_cost(benchmark, real_run):
    lm, task, records, analysis, real = real_run
    assert "kl_icl_ft" in analysis.values, "the records carry no next_logprobs"
    with_output = benchmark.pedantic(lambda: analyse(records, seed=task.settings.seed), rounds=1, iterations=1)
    stripped = replace(records, **{s: replace(getattr(records, s), next_logprobs=None) for s in ("zsl", "icl", "ft")})
    start = time.perf_counter()
    analyse(stripped, seed=task.settings.seed)
    without_s = time.perf_counter() - start
    benchmark.extra_info.update(
        output_analysis_s=round(benchmark.stats.stats.mean, 2),
        analysis_without_output_s=round(without_s, 2),
        values={k: round(with_output.values[k], 4) for k in ("kl_icl_ft", "kl_icl_zsl", "top10_icl_ft", "top10_icl_zsl")},
        load_average=round(os.getloadavg()[0], 2),
    )
    print("output", benchmark.extra_info)
