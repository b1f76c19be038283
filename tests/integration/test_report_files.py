"""``--icl-report DIR`` writes results.json and results.csv: one row per task x model, property outcomes included.

Both run with and without xdist (``plugin_args``): under xdist the rows travel from the workers
to the controller in the test reports, and only the controller writes the files and the table.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from tests.integration.icl_project import SUITE_MODELS, SUITE_PROPERTIES, SUITE_TASKS

ROW_KEYS = {
    "task", "task_hash", "model", "model_id", "revision", "weights_hash", "dtype", "device",
    "shots", "seed", "lr", "position", "eval",
    "values", "intervals", "layers", "counts", "timings", "properties", "versions",
}  # fmt: skip
PAIRS = {(model, task) for model in SUITE_MODELS for task in SUITE_TASKS}


@pytest.fixture
def results(suite_run) -> dict:
    return json.loads((suite_run.report / "results.json").read_text(encoding="utf-8"))


def test_json_has_one_row_per_task_and_model(results, suite_run, tiny_gpt2):
    assert results["schema"] == 1
    rows = results["rows"]
    assert len(rows) == 4
    assert {(row["model_id"], row["task"]) for row in rows} == PAIRS
    for row in rows:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert (row["shots"], row["eval"], row["dtype"], row["device"], row["position"]) == (4, 6, "float32", "cpu", "label")
        assert row["revision"] is None and len(row["weights_hash"]) == 64  # local folders: sha256 of the weights
        assert row["counts"]["eval"] == 6 and row["counts"]["shots"] == 4
        assert {"torch", "transformers", "lm_eval", "pytest"} <= set(row["versions"])
    by_pair = {(row["model_id"], row["task"]): row for row in rows}
    assert by_pair["tiny-gpt2", "antonyms"]["model"] == str(tiny_gpt2)  # what the user typed
    assert by_pair["tiny-gpt2", "antonyms"]["task_hash"] == by_pair["tiny-gpt-neo", "antonyms"]["task_hash"]
    assert by_pair["tiny-gpt2", "antonyms"]["weights_hash"] != by_pair["tiny-gpt-neo", "antonyms"]["weights_hash"]


def test_json_values_intervals_and_layers(results):
    for row in results["rows"]:
        for name in ("acc_zsl", "acc_icl", "acc_ft"):
            assert 0 <= row["values"][name] <= 1
        for name in ("simaou", "simaou_fair_random", "simam_before", "simam_after", "kendall", "kendall_random"):
            value = row["values"][name]
            low, high = row["intervals"][name]
            assert math.isfinite(value) and low <= high
        assert all(len(curve) == 2 for curve in row["layers"].values())  # the tiny models have 2 layers
        assert row["layers"], "per-layer curves are recorded"


def test_json_records_every_property_outcome(results):
    for row in results["rows"]:
        assert set(row["properties"]) == set(SUITE_PROPERTIES)
        assert set(row["properties"].values()) <= {"passed", "failed", "undecided"}  # gates open in the inner ini
        assert row["properties"]["accuracy"] == "passed"  # --icl-threshold accuracy=-1
        assert row["properties"]["simam"] == "failed"  # --icl-threshold simam=2


def test_csv_mirrors_the_json(results, suite_run):
    with (suite_run.report / "results.csv").open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))

    assert len(table) == 4
    header = list(table[0])
    assert header[:13] == [
        "task", "task_hash", "model", "model_id", "revision", "weights_hash", "dtype", "device",
        "shots", "seed", "lr", "position", "eval",
    ]  # fmt: skip
    assert [f"property_{name}" for name in sorted(SUITE_PROPERTIES)] == header[-5:]
    by_pair = {(row["model_id"], row["task"]): row for row in results["rows"]}
    for line in table:
        row = by_pair[line["model_id"], line["task"]]
        assert float(line["acc_icl"]) == pytest.approx(row["values"]["acc_icl"], abs=1e-5)
        assert (line["property_accuracy"], line["property_simam"]) == ("passed", "failed")
        assert line["eval"] == "6" and line["weights_hash"] == row["weights_hash"]


def test_terminal_table_has_a_row_per_pair_and_names_the_files(suite_run):
    output = suite_run.output

    assert output.count("ICL vs finetuning") == 1  # the controller prints it, the workers do not
    suite_run.result.stdout.fnmatch_lines(
        [
            "*= ICL vs finetuning =*",
            "model * task * k  n  draws * lr * ZSL * ICL * FT * Rec2FTP/chance  SimAOU/fair-rand  SimAM bef/aft  Kendall/rand * result*",
            "---*",
        ]
    )
    lines = suite_run.result.outlines
    end = next(i for i, line in enumerate(lines) if "verdicts: metric" in line)  # the verdict table follows
    table = [line for line in lines[:end] if line.startswith(SUITE_MODELS)]
    assert sorted((line.split()[0], line.split()[1]) for line in table) == sorted(PAIRS)
    assert all(" 4  6  " in line and "FAIL" in line and "simam" in line for line in table)
    suite_run.result.stdout.fnmatch_lines([f"results: {suite_run.report / 'results.json'}, results.csv and samples_*.jsonl"])


def test_samples_and_results_load_as_dataframes(suite_run):
    """Per-example files like lm-eval's --log_samples, and pytest_icl.report.results.load over the folder."""
    from pytest_icl.report.results import load

    samples = sorted(p.name for p in suite_run.report.glob("samples_*.jsonl"))
    assert samples == sorted(f"samples_{model}_{task}.jsonl" for model, task in PAIRS)

    results = load(suite_run.report)

    assert len(results.pairs) == len(PAIRS)
    assert {"model_id", "task", "acc_icl", "simaou", "property_simam"} <= set(results.pairs.columns)
    assert set(results.layers["metric"]) >= {"simaou", "simam_after", "kendall"}
    assert len(results.samples) == 6 * len(PAIRS)  # --icl-limit 6
    first = results.samples.iloc[0]
    assert first["prompt"].endswith(first["query"]) and len(first["logprobs_icl"]) == len(first["choices"])
    assert first["prediction_icl"] in range(len(first["choices"]))
