"""pytest-xdist: the plugin's scheduler sends all items of one model to one worker."""

from __future__ import annotations

import json

from tests.integration.icl_project import SUITE_MODELS, reported, suite_ids


def model_of(node: str) -> str:
    return next(model for model in sorted(SUITE_MODELS, key=len, reverse=True) if f"[{model}-" in node)


def test_each_model_runs_on_one_worker(xdist_run):
    lines = reported(xdist_run.result)
    workers = {model: {line.worker for line in lines if model_of(line.node) == model} for model in SUITE_MODELS}

    assert sorted(line.node for line in lines) == sorted(suite_ids())
    assert all(len(found) == 1 for found in workers.values()), workers
    assert workers[SUITE_MODELS[0]] != workers[SUITE_MODELS[1]]  # two models, two workers
    xdist_run.result.stdout.fnmatch_lines(["scheduling tests via IclScheduling"])


def rows(run) -> list[dict]:
    return sorted(json.loads((run.report / "results.json").read_text())["rows"], key=lambda row: (row["model_id"], row["task"]))


def test_same_experiments_as_a_serial_run(serial_run, xdist_run):
    def experiments(run):
        return [(row["model_id"], row["task"], row["weights_hash"], row["eval"], row["shots"]) for row in rows(run)]

    assert experiments(xdist_run) == experiments(serial_run)
    assert xdist_run.result.ret == serial_run.result.ret == 1  # simam=2 fails in both


def test_task_hash_does_not_depend_on_where_the_project_lives(serial_run, xdist_run):
    assert [row["task_hash"] for row in rows(xdist_run)] == [row["task_hash"] for row in rows(serial_run)]
