"""The controller's result store: files written once per finished pair, unfinished pairs kept, read back as DataFrames."""

from __future__ import annotations

import json

from pytest_icl.report.results import ResultStore, load


def _row(model: str, task: str) -> dict:
    return {
        "task": task, "task_hash": "h", "model": model, "model_id": model, "revision": None, "weights_hash": "w",
        "dtype": "float32", "device": "cpu", "shots": 4, "seed": 1, "lr": 0.01, "position": "label", "eval": 2,
        "values": {"acc_icl": 0.5, "simaou": 0.1}, "intervals": {}, "layers": {"simaou": [0.1, 0.2]}, "counts": {},
    }  # fmt: skip


def test_files_are_written_once_when_a_pair_finishes(tmp_path):
    store = ResultStore(tmp_path)
    store.expect("m-t", 3)
    store.add_row(_row("m", "t"))
    store.add_outcome("m-t", "accuracy", "passed")
    store.add_outcome("m-t", "simaou", "failed")
    assert store.writes == 0 and not (tmp_path / "results.json").exists()

    store.add_outcome("m-t", "simam", "inconclusive")

    assert store.writes == 1
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert row["properties"] == {"accuracy": "passed", "simaou": "failed", "simam": "inconclusive"}


def test_an_unfinished_pair_is_written_at_close(tmp_path):
    store = ResultStore(tmp_path)
    store.expect("m-done", 1)
    store.add_row(_row("m", "done"))
    store.add_outcome("m-done", "accuracy", "passed")
    store.expect("m-interrupted", 5)
    store.add_row(_row("m", "interrupted"))
    store.add_outcome("m-interrupted", "accuracy", "passed")

    store.close()

    assert store.writes == 2
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["done", "interrupted"]


def test_a_row_without_property_items_is_written_at_once(tmp_path):
    """Task-as-test-file analyses have no generated items to wait for."""
    store = ResultStore(tmp_path)
    store.add_row(_row("m", "t"))
    store.add_row(_row("m", "t"))  # the same pair again: ignored
    assert store.writes == 1


def test_load_gives_pairs_layers_and_samples(tmp_path):
    store = ResultStore(tmp_path)
    store.add_row(_row("m", "t"))
    (tmp_path / "samples_m_t.jsonl").write_text(
        json.dumps({"model_id": "m", "task": "t", "doc_id": 0, "prompt": "a", "choices": ["x", "y"], "logprobs_icl": [-1, -2]}) + "\n"
    )

    results = load(tmp_path)

    assert results.pairs.loc[0, "acc_icl"] == 0.5 and results.pairs.loc[0, "model_id"] == "m"
    assert list(results.layers["value"]) == [0.1, 0.2] and set(results.layers["metric"]) == {"simaou"}
    assert results.samples.loc[0, "choices"] == ["x", "y"]
