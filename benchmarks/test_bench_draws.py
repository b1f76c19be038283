"""What several draws and the shuffled-label control cost, beside the single-draw run (on demand).

    pytest benchmarks/test_bench_draws.py --benchmark-only -s

One process, SmolLM2-135M loaded once, the four made-up tasks of the main job (k = 16, 64 eval
examples, fp32, CPU). Each task runs twice, side by side: the old default (one draw, no
shuffled-label control: ``PipelineSettings(seeds=1, shuffled=False)``) and today's default (3
draws: ZSL once, ICL and FT per draw, FT on shuffled labels per draw). ``extra_info`` has the
seconds of each, their ratio, per-stage seconds and the load average (the machine is shared:
read the seconds against it). The issue's budget for the ratio is 2.2; the figure measured is
in docs/results.md, with the commit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_icl.models.loading import load_model
from pytest_icl.pipeline import PipelineSettings, run_pipeline
from pytest_icl.tasks.loading import TaskSource

TASKS = Path(__file__).resolve().parents[1] / "tasks"
NAMES = ("antonym_choice", "sentiment_blue_red", "syllable_first", "topic_nonce")
BUDGET = 2.2  # issue 15: the default run costs at most 2.2x the single-draw run without controls


@pytest.fixture(scope="module")
def lm():
    model = load_model("smollm2-135m")
    yield model
    model.close()


def _timed(lm, settings: PipelineSettings) -> tuple[float, dict[str, float]]:
    total, stages = 0.0, {}
    for name in NAMES:
        start = time.perf_counter()
        result = run_pipeline(lm, TaskSource.from_path(TASKS / name / f"{name}.yaml"), settings)
        total += time.perf_counter() - start
        for stage, seconds in result.row["timings"].items():
            if stage != "load_model":
                stages[stage] = round(stages.get(stage, 0.0) + seconds, 2)
    return total, stages


def test_default_draws_cost_against_one_draw(benchmark, lm):
    load_before = os.getloadavg()[0]
    single, single_stages = _timed(lm, PipelineSettings(seeds=1, shuffled=False))
    default, default_stages = benchmark.pedantic(lambda: _timed(lm, PipelineSettings()), rounds=1, iterations=1)
    ratio = default / single
    benchmark.extra_info.update(
        single_s=round(single, 1), default_s=round(default, 1), ratio=round(ratio, 2), budget=BUDGET,
        single_stages_s=single_stages, default_stages_s=default_stages,
        load_average=[round(load_before, 1), round(os.getloadavg()[0], 1)],
    )  # fmt: skip
    print(f"\nsingle draw, no control: {single:.1f} s; 3 draws + shuffled-label FT: {default:.1f} s; ratio {ratio:.2f} (budget {BUDGET})")
    print(f"stages single {single_stages}\nstages default {default_stages}")
    assert ratio <= BUDGET, f"the default run costs {ratio:.2f}x the single draw (budget {BUDGET}x)"
