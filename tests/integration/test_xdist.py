"""pytest-xdist: the plugin's scheduler sends all items of one model to one worker, unless the user gave --dist."""

from __future__ import annotations

import json

import pytest

from tests.integration.icl_project import SUITE_MODELS, SUITE_TASKS, reported, suite_ids


def model_of(node: str) -> str:
    return next(model for model in sorted(SUITE_MODELS, key=len, reverse=True) if f"[{model}-" in node)


def test_each_model_runs_on_one_worker(xdist_run):
    lines = reported(xdist_run.result)
    workers = {model: {line.worker for line in lines if model_of(line.node) == model} for model in SUITE_MODELS}

    assert sorted(line.node for line in lines) == sorted(suite_ids())
    assert all(len(found) == 1 for found in workers.values()), workers
    assert workers[SUITE_MODELS[0]] != workers[SUITE_MODELS[1]]  # two models, two workers
    xdist_run.result.stdout.fnmatch_lines(["scheduling tests via IclScheduling"])
    xdist_run.result.stdout.no_fnmatch_line("*was given, so pytest-xdist schedules*")  # -n alone: xdist's default


def rows(run) -> list[dict]:
    return sorted(json.loads((run.report / "results.json").read_text())["rows"], key=lambda row: (row["model_id"], row["task"]))


def test_same_experiments_as_a_serial_run(serial_run, xdist_run):
    def experiments(run):
        return [(row["model_id"], row["task"], row["weights_hash"], row["eval"], row["shots"]) for row in rows(run)]

    assert experiments(xdist_run) == experiments(serial_run)
    assert xdist_run.result.ret == serial_run.result.ret == 1  # simam=2 fails in both


def test_task_hash_does_not_depend_on_where_the_project_lives(serial_run, xdist_run):
    assert [row["task_hash"] for row in rows(xdist_run)] == [row["task_hash"] for row in rows(serial_run)]


PLAIN_TESTS = "def test_a():\n    pass\n\n\ndef test_b():\n    pass\n"


@pytest.mark.parametrize(("dist", "scheduler"), [("loadfile", "LoadFileScheduling"), ("no", "LoadScheduling")])
def test_a_dist_the_user_gave_is_kept_and_the_header_says_so(project, dist, scheduler):
    """``--dist no`` is xdist's default too: only the command line tells that it was given (xdist then balances load)."""
    project.pytester.makepyfile(test_plain=PLAIN_TESTS)

    result = project.run("-n", "2", "--dist", dist, "-v")

    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    result.stdout.fnmatch_lines(
        [
            f"icl: --dist {dist} was given, so pytest-xdist schedules the items and pytest-icl's grouping by model (--icl-dist) is off*",
            f"scheduling tests via {scheduler}",
        ]
    )


def test_dist_and_icl_dist_together_are_a_usage_error(project):
    result = project.run("-n", "2", "--dist", "load", "--icl-dist", "pair")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --dist load and --icl-dist were both given: --dist picks one of pytest-xdist's*"])


@pytest.mark.parametrize("run", ["serial_run", "xdist_run"])
def test_each_task_s_notes_are_printed_once_before_the_items(request, run):
    """The suite's tasks set k in metadata.icl.shots and no num_fewshot: the header says lm-eval would run them zero-shot.
    The controller of an xdist run collects nothing: the notes come from the first worker's collection."""
    result = request.getfixturevalue(run).result
    notes = [line for line in result.outlines if line.startswith("icl: ")]
    assert notes == [
        f"icl: {task}: k = 4 (metadata.icl.shots); the YAML sets no num_fewshot, so lm-eval runs it zero-shot "
        "(give --num_fewshot 4 to compare)"
        for task in SUITE_TASKS
    ]
    first_item = next(i for i, line in enumerate(result.outlines) if "::test_icl[" in line)
    assert result.outlines.index(notes[-1]) < first_item
